"""A 100 MB ONNX model imports in under 10 s, within 2x its weights in memory, to < 1 MB of IR."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import models

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


def test_import_100mb_model(tmp_path: Path):
    path = models.gemm_stack(tmp_path / "big.onnx", layers=6, width=2048)
    assert path.stat().st_size > 100_000_000
    result = subprocess.run([sys.executable, "-c", MEASURE, str(path)], check=True, capture_output=True, text=True)
    figures = json.loads(result.stdout)
    print(figures)
    assert figures["seconds"] < 10
    assert figures["extra_kib"] * 1024 < 2 * figures["weights"]
    assert figures["text"] < 1_000_000
