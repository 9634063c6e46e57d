"""ONNX import of the small test models: numerics against onnxruntime, errors, external data."""

from __future__ import annotations

import numpy as np
import pytest

import sparsec
from conftest import onnxruntime_outputs, random_feeds
from models import MODELS
from sparsec.errors import ModelImportError

INVALID = ("unsupported", "old_opset", "bad_shapes", "gather_nd_batch_dims", "cast_to_string", "pad_reflect", "string_axis", "unknown_data_type")
VALID = [name for name in MODELS if name not in INVALID]


@pytest.mark.parametrize("name", VALID)
@pytest.mark.parametrize("batch", [1, 5])
def test_reference_matches_onnxruntime(model_path, name: str, batch: int):
    path = model_path(name)
    model = sparsec.load(path)
    feeds = random_feeds(model, dynamic=batch)
    ours, theirs = model.run(feeds), onnxruntime_outputs(path, feeds)
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-4, atol=1e-5)


def test_external_data_loads(model_path):
    model = sparsec.load(model_path("mlp", external_data=True))
    assert model.weights["w1"].shape == (64, 32)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("unsupported", "node 'my_det' (Det): op type 'Det' is not supported; supported ops: Abs, Add"),
        ("old_opset", "opset 6 is not supported (supported: 7 to 24)"),
        ("bad_shapes", "node 'fc' (Gemm): inner dimensions differ"),
        ("gather_nd_batch_dims", "node 'pick' (GatherND): batch_dims 1 is not supported (only 0)"),
        ("cast_to_string", "node 'to_text' (Cast): cannot cast to ONNX data type 8"),
        ("pad_reflect", "node 'mirror' (Pad): mode 'reflect' is not supported (only constant)"),
        ("string_axis", "node 'join' (Concat): attribute 'axis' of type STRING does not fit"),
        ("unknown_data_type", "initializer 'two' is malformed: data type 33 is no ONNX tensor type"),
    ],
)
def test_import_errors_name_the_node(model_path, name: str, message: str):
    with pytest.raises(ModelImportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sparsec.load(model_path(name))


def test_input_file_is_never_modified(model_path, tmp_path):
    path = model_path("mlp")
    before = path.read_bytes()
    model = sparsec.load(path)
    model.save(tmp_path / "out.onnx")
    model.save(tmp_path / "out.mlir")
    assert path.read_bytes() == before
