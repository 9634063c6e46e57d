"""nn.attention: the kernel (runtime/codegen/attention.py) against float64 numpy over
shapes, grouped heads, masks, strides and threads; fuse-attention on an exported
attention against onnxruntime; the ONNX written back (also with grouped heads) runs
in onnxruntime."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import models
import sparsec
from conftest import onnxruntime_outputs
from sparsec.context import make_context
from sparsec.export.onnx import export_model
from sparsec.irfile import parse_module
from sparsec.model import Model
from sparsec.runtime.executor import Executor

MASKS = ("none", "keys", "rows", "full", "matrix")
"""Mask shapes: none, (B, 1, 1, T) (padding), (1, 1, S, T) (causal), (B, H, S, T), (S, T)."""


def attention_model(heads: int, key_heads: int, depth: int, value_depth: int, mask: str, scale: float, nan_to_zero: bool = False) -> Model:
    """One nn.attention on inputs q, kt, v (and m) of dynamic batch and lengths."""
    mask_type = {"keys": "?x1x1x?", "rows": "1x1x?x?", "full": f"?x{heads}x?x?", "matrix": "?x?"}.get(mask)
    types = [f"tensor<?x{heads}x?x{depth}xf32>", f"tensor<?x{key_heads}x{depth}x?xf32>", f"tensor<?x{key_heads}x?x{value_depth}xf32>"]
    names = ["q", "kt", "v"]
    if mask_type is not None:
        types.append(f"tensor<{mask_type}xf32>")
        names.append("m")
    result = f"tensor<?x{heads}x?x{value_depth}xf32>"
    arguments = ", ".join(f'%{name}: {t} {{sparsec.name = "{name}"}}' for name, t in zip(names, types))
    text = f"""func.func @main({arguments}) -> ({result} {{sparsec.name = "y"}}) {{
  %y = nn.attention {", ".join("%" + name for name in names)} {{scale = {scale} : f32, nan_rows_to_zero = {int(nan_to_zero)} : i64}} : ({", ".join(types)}) -> {result}
  func.return %y : {result}
}}"""
    ctx = make_context()
    return Model(parse_module(text, ctx), ctx)


def float64_attention(q, kt, v, mask, scale) -> np.ndarray:
    heads = q.shape[1]
    kt, v = (np.repeat(t, heads // t.shape[1], axis=1) for t in (kt, v))
    scores = (q.astype(np.float64) @ kt) * scale + (0.0 if mask is None else mask)
    powers = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (powers / powers.sum(axis=-1, keepdims=True)) @ v.astype(np.float64)


DEAD = ("scattered", "causal", "padded")
"""Where a mask's dead keys (float32's lowest, as PyTorch's exports write -inf) lie: a
fifth of them anywhere, after each row's position (keys offset so the last row sees
them all), or before a random first key per batch; a row left no live key takes
float32's rounding (every score the same) where float64 keeps the scores apart, so
causal and padded masks leave each row one."""


def dead_keys(rng, shape, dead: str) -> np.ndarray:
    """A boolean `shape` (..., S, T): True where the mask's key is dead (DEAD)."""
    queries, keys = shape[-2:]
    if dead == "causal":
        return np.arange(keys) > np.arange(queries)[:, None] + max(0, keys - queries)
    if dead == "padded":
        return np.arange(keys) < rng.integers(0, keys, shape[:-2] + (1, 1))
    return rng.random(shape) < 0.2


def feeds_for(rng, batch, heads, key_heads, queries, keys, depth, value_depth, mask, transposed_keys, dead="scattered"):
    q = rng.standard_normal((batch, heads, queries, depth)).astype(np.float32)
    k = rng.standard_normal((batch, key_heads, keys, depth)).astype(np.float32)
    kt = k.transpose(0, 1, 3, 2) if transposed_keys else np.ascontiguousarray(k.transpose(0, 1, 3, 2))
    feeds = {"q": q, "kt": kt, "v": rng.standard_normal((batch, key_heads, keys, value_depth)).astype(np.float32)}
    shape = {"keys": (batch, 1, 1, keys), "rows": (1, 1, queries, keys), "full": (batch, heads, queries, keys), "matrix": (queries, keys)}.get(mask)
    if shape is not None:
        feeds["m"] = np.where(np.broadcast_to(dead_keys(rng, shape, dead), shape), np.float32(-3.4e38), rng.standard_normal(shape)).astype(np.float32)
    return feeds


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 2),
    st.sampled_from([(1, 1), (2, 2), (4, 2), (4, 1), (3, 3)]),
    st.integers(1, 40),
    st.integers(1, 50),
    st.sampled_from([1, 8, 16, 20, 64]),
    st.sampled_from([8, 16, 24, 64]),
    st.sampled_from(MASKS),
    st.sampled_from(DEAD),
    st.sampled_from([1.0, 0.125]),
    st.booleans(),
    st.booleans(),
    st.integers(0, 99),
)
def test_kernel_matches_float64(batch, heads_pair, queries, keys, depth, value_depth, mask, dead, scale, transposed_keys, nan_to_zero, seed):
    """Every (batch, head, row block) unit, rows in twos and one, whole and partial key
    blocks, the key blocks no row of a pair needs skipped (causal and padding masks),
    keys read in place through a transposed view or contiguous, on one and two
    threads: within 2e-5 of float64 (the online Softmax sums in another order)."""
    heads, key_heads = heads_pair
    model = attention_model(heads, key_heads, depth, value_depth, mask, scale, nan_to_zero)
    feeds = feeds_for(np.random.default_rng(seed), batch, heads, key_heads, queries, keys, depth, value_depth, mask, transposed_keys, dead)
    expected = float64_attention(feeds["q"], feeds["kt"], feeds["v"], feeds.get("m"), scale)
    for threads in (1, 2):
        executor = Executor(model.module, model.weights, threads=threads)
        got = executor.run(feeds)["y"]
        assert executor._runs_as(executor.steps[0]) == "attention kernel"
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)
        executor.close()


