"""Properties of the pruning passes over every eligible layout, pattern and shape.

Each example builds a one-layer module whose weight sits in one of the layouts sparsec
prunes (Gemm trans_b 0/1, MatMul right/left, Conv 1d/2d/3d, grouped Conv), runs the
pass, and checks the invariant in the (out, in, *kernel) view.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsec
from sparsec.context import make_context
from sparsec.dialects.nn import WeightOp
from sparsec.dialects.sparse import PatternKind
from sparsec.irfile import parse_module
from sparsec.model import Model
from conftest import onnxruntime_outputs, random_feeds


@dataclass(frozen=True)
class Layout:
    name: str
    rank: int

    def stored_shape(self, canonical: tuple[int, ...], group: int) -> tuple[int, ...]:
        if self.name in ("gemm_t0", "matmul_right"):
            return (canonical[1], canonical[0])
        return canonical

    def module_text(self, shape: tuple[int, ...], canonical: tuple[int, ...], group: int) -> str:
        w = "x".join(map(str, shape))
        out, inp = canonical[0], canonical[1]
        match self.name:
            case "gemm_t1" | "gemm_t0":
                trans = 1 if self.name == "gemm_t1" else 0
                body = f"%y = nn.gemm %x, %w {{trans_b = {trans} : i64}} : (tensor<2x{inp}xf32>, tensor<{w}xf32>) -> tensor<2x{out}xf32>"
                x, y = f"tensor<2x{inp}xf32>", f"tensor<2x{out}xf32>"
            case "matmul_right":
                body = f"%y = nn.matmul %x, %w : (tensor<2x{inp}xf32>, tensor<{w}xf32>) -> tensor<2x{out}xf32>"
                x, y = f"tensor<2x{inp}xf32>", f"tensor<2x{out}xf32>"
            case "matmul_left":
                body = f"%y = nn.matmul %w, %x : (tensor<{w}xf32>, tensor<{inp}x2xf32>) -> tensor<{out}x2xf32>"
                x, y = f"tensor<{inp}x2xf32>", f"tensor<{out}x2xf32>"
            case _:
                kernel = canonical[2:]
                spatial = "x".join(str(k + 2) for k in kernel)
                out_spatial = "x".join("3" for _ in kernel)
                x, y = f"tensor<1x{inp * group}x{spatial}xf32>", f"tensor<1x{out}x{out_spatial}xf32>"
                body = f"%y = nn.conv %x, %w {{group = {group} : i64}} : ({x}, tensor<{w}xf32>) -> {y}"
        return (
            f"func.func @main(%x: {x}) -> {y} {{\n"
            f'  %w = nn.weight "w" : tensor<{w}xf32>\n  {body}\n  func.return %y : {y}\n}}\n'
        )

    def canonical(self, stored: np.ndarray) -> np.ndarray:
        return stored.T if self.name in ("gemm_t0", "matmul_right") else stored


LAYOUTS = [
    Layout("gemm_t1", 2),
    Layout("gemm_t0", 2),
    Layout("matmul_right", 2),
    Layout("matmul_left", 2),
    Layout("conv1d", 3),
    Layout("conv2d", 4),
    Layout("conv3d", 5),
    Layout("conv2d_grouped", 4),
]


def prune(layout: Layout, canonical_weight: np.ndarray, pipeline: str, group: int = 1) -> tuple[np.ndarray, WeightOp]:
    stored = layout.canonical(canonical_weight).copy() if layout.name in ("gemm_t0", "matmul_right") else canonical_weight
    ctx = make_context()
    module = parse_module(layout.module_text(stored.shape, canonical_weight.shape, group), ctx)
    ctx.weights["w"] = stored
    model = Model(module, ctx)
    model.apply(pipeline)
    op = next(o for o in module.walk() if isinstance(o, WeightOp))
    return layout.canonical(model.weights["w"]), op


def canonical_shapes(rank: int) -> st.SearchStrategy[tuple[int, ...]]:
    dims = [st.integers(1, 24), st.integers(1, 24)] + [st.integers(1, 3)] * (rank - 2)
    return st.tuples(*dims)


@st.composite
def weights(draw, rank: int, zero_fraction: bool = True) -> np.ndarray:
    shape = draw(canonical_shapes(rank))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    values = rng.choice(np.array([-2.0, -1.0, 0.5, 1.0, 3.0], np.float32), size=shape) if draw(st.booleans()) else rng.standard_normal(shape).astype(np.float32)
    if zero_fraction and draw(st.booleans()):
        values[rng.random(shape) < 0.3] = 0.0
    return values


layouts = st.sampled_from(LAYOUTS)


@settings(max_examples=60, deadline=None)
@given(layouts, st.data(), st.floats(0.0, 1.0))
def test_unstructured_prunes_exactly_the_requested_count(layout: Layout, data, sparsity: float):
    weight = data.draw(weights(layout.rank))
    pruned, op = prune(layout, weight, f"prune-magnitude{{sparsity={sparsity!r} min-elements=0}}")
    target = math.floor(sparsity * weight.size)
    assert int((pruned == 0).sum()) == max(target, int((weight == 0).sum()))
    kept = pruned != 0
    assert np.array_equal(pruned[kept], weight[kept])
    if target > 0 and kept.any() and (pruned == 0).any():
        assert np.abs(weight[~kept]).max() <= np.abs(weight[kept]).min()
    assert op.sparsity is not None and op.sparsity.pattern_kind is PatternKind.UNSTRUCTURED


def runs_along(array: np.ndarray, axis: int, length: int) -> np.ndarray:
    moved = np.moveaxis(array, axis, -1)
    size = moved.shape[-1]
    padded = math.ceil(size / length) * length
    moved = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, padded - size)], constant_values=np.nan)
    return moved.reshape(-1, length)


@settings(max_examples=60, deadline=None)
@given(layouts, st.data(), st.integers(1, 8))
def test_nm_invariant_holds_in_every_run(layout: Layout, data, m: int):
    n = data.draw(st.integers(0, m))
    weight = data.draw(weights(layout.rank))
    pruned, op = prune(layout, weight, f"prune-magnitude{{pattern=nm n={n} m={m} min-elements=0}}")
    if m > weight.shape[1] / 2:  # coremltools leaves such layers dense
        assert np.array_equal(pruned, weight) and op.sparsity is None
        return
    runs = runs_along(pruned, 1, m)
    padding = np.isnan(runs).sum(axis=1)
    zeros = (runs == 0).sum(axis=1)
    assert np.all(zeros + padding >= n)
    original = runs_along(weight, 1, m)
    # Only the n smallest of each run may go: anything kept is at least as large as anything pruned.
    for before, after in zip(original, runs):
        real = ~np.isnan(before)
        gone = real & (after == 0) & (before != 0)
        kept = real & (after != 0)
        if gone.any() and kept.any():
            assert np.abs(before[gone]).max() <= np.abs(before[kept]).min()
    assert op.sparsity is not None and (op.sparsity.n.data, op.sparsity.m.data) == (n, m)


@settings(max_examples=60, deadline=None)
@given(layouts, st.data(), st.integers(2, 8), st.floats(0.0, 1.0))
def test_block_prunes_whole_blocks(layout: Layout, data, block: int, sparsity: float):
    weight = data.draw(weights(layout.rank))
    pruned, op = prune(layout, weight, f"prune-magnitude{{pattern=block block-size={block} sparsity={sparsity!r} min-elements=0}}")
    if block > weight.shape[0] / 2:
        assert np.array_equal(pruned, weight) and op.sparsity is None
        return
    before, after = runs_along(weight, 0, block), runs_along(pruned, 0, block)
    touched = np.nansum(np.abs(before - after), axis=1) > 0
    assert np.all(np.nan_to_num(after[touched]) == 0)  # a changed block is entirely zero
    zero_blocks = np.all(np.nan_to_num(after) == 0, axis=1)
    target = math.floor(sparsity * len(before))
    assert zero_blocks.sum() >= target
    assert zero_blocks.sum() == max(target, int(np.all(np.nan_to_num(before) == 0, axis=1).sum()))


@settings(max_examples=40, deadline=None)
@given(layouts, st.data(), st.sampled_from(["unstructured", "block", "nm"]))
def test_pruning_twice_changes_nothing(layout: Layout, data, pattern: str):
    weight = data.draw(weights(layout.rank))
    options = {
        "unstructured": "sparsity=0.6",
        "block": "pattern=block block-size=2 sparsity=0.6",
        "nm": "pattern=nm n=2 m=4",
    }[pattern]
    pipeline = f"prune-magnitude{{{options} min-elements=0}}"
    once, _ = prune(layout, weight, pipeline)
    twice, _ = prune(layout, once, pipeline)
    assert np.array_equal(once, twice)


@pytest.mark.parametrize("group", [2, 4])
def test_grouped_conv_nm_runs_stay_inside_the_group_weight(group: int):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    pruned, op = prune(Layout("conv2d_grouped", 4), weight, "prune-magnitude{pattern=nm n=2 m=4 min-elements=0}", group)
    assert (runs_along(pruned, 1, 4) == 0).sum(axis=1).min() >= 2
    assert str(op.sparsity) == "#sparse.pattern<nm 2:4, axis = 1>"


def test_pruned_light_model_still_runs():
    model = sparsec.load(Path(onnx.__file__).parent / "backend/test/data/light/light_squeezenet.onnx")
    model.apply("prune-magnitude{pattern=nm n=2 m=4}")
    pruned = [op for op in model.module.walk() if isinstance(op, WeightOp) and op.sparsity is not None]
    assert len(pruned) > 10
    outputs = model.run(random_feeds(model))
    assert np.isfinite(next(iter(outputs.values()))).all()


def test_pruned_model_exports_to_onnx_that_onnxruntime_runs(model_path, tmp_path):
    model = sparsec.load(model_path("mlp"))
    model.apply("prune-magnitude{sparsity=0.5 min-elements=0}")
    model.save(tmp_path / "pruned.onnx")
    feeds = random_feeds(model)
    ours = model.run(feeds)
    theirs = onnxruntime_outputs(tmp_path / "pruned.onnx", feeds)
    np.testing.assert_allclose(ours["probs"], theirs["probs"], rtol=1e-4, atol=1e-5)
    again = sparsec.load(tmp_path / "pruned.onnx")
    assert (again.weights["w1"] == 0).mean() == 0.5


def test_pruning_100m_parameters_takes_under_10_seconds():
    rng = np.random.default_rng(0)
    layers, width = 4, 5000
    ctx = make_context()
    lines, previous = [], "%x"
    for i in range(layers):
        ctx.weights[f"w{i}"] = rng.standard_normal((width, width), dtype=np.float32)
        lines.append(f'  %w{i} = nn.weight "w{i}" : tensor<{width}x{width}xf32>')
        lines.append(
            f"  %h{i} = nn.gemm {previous}, %w{i} {{trans_b = 1 : i64}} : "
            f"(tensor<?x{width}xf32>, tensor<{width}x{width}xf32>) -> tensor<?x{width}xf32>"
        )
        previous = f"%h{i}"
    text = (
        f"func.func @main(%x: tensor<?x{width}xf32>) -> tensor<?x{width}xf32> {{\n"
        + "\n".join(lines)
        + f"\n  func.return {previous} : tensor<?x{width}xf32>\n}}\n"
    )
    model = Model(parse_module(text, ctx), ctx)
    for pipeline in ("prune-magnitude{sparsity=0.75}", "prune-magnitude{pattern=nm n=3 m=4}",
                     "prune-magnitude{pattern=block block-size=16 sparsity=0.75}"):
        start = time.perf_counter()
        model.clone().apply(pipeline)
        seconds = time.perf_counter() - start
        print(f"{pipeline}: {seconds:.2f} s")
        assert seconds < 10, pipeline
