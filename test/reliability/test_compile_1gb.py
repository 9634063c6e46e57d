"""A model of 1 GB float32 weights (ONNX with external data) compiles to .spx in under
60 s with peak memory under 2.5 GB."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

LAYERS, WIDTH = 4, 8192  # 4 x 8192 x 8192 float32 = 1 GiB
REPORT_PEAK = """
import runpy, sys
try:
    runpy.run_module("sparsec.cli", run_name="__main__", alter_sys=True)
finally:
    print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")), file=sys.stderr)
"""
"""sparsec's command line, then its own peak resident memory. The kernel counts a
child's peak (ru_maxrss) from the parent's size when it forked: after the unit tests,
pytest's 2.9 GB."""


def write_big_model(path: Path) -> None:
    """Written layer by layer into the external data file, so the test itself stays small."""
    rng = np.random.default_rng(0)
    data_file = path.with_name(path.name + ".data")
    nodes, initializers, previous, offset = [], [], "x", 0
    with open(data_file, "wb") as stream:
        for i in range(LAYERS):
            weight = rng.standard_normal((WIDTH, WIDTH), dtype=np.float32)
            stream.write(weight.tobytes())
            tensor = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=weight.shape)
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_file.name), ("offset", str(offset)), ("length", str(weight.nbytes))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += weight.nbytes
            initializers.append(tensor)
            nodes.append(helper.make_node("Gemm", [previous, f"w{i}"], [f"h{i}"], transB=1, name=f"fc{i}"))
            nodes.append(helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu{i}"))
            previous = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["batch", WIDTH])],
        initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak from /proc")
def test_compile_1gb_model(tmp_path: Path):
    model = tmp_path / "big.onnx"
    write_big_model(model)
    assert (tmp_path / "big.onnx.data").stat().st_size == LAYERS * WIDTH * WIDTH * 4
    start = time.perf_counter()
    compiled = subprocess.run(
        [sys.executable, "-c", REPORT_PEAK, "compile", str(model), "--pattern", "unstructured", "--sparsity", "0.75",
         "-o", str(tmp_path / "big.spx")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    peak_gb = int(compiled.stderr.split("VmHWM:")[1].split()[0]) / 2**20  # kB
    print(f"1 GiB model: {seconds:.1f} s, peak {peak_gb:.2f} GiB, artifact {(tmp_path / 'big.spx').stat().st_size / 2**20:.0f} MiB")
    assert seconds < 60
    assert peak_gb < 2.5
