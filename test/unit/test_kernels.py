"""Generated kernels against numpy, over random shapes, patterns, layouts and epilogues;
the JIT's disk cache and its portable target."""

from __future__ import annotations

import ctypes
import dataclasses
import math
import mmap
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llvmlite.binding as llvm
from xdsl.backend.llvm.convert import convert_module
from xdsl.dialects.builtin import ModuleOp, f32, i8, i32, i64

from sparsec.context import make_context
from sparsec.dialects.kernel_ops import SparseMatMulOp
from sparsec.irfile import parse_module
from sparsec.model import Model
from sparsec.runtime.codegen.builder import PTR, FunctionBuilder, vector
from sparsec.runtime.codegen.kernels import explicit_vectors, kernel_module
from sparsec.kernels import BLOCK_BATCHED_FROM, GATHER_SPAN, LANE_PLANES_MAX_FLOATS, SMALL_BATCHED_FROM, SMALL_WEIGHT, WIDE_WINDOW_SPAN, WINDOW_ALIGN, WINDOW_SPAN, KernelKey, TransposeKey, padded_batch
from sparsec.runtime.executor import SIDE_BY_SIDE_ALL_BELOW, Executor, all_kernel_keys, kernel_keys
from sparsec.runtime import operands
from sparsec.runtime.codegen import builder as codegen_builder
from sparsec.runtime import jit as jit_module
from sparsec.runtime.jit import Target, compile_kernels, compile_llvm_ir, fingerprint_sources
from sparsec.runtime.operands import _chunks, _with_slack

SIZES = st.sampled_from([1, 3, 16, 17, 64, 130, 256, 1000]) | st.integers(1, 40)
ACTIVATIONS = st.sampled_from(["none", "relu", "gelu", "gelu_tanh", "swish"])  # fused into the kernel's epilogue
BATCHES = st.just(1) | st.integers(1, 9) | st.sampled_from([12, 17, 33])  # from 4 to 13 rows on, bitmask, n:m and narrow blocks run batched
PATTERNS = st.sampled_from(
    [
        "pattern=unstructured sparsity=0.0",
        "pattern=unstructured sparsity=0.5",  # the mask kernel at batch 1
        "pattern=unstructured sparsity=0.75",
        "pattern=unstructured sparsity=0.97",  # with 0.75 and 1.0: the chunk variants at batch 1
        "pattern=unstructured sparsity=1.0",
        "pattern=nm n=2 m=4",
        "pattern=nm n=3 m=4",
        "pattern=nm n=1 m=8",
        "pattern=nm n=7 m=8",
        "pattern=nm n=1 m=2",
        "pattern=nm n=7 m=16",
        "pattern=nm n=12 m=16",
        "pattern=block block-size=2 sparsity=0.6",
        "pattern=block block-size=4 sparsity=0.5",
        "pattern=block block-size=16 sparsity=0.75",
    ]
)


def layer_text(rows: int, cols: int, matmul: bool, bias: bool, activation: str) -> str:
    """A Gemm (or MatMul + Add) layer, then `activation`: none, relu, gelu, gelu_tanh
    (GELU's tanh approximation) or swish."""
    weight_shape = f"{cols}x{rows}" if matmul else f"{rows}x{cols}"
    lines = [f'  %w = nn.weight "w" : tensor<{weight_shape}xf32>']
    if matmul:
        lines.append(f"  %y = nn.matmul %x, %w : (tensor<?x{cols}xf32>, tensor<{weight_shape}xf32>) -> tensor<?x{rows}xf32>")
        if bias:
            lines.append(f'  %b = nn.weight "b" : tensor<{rows}xf32>')
            lines.append(f"  %y2 = nn.add %y, %b : (tensor<?x{rows}xf32>, tensor<{rows}xf32>) -> tensor<?x{rows}xf32>")
    else:
        if bias:
            lines.append(f'  %b = nn.weight "b" : tensor<{rows}xf32>')
        operands = "%x, %w, %b" if bias else "%x, %w"
        types = f"tensor<?x{cols}xf32>, tensor<{weight_shape}xf32>" + (f", tensor<{rows}xf32>" if bias else "")
        lines.append(f"  %y2 = nn.gemm {operands} {{trans_b = 1 : i64}} : ({types}) -> tensor<?x{rows}xf32>")
    last = "%y2" if (bias or not matmul) else "%y"
    if activation != "none":
        op, properties = ("gelu", ' {approximate = "tanh"}') if activation == "gelu_tanh" else (activation, "")
        lines.append(f"  %r = nn.{op} {last}{properties} : (tensor<?x{rows}xf32>) -> tensor<?x{rows}xf32>")
        last = "%r"
    body = "\n".join(lines)
    signature = f'(%x: tensor<?x{cols}xf32> {{sparsec.name = "x"}}) -> (tensor<?x{rows}xf32> {{sparsec.name = "y"}})'
    return f"func.func @main{signature} {{\n{body}\n  func.return {last} : tensor<?x{rows}xf32>\n}}\n"


def build(rows: int, cols: int, matmul: bool, bias: bool, activation: str, seed: int) -> Model:
    ctx = make_context()
    module = parse_module(layer_text(rows, cols, matmul, bias, activation), ctx)
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((cols, rows) if matmul else (rows, cols)).astype(np.float32)
    canonical = weight.T if matmul else weight
    canonical[rng.random(rows) < 0.2] = 0.0  # some empty rows
    ctx.weights["w"] = weight
    if bias:
        ctx.weights["b"] = rng.standard_normal(rows).astype(np.float32)
    return Model(module, ctx)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SIZES, SIZES, PATTERNS, st.booleans(), st.booleans(), ACTIVATIONS, BATCHES, st.integers(0, 99))
def test_kernels_match_numpy(rows, cols, pattern, matmul, bias, activation, batch, seed):
    model = build(rows, cols, matmul, bias, activation, seed)
    model.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask,lower-kernels")
    x = np.random.default_rng(seed + 1).standard_normal((batch, cols)).astype(np.float32)
    ((name, expected),) = model.run({"x": x}).items()  # the reference interpreter on the same IR
    for threads in (1, 2):
        got = Executor(model.module, model.weights, threads=threads).run({"x": x})[name]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    lowered = [op for op in model.module.walk() if isinstance(op, SparseMatMulOp)]
    assert len(kernel_keys(model.module)) == len(lowered)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 6), st.integers(1, 1200), st.floats(0.0, 1.0), st.sampled_from([WINDOW_SPAN, WIDE_WINDOW_SPAN, GATHER_SPAN]), st.integers(0, 99))
def test_chunks_cover_each_row_exactly(rows, cols, density, span, seed):
    """Chunks hold 1-16 non-zeros within `span` columns of their base, in order, end
    only where they must (16 taken, the row's end, or the next one past the span), and
    their base column is the first's rounded down to the alignment (the window
    variant's 16 columns) but where base + span would leave the row."""
    nonzero = np.random.default_rng(seed).random((rows, cols)) < density
    align = 1 if span == GATHER_SPAN else WINDOW_ALIGN
    records, chunks_per_row = _chunks(nonzero, span, align)
    assert chunks_per_row.sum() == records.size
    counts = records["column_count"] >> 24
    bases = records["column_count"] & ((1 << 24) - 1)
    chunk = 0
    for row in range(rows):
        columns = np.flatnonzero(nonzero[row])
        taken = 0
        for _ in range(chunks_per_row[row]):
            count, base = int(counts[chunk]), int(bases[chunk])
            assert 1 <= count <= 16 and base + span <= max(cols, span)
            assert base == min(columns[taken] - columns[taken] % align, max(cols - span, 0))
            offsets = records["offsets"][chunk].astype(np.int64)
            np.testing.assert_array_equal(base + offsets[:count], columns[taken : taken + count])
            assert not offsets[count:].any() and offsets[count - 1] < span
            if count < 16 and taken + count < columns.size:
                assert columns[taken + count] >= base + span
            taken, chunk = taken + count, chunk + 1
        assert taken == columns.size


