"""A 100 MB ONNX model imports in under 10 s, within 2x its weights in memory, to < 1 MB of IR."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MEASURE = """
import json, resource, sys, time
import sparsec
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
model = sparsec.load(sys.argv[1])
seconds = time.perf_counter() - start
text = model.text()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "extra_kib": peak - before, "weights": model.weights.nbytes, "text": len(text)}))
"""


def big_model(path: Path, layers: int = 6, width: int = 2048) -> Path:
    rng = np.random.default_rng(0)
    nodes, initializers, previous = [], [], "x"
    for i in range(layers):
        initializers.append(numpy_helper.from_array(rng.standard_normal((width, width), dtype=np.float32), f"w{i}"))
        nodes.append(helper.make_node("Gemm", [previous, f"w{i}"], [f"h{i}"], transB=1, name=f"fc{i}"))
        nodes.append(helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu{i}"))
        previous = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["batch", width])],
        initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_import_100mb_model(tmp_path: Path):
    path = big_model(tmp_path / "big.onnx")
    assert path.stat().st_size > 100_000_000
    result = subprocess.run([sys.executable, "-c", MEASURE, str(path)], check=True, capture_output=True, text=True)
    figures = json.loads(result.stdout)
    print(figures)
    assert figures["seconds"] < 10
    assert figures["extra_kib"] * 1024 < 2 * figures["weights"]
    assert figures["text"] < 1_000_000
