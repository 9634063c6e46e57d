"""Calibrating a 100-million-parameter model on 128 samples stays under 2x the memory
of the loaded model (activations stream one batch at a time)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import models
import numpy as np

MEASURE = """
import json, sys
import sparsec


def peak_kib():  # this process's own peak: ru_maxrss starts from pytest's, the parent's
    return int(next(line for line in open('/proc/self/status') if line.startswith('VmHWM:')).split()[1])


model = sparsec.load(sys.argv[1])
loaded = peak_kib()
model.apply(f'prune-{sys.argv[3]}{{sparsity=0.5 calibration="{sys.argv[2]}"}}')
peak = peak_kib()
print(json.dumps({"loaded_kib": loaded, "peak_kib": peak, "weights": model.weights.nbytes}))
"""


def test_wanda_calibration_of_100m_parameters(tmp_path: Path):
    model = models.gemm_stack(tmp_path / "m.onnx", layers=6, width=4096, bias=True, scale=float(np.sqrt(2 / 4096)))
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((128, 4096)).astype(np.float32))
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(model), str(tmp_path / "calib.npz"), "wanda"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    figures = json.loads(result.stdout)
    print(figures)
    assert figures["weights"] > 100_000_000 * 4
    assert figures["peak_kib"] < 2 * figures["loaded_kib"]
