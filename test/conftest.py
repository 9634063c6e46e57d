"""Shared pytest fixtures: the small ONNX models of test/models.py, onnxruntime as oracle."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import models  # noqa: E402


@pytest.fixture
def model_path(tmp_path: Path):
    """Build one of test/models.py's models into tmp_path: model_path("mlp")."""

    def build(name: str, external_data: bool = False) -> Path:
        return models.save(name, tmp_path / f"{name}.onnx", external_data)

    return build


def onnxruntime_outputs(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def random_feeds(model, seed: int = 0, dynamic: int = 3) -> dict[str, np.ndarray]:
    """Random float32 inputs for a sparsec Model; dynamic dimensions become `dynamic`."""
    from sparsec import reference

    function = reference.main_function(model.module)
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, arg in zip(reference.input_names(function), function.args):
        shape = [d if d >= 0 else dynamic for d in arg.type.get_shape()]
        feeds[name] = rng.standard_normal(shape).astype(np.float32)
    return feeds
