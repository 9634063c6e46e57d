"""The normalization kernels (runtime/codegen/norm.py) against the reference
interpreter's numpy: layer normalization over row lengths around the 16-lane vectors,
row counts, inputs far from zero, with and without bias; Softmax against float64 and
onnxruntime, with infinities and NaNs; and the ones they do not take."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from conftest import onnxruntime_outputs

import sparsec
from sparsec import reference
from sparsec.context import make_context
from sparsec.irfile import parse_module
from sparsec.kernels import NormKey
from sparsec.model import Model
from sparsec.runtime.executor import Executor
from sparsec.runtime.jit import Target


def norm_model(shape: tuple[int, ...], axis: int, bias: bool, scale_size: int, epsilon: float, seed: int) -> Model:
    """x (shape, the first dimension dynamic) -> nn.layer_norm -> y."""
    dims = "x".join(["?", *map(str, shape[1:])])
    tensor = f"tensor<{dims}xf32>"
    lines = [f'  %s = nn.weight "s" : tensor<{scale_size}xf32>']
    operands, types = "%x, %s", f"{tensor}, tensor<{scale_size}xf32>"
    if bias:
        lines.append(f'  %b = nn.weight "b" : tensor<{scale_size}xf32>')
        operands, types = operands + ", %b", types + f", tensor<{scale_size}xf32>"
    lines.append(f"  %y = nn.layer_norm {operands} {{axis = {axis} : i64, epsilon = {epsilon:e} : f32}} : ({types}) -> {tensor}")
    text = f'func.func @main(%x: {tensor} {{sparsec.name = "x"}}) -> ({tensor} {{sparsec.name = "y"}}) {{\n' + "\n".join(lines) + f"\n  func.return %y : {tensor}\n}}\n"
    ctx = make_context()
    module = parse_module(text, ctx)
    rng = np.random.default_rng(seed)
    ctx.weights["s"] = rng.standard_normal(scale_size).astype(np.float32)
    if bias:
        ctx.weights["b"] = rng.standard_normal(scale_size).astype(np.float32)
    return Model(module, ctx)


@settings(max_examples=40, deadline=None)
@given(
    cols=st.sampled_from([1, 2, 15, 16, 17, 31, 32, 33, 100, 768]) | st.integers(1, 70),
    rows=st.integers(0, 5),
    bias=st.booleans(),
    broadcast_scale=st.booleans(),
    epsilon=st.sampled_from([1e-5, 1e-12, 0.5]),
    offset=st.sampled_from([0.0, 1000.0]),
    seed=st.integers(0, 2**16),
)
def test_layer_norm_kernel_matches_numpy(cols, rows, bias, broadcast_scale, epsilon, offset, seed):
    model = norm_model((rows, cols), -1, bias, 1 if broadcast_scale else cols, epsilon, seed)
    executor = Executor(model.module, model.weights, threads=1)
    assert len(executor.norms) == 1
    x = (np.random.default_rng(seed + 1).standard_normal((rows, cols)) + offset).astype(np.float32)
    # Against float64: far from zero, float32 sums lose digits in any order (numpy's
    # pairwise sums and the kernel's lanes err alike, up to 4e-4 at 1000 +- 1), and
    # the more so the closer together a row's values are (normalizing divides the
    # rounding of their mean by their spread: a row of 998.380 and 998.355 errs by 1e-3).
    wide = x.astype(np.float64)
    centered = wide - wide.mean(axis=-1, keepdims=True)
    scale = model.weights["s"].astype(np.float64)
    shift = model.weights["b"].astype(np.float64) if bias else 0.0
    truth = centered / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + np.float32(epsilon)) * scale + shift
    spread = min(1.0, float(x.std(axis=-1).min())) if rows and cols > 1 else 1.0
    tolerance = 4e-6 + 1e-6 * offset / max(spread, 1e-2)
    np.testing.assert_allclose(executor.run({"x": x})["y"], truth, rtol=1e-5, atol=tolerance)
    np.testing.assert_allclose(reference.run(model.module, model.weights, {"x": x})["y"], truth, rtol=1e-5, atol=tolerance)


def test_layer_norm_kernel_on_higher_rank_and_portable_target(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    model = norm_model((2, 3, 40), 2, True, 40, 1e-5, 3)
    x = np.random.default_rng(4).standard_normal((2, 3, 40)).astype(np.float32)
    expected = reference.run(model.module, model.weights, {"x": x})["y"]
    for target in (Target.host(), Target.portable()):
        executor = Executor(model.module, model.weights, threads=1, target=target)
        assert len(executor.norms) == 1
        np.testing.assert_allclose(executor.run({"x": x})["y"], expected, rtol=2e-4, atol=2e-4)


def test_layer_norm_over_more_than_the_last_axis_stays_in_numpy():
    model = norm_model((2, 3, 4), 1, True, 1, 1e-5, 5)
    executor = Executor(model.module, model.weights, threads=1)
    assert not executor.norms
    x = np.random.default_rng(6).standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(executor.run({"x": x})["y"], reference.run(model.module, model.weights, {"x": x})["y"], rtol=1e-6)


def softmax_model(path, shape: list[int], axis: int) -> Model:
    """x (shape) -> Softmax along `axis` -> y, as an ONNX file at `path`."""
    node = helper.make_node("Softmax", ["x"], ["y"], axis=axis, name="softmax")
    graph = helper.make_graph([node], "softmax", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return sparsec.load(path)


@settings(max_examples=40, deadline=None)
@given(
    cols=st.sampled_from([1, 2, 15, 16, 17, 33, 1000]) | st.integers(1, 70),
    leading=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    scale=st.sampled_from([1.0, 30.0]),
    seed=st.integers(0, 2**16),
)
def test_softmax_kernel_matches_float64_and_onnxruntime(tmp_path_factory, cols, leading, scale, seed):
    """The Softmax kernel (its exp Cephes' polynomial, within 1.3 ulp) against float64 and
    onnxruntime, on rows around the 16-lane vectors, of values spread enough (x 30) that
    some outputs underflow to zero."""
    shape = [*leading, cols]
    path = tmp_path_factory.mktemp("softmax") / "softmax.onnx"
    model = softmax_model(path, shape, -1)
    executor = Executor(model.module, model.weights, threads=1)
    assert [norm.key for norm in executor.norms.values()] == [NormKey(cols, "softmax")]
    x = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
    got = executor.run({"x": x})["y"]
    # float64 from x - max as float32 computes it: that rounding alone moves e^(x - max)
    # by up to |x - max| x 6e-8 (2e-6 at -40), which no exp can make up for.
    wide = np.exp((x - x.max(axis=-1, keepdims=True)).astype(np.float64))
    np.testing.assert_allclose(got, wide / wide.sum(axis=-1, keepdims=True), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(got, onnxruntime_outputs(path, {"x": x})["y"], rtol=1e-5, atol=1e-7)


def test_softmax_kernel_on_special_values_and_portable_target(tmp_path, monkeypatch):
    """-inf gives 0, a row with +inf or NaN is NaN throughout, a row all -inf is NaN,
    as numpy has them; on the host and the portable target."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    model = softmax_model(tmp_path / "softmax.onnx", [5, 21], -1)
    x = np.random.default_rng(9).standard_normal((5, 21)).astype(np.float32)
    x[0, 3], x[1, 20], x[2, 0], x[3] = -np.inf, np.inf, np.nan, -np.inf
    with np.errstate(invalid="ignore"):
        expected = reference.run(model.module, model.weights, {"x": x})["y"]
    for target in (Target.host(), Target.portable()):
        executor = Executor(model.module, model.weights, threads=1, target=target)
        assert len(executor.norms) == 1
        got = executor.run({"x": x})["y"]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        assert got[0, 3] == 0 and np.isnan(got[1:4]).all()
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-30)