@pytest.mark.parametrize(
    ("sparsity", "cpu", "span"),
    [
        (0.5, "icelake-server", 0),
        (0.75, "icelake-server", WINDOW_SPAN),
        (0.9, "icelake-server", GATHER_SPAN),
        (0.5, "znver4", 0),
        (0.65, "znver4", WINDOW_SPAN),
        (0.85, "znver4", WINDOW_SPAN),
        (0.9, "znver4", WIDE_WINDOW_SPAN),
        (0.45, "emeraldrapids", 0),
        (0.5, "emeraldrapids", WINDOW_SPAN),
        (0.87, "emeraldrapids", WIDE_WINDOW_SPAN),
        (0.93, "sapphirerapids", GATHER_SPAN),
    ],
)
def test_chunk_variant_follows_sparsity_at_batch_one(sparsity, cpu, span, tmp_path, monkeypatch):
    """One batch row of sparse bitmask weights runs a chunk variant, by the tuning of
    the CPU named (SPARSEC_CPU, with the host's features): by default the window one
    from 65% sparsity and the gather one from 84%; on AMD Zen the window one from 62%
    and the wide window from 86%; on Intel Sapphire and Emerald Rapids the window one
    from 50%, the wide window from 84% and the gather one from 90%."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SPARSEC_CPU", cpu)
    model = build(40, 600, False, True, "relu", 5)
    model.apply(f"prune-magnitude{{sparsity={sparsity} min-elements=0}},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights)
    (layer,) = executor.layers.values()
    expected_span = span if Target.host().avx512 else 0
    assert layer.chunk_span == expected_span
    x = np.random.default_rng(6).standard_normal((1, 600)).astype(np.float32)
    np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)
    assert (layer.chunk_operands is not None) == bool(expected_span)
    variants = all_kernel_keys(model.module, model.weights, Target.host())
    assert {key.chunk_span for key in variants if isinstance(key, KernelKey)} - {0} == ({expected_span} if expected_span else set())


@pytest.mark.parametrize(
    "pattern",
    ["pattern=unstructured sparsity=0.0", "pattern=unstructured sparsity=0.5", "pattern=nm n=2 m=4", "pattern=nm n=3 m=4", "pattern=nm n=1 m=8"],
)
def test_column_panels_of_long_rows(pattern, tmp_path, monkeypatch):
    """A few batch rows of long weight rows run the panelled variant (columns in
    panels whose inputs fit L1), one batch row the plain kernel; a partial last step
    and n:m runs past the last whole step fall in the last panel."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    model = build(70, 4500, False, True, "relu", 11)
    model.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights)
    (layer,) = executor.layers.values()
    assert layer.key.has_panel_variant or not Target.host().avx512  # the vector kernels have one
    rng = np.random.default_rng(12)
    for batch in (1, 2, 5, 7):  # a partial tile of 2 rows; a whole tile and one row; a whole and a partial tile
        x = rng.standard_normal((batch, 4500)).astype(np.float32)
        np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)
        assert any(key.panelled for key in layer.variant_calls) == (layer.key.has_panel_variant and batch > 1)


@pytest.mark.parametrize(
    ("pattern", "kind"),
    [
        ("pattern=nm n=2 m=4", "nm"),
        ("pattern=nm n=3 m=4", "nm"),
        ("pattern=nm n=7 m=8", "nm"),
        ("pattern=unstructured sparsity=0.6", "bitmask"),
        ("pattern=unstructured sparsity=0.0", "dense"),
    ],
)
def test_pairs_of_batch_rows(pattern, kind, tmp_path, monkeypatch):
    """4k + 2 batch rows of the kernels tiled in fours run the paired variant, which
    takes the two rows past the whole tiles as one 2-row tile; at any other batch size
    (forced here) a last single row goes as a partial pair and 3 rows as a partial
    4-row tile. K = 300 is no whole number of steps, so each tile also has a partial
    last step (n:m: runs past the last). (16-lane n:m weights run the group-tile
    variants instead: left out here.)"""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(KernelKey, "group_tiles_for", lambda key, batch: 0)
    model = build(37, 300, False, True, "gelu", 13)
    model.weights["w"] = np.random.default_rng(13).standard_normal((37, 300)).astype(np.float32)  # no empty rows: dense stays dense
    encoding = "nm" if kind == "nm" else "auto"
    model.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask{{encoding={encoding}}},lower-kernels")
    executor = Executor(model.module, model.weights)
    (layer,) = executor.layers.values()
    assert layer.key.kind == kind
    assert layer.key.tiled_in_fours == (kind != "nm" or Target.host().avx512)
    paired = dataclasses.replace(layer.key, paired=True)
    rng = np.random.default_rng(14)
    for batch in (1, 2, 3, 6):
        x = rng.standard_normal((batch, 300)).astype(np.float32)
        np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)
        assert (paired in layer.variant_calls) == (layer.key.tiled_in_fours and batch >= 2)
    monkeypatch.setattr(KernelKey, "pairs_pay", lambda key, batch: key.tiled_in_fours)
    executor = Executor(model.module, model.weights)
    for batch in (1, 3, 5, 7, 9):
        x = rng.standard_normal((batch, 300)).astype(np.float32)
        np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("pattern", "rows"),
    [
        ("pattern=unstructured sparsity=0.5", 13),
        ("pattern=unstructured sparsity=0.7", 11),
        ("pattern=unstructured sparsity=0.75", 9),
        ("pattern=unstructured sparsity=0.9", 5),
        ("pattern=nm n=2 m=4", (12, 24)),  # (without, with the group-tile variants)
        ("pattern=nm n=3 m=4", (7, 15)),
        ("pattern=nm n=7 m=8", (6, 10)),
    ],
)
def test_batched_variant_starts_sooner_for_sparser_weights(pattern, rows, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    model = build(160, 512, False, True, "gelu", 9)
    model.weights["w"] = np.random.default_rng(9).standard_normal((160, 512)).astype(np.float32)  # no empty rows
    model.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights)
    (layer,) = executor.layers.values()
    if isinstance(rows, tuple):
        rows = rows[bool(layer.key.group_tile_sizes)]
    assert layer.batched_from == rows
    rng = np.random.default_rng(7)
    for batch in (rows - 1, rows):
        x = rng.standard_normal((batch, 512)).astype(np.float32)
        np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)
        assert any(key.batched for key in layer.variant_calls) == (batch == rows)


