"""Packing round trips (prune, pack, unpack) and the encodings' byte counts."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import models
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sparsec
from sparsec import packing
from sparsec.dialects.sparse import PackedWeightOp
from conftest import random_feeds
from sparsec.passes.pruning import block_keep, nm_keep, unstructured_keep

VALUE_DTYPES = [np.float16, np.float32]


def shapes(min_dims: int = 1, max_dims: int = 4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=19)


@st.composite
def tensors(draw, min_dims: int = 1):
    shape = draw(shapes(min_dims))
    kind = draw(st.sampled_from(["random", "zeros", "dense"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "zeros":
        return np.zeros(shape, np.float32)
    values = rng.standard_normal(shape).astype(np.float32)
    if kind == "dense":
        values[values == 0] = 1.0
    return values


@settings(max_examples=150, deadline=None)
@given(tensors(), st.floats(0, 1), st.sampled_from(VALUE_DTYPES))
def test_bitmask_round_trip(dense, sparsity, dtype):
    pruned = np.where(unstructured_keep(np.abs(dense), sparsity), dense, 0)
    packed = packing.encode_bitmask(pruned, np.dtype(dtype))
    assert packed.arrays["mask"].size == math.ceil(pruned.size / 8)
    assert packed.nbytes == packing.bitmask_bytes(pruned.size, int(np.count_nonzero(pruned)), np.dtype(dtype).itemsize)
    restored = packing.decode_bitmask(packed.arrays, pruned.shape, np.dtype(np.float32))
    np.testing.assert_array_equal(restored, pruned.astype(dtype).astype(np.float32))


@settings(max_examples=150, deadline=None)
@given(tensors(min_dims=2), st.integers(1, 16), st.data(), st.sampled_from(VALUE_DTYPES))
def test_nm_round_trip(dense, m, data, dtype):
    n = data.draw(st.integers(0, m))
    axis = data.draw(st.integers(0, dense.ndim - 1))
    pruned = np.where(nm_keep(np.abs(dense), n, m, axis), dense, 0)
    packed = packing.encode_nm(pruned, n, m, axis, np.dtype(dtype))
    assert packed.nbytes == packing.nm_bytes(pruned.shape, n, m, axis, np.dtype(dtype).itemsize)
    restored = packing.decode_nm(packed.arrays, pruned.shape, np.dtype(np.float32), n, m, axis)
    np.testing.assert_array_equal(restored, pruned.astype(dtype).astype(np.float32))


@settings(max_examples=150, deadline=None)
@given(tensors(min_dims=2), st.integers(2, 16), st.floats(0, 1), st.data(), st.sampled_from(VALUE_DTYPES))
def test_block_round_trip(dense, block, sparsity, data, dtype):
    axis = data.draw(st.integers(0, dense.ndim - 1))
    pruned = np.where(block_keep(np.abs(dense), sparsity, block, axis), dense, 0)
    packed = packing.encode_block(pruned, block, axis, np.dtype(dtype))
    kept = len(packed.arrays["values"]) // block
    assert packed.nbytes == packing.block_bytes(pruned.shape, block, axis, kept, np.dtype(dtype).itemsize)
    restored = packing.decode_block(packed.arrays, pruned.shape, np.dtype(np.float32), block, axis)
    np.testing.assert_array_equal(restored, pruned.astype(dtype).astype(np.float32))


def test_nm_refuses_a_broken_pattern():
    with pytest.raises(ValueError, match="fewer than 2 zeros"):
        packing.encode_nm(np.ones((2, 8), np.float32), 2, 4, 1, np.dtype(np.float16))


def test_core_ml_example():
    packed = packing.encode_bitmask(np.array([0, 7, 0, 0, 0, 0, 0, 56.3], np.float32), np.dtype(np.float16))
    assert packed.arrays["mask"].tolist() == [0x82]
    assert packed.arrays["values"].tolist() == [7.0, np.float16(56.3)]


@pytest.mark.parametrize(
    ("pipeline", "encoding", "per_weight"),
    [
        ("prune-magnitude{sparsity=0.75}", "bitmask", 0.625),
        ("prune-magnitude{pattern=nm n=3 m=4}", "nm", 0.5625),
        ("prune-magnitude{pattern=block block-size=4 sparsity=0.75}", "block", 0.53125),
    ],
)
def test_structured_encodings_cost_less_than_the_bitmask(tmp_path, pipeline, encoding, per_weight):
    model = sparsec.load(models.gemm_stack(tmp_path / "m.onnx", layers=2, width=256))
    model.apply(pipeline + ",pack-bitmask")
    packed = [op for op in model.module.walk() if isinstance(op, PackedWeightOp)]
    assert {op.encoding.encoding.value for op in packed} == {encoding}
    for op in packed:
        assert op.packed_bytes.value.data == 256 * 256 * per_weight


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["gemm", "mlp", "conv", "transformer_mlp"]), st.sampled_from([
    "prune-magnitude{sparsity=0.6 min-elements=0}",
    "prune-magnitude{pattern=nm n=1 m=2 min-elements=0}",
    "prune-magnitude{pattern=block block-size=2 sparsity=0.5 min-elements=0}",
]), st.sampled_from(["auto", "bitmask"]))
def test_pass_round_trip_keeps_outputs(name, prune, encoding):
    with tempfile.TemporaryDirectory() as tmp:
        model = sparsec.load(models.save(name, Path(tmp) / f"{name}.onnx"))
        model.apply(prune)
        pruned = {name: array.copy() for name, array in model.weights.items()}
        model.apply(f"pack-bitmask{{encoding={encoding}}}")
        feeds = random_feeds(model)
        packed_outputs = model.run(feeds)
        model.apply("unpack")
        for weight, array in pruned.items():
            np.testing.assert_array_equal(model.weights[weight], array.astype(np.float16).astype(array.dtype) if weight in {
                op.weight_name.data for op in model.module.walk() if getattr(op, "sparsity", None) is not None
            } else array)
        for key, value in model.run(feeds).items():
            np.testing.assert_array_equal(value, packed_outputs[key])