@pytest.mark.parametrize("nan_to_zero", [False, True], ids=["nan", "zero"])
def test_rows_masked_out_entirely_give_nan_or_zeros_as_numpy_does(nan_to_zero):
    """A row whose every score is -inf, or with a NaN among its queries: 0 / 0 in the
    kernel as in the five ops, or zeros with nan_rows_to_zero (scaled_dot_product_
    attention's IsNaN and Where); rows with some keys left compute as usual, however
    many blocks of -inf come first."""
    model = attention_model(1, 1, 16, 16, "rows", 1.0, nan_to_zero)
    rng = np.random.default_rng(3)
    feeds = feeds_for(rng, 1, 1, 1, 4, 40, 16, 16, "none", False)
    feeds["m"] = np.zeros((1, 1, 4, 40), np.float32)
    feeds["m"][0, 0, 0] = -np.inf
    feeds["m"][0, 0, 1, :35] = -np.inf
    feeds["q"][0, 0, 3, 5] = np.nan
    got = Executor(model.module, model.weights, threads=1).run(feeds)["y"]
    with np.errstate(invalid="ignore"):
        expected = model.run(feeds)["y"]
    for row in (0, 3):
        assert (got[0, 0, row] == 0).all() if nan_to_zero else np.isnan(got[0, 0, row]).all()
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)  # NaN where NaN


def test_keys_dead_for_a_pair_of_rows_are_never_read():
    """Causal and padding masks: the key blocks outside the rows' live span (their mask
    at float32's lowest, as PyTorch exports -inf) are skipped, not computed to weigh 0,
    so NaN keys and values there leave the rows as the live keys alone make them."""
    model = attention_model(2, 2, 16, 16, "full", 1.0)
    rng = np.random.default_rng(5)
    feeds = feeds_for(rng, 1, 2, 2, 40, 80, 16, 16, "none", False)
    live = np.zeros((1, 2, 40, 80), bool)
    live[0, 0, :, 16:48] = True  # head 0: keys 16 to 47 for every row
    live[0, 1] = np.arange(80) <= np.arange(40)[:, None]  # head 1: causal, keys 0 to 39 at most
    feeds["m"] = np.where(live, np.float32(0.0), np.float32(-3.4e38))
    expected = float64_attention(feeds["q"], feeds["kt"], feeds["v"], feeds["m"], 1.0)
    feeds["kt"][0, 0, :, :16] = feeds["kt"][0, 0, :, 48:] = np.nan
    feeds["v"][0, 0, :16] = feeds["v"][0, 0, 48:] = np.nan
    feeds["kt"][0, 1, :, 48:] = feeds["v"][0, 1, 48:] = np.nan
    for threads in (1, 2):
        got = Executor(model.module, model.weights, threads=threads).run(feeds)["y"]
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


def test_a_call_on_the_same_arrays_reads_their_new_values():
    """The kernel call is made once for the operand arrays it meets (`_NativeCall`):
    later runs on the same arrays, their values changed in place, read the new values,
    keys given as a transposed view copied again each run (into an array on a cache
    line)."""
    model = attention_model(2, 2, 16, 16, "keys", 0.25)
    executor = Executor(model.module, model.weights, threads=1)
    rng = np.random.default_rng(8)
    feeds = feeds_for(rng, 1, 2, 2, 20, 24, 16, 16, "keys", True)
    for _ in range(3):
        got = executor.run(feeds)["y"]
        np.testing.assert_allclose(got, float64_attention(feeds["q"], feeds["kt"], feeds["v"], feeds["m"], 0.25), rtol=2e-5, atol=2e-5)
        for name in ("q", "kt", "v"):
            feeds[name][...] = rng.standard_normal(feeds[name].shape)
    copies = executor.steps[0].native.last.copies  # pyright: ignore
    assert copies and all(copy.ctypes.data % 64 == 0 for _, copy in copies)  # kt read from a copy on a cache line