@pytest.mark.parametrize("target", [Target.host(), Target.portable()], ids=["host", "portable"])
@pytest.mark.parametrize(("block", "rows"), [(2, 4), (3, 9), (4, 9), (8, 12)])
def test_batched_variant_of_narrow_blocks(block, rows, target, tmp_path, monkeypatch):
    """Blocks of 2 to 8 rows run batched from a batch size that grows with the block.
    301 weight rows leave a partial last row block; 700 columns at 50% give row blocks
    more kept blocks than one chunk of widened values; 17, 33 and 48 batch rows take
    the 16-lane tile, then 32 + 16 lanes, with bias and Gelu after."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    model = build(301, 700, False, True, "gelu", block)
    model.weights["w"] = np.random.default_rng(block).standard_normal((301, 700)).astype(np.float32)  # no empty rows
    model.apply(f"prune-magnitude{{pattern=block block-size={block} sparsity=0.5 min-elements=0}},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=2, target=target)
    (layer,) = executor.layers.values()
    assert layer.key.kind == "block" and layer.batched_from == rows
    rng = np.random.default_rng(block + 1)
    for batch in (rows - 1, rows, 17, 33, 48):
        x = rng.standard_normal((batch, 700)).astype(np.float32)
        np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)
        assert any(key.batched for key in layer.variant_calls) == (batch >= rows)


INTEL_TUNING = Target("icelake-server", Target.host().features)


@pytest.mark.parametrize("target", [Target.host(), INTEL_TUNING], ids=["host", "intel-tuning"])
@pytest.mark.parametrize("pattern", ["pattern=unstructured sparsity=0.9", "pattern=nm n=3 m=4", "pattern=block block-size=4 sparsity=0.5"])
@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh", "swish"])
def test_batched_lane_tiles(pattern, activation, target, tmp_path, monkeypatch):
    """The batched kernels' lane tiles of 64, 32 and 16 lanes (95 batch rows take all
    three, 33 the 32- and 16-lane ones), with the accumulator sets of AMD Zen's and
    other CPUs' tuning (BatchedKernel.ways); a weight of one column panel applies bias
    and Relu in its stores, Gelu and SiLU in a pass (`fuses_epilogue`); several panels never
    fuse them."""
    if not Target.host().avx512:
        pytest.skip("the 64-lane tiles are AVX-512's")
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    for cols in (200, 600):  # one panel, three
        model = build(37, cols, False, True, activation, cols)
        model.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask,lower-kernels")
        executor = Executor(model.module, model.weights, threads=1, target=target)
        rng = np.random.default_rng(cols)
        for batch in (33, 95):
            x = rng.standard_normal((batch, cols)).astype(np.float32)
            np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)
        (layer,) = executor.layers.values()
        assert any(key.batched for key in layer.variant_calls)


def test_wide_blocks_have_no_batched_variant():
    """From 9 rows a block fills most of the tiled kernel's 16 lanes already."""
    assert BLOCK_BATCHED_FROM[-1][0] == 8
    for block, rows in [(2, 4), (3, 9), (4, 9), (5, 12), (8, 12)]:
        assert KernelKey("block", 4096, 4096, block=block).batched_from(4096 * 4096 // 2) == rows
    assert all(KernelKey("block", 4096, 4096, block=block).batched_from(4096 * 4096 // 2) is None for block in (9, 16, 32))


def test_small_weights_run_batched_later():
    """Below SMALL_WEIGHT values, the batched kernels' transposes cost more than the
    tiles they save until SMALL_BATCHED_FROM rows."""
    small, large = (KernelKey("nm", rows, 256, n=1, m=4) for rows in (255, 256))
    assert small.rows * small.cols < SMALL_WEIGHT <= large.rows * large.cols
    assert small.batched_from(small.rows * small.cols // 4) == SMALL_BATCHED_FROM
    assert large.batched_from(large.rows * large.cols // 4) == 7


def test_batched_scratch_arrays_are_reused_across_batches(tmp_path, monkeypatch):
    """The batched kernels' transposed arrays are kept between calls: a smaller batch
    with the same padded width leaves the last call's inputs (here infinities) in its
    spare lanes, and the output array is never zeroed; neither may reach the outputs."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    model = build(160, 512, True, True, "gelu", 9)
    model.apply("prune-magnitude{pattern=nm n=3 m=4 min-elements=0},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights)
    rng = np.random.default_rng(11)
    for batch, poisoned_from in [(30, 17), (17, 17), (30, 30), (8, 8)]:
        x = rng.standard_normal((batch, 512)).astype(np.float32)
        x[poisoned_from:] = np.inf  # rows 17 on of the first call: the next call's spare lanes
        with np.errstate(invalid="ignore"):  # inf x 0 in the reference's dense product
            got, expected = executor.run({"x": x})["y"], model.run({"x": x})["y"]
        np.testing.assert_allclose(got[:poisoned_from], expected[:poisoned_from], rtol=1e-4, atol=1e-4)
    assert sorted(executor.kept.scratch) == [("x", 0, 513, 16), ("x", 0, 513, 32), ("y", 0, 160, 16), ("y", 0, 160, 32)]


@pytest.mark.parametrize(
    ("pattern", "kind", "chunk"),
    [
        ("pattern=unstructured sparsity=0.75", "bitmask", 64),
        ("pattern=nm n=3 m=4", "nm", 32),
        ("pattern=block block-size=4 sparsity=0.5", "block", 32),
        ("pattern=block block-size=16 sparsity=0.5", "block", 32),  # tiled
        ("pattern=unstructured sparsity=0.0", "dense", 8),
    ],
)
@pytest.mark.parametrize("in_place", [False, True], ids=["staged", "in-place"])
def test_large_batches_run_in_chunks(pattern, kind, chunk, in_place, tmp_path, monkeypatch):
    """A batch larger than its kernel takes in one call (KernelKey.batch_chunk) runs as
    calls of that many rows and one of the rest, on two threads, each with the
    variant its rows pay for (6 rows: tiled, paired where there is a pair variant);
    each call's rows go back to their place. The inputs come as a model input (staged)
    or as an earlier kernel's output (read in place, at each chunk's first row)."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    model = two_layers(pattern) if in_place else build(301, 700, False, True, "gelu", 15)
    if not in_place:
        model.weights["w"] = np.random.default_rng(15).standard_normal((301, 700)).astype(np.float32)  # no empty rows
        model.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=2)
    layer = list(executor.layers.values())[-1]
    assert layer.key.kind == kind
    rng = np.random.default_rng(16)
    for batch in (chunk, 2 * chunk + 6):
        x = rng.standard_normal((batch, 700)).astype(np.float32)
        np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)
        call = executor.steps[-1].calls[(batch, 700)]
        taken = [(rows.start, rows.stop) for rows, _ in call.batch_chunks]
        assert taken == ([] if batch == chunk else [(0, chunk), (chunk, 2 * chunk), (2 * chunk, batch)])


@pytest.mark.parametrize(("rows", "all_chunks"), [(301, True), (1100, False)], ids=["small", "large"])
def test_chunks_run_side_by_side_on_the_threads(rows, all_chunks, tmp_path, monkeypatch):
    """On two threads a batched call's chunks run a chunk a thread, each thread copying
    its chunk in and out itself (Executor._side_by_side): the whole chunks the threads
    share evenly, and for a weight under SIDE_BY_SIDE_ALL_BELOW values (301 x 700) all
    of them; for a larger one (1100 x 700) the rest then run split across the threads.
    The same bits as on one thread, whichever array and layout the rows come in."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    assert (rows * 700 < SIDE_BY_SIDE_ALL_BELOW) == all_chunks
    model = build(rows, 700, False, True, "gelu", 15)
    model.weights["w"] = np.random.default_rng(15).standard_normal((rows, 700)).astype(np.float32)  # no empty rows
    model.apply("prune-magnitude{pattern=nm n=3 m=4 min-elements=0},pack-bitmask,lower-kernels")
    two, one = Executor(model.module, model.weights, threads=2), Executor(model.module, model.weights, threads=1)
    rng = np.random.default_rng(18)
    # batch: (chunks side by side when all may, else), chunks of 32 rows
    for batch, (small, large) in {40: (2, None), 64: (2, 2), 96: (3, 2), 100: (4, 2), 128: (4, 4)}.items():
        for x in [rng.standard_normal((batch, 700)).astype(np.float32) for _ in range(2)]:
            for rows_in in (x, np.asfortranarray(x), x.astype(np.float64).astype(np.float32)):
                np.testing.assert_array_equal(two.run({"x": rows_in})["y"], one.run({"x": rows_in})["y"])
        plan = two.steps[-1].calls[(batch, 700)].side_by_side
        expected = (small if all_chunks else large) if Target.host().avx512 else None
        assert (plan.chunks if plan else None) == expected, batch
    two.close()
    one.close()


def combined_model() -> Model:
    """Three products of x (?x700) at n:m 3:4: a residual Add of input r after one
    (y = x W1 + r), a gate Mul of two (z = (x Wg) * (x Wu)), each product's only reader."""
    ctx = make_context()
    text = """func.func @main(%x: tensor<?x700xf32> {sparsec.name = "x"}, %r: tensor<?x301xf32> {sparsec.name = "r"}) -> (tensor<?x301xf32> {sparsec.name = "y"}, tensor<?x301xf32> {sparsec.name = "z"}) {
  %w1 = nn.weight "w1" : tensor<301x700xf32>
  %h = nn.gemm %x, %w1 {trans_b = 1 : i64} : (tensor<?x700xf32>, tensor<301x700xf32>) -> tensor<?x301xf32>
  %y = nn.add %h, %r : (tensor<?x301xf32>, tensor<?x301xf32>) -> tensor<?x301xf32>
  %wg = nn.weight "wg" : tensor<301x700xf32>
  %g = nn.gemm %x, %wg {trans_b = 1 : i64} : (tensor<?x700xf32>, tensor<301x700xf32>) -> tensor<?x301xf32>
  %wu = nn.weight "wu" : tensor<301x700xf32>
  %u = nn.gemm %x, %wu {trans_b = 1 : i64} : (tensor<?x700xf32>, tensor<301x700xf32>) -> tensor<?x301xf32>
  %z = nn.mul %g, %u : (tensor<?x301xf32>, tensor<?x301xf32>) -> tensor<?x301xf32>
  func.return %y, %z : tensor<?x301xf32>, tensor<?x301xf32>
}
"""
    module = parse_module(text, ctx)
    rng = np.random.default_rng(19)
    for name in ("w1", "wg", "wu"):
        ctx.weights[name] = rng.standard_normal((301, 700)).astype(np.float32)
    model = Model(module, ctx)
    model.apply("prune-magnitude{pattern=nm n=3 m=4 min-elements=0},pack-bitmask,lower-kernels")
    return model


@pytest.mark.parametrize("threads", [1, 2])
def test_outward_copies_make_the_add_or_mul_that_reads_a_product(threads, tmp_path, monkeypatch):
    """A product whose only reader is an Add or Mul of a value made before it has its
    outward copies make that op from the second run on (Executor._combine_into_copies,
    TransposeKey.combine), numpy combining the rows no copy writes (one row, a chunk of
    8): the same bits as the first run's numpy Add and Mul, at batches that run in
    chunks side by side or not, an addend broadcast at run time (r of one row) copied
    out to the product's rows first. An Add whose result outgrows the product (five
    rows of r on one of x) is left to its own step."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    model = combined_model()
    executor = Executor(model.module, model.weights, threads=threads)
    assert [step.combined.combine for step in executor.steps if step.combined is not None] == ["add", "mul"]
    rng = np.random.default_rng(20)
    for batch, rows_of_r in ((1, 1), (24, 24), (40, 40), (128, 128), (100, 1), (1, 5)):
        feeds = {"x": rng.standard_normal((batch, 700)).astype(np.float32), "r": rng.standard_normal((rows_of_r, 301)).astype(np.float32)}
        first, again = executor.run(feeds), executor.run(feeds)
        expected = model.run(feeds)
        for name in ("y", "z"):
            np.testing.assert_array_equal(again[name], first[name])
            np.testing.assert_allclose(again[name], expected[name], rtol=1e-4, atol=1e-3)
        calls = [step.calls[(batch, 700)] for step in executor.steps if step.combined is not None]
        assert [call.combining.makes for call in calls] == [rows_of_r <= batch, True]  # pyright: ignore
        by_copies = [bool(call.combining.copies or call.combining.rows) for call in calls]  # pyright: ignore
        assert by_copies == [Target.host().avx512 and batch > 8] * 2, batch
    executor.close()


def two_layers(pattern: str) -> Model:
    """Two layers pruned by `pattern`, 700x700 then 301x700: the first kernel's output
    is the second's input, read in place."""
    ctx = make_context()
    text = """func.func @main(%x: tensor<?x700xf32> {sparsec.name = "x"}) -> (tensor<?x301xf32> {sparsec.name = "y"}) {
  %w0 = nn.weight "w0" : tensor<700x700xf32>
  %h = nn.gemm %x, %w0 {trans_b = 1 : i64} : (tensor<?x700xf32>, tensor<700x700xf32>) -> tensor<?x700xf32>
  %w = nn.weight "w" : tensor<301x700xf32>
  %y = nn.gemm %h, %w {trans_b = 1 : i64} : (tensor<?x700xf32>, tensor<301x700xf32>) -> tensor<?x301xf32>
  func.return %y : tensor<?x301xf32>
}
"""
    module = parse_module(text, ctx)
    rng = np.random.default_rng(17)
    ctx.weights["w0"] = (rng.standard_normal((700, 700)) / 26).astype(np.float32)
    ctx.weights["w"] = rng.standard_normal((301, 700)).astype(np.float32)
    model = Model(module, ctx)
    model.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask,lower-kernels")
    return model


def test_inputs_anywhere_in_a_cache_line(tmp_path, monkeypatch):
    """Inputs starting anywhere in a cache line give the same outputs: the executor
    hands the kernels a copy starting on one (and kernel outputs start on one, so the
    next layer needs none)."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    model = small_model()
    executor = Executor(model.module, model.weights)
    rng = np.random.default_rng(5)
    for batch in (1, 3):
        values = rng.standard_normal((batch, 70)).astype(np.float32)
        expected = model.run({"x": values})["y"]
        raw = np.zeros(batch * 70 + 32, np.float32)
        start = -raw.ctypes.data % 64 // 4
        for offset in range(0, 16, 3):  # 0, 12, 24, ... bytes into a line
            x = raw[start + offset : start + offset + batch * 70].reshape(batch, 70)
            x[...] = values
            assert x.ctypes.data % 64 == 4 * offset
            np.testing.assert_allclose(executor.run({"x": x})["y"], expected, rtol=1e-4, atol=1e-4)


def small_model() -> Model:
    model = build(33, 70, False, True, "relu", 0)
    model.apply("prune-magnitude{pattern=nm n=2 m=4 min-elements=0},pack-bitmask,lower-kernels")
    return model


def test_disk_cache_hits_and_recovers_from_damage(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    model = small_model()
    keys = kernel_keys(model.module, Target.host())
    first = compile_kernels(keys)
    assert not first.from_cache
    second = compile_kernels(keys)
    assert second.from_cache
    (entry,) = tmp_path.glob("*.o")
    entry.write_bytes(entry.read_bytes()[:-7] + b"damaged")
    third = compile_kernels(keys)
    assert not third.from_cache
    x = np.ones((2, 70), np.float32)
    results = [Executor(model.module, model.weights).run({"x": x})["y"] for _ in range(2)]
    np.testing.assert_array_equal(results[0], results[1])


def test_cache_keys_cover_what_kernels_read():
    """A kernel's cache entry is keyed by the sources it depends on besides its key,
    the operand layouts among them: a kernel cached before runtime/operands.py changed
    a layout would misread the new one."""
    sources = [path.resolve() for path in fingerprint_sources()]
    assert Path(operands.__file__).resolve() in sources and Path(codegen_builder.__file__).resolve() in sources
    assert all(path.is_file() for path in sources)


def test_disk_cache_has_an_entry_per_kernel(tmp_path, monkeypatch):
    """Kernels are cached one entry each: a set sharing a cached kernel compiles only
    the others (in the generate-then-compile pipeline), and then comes from the cache."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    (key,) = kernel_keys(small_model().module, Target.host())
    keys = [dataclasses.replace(key, rows=rows) for rows in (33, 34, 35)]
    assert not compile_kernels(keys[:1]).from_cache
    assert len(list(tmp_path.glob("*.o"))) == 1
    several = compile_kernels(keys)
    assert not several.from_cache and len(list(tmp_path.glob("*.o"))) == 3
    assert all(ctypes.cast(function, ctypes.c_void_p).value for function in several.functions.values())
    assert compile_kernels(list(reversed(keys))).from_cache


def test_run_from_the_cache_imports_no_code_generator(tmp_path, monkeypatch):
    """A process whose kernels all come from the disk cache starts without the code
    generator (xDSL's llvm dialect and its translator) and without onnx: a second
    `sparsec run` of an artifact loads object code only."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path / "cache"))
    small_model().save(tmp_path / "model.spx")
    run = (
        "import sys, numpy as np, sparsec\n"
        f"sparsec.load({str(tmp_path / 'model.spx')!r}, threads=1).run({{'x': np.ones((2, 70), np.float32)}})\n"
        "print(sorted(m for m in ('sparsec.runtime.codegen.kernels', 'xdsl.backend.llvm.convert', 'onnx') if m in sys.modules))\n"
    )
    first = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, check=True)
    assert first.stdout.split() == ["['sparsec.runtime.codegen.kernels',", "'xdsl.backend.llvm.convert']"]
    second = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, check=True)
    assert second.stdout.strip() == "[]"


def test_portable_target_computes_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    model = small_model()
    x = np.random.default_rng(3).standard_normal((4, 70)).astype(np.float32)
    host = Executor(model.module, model.weights, target=Target.host()).run({"x": x})["y"]
    portable = Executor(model.module, model.weights, target=Target.portable()).run({"x": x})["y"]
    np.testing.assert_allclose(host, portable, rtol=1e-5, atol=1e-6)
    monkeypatch.setenv("SPARSEC_CPU", "generic")
    assert Target.host() == Target.portable()


def test_kernel_ir_is_a_pure_function_of_the_key():
    model = small_model()
    keys = kernel_keys(model.module)
    assert str(kernel_module(keys)) == str(kernel_module(keys))
    assert len(kernel_module(keys + keys).ops) == len(keys)


def test_vector_kernels_take_the_short_llvm_pipeline():
    """Kernels written in vectors compile with jit.CLEANUP_PASSES; one kernel with
    scalar loops (portable targets) sends its module through O2's loop vectorizer."""
    host = {"native_f16": True, "avx512": True}
    vector = [
        KernelKey("bitmask", 64, 64, **host),
        KernelKey("bitmask", 64, 64, chunk_span=WINDOW_SPAN, **host),
        KernelKey("nm", 64, 64, n=3, m=4, **host),
        KernelKey("nm", 64, 64, n=2, m=4, batched=True, **host),
        KernelKey("block", 64, 64, block=4, **host),
        KernelKey("block", 64, 64, block=4, batched=True, **host),
        KernelKey("dense", 64, 64, panelled=True, **host),
        KernelKey("bitmask", 64, 64, batched=True, native_f16=False, avx512=False),
    ]
    scalar = [KernelKey(kind, 64, 64, native_f16=False, avx512=False, **extra) for kind, extra in [("bitmask", {}), ("nm", {"n": 3, "m": 4}), ("block", {"block": 4}), ("dense", {})]]
    assert explicit_vectors(vector)
    assert not any(explicit_vectors([key]) for key in scalar)
    assert not explicit_vectors(vector + scalar[:1])


def test_loops_with_constant_bounds_unroll_in_the_generator():
    """`unrolled` loops with constant bounds are emitted once per index, carrying their
    values, with no blocks of their own (the JIT runs no unroll pass); with a bound
    known only at run time they stay loops."""
    b = FunctionBuilder("f", [i64], ["n"])
    indices = []

    def body(index, state):
        indices.append(b.constant_value(index))
        return [b.add(state[0], index)]

    (total,) = b.loop(b.const(2, i64), b.const(40, i64), [b.const(0, i64)], body, step=16, unrolled=True)
    assert indices == [2, 18, 34] and len(b.region.blocks) == 1
    b.loop(b.const(0, i64), b.args[0], [total], body, step=16, unrolled=True)
    assert indices[-1] is None and len(b.region.blocks) == 3


@pytest.mark.parametrize("lanes, chunks", [(192, 1), (672, 3)])
def test_output_prefetch_only_where_a_call_has_a_next_chunk(lanes, chunks):
    """An implicit convolution prefetches its next lane chunk's output rows to be
    written where its calls have more than one chunk; where the key's lanes are one
    chunk that code's condition is constant false and it is left out (Kernel.only_if),
    with no branch around it."""
    host = {"native_f16": True, "avx512": True, "vbmi2": True}
    key = KernelKey("nm", 32, 144, n=3, m=4, run_major=True, epilogue="bias_relu", batched=True, window=(9, 3, 224, 16, 1, 1, 1, 1), lanes=lanes, **host)
    assert -(-lanes // key.lane_chunk) == chunks
    ir = str(convert_module(kernel_module([key]), fallback_target_triple="x"))
    assert ('i32 1, i32 3, i32 1)' in ir) == (chunks > 1)
    assert "br i1 0," not in ir and "and i1 0," not in ir


INTEGER_OPS = ["add", "sub", "mul", "shl", "lshr", "udiv", "urem", "and_", "or_"]
CONDITION_OPS = ["and_", "or_"]
"""Ops the builder also folds on i1 conditions (constant ones decide them)."""
PREDICATES = ["eq", "ne", "slt", "sle", "sgt", "sge", "ult", "ule", "ugt", "uge"]
INT32 = st.sampled_from([0, 1, -1, 2, 31, 32, 2**31 - 1, -(2**31)]) | st.integers(-(2**31), 2**31 - 1)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(INT32, INT32), min_size=1, max_size=8))
def test_builder_folds_constants_as_llvm_computes(pairs):
    """What the builder folds (integer ops of constants, by 0 or 1, comparisons of
    constants, their conditions' and/or, truncations and extensions of constants)
    equals what LLVM computes from the same values passed in at run time, on i32
    where results wrap and shifts reach the width (those are left to LLVM)."""
    ops = INTEGER_OPS + [f"icmp {predicate}" for predicate in PREDICATES] + [f"{op} conditions" for op in CONDITION_OPS] + ["trunc", "trunc sign"]
    b = FunctionBuilder("f", [PTR, PTR], ["inputs", "outputs"])
    inputs, outputs = b.args
    checked = []  # (op, x, y): its folded result, then the computed one, in the outputs

    def apply(name, x, y):
        if name.startswith("icmp"):
            return b.zext(b.icmp(name.split()[1], x, y), i32)
        if name.endswith("conditions"):
            return b.zext(getattr(b, name.split()[0])(b.icmp("slt", x, y), b.icmp("ult", x, y)), i32)
        if name == "trunc":  # of x to 8 bits and back, the high bits zeros
            return b.zext(b.trunc(x, i8), i32)
        if name == "trunc sign":  # whether x's low 8 bits are negative as an i8
            return b.zext(b.icmp("slt", b.trunc(x, i8), b.const(0, i8)), i32)
        return getattr(b, name)(x, y)

    for index, (x, y) in enumerate(pairs):
        loaded = [b.load(inputs, b.const(2 * index + k, i64), i32) for k in range(2)]
        for name in ops:
            if name.startswith(("shl", "lshr")) and not 0 <= y < 32 or name.startswith("u") and y == 0:
                continue  # poison, or a division by zero (which traps)
            for constants in [(b.const(x, i32), b.const(y, i32)), (loaded[0], b.const(y, i32)), (b.const(x, i32), loaded[1])]:
                result = apply(name, *constants)
                if name.startswith(("icmp", "and_", "or_", "trunc")) and None not in map(b.constant_value, constants):
                    assert b.constant_value(result) is not None, name  # folded, not left to LLVM
                b.store(result, outputs, b.const(2 * len(checked), i64))
                b.store(apply(name, *loaded), outputs, b.const(2 * len(checked) + 1, i64))
                checked.append((name, x, y))
    ir = str(convert_module(ModuleOp([b.ret()]), fallback_target_triple=llvm.get_process_triple()))
    compiled = compile_llvm_ir(ir, {"f": ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)})
    values = np.array(pairs, np.int64).astype(np.int32).ravel()
    got = np.zeros(2 * len(checked), np.int32)
    compiled.functions["f"](values.ctypes.data, got.ctypes.data)
    for (name, x, y), folded, computed in zip(checked, got[0::2], got[1::2]):
        assert folded == computed, (name, x, y)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(INT32, INT32), min_size=16, max_size=16))
