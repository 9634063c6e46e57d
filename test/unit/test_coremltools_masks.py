"""sparsec's masks against coremltools' own pruning code, on the same weights.

coremltools picks unstructured and block thresholds with np.percentile, which can
zero one value (or block) more than floor(sparsity * N) and zeroes every tie; sparsec
zeroes exactly floor(sparsity * N), ties by position (docs/passes.md). On weights with
distinct magnitudes the n:m masks are identical, and sparsec's unstructured and block
zeros are coremltools' zeros, less at most one value or block.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsec.passes.pruning import block_keep, nm_keep, unstructured_keep

prune_weights = pytest.importorskip("coremltools.optimize.coreml._quantization_passes").prune_weights
logging.getLogger("coremltools").setLevel(logging.ERROR)


def distinct_weight(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.permutation(np.arange(1, int(np.prod(shape)) + 1)).astype(np.float32)
    signs = rng.choice([-1.0, 1.0], size=values.size).astype(np.float32)
    return (values * signs / values.size).reshape(shape)


def coreml_dense(params, shape) -> np.ndarray | None:
    if params is None:
        return None
    bits = np.unpackbits(params.mask, bitorder="little")[: int(np.prod(shape))].astype(bool)
    dense = np.zeros(bits.size, np.float32)
    dense[bits] = params.nonzero_data
    return dense.reshape(shape)


shapes = st.tuples(st.integers(2, 24), st.integers(2, 24)) | st.tuples(
    st.integers(2, 12), st.integers(2, 12), st.integers(1, 3), st.integers(1, 3)
)


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(0, 1000), st.sampled_from([(1, 2), (2, 4), (3, 4), (1, 4), (7, 8)]), st.sampled_from([0, 1]))
def test_nm_masks_equal_coremltools(shape, seed, ratio, axis):
    weight = distinct_weight(shape, seed)
    n, m = ratio
    theirs = coreml_dense(prune_weights.compress_by_nm_sparsity(weight, (n, m), axis), shape)
    if theirs is None:  # m exceeds half the channels: both leave the layer dense
        assert m > shape[axis] / 2
        return
    ours = np.where(nm_keep(np.abs(weight), n, m, axis), weight, 0)
    np.testing.assert_array_equal(ours, theirs)


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(0, 1000), st.floats(0.05, 0.95))
def test_unstructured_zeros_are_coremltools_zeros_less_at_most_one(shape, seed, sparsity):
    weight = distinct_weight(shape, seed)
    theirs = coreml_dense(prune_weights.compress_by_magnitude(weight, sparsity), shape) == 0
    ours = ~unstructured_keep(np.abs(weight), sparsity)
    assert np.all(theirs[ours])
    assert 0 <= theirs.sum() - ours.sum() <= 1


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(2, 10), st.sampled_from([2, 4]), st.integers(0, 1000), st.floats(0.05, 0.95))
def test_block_zeros_are_coremltools_zeros_less_at_most_one_block(blocks, inputs, block, seed, sparsity):
    shape = (2 * blocks * block, inputs)  # whole blocks, and block <= channels / 2
    weight = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)  # distinct block norms
    theirs = coreml_dense(prune_weights.compress_by_magnitude(weight, sparsity, block, 0), shape) == 0
    ours = ~block_keep(np.abs(weight), sparsity, block, 0)
    assert np.all(theirs[ours])
    assert 0 <= (theirs.sum() - ours.sum()) <= block
