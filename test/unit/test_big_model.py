"""A 100 MB ONNX model imports in under 10 s, within 1.1x its weights in memory, to < 1 MB
of IR. Protobuf parses the file without the weights' bytes, which go from the file
straight into their arrays (sparsec/frontend/onnx_wire.py); parsing it whole held them
twice until the import ended (2.0x). External data is memory-mapped (test_compile_1gb)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import models

MEASURE = """
import json, sys, time
import sparsec
import sparsec.frontend.onnx  # imported on the first ONNX load; its modules are not the weights' memory


def peak_kib():  # this process's own peak: ru_maxrss starts from pytest's, the parent's
    return int(next(line for line in open('/proc/self/status') if line.startswith('VmHWM:')).split()[1])


before = peak_kib()
start = time.perf_counter()
model = sparsec.load(sys.argv[1])
seconds = time.perf_counter() - start
text = model.text()
peak = peak_kib()
print(json.dumps({"seconds": seconds, "extra_kib": peak - before, "weights": model.weights.nbytes, "text": len(text)}))
"""


def test_import_100mb_model(tmp_path: Path):
    path = models.gemm_stack(tmp_path / "big.onnx", layers=6, width=2048)
    assert path.stat().st_size > 100_000_000
    result = subprocess.run([sys.executable, "-c", MEASURE, str(path)], check=True, capture_output=True, text=True)
    figures = json.loads(result.stdout)
    print(figures)
    assert figures["seconds"] < 10
    assert figures["extra_kib"] * 1024 < 1.1 * figures["weights"]
    assert figures["text"] < 1_000_000
