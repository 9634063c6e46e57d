"""The layer normalization kernel (runtime/codegen/norm.py) against the reference
interpreter's numpy, over row lengths around the 16-lane vectors, row counts, inputs
far from zero, with and without bias; and the layer normalizations it does not take."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsec import reference
from sparsec.context import make_context
from sparsec.irfile import parse_module
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