def repeated_heads_model() -> Model:
    """An attention whose 4 query heads read 2 key and value heads repeated as the
    exporters' repeat_kv does (Unsqueeze at axis 2, Expand to s5, Reshape to s4; keys
    then transposed), the shapes given as inputs."""
    text = """func.func @main(%q: tensor<?x4x?x16xf32> {sparsec.name = "q"}, %k: tensor<?x2x?x16xf32> {sparsec.name = "k"}, %v: tensor<?x2x?x16xf32> {sparsec.name = "v"}, %s5: tensor<5xi64> {sparsec.name = "s5"}, %s4: tensor<4xi64> {sparsec.name = "s4"}) -> (tensor<?x4x?x16xf32> {sparsec.name = "y"}) {
  %ku = nn.unsqueeze %k {axes = array<i64: 2>} : (tensor<?x2x?x16xf32>) -> tensor<?x2x1x?x16xf32>
  %ke = nn.expand %ku, %s5 : (tensor<?x2x1x?x16xf32>, tensor<5xi64>) -> tensor<?x?x?x?x16xf32>
  %kr = nn.dynamic_reshape %ke, %s4 : (tensor<?x?x?x?x16xf32>, tensor<4xi64>) -> tensor<?x?x?x16xf32>
  %kt = nn.transpose %kr {perm = array<i64: 0, 1, 3, 2>} : (tensor<?x?x?x16xf32>) -> tensor<?x?x16x?xf32>
  %vu = nn.unsqueeze %v {axes = array<i64: 2>} : (tensor<?x2x?x16xf32>) -> tensor<?x2x1x?x16xf32>
  %ve = nn.expand %vu, %s5 : (tensor<?x2x1x?x16xf32>, tensor<5xi64>) -> tensor<?x?x?x?x16xf32>
  %vr = nn.dynamic_reshape %ve, %s4 : (tensor<?x?x?x?x16xf32>, tensor<4xi64>) -> tensor<?x?x?x16xf32>
  %y = nn.attention %q, %kt, %vr {scale = 0.25 : f32, nan_rows_to_zero = 0 : i64} : (tensor<?x4x?x16xf32>, tensor<?x?x16x?xf32>, tensor<?x?x?x16xf32>) -> tensor<?x4x?x16xf32>
  func.return %y : tensor<?x4x?x16xf32>
}"""
    ctx = make_context()
    return Model(parse_module(text, ctx), ctx)


@pytest.mark.parametrize("threads", [1, 2])
def test_repeated_heads_are_read_as_groups(threads):
    """The attention kernel reads the 2 key and value heads as groups of 2 query heads
    where the run's shapes make the put-off Expand and Reshape repeat each head
    (Executor._grouped_operand): no Expand runs, and the output is within 2e-5 of
    float64's on the repeated heads. Shapes that also broadcast the batch run the
    put-off steps."""
    model = repeated_heads_model()
    executor = Executor(model.module, model.weights, threads=threads)
    rng = np.random.default_rng(6)
    evaluated, evaluate = [], Executor._evaluate

    def evaluate_noted(self, step, env):
        evaluated.append(step.op.name)
        evaluate(self, step, env)

    for batch, key_batch in ((1, 1), (2, 2), (2, 1)):
        q = rng.standard_normal((batch, 4, 40, 16)).astype(np.float32)
        k, v = (rng.standard_normal((key_batch, 2, 40, 16)).astype(np.float32) for _ in range(2))
        feeds = {"q": q, "k": k, "v": v, "s5": np.array([batch, 2, 2, 40, 16]), "s4": np.array([batch, 4, 40, 16])}
        evaluated.clear()
        with mock.patch.object(Executor, "_evaluate", evaluate_noted):
            got = executor.run(feeds)["y"]
        assert ("nn.expand" in evaluated) == (key_batch != batch)
        repeated = {name: np.repeat(np.broadcast_to(feeds[name], (batch, 2, 40, 16)), 2, axis=1) for name in ("k", "v")}
        np.testing.assert_allclose(got, float64_attention(q, repeated["k"].transpose(0, 1, 3, 2), repeated["v"], None, 0.25), rtol=2e-5, atol=2e-5)
    executor.close()


@pytest.fixture
def bert_attention(tmp_path):
    """models.attention (BERT's, the scale a Div) compiled with fuse-attention."""
    path = models.save("attention", tmp_path / "attention.onnx")
    model = sparsec.load(path)
    model.apply("fuse-attention")
    return path, model


