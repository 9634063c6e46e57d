"""Shared pytest fixtures: the small ONNX models of test/models.py, onnxruntime as oracle."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
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
    """Random inputs for a sparsec Model, dynamic dimensions `dynamic`: standard normal
    floats, integers (token ids, masks) from 0 to 1."""
    from sparsec import reference
    from sparsec.dialects.literals import numpy_dtype

    function = reference.main_function(model.module)
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, arg in zip(reference.input_names(function), function.args):
        shape = [d if d >= 0 else dynamic for d in arg.type.get_shape()]
        dtype = numpy_dtype(arg.type.element_type)
        floats = np.issubdtype(dtype, np.floating)
        feeds[name] = (rng.standard_normal(shape) if floats else rng.integers(0, 2, shape)).astype(dtype)
    return feeds


def in_forked_child(check: Callable[[], bool], seconds: float = 20) -> bool:
    """Whether `check` returns true in a forked child of this process, which is killed
    (and the answer false) if it has not ended after `seconds`: a child that waits on
    a thread or lock it did not inherit hangs rather than fails."""
    child = os.fork()
    if child == 0:
        try:
            passed = check()
        except BaseException:  # the child must not go on as a second pytest
            passed = False
        os._exit(0 if passed else 1)
    deadline = time.monotonic() + seconds
    while (ended := os.waitpid(child, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if ended[0] == 0:
        os.kill(child, 9)
        os.waitpid(child, 0)
        return False
    return os.waitstatus_to_exitcode(ended[1]) == 0