def test_builder_folds_vector_constants_lane_by_lane(pairs):
    """Integer ops of two vector constants fold lane by lane to what LLVM computes from
    the same lanes loaded at run time (shift counts taken below the width and divisors
    non-zero, as kernels' are); a lane that would not fold leaves the op to LLVM."""
    xs = [x for x, _ in pairs]
    operands = {name: [y % 32 if name in ("shl", "lshr") else (y or 1) if name.startswith("u") else y for _, y in pairs] for name in INTEGER_OPS}
    b = FunctionBuilder("f", [PTR, PTR], ["inputs", "outputs"])
    inputs, outputs = b.args
    ty = vector(i32, 16)

    def vector_at(base, first):
        return b.element_ptr(base, b.const(first, i64), i32)

    left = b.load_lanes(inputs, ty, None)
    for index, (name, ys) in enumerate(operands.items()):
        folded = getattr(b, name)(b.vector_const(xs, i32), b.vector_const(ys, i32))
        computed = getattr(b, name)(left, b.load_lanes(vector_at(inputs, 16 * (index + 1)), ty, None))
        b.store_lanes(folded, vector_at(outputs, 32 * index), None)
        b.store_lanes(computed, vector_at(outputs, 32 * index + 16), None)
    ir = str(convert_module(ModuleOp([b.ret()]), fallback_target_triple=llvm.get_process_triple()))
    compiled = compile_llvm_ir(ir, {"f": ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)})
    values = np.array([xs, *operands.values()], np.int64).astype(np.int32)
    got = np.zeros((len(operands), 2, 16), np.int32)
    compiled.functions["f"](values.ctypes.data, got.ctypes.data)
    for name, (folded, computed) in zip(operands, got):
        assert list(folded) == list(computed), name
    assert b.constant_lanes(b.add(b.vector_const(list(range(16)), i32), b.vector_const([3] * 16, i32))) == tuple(range(3, 19))


