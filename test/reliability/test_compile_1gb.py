"""A model of 1 GB float32 weights (ONNX with external data) compiles to .spx in under
60 s with peak memory under 2.5 GB."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

LAYERS, WIDTH = 4, 8192  # 4 x 8192 x 8192 float32 = 1 GiB


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


def test_compile_1gb_model(tmp_path: Path):
    model = tmp_path / "big.onnx"
    write_big_model(model)
    assert (tmp_path / "big.onnx.data").stat().st_size == LAYERS * WIDTH * WIDTH * 4
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "sparsec.cli", "compile", str(model), "--pattern", "unstructured", "--sparsity", "0.75",
         "-o", str(tmp_path / "big.spx")],
        check=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"1 GiB model: {seconds:.1f} s, peak {peak_gb:.2f} GiB, artifact {(tmp_path / 'big.spx').stat().st_size / 2**20:.0f} MiB")
    assert seconds < 60
    assert peak_gb < 2.5
