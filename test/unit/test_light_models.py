"""The onnx wheel's nine light models: import, then reference interpreter vs onnxruntime.

The light models' weights come from ConstantOfShape (all equal), so their outputs are
nearly uniform. Each model is therefore checked twice: as shipped, through the
`sparsec run --engine reference` command line, and with every ConstantOfShape replaced
by a random initializer, which exercises every op with non-trivial values.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sparsec
from conftest import onnxruntime_outputs, random_feeds
from models import LIGHT, randomized

MODELS = sorted(LIGHT.glob("light_*.onnx"))
RTOL, ATOL = 1e-4, 1e-5


def test_all_nine_light_models_are_found():
    assert len(MODELS) == 9, [m.name for m in MODELS]


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_reference_matches_onnxruntime_with_random_weights(path: Path, tmp_path: Path):
    model_file = randomized(path, tmp_path / path.name)
    model = sparsec.load(model_file)
    feeds = random_feeds(model)
    ours = model.run(feeds)
    theirs = onnxruntime_outputs(model_file, feeds)
    assert list(ours) == list(theirs)
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_sparsec_run_cli_matches_onnxruntime(path: Path, tmp_path: Path):
    feeds = random_feeds(sparsec.load(path), seed=3)
    args = []
    for name, array in feeds.items():
        file = tmp_path / f"input{len(args)}.npy"
        np.save(file, array)
        args += ["--input", f"{name}={file}"]
    out = tmp_path / "out.npz"
    subprocess.run(
        [sys.executable, "-m", "sparsec.cli", "run", str(path), "--engine", "reference", *args, "-o", str(out)],
        check=True,
    )
    theirs = onnxruntime_outputs(path, feeds)
    with np.load(out) as ours:
        assert sorted(ours.files) == sorted(theirs)
        for name in theirs:
            np.testing.assert_allclose(ours[name], theirs[name], rtol=RTOL, atol=ATOL, err_msg=name)