def test_exported_attention_fuses_and_matches_onnxruntime(bert_attention, tmp_path):
    """The Div, Softmax and two MatMuls become one nn.attention with scale 1/2, run
    by the kernel at 1, 7 and 70 tokens, and export back to ONNX as five ops that
    onnxruntime runs to the same values."""
    path, model = bert_attention
    (attention,) = [op for op in model.module.walk() if op.name == "nn.attention"]
    assert attention.scale.value.data == 0.5  # pyright: ignore
    assert not [op for op in model.module.walk() if op.name in ("nn.softmax", "nn.div")]
    exported = tmp_path / "back.onnx"
    onnx.save(export_model(model.module, model.weights), str(exported))
    executor = Executor(model.module, model.weights, threads=2)
    for sequence in (1, 7, 70):
        x = np.random.default_rng(sequence).standard_normal((2, sequence, 8)).astype(np.float32)
        expected = onnxruntime_outputs(path, {"x": x})["out"]
        np.testing.assert_allclose(executor.run({"x": x})["out"], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(onnxruntime_outputs(exported, {"x": x})["out"], expected, rtol=1e-5, atol=1e-5)
    assert "attention kernel" in executor.generated_kernels()


def test_mpnet_position_bias_and_mask_become_one_mask(tmp_path):
    """MPNet's export adds its relative position bias, then the mask, to the scores:
    each layer's attention fuses with one mask, the two terms' sum, built once for
    both layers (the encoder computes the terms, every layer adds the same), and the
    compiled model runs the kernel to onnxruntime's values, padding included."""
    path = Path(__file__).parent.parent / "exports" / "mpnet_torchscript_17.onnx"
    model = sparsec.load(path)
    model.apply("fuse-attention")
    attentions = [op for op in model.module.walk() if op.name == "nn.attention"]
    assert len(attentions) == 2 and not [op for op in model.module.walk() if op.name == "nn.softmax"]
    (mask,) = {op.operands[3] for op in attentions}
    assert mask.owner.name == "nn.add" and len(list(mask.uses)) == 2  # pyright: ignore
    executor = Executor(model.module, model.weights, threads=2)
    for batch, sequence in [(1, 1), (2, 9), (3, 40)]:
        rng = np.random.default_rng(sequence)
        padding = np.ones((batch, sequence), np.int64)
        padding[-1, (sequence + 1) // 2 :] = 0
        feeds = {"input_ids": rng.integers(0, 128, (batch, sequence)), "attention_mask": padding}
        expected = onnxruntime_outputs(path, feeds)
        for name, got in executor.run(feeds).items():
            np.testing.assert_allclose(got, expected[name], rtol=1e-5, atol=2e-6, err_msg=f"{name} at {batch}x{sequence}")
    assert "attention kernel" in executor.generated_kernels()
    executor.close()


def test_grouped_heads_export_to_onnx_and_run_in_onnxruntime(tmp_path):
    """Key and value heads shared by two query heads each are repeated to the queries'
    (Unsqueeze, Expand, Reshape) in the ONNX written back; NaN rows set to 0 by IsNaN
    and Where."""
    model = attention_model(4, 2, 8, 16, "keys", 0.5, nan_to_zero=True)
    path = tmp_path / "gqa.onnx"
    onnx.save(export_model(model.module, model.weights), str(path))
    feeds = feeds_for(np.random.default_rng(5), 2, 4, 2, 5, 9, 8, 16, "keys", False)
    feeds["m"][1] = -np.inf  # the second batch's rows all masked out: zeros
    with np.errstate(invalid="ignore"):
        expected = np.nan_to_num(float64_attention(feeds["q"], feeds["kt"], feeds["v"], feeds["m"], 0.5), nan=0.0)
    np.testing.assert_allclose(onnxruntime_outputs(path, feeds)["y"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.run(feeds)["y"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(Executor(model.module, model.weights, threads=1).run(feeds)["y"], expected, rtol=1e-5, atol=1e-5)


def test_one_query_against_one_key_runs_in_the_kernel():
    """However small, an attention runs as the kernel (in a model's run its one call
    costs less than numpy's dozen): one query against one key, and 32 against 32,
    each shape its own plan in one executor."""
    model = attention_model(2, 2, 64, 64, "keys", 0.125)
    executor = Executor(model.module, model.weights, threads=1)
    rng = np.random.default_rng(6)
    for length in (1, 32):
        feeds = feeds_for(rng, 1, 2, 2, length, length, 64, 64, "keys", False)
        np.testing.assert_allclose(executor.run(feeds)["y"], float64_attention(feeds["q"], feeds["kt"], feeds["v"], feeds["m"], 0.125), rtol=2e-5, atol=2e-5)
        (plan,) = [plan for found, plan in executor.steps[0].native.plans.items() if found[0][0][2] == length]  # pyright: ignore
        assert plan is not None