@pytest.mark.parametrize("axis", [0, 1])
def test_softmax_over_another_axis_stays_in_numpy(tmp_path, axis):
    model = softmax_model(tmp_path / "softmax.onnx", [3, 4, 5], axis)
    executor = Executor(model.module, model.weights, threads=1)
    assert not executor.norms
    x = np.random.default_rng(6).standard_normal((3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(executor.run({"x": x})["y"], onnxruntime_outputs(tmp_path / "softmax.onnx", {"x": x})["y"], rtol=1e-5)


@pytest.fixture(scope="module")
def attention_softmax(tmp_path_factory):
    """A Softmax over the last axis of scores (batch, heads, sequence, sequence) whose
    sequence is given at run time, as attention has it."""
    path = tmp_path_factory.mktemp("attention") / "softmax.onnx"
    return path, softmax_model(path, [1, 3, "sequence", "sequence"], -1)


def test_softmax_over_an_axis_given_at_run_time_compiles_per_row_length(attention_softmax):
    """A kernel for each row length the run meets, compiled on its first use; rows
    past a cache line's start read in place."""
    path, model = attention_softmax
    executor = Executor(model.module, model.weights, threads=1)
    assert [norm.key for norm in executor.norms.values()] == [None]
    for sequence in (1, 17, 384, 17):
        x = (np.random.default_rng(sequence).standard_normal((1, 3, sequence, sequence)) * 10).astype(np.float32)
        got = executor.run({"x": x})["y"]
        np.testing.assert_allclose(got, onnxruntime_outputs(path, {"x": x})["y"], rtol=1e-5, atol=1e-7)
    assert {"softmax_f32_1", "softmax_f32_17", "softmax_f32_384"} <= set(executor.variants)
    assert executor._runs_as(executor.steps[0]) == "softmax kernel"
    assert all(call.input is None for call in executor.steps[0].calls.values())  # read in place: no staged copy


def test_softmax_of_rows_of_no_values_is_an_error(attention_softmax):
    _, model = attention_softmax
    executor = Executor(model.module, model.weights, threads=1)
    with pytest.raises(sparsec.errors.ExecutionError, match=r"'nn.softmax' cannot run on inputs of shapes \(1, 3, 0, 0\): a Softmax of rows of no values"):
        executor.run({"x": np.zeros((1, 3, 0, 0), np.float32)})


def test_softmax_of_many_rows_splits_over_threads_and_reads_views_staged(attention_softmax):
    """12 heads of 128 x 128 scores are worth two threads; a transposed view of them
    is not rows in one block, so the call copies it first."""
    path, model = attention_softmax
    executor = Executor(model.module, model.weights, threads=2)
    try:
        x = np.random.default_rng(3).standard_normal((1, 3, 256, 256)).astype(np.float32)
        view = np.swapaxes(x, 2, 3)
        for scores in (x, view):
            got = executor.run({"x": scores})["y"]
            np.testing.assert_allclose(got, onnxruntime_outputs(path, {"x": np.ascontiguousarray(scores)})["y"], rtol=1e-5, atol=1e-7)
        call = executor.steps[0].calls[x.shape]
        assert call.shares.threads == 2 and call.input is not None  # the view was staged
    finally:
        executor.close()
