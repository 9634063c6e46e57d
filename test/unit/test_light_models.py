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
import onnx
import pytest
from onnx import numpy_helper

import sparsec
from conftest import onnxruntime_outputs, random_feeds

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = sorted(LIGHT.glob("light_*.onnx"))
RTOL, ATOL = 1e-4, 1e-5


def test_all_nine_light_models_are_found():
    assert len(MODELS) == 9, [m.name for m in MODELS]


def randomized(path: Path, out: Path) -> Path:
    """The model with each ConstantOfShape replaced by a random (He-scaled) initializer."""
    model = onnx.load(str(path))
    graph = model.graph
    shapes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    rng = np.random.default_rng(7)
    kept = []
    for node in graph.node:
        if node.op_type != "ConstantOfShape":
            kept.append(node)
            continue
        shape = shapes[node.input[0]].astype(int).tolist()
        if len(shape) == 1:  # biases, batch-norm parameters: positive around 1
            array = np.abs(1.0 + 0.1 * rng.standard_normal(shape))
        else:
            array = rng.standard_normal(shape) * np.sqrt(2.0 / max(1, int(np.prod(shape[1:]))))
        graph.initializer.append(numpy_helper.from_array(array.astype(np.float32), node.output[0]))
    del graph.node[:]
    graph.node.extend(kept)
    onnx.save(model, str(out))
    return out


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