def test_builder_reuses_pure_ops_within_a_block():
    """The same pure op on the same operands is built once per block; loads are always
    built anew (memory may have changed), and another block builds its own."""
    b = FunctionBuilder("f", [PTR, i64], ["p", "n"])
    p, n = b.args
    offset = b.add(n, b.const(16, i64))
    assert b.add(n, b.const(16, i64)) is offset
    assert b.element_ptr(p, offset, f32) is b.element_ptr(p, offset, f32)
    assert b.load(p, offset, f32) is not b.load(p, offset, f32)
    assert b.element_ptr(p, b.const(0, i64), f32) is p
    b.block = b.new_block()
    assert b.add(n, b.const(16, i64)) is not offset


@pytest.mark.parametrize("start, stop, blocks, entry_exit", [(0, 0, 1, "llvm.return"), (5, 3, 1, "llvm.return"), (0, 1, 1, "llvm.return"), (0, 4, 3, "llvm.br"), (None, 4, 3, "llvm.cond_br")])
def test_loops_with_constant_bounds_need_no_guard(start, stop, blocks, entry_exit):
    """A loop of constant bounds that never runs is nothing, one that runs once is its
    body alone, and one surely entered branches into its body with no guard; bounds
    known only at run time keep the guard."""
    b = FunctionBuilder("f", [PTR, i64], ["out", "n"])
    out, n = b.args
    first = n if start is None else b.const(start, i64)
    (total,) = b.loop(first, b.const(stop, i64), [b.const(0, i64)], lambda index, state: [b.add(state[0], index)])
    b.store(total, out, b.const(0, i64))
    ir = str(convert_module(ModuleOp([b.ret()]), fallback_target_triple=llvm.get_process_triple()))
    assert len(b.region.blocks) == blocks and b.entry.last_op.name == entry_exit
    compiled = compile_llvm_ir(ir, {"f": ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)})
    got = np.zeros(1, np.int64)
    compiled.functions["f"](got.ctypes.data, 1)
    assert got[0] == sum(range(1 if start is None else start, stop))


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([1, 2, 4, 8, 16]), st.sampled_from([4, 16, 32]), st.integers(0, 99))
def test_lane_sums_of_several_vectors(count, lanes, seed):
    """FunctionBuilder.sum_lanes_each, which the kernels use for a tile's or a row
    group's outputs, gives each vector's lane sum."""
    if count > lanes:
        return
    b = FunctionBuilder("sums", [PTR, PTR], ["x", "y"])
    x, y = b.args
    vectors = [b.load_at(b.element_ptr(x, b.const(lanes * j, i64), f32), vector(f32, lanes), alignment=4) for j in range(count)]
    for j, total in enumerate(b.sum_lanes_each(vectors)):
        b.store(total, y, b.const(j, i64))
    ir = str(convert_module(ModuleOp([b.ret()]), fallback_target_triple=llvm.get_process_triple()))
    compiled = compile_llvm_ir(ir, {"sums": ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)})  # (keeps the code alive)
    inputs = np.random.default_rng(seed).standard_normal((count, lanes)).astype(np.float32)
    got = np.zeros(count, np.float32)
    compiled.functions["sums"](inputs.ctypes.data, got.ctypes.data)
    np.testing.assert_allclose(got, inputs.sum(axis=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block", [2, 4, 8])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
def test_narrow_blocks_at_one_batch_row(block, sparsity):
    """One batch row takes blocks narrower than 16 lanes 16 / B at a time; the kept
    blocks past the last whole pair of groups (any count here) go one at a time."""
    model = build(100, 130, False, True, "relu", block)
    model.apply(f"prune-magnitude{{pattern=block block-size={block} sparsity={sparsity} min-elements=0}},pack-bitmask,lower-kernels")
    x = np.random.default_rng(block).standard_normal((1, 130)).astype(np.float32)
    got = Executor(model.module, model.weights).run({"x": x})["y"]
    np.testing.assert_allclose(got, model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_m", [(2, 4), (3, 4), (7, 8), (1, 2)])
@pytest.mark.parametrize(("rows", "cols"), [(3, 64), (7, 130), (1003, 2100), (9, 20000)])
def test_nm_row_groups_at_one_batch_row(n_m, rows, cols):
    """One batch row takes n:m weight rows four at a time (VectorNMKernel.group_body;
    with one kept value a run, from planes, unless the planes would outgrow
    LANE_PLANES_MAX_FLOATS); the rows past the last whole group of a thread's share, and
    the runs past the last whole step, go one at a time."""
    n, m = n_m
    model = build(rows, cols, False, True, "gelu", rows)
    model.apply(f"prune-magnitude{{pattern=nm n={n} m={m} min-elements=0}},pack-bitmask,lower-kernels")
    key = next(iter(kernel_keys(model.module)))
    assert key.lane_planes == (key.nm_lanes and m - n == 1 and cols <= LANE_PLANES_MAX_FLOATS)
    x = np.random.default_rng(cols).standard_normal((1, cols)).astype(np.float32)
    for threads in (1, 2):
        got = Executor(model.module, model.weights, threads=threads).run({"x": x})["y"]
        np.testing.assert_allclose(got, model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_m", [(1, 2), (3, 4), (7, 8), (2, 4)])
@pytest.mark.parametrize(("rows", "cols"), [(7, 130), (301, 700), (9, 4100)])
def test_group_tiles_of_a_few_batch_rows(n_m, rows, cols, tmp_path, monkeypatch):
    """From 2 batch rows up to the batched kernel's threshold, 16-lane n:m weights with
    lane planes (1:2, 3:4, 7:8) or one permute a step (2:4) run the group-tile
    variants, on two threads: whole tiles of 4 (2 at 7:8) in one call, then the rows
    past them in another: 1 row in the plain kernel's row groups, 2 in tiles of 2, 3
    in a partial tile of 4. The rows past a share's last whole group of four (7 rows:
    one group moved back over rows taken twice) and the runs past the last whole step
    go their own way. At K = 4100 four rows' planes would outgrow the stack, two
    rows' do not (windows are read in place)."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    n, m = n_m
    model = build(rows, cols, False, True, "gelu", rows + m)
    model.apply(f"prune-magnitude{{pattern=nm n={n} m={m} min-elements=0}},pack-bitmask{{encoding=nm}},lower-kernels")
    executor = Executor(model.module, model.weights, threads=2)
    (layer,) = executor.layers.values()
    key = layer.key
    if not key.nm_lanes:  # (no AVX-512 here)
        assert not key.group_tile_sizes
        return
    assert key.lane_planes == (m - n == 1)
    largest = 2 if m == 8 or (key.lane_planes and 4 * cols > LANE_PLANES_MAX_FLOATS) else 4
    assert key.group_tile_sizes == sorted({2, largest}) and layer.batched_from > 7
    rng = np.random.default_rng(cols)
    for batch in (2, 3, 5, 6, 7):
        x = rng.standard_normal((batch, cols)).astype(np.float32)
        np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)
        call = executor.steps[0].calls[(batch, cols)]
        whole = batch - batch % largest if batch > largest else batch
        assert [(rows.start, rows.stop) for rows, _ in call.batch_chunks] == ([] if whole == batch else [(0, whole), (whole, batch)])
    assert sorted(variant.group_tiles for variant in layer.variant_calls) == key.group_tile_sizes


WITHOUT_VBMI2 = Target(Target.host().cpu, Target.host().features.replace("+avx512vbmi2", "-avx512vbmi2"))


@pytest.mark.parametrize("target", [Target.host(), WITHOUT_VBMI2], ids=["host", "without-vbmi2"])
@pytest.mark.parametrize(("rows", "cols"), [(1, 16), (5, 64), (37, 200), (300, 1000)])
@pytest.mark.parametrize("batch", [1, 3])
def test_bitmask_expand_forms(target, rows, cols, batch, tmp_path, monkeypatch):
    """The mask kernel's two forms: VBMI2's register-form expand of each mask word's 16
    values (read whole, up to 32 bytes past the values, which `_with_slack` keeps
    readable) and the expand-loads elsewhere."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    model = build(rows, cols, False, True, "relu", rows * cols)
    model.apply("prune-magnitude{pattern=unstructured sparsity=0.5 min-elements=0},pack-bitmask,lower-kernels")
    x = np.random.default_rng(cols).standard_normal((batch, cols)).astype(np.float32)
    executor = Executor(model.module, model.weights, target=target)
    np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)
    (layer,) = executor.layers.values()
    assert layer.key.vbmi2 == target.vbmi2


def test_values_get_slack_where_they_have_none():
    """`_with_slack`: an array is used as it is where the bytes past it lie on its last
    page or in the buffer it views; one ending at its mapping's last page's end is
    copied, with zeros after it."""
    page = mmap.mmap(-1, 2 * mmap.PAGESIZE)
    values = np.frombuffer(page, np.float16)
    values[:] = 1.0
    assert _with_slack(values[:100], 32).ctypes.data == values.ctypes.data  # its page goes on
    whole_page = values[: mmap.PAGESIZE // 2]
    assert _with_slack(whole_page, 32).ctypes.data == values.ctypes.data  # the buffer goes on
    last = values[mmap.PAGESIZE // 2 :]  # ends where the mapping ends
    copied = _with_slack(last, 32)
    assert copied.ctypes.data != last.ctypes.data and np.array_equal(copied, last)
    assert copied.base.nbytes >= copied.nbytes + 32 and not copied.base[copied.size :].any()

    class Foreign:  # another library's tensor: numpy sees its memory but no buffer
        def __init__(self, array: np.ndarray):
            self.__array_interface__ = array.__array_interface__

    foreign = np.asarray(Foreign(last))
    assert np.array_equal(_with_slack(foreign, 32), last)  # judged by its page alone


BLOCKS_AND_ROWS = st.sampled_from([2, 4, 8, 16]).flatmap(lambda block: st.tuples(st.just(block), st.integers(2 * block, 2 * block + 70)))
"""A block size and rows of at least two blocks (pruning leaves fewer dense)."""


@settings(max_examples=40, deadline=None)
@given(BLOCKS_AND_ROWS, SIZES, st.booleans(), st.sampled_from([0.0, 0.5, 0.9]), st.integers(0, 99))
def test_block_operands_from_the_stored_blocks(block_and_rows, cols, matmul, sparsity, seed):
    """A block weight's operands come from its stored blocks without decoding it (the
    encoding keeps them column by column, the kernel row block by row block): the same
    arrays as those derived from its decoded values, for a Gemm's (out, in) weight and
    a MatMul's (in, out) one, rows past a whole block and empty rows."""
    block, rows = block_and_rows
    model = build(rows, cols, matmul, False, "none", seed)
    model.apply(f"prune-magnitude{{pattern=block block-size={block} sparsity={sparsity} min-elements=0}},pack-bitmask{{encoding=block}},lower-kernels")
    (op,) = [op for op in model.module.walk() if isinstance(op, SparseMatMulOp)]
    assert op.kind.data == "block"
    weight, transposed = op.operands[1].owner, bool(op.transposed.value.data)
    key = KernelKey("block", rows, cols, block=block)
    stored = operands._stored_blocks(weight, model.weights, key, transposed, np.dtype(np.float16))
    assert stored is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(operands, "_stored_blocks", lambda *arguments: None)
        decoded = operands._block(weight, model.weights, key, transposed, np.dtype(np.float16))
    for got, expected in zip(stored.arrays, decoded.arrays):
        assert got.dtype == expected.dtype and np.array_equal(got, expected)


@pytest.mark.parametrize(("cols", "bits"), [(65536, 16), (65537, 32)])
@pytest.mark.parametrize("target", [Target.host(), Target.portable()], ids=["host", "portable"])
@pytest.mark.parametrize("block", [2, 8, 16])
def test_block_columns_past_16_bits(cols, bits, target, block, tmp_path, monkeypatch):
    """A block weight stores its kept blocks' columns in 16 bits while every column
    fits and in 32 bits beyond; the last column, kept, is where a narrow field would wrap.
    Blocks narrower than 16 lanes read 16 / B columns a step, up to 128 bits a load."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    ctx = make_context()
    module = parse_module(layer_text(40, cols, False, False, "none"), ctx)
    weight = np.random.default_rng(5).standard_normal((40, cols)).astype(np.float32)
    weight[:, -1] = 100.0
    ctx.weights["w"] = weight
    model = Model(module, ctx)
    model.apply(f"prune-magnitude{{pattern=block block-size={block} sparsity=0.75 min-elements=0}},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, target=target)
    (layer,) = executor.layers.values()
    assert layer.key.block_column_bits == bits and layer.operands.arrays[1].itemsize * 8 == bits
    x = np.random.default_rng(6).standard_normal((3, cols)).astype(np.float32)
    for batch in (1, 3):  # sums of ~16000 terms in another order: float32 rounding near 1e-3
        np.testing.assert_allclose(executor.run({"x": x[:batch]})["y"], model.run({"x": x[:batch]})["y"], rtol=1e-4, atol=1e-2)


def _through_identity_layer(activation: str, x: np.ndarray) -> np.ndarray:
    """x (B x 16) through an identity layer with `activation` fused, as its kernel runs it."""
    model = build(16, 16, False, True, activation, 1)
    model.weights["w"], model.weights["b"] = np.eye(16, dtype=np.float32), np.zeros(16, np.float32)
    model.apply("prune-magnitude{sparsity=0.0 min-elements=0},pack-bitmask,lower-kernels")
    return Executor(model.module, model.weights).run({"x": x})["y"]


@pytest.mark.parametrize("batch", [4, 64])  # the tiled kernel's epilogue pass; the batched kernel's
def test_gelu_epilogue_is_exact_to_float32(batch, tmp_path, monkeypatch):
    """The fused Gelu (its erf a rational approximation) against 0.5 x (1 + erf(x / sqrt 2))
    in float64, through an identity layer, from -8 to 8: within 3e-6 absolute."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    x = np.linspace(-8.0, 8.0, batch * 16, dtype=np.float32).reshape(batch, 16)
    got = _through_identity_layer("gelu", x)
    exact = np.vectorize(lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))))(x.astype(np.float64))
    np.testing.assert_allclose(got, exact, rtol=0, atol=3e-6)


@pytest.mark.parametrize("batch", [1, 4, 64])  # the row kernel's scalar and vector stores; the tiled kernel's pass; the batched kernel's
def test_swish_epilogue_is_exact_to_float32(batch, tmp_path, monkeypatch):
    """The fused SiLU (x / (1 + e^-x), exp Cephes') against x / (1 + e^-x) in float64,
    through an identity layer, from -100 to 100 (e^-x clamps past 88): within 2 float32
    ulps of the result, or 1e-30 absolute where it vanishes."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    x = np.linspace(-100.0, 100.0, batch * 16, dtype=np.float32).reshape(batch, 16)
    got = _through_identity_layer("swish", x)
    wide = x.astype(np.float64)
    with np.errstate(over="ignore"):
        exact = wide / (1.0 + np.exp(-wide))
    np.testing.assert_allclose(got, exact, rtol=2.4e-7, atol=1e-30)


@pytest.mark.parametrize("batch", [1, 4, 64])
def test_tanh_gelu_epilogue_is_exact_to_float32(batch, tmp_path, monkeypatch):
    """The fused GELU of GPT-2 (x / (1 + e^(-2z)), z its tanh's argument) against 0.5 x
    (1 + tanh(z)) in float64, through an identity layer, from -12 to 12: within 4e-7
    absolute, and 2 float32 ulps relative where the result is not near 0."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    x = np.linspace(-12.0, 12.0, batch * 16, dtype=np.float32).reshape(batch, 16)
    got = _through_identity_layer("gelu_tanh", x)
    wide = x.astype(np.float64)
    exact = 0.5 * wide * (1.0 + np.tanh(math.sqrt(2 / math.pi) * (wide + 0.044715 * wide**3)))
    np.testing.assert_allclose(got, exact, rtol=2.4e-7, atol=4e-7)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.integers(1, 90), st.integers(0, 5), st.integers(0, 20), st.sampled_from(["in", "out", "out add", "out mul"]), st.integers(0, 99))
def test_transposing_copies_match_numpy(batch, count, slack, offset, kind, seed):
    """The batched calls' transposing copies (TransposeKey) over batch sizes, widths
    and pitches, inward and outward, outward also combining with a second operand at
    the output's places (an Add's or Mul's, TransposeKey.combine): every value lands
    where numpy's transposition puts it, combined bit for bit as numpy combines, and
    nothing else is written (the columns' padding lanes and zero row, the output's
    other columns)."""
    inward, combine = kind == "in", kind[4:]
    if not Target.host().avx512:
        pytest.skip("the executor runs them on AVX-512 hosts only")
    rng = np.random.default_rng(seed)
    padded = padded_batch(batch)
    pitch = count + slack
    if inward:
        key, source = TransposeKey(count, pitch, True), rng.standard_normal((batch, pitch)).astype(np.float32)
        target = np.full((count + 1, padded), 7.0, np.float32)
        target[count] = 0.0
        expected = target.copy()
        expected[:count, :batch] = source[:, :count].T
        read, written = source, target
    else:
        key, source = TransposeKey(count, pitch + offset, False, combine), rng.standard_normal((offset + count, padded)).astype(np.float32)
        target = np.full((batch, pitch + offset), 9.0, np.float32)
        other = np.full_like(target, np.nan)  # read only where the output is written
        other[:, offset : offset + count] = rng.standard_normal((batch, count))
        expected = target.copy()
        made = source[offset:, :batch].T
        expected[:, offset : offset + count] = {"": made, "add": made + other[:, offset : offset + count], "mul": made * other[:, offset : offset + count]}[combine]
        read, written = source[offset:], target[:, offset:]
    compiled = compile_kernels([key], Target.host())  # the functions live as long as it does
    operand = 0 if inward else other[:, offset:].ctypes.data
    compiled.functions[key.symbol](read.ctypes.data, written.ctypes.data, operand, 0, 0, 0, batch, 0, key.units)
    np.testing.assert_array_equal(target, expected)


@pytest.mark.parametrize("rows", [1, 3, 17, 1000])
def test_extreme_rows(rows):
    model = build(rows, 17, False, True, "none", rows)
    model.apply("prune-magnitude{sparsity=0.5 min-elements=0},pack-bitmask,lower-kernels")
    x = np.random.default_rng(rows).standard_normal((3, 17)).astype(np.float32)
    np.testing.assert_allclose(
        Executor(model.module, model.weights).run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4
    )



@pytest.mark.parametrize(
    ("reported", "features", "named"),
    [
        ("rocketlake", "+avx512f,+amx-tile,+avx512fp16", "sapphirerapids"),  # a VM's model number on a Rapids core
        ("emeraldrapids", "+avx512f,+amx-tile,+avx512fp16", "emeraldrapids"),
        ("rocketlake", "+avx512f,+avx512vbmi2", "rocketlake"),
        ("znver4", "+avx512f,+avx512bf16", "znver4"),
    ],
)
def test_host_cpu_is_named_by_its_rapids_features(monkeypatch, reported, features, named):
    """A core with AMX and AVX-512 FP16 gets Sapphire Rapids' scheduling and kernel
    choices whatever model number the VM reports (jit._host_cpu_name)."""
    monkeypatch.setattr(llvm, "get_host_cpu_name", lambda: reported)
    assert jit_module._host_cpu_name(features) == named
    assert Target(named, features).tuning == ("rapids" if "rapids" in named else "zen" if named.startswith("znver") else "default")
