"""Printing then parsing IR keeps every weight bit for bit, inline or in the sidecar."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sparsec
from sparsec.context import make_context
from sparsec.dialects.literals import tensor_type_of
from sparsec.dialects.nn import WeightOp
from sparsec.irfile import module_text, parse_module
from sparsec.weights import WeightStore
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region

DTYPES = [np.float32, np.float16, np.float64, np.int64, np.int32, np.int8, np.uint8]


def module_returning(array: np.ndarray) -> tuple[ModuleOp, WeightStore]:
    weights = WeightStore()
    weights["w"] = array
    block = Block()
    weight = WeightOp("w", tensor_type_of(array))
    block.add_ops([weight, func.ReturnOp(weight.result)])
    function = func.FuncOp("main", ([], [weight.result.type]), Region(block))
    return ModuleOp([function]), weights


arrays = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(
        dtype,
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
        elements=hnp.from_dtype(np.dtype(dtype), allow_nan=True, allow_infinity=True, allow_subnormal=True)
        if np.issubdtype(dtype, np.floating)
        else None,
    )
)


@settings(max_examples=200, deadline=None)
@given(arrays, st.sampled_from([0, 256, -1]))
def test_print_parse_is_bit_exact(array: np.ndarray, inline_limit: int):
    module, weights = module_returning(array)
    text = module_text(module, weights, inline_limit=-1 if inline_limit == 0 else inline_limit)
    ctx = make_context()
    parsed = parse_module(text, ctx)
    parsed.verify()
    restored = ctx.weights["w"]
    assert restored.dtype == array.dtype and restored.shape == array.shape
    assert restored.tobytes() == np.ascontiguousarray(array).tobytes()


def test_sidecar_roundtrip_is_bit_exact(model_path, tmp_path):
    model = sparsec.load(model_path("mlp"))
    model.save(tmp_path / "m.mlir")
    assert (tmp_path / "m.weights.safetensors").is_file()
    again = sparsec.load(tmp_path / "m.mlir")
    assert set(again.weights) == set(model.weights)
    for name, array in model.weights.items():
        assert again.weights[name].tobytes() == array.tobytes()
    assert again.text() == model.text()


def test_onnx_export_roundtrip_keeps_weights(model_path, tmp_path):
    model = sparsec.load(model_path("transformer_mlp"))
    model.save(tmp_path / "m.onnx")
    again = sparsec.load(tmp_path / "m.onnx")
    for name, array in model.weights.items():
        np.testing.assert_array_equal(again.weights[name], array)


def test_failed_write_leaves_no_output(model_path, tmp_path, monkeypatch):
    model = sparsec.load(model_path("mlp"))
    target = tmp_path / "m.mlir"

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("sparsec.irfile.save_file", explode)
    with pytest.raises(RuntimeError):
        model.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx"]
