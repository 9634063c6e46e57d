"""Convolutions through the implicit variant of the batched kernels (runtime/executor.py,
ImplicitConv), against the reference interpreter on the same pruned IR: random 1-D and
2-D geometries (kernel sizes, dilations, strides, asymmetric pads, channels, images),
bitmask and n:m weights, bias and Relu fused; grouped convolutions too, every group's
rows in one call. 3-D convolutions take the other path and must agree too."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import models
import sparsec
from sparsec.dialects.kernel_ops import SparseConvOp
from sparsec.kernels import PLANE_PROLOGUES, SHIFT_PITCHES, UNPACKED_BLOCK, WINDOW_MAX_COLUMNS, KernelKey, PlaneKey
from sparsec.runtime.codegen import batched
from sparsec.runtime.codegen.kernels import kernel_class, kernel_llvm_ir
from sparsec.runtime import executor as executor_module
from sparsec.runtime.executor import Executor, all_kernel_keys
from sparsec.runtime import implicit
from sparsec.runtime.implicit import framed, implicit_conv
from sparsec.runtime.jit import Target, compile_kernels

PATTERNS = ["pattern=nm n=3 m=4", "pattern=nm n=2 m=4", "pattern=unstructured sparsity=0.6", "pattern=unstructured sparsity=0.9"]
BLOCK_PATTERNS = ["pattern=block block-size=2 sparsity=0.5", "pattern=block block-size=4 sparsity=0.75", "pattern=block block-size=8 sparsity=0.5", "pattern=block block-size=16 sparsity=0.75", "pattern=block block-size=12 sparsity=0.5"]


@st.composite
def convolutions(draw):
    rank = draw(st.sampled_from([1, 2, 2, 2, 3]))
    kernel = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    dilations = draw(st.lists(st.integers(1, 2), min_size=rank, max_size=rank))
    strides = draw(st.sampled_from([[1] * rank, [2] * rank, draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))]))
    pads = [draw(st.integers(0, k)) for k in kernel] + [draw(st.integers(0, k)) for k in kernel]
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    spatial = [draw(st.integers(max(1, span - pads[i] - pads[i + rank]), 20 if rank < 3 else 6)) for i, span in enumerate(spans)]
    channels, outputs = draw(st.integers(8, 24)), draw(st.integers(1, 40))
    attributes = {"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations}
    return [draw(st.integers(1, 2)), channels, *spatial], outputs, attributes


def conv_model(path, shape: list[int], outputs: int, attributes: dict, seed: int) -> None:
    """Conv with a bias, then Relu (fused into the kernel)."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((outputs, shape[1] // attributes.get("group", 1), *attributes["kernel_shape"])).astype(np.float32)
    bias = rng.standard_normal(outputs).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["h"], name="conv", **attributes), helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(convolutions(), st.sampled_from(PATTERNS + BLOCK_PATTERNS), st.integers(0, 99))
def test_implicit_convolutions_match_the_reference(tmp_path_factory, conv, pattern, seed):
    """Each geometry runs twice with new inputs (the pads of the padded input stay zero),
    the second time as a channels-last view; where it applies and pays, the implicit
    variant is what ran."""
    shape, outputs, attributes = conv
    path = tmp_path_factory.mktemp("conv") / "conv.onnx"
    conv_model(path, shape, outputs, attributes, seed)
    model = sparsec.load(path)
    model.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=2)
    rng = np.random.default_rng(seed + 1)
    for run in range(2):
        x = rng.standard_normal(shape).astype(np.float32)
        x = x if run == 0 else np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)
        expected = model.run({"x": x})["y"]
        got = executor.run({"x": x})["y"]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    if not executor.layers:
        return  # left dense: too few channels for the n:m pattern
    ((op, layer),) = executor.layers.items()
    implicit = implicit_conv(op, layer.key, tuple(shape))  # pyright: ignore
    call = executor.steps[0].calls[tuple(shape)]
    runs_implicit = implicit is not None and layer.runs_implicit(implicit.lanes)
    assert bool(call.phase_copies) == runs_implicit
    assert (implicit is not None) == (len(shape) < 5 and layer.key.has_implicit_variant)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(convolutions(), st.sampled_from([2, 3, 4]), st.sampled_from(PATTERNS + BLOCK_PATTERNS[:2]), st.integers(1, 2), st.integers(0, 99))
def test_grouped_convolutions_match_the_reference(tmp_path_factory, conv, groups, pattern, threads, seed):
    """A grouped convolution (groups of at least two input channels) lowers to one
    sparse.conv, a block weight whose blocks would straddle groups to the block kernel
    on smaller blocks that fit a group (blocks of 4, groups of 2 mod 4 rows: blocks of
    2). Its implicit variant (1-D and 2-D) takes every group's weight rows in one
    call, each row reading its group's planes; otherwise the run makes a call per group
    on its slice of the input windows (3-D)."""
    shape, outputs, attributes = conv
    shape[1] = groups * max(2, shape[1] // groups)
    outputs = groups * 2 * max(1, outputs // (2 * groups))  # whole blocks of 2 a group; blocks of 4 may straddle groups
    attributes = {**attributes, "group": groups}
    path = tmp_path_factory.mktemp("grouped") / "conv.onnx"
    conv_model(path, shape, outputs, attributes, seed)
    model = sparsec.load(path)
    model.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=threads)
    x = np.random.default_rng(seed + 1).standard_normal(shape).astype(np.float32)
    expected = model.run({"x": x})["y"]
    np.testing.assert_allclose(executor.run({"x": x})["y"], expected, rtol=1e-4, atol=1e-4)
    if not executor.layers:
        return  # left dense: too few channels for the pattern
    ((op, layer),) = executor.layers.items()
    if "block" in pattern:  # blocks that would straddle groups: smaller ones that fit a group
        block = math.gcd(int(pattern.split("block-size=")[1].split()[0]), outputs // groups)
        assert (layer.key.kind, layer.key.block) == ("block", block)
    call = executor.steps[0].calls[tuple(shape)]
    implicit = implicit_conv(op, layer.key, tuple(shape))  # pyright: ignore
    assert bool(call.phase_copies) == (implicit is not None and layer.runs_implicit(implicit.lanes))
    assert len(call.group_calls) == (0 if call.phase_copies else groups)


@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")  # the reference's second group
@pytest.mark.parametrize("pattern", PATTERNS[:1] + PATTERNS[2:3])
@pytest.mark.parametrize("kernel", [(3, 3), (1, 1)])
def test_grouped_padding_products_read_the_zero_plane(tmp_path, pattern, kernel):
    """The products that pad a row to a whole number of rounds (weight 0) read the zero
    plane, not the next group's first channel: an infinity there leaves the first
    group's outputs finite and right. 5 x 5 images run tiles of one and two vectors,
    whose rounds take two to eight products."""
    shape, attributes = [1, 16, 5, 5], {"kernel_shape": list(kernel), "pads": [k // 2 for k in kernel] * 2, "group": 2}
    conv_model(tmp_path / "conv.onnx", shape, 24, attributes, 5)
    model = sparsec.load(tmp_path / "conv.onnx")
    model.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=1)
    x = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    x[0, 8] = np.inf  # the second group's first channel
    got, expected = executor.run({"x": x})["y"][:, :12], model.run({"x": x})["y"][:, :12]
    assert executor.steps[0].calls[tuple(shape)].phase_copies
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pattern", PATTERNS[:1] + PATTERNS[2:3])
@pytest.mark.parametrize("kernel", [(3, 3), (1, 1)])
def test_portable_targets_look_up_column_offsets(tmp_path, pattern, kernel):
    """Without AVX-512 a window's column offsets are looked up one by one (no gather);
    a 1x1 window's are one multiply on every target."""
    shape, attributes = [1, 12, 9, 11], {"kernel_shape": list(kernel), "strides": [2, 1], "pads": [1, 0, 1, 1]}
    conv_model(tmp_path / "conv.onnx", shape, 20, attributes, 3)
    model = sparsec.load(tmp_path / "conv.onnx")
    model.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=1, target=Target.portable())
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)
    assert executor.steps[0].calls[tuple(shape)].phase_copies and not next(iter(executor.layers.values())).key.avx512


def test_tap_offsets():
    """Column k = c x taps + t reads its inputs c x channel_floats + tap_offsets[t]
    into the phase planes: 3x3 with stride 2 on planes of 29 x 29 (four phases a
    channel), and 3x3 with dilation 2 on one plane of 14 x 10."""
    strided = KernelKey("nm", 8, 72, n=3, m=4, batched=True, window=(9, 3, 29 * 29, 29, 1, 1, 2, 2))
    assert strided.tap_offsets == (0, 841, 1, 1682, 2523, 1683, 29, 870, 30) and strided.channel_floats == 4 * 841
    dilated = KernelKey("nm", 8, 72, n=3, m=4, batched=True, window=(9, 3, 14 * 10, 10, 2, 2, 1, 1))
    assert dilated.tap_offsets == (0, 2, 4, 20, 22, 24, 40, 42, 44) and dilated.channel_floats == 140


@pytest.mark.parametrize(
    ("window", "spans", "lanes"),
    [
        ((9, 3, 58 * 58, 58, 1, 1, 1, 1), [(0, 118 + 64)], 160),  # rows 58 apart overlap: one span
        ((9, 3, 9 * 9, 9, 1, 1, 1, 1), [(0, 20 + 64)], 256),
        ((9, 3, 29 * 29, 29, 1, 1, 2, 2), [(0, 30 + 64), (841, 29 + 64), (1682, 1 + 64), (2523, 64)], 64),  # four phases
        ((1, 1, 56 * 56, 56, 1, 1, 1, 1), [(0, 64)], 64),
        ((9, 3, 100 * 100, 100, 1, 1, 1, 1), [(0, 66), (100, 66), (200, 66)], 64),  # rows too far apart to merge at 64 lanes, too long from 96
    ],
)
def test_lane_chunks_fit_the_spans_a_panel_reads(window, spans, lanes):
    """A channel's taps read merged spans of its planes (`tap_spans`, here for 64
    lanes); an implicit kernel takes as many lanes at a time as keep a 256-column
    panel's channels' spans within 32 KiB, at least its kind's batch chunk (64)."""
    key = KernelKey("bitmask", 64, 4608 if window[0] == 9 else 512, batched=True, window=window)
    assert key.tap_spans(64) == spans and key.lane_chunk == lanes


@pytest.mark.parametrize(
    ("shape", "attributes"),
    [
        ([1, 3, 30, 30], {"kernel_shape": [3, 3], "strides": [2, 2]}),  # SqueezeNet's first convolution
        ([2, 3, 24, 24], {"kernel_shape": [7, 7], "strides": [2, 2], "pads": [3, 3, 3, 3]}),  # ResNet50's: 147 columns
        ([1, 16, 13, 13], {"kernel_shape": [1, 1]}),  # SqueezeNet's 1x1 convolutions of 16 channels
        ([1, 40, 9, 9], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),  # 360 columns
    ],
)
def test_unpacked_convolutions_run_as_kernels(tmp_path, shape, attributes):
    """A 1-D or 2-D convolution pruning leaves dense (here, no pruning at all) runs the
    float32 block kernel (blocks of UNPACKED_BLOCK rows) as an implicit convolution,
    its bias and Relu fused: no numpy step is left. Two runs on two threads match the
    reference."""
    conv_model(tmp_path / "conv.onnx", shape, 24, attributes, 4)
    model = sparsec.load(tmp_path / "conv.onnx")
    model.apply("lower-kernels")
    executor = Executor(model.module, model.weights, threads=2)
    ((op, layer),) = executor.layers.items()
    assert (layer.key.kind, layer.key.block, layer.key.values, layer.key.epilogue) == ("block", UNPACKED_BLOCK, "f32", "bias_relu")
    assert all(step.unit is not None for step in executor.steps)
    rng = np.random.default_rng(5)
    for _run in range(2):
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)
    (call,) = executor.steps[0].calls.values()
    assert call.phase_copies and implicit_conv(op, layer.key, tuple(shape)) is not None  # pyright: ignore


@pytest.mark.parametrize("pattern", ["n=3 m=4", "n=2 m=4", "n=7 m=8", "n=1 m=2"])
@pytest.mark.parametrize("channels", [256, 300])
def test_implicit_nm_panels_narrow_to_keep_their_inputs_in_l1(tmp_path, pattern, channels):
    """A 1x1 convolution of 256 or 300 channels reads 64 KiB or more a 256-column panel
    for 64 lanes: its implicit n:m kernel takes narrower panels (IMPLICIT_PANEL_BYTES:
    128 columns within 32 KiB on Intel's "rapids" tuning, 64 within 24 KiB elsewhere),
    of whole steps on the 16-lane layout (128 columns at 7:8), the last one partial at
    300 channels; the plain kernel keeps 256. Two runs match the reference."""
    shape = [2, channels, 12, 12]
    conv_model(tmp_path / "conv.onnx", shape, 40, {"kernel_shape": [1, 1]}, 3)
    model = sparsec.load(tmp_path / "conv.onnx")
    model.apply(f"prune-magnitude{{pattern=nm {pattern} min-elements=0}},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=2)
    ((op, layer),) = executor.layers.items()
    conv = implicit_conv(op, layer.key, tuple(shape))  # pyright: ignore
    assert conv is not None and layer.key.panel_columns == 256
    grain = conv.key.nm_span if conv.key.nm_lanes else conv.key.m
    assert conv.key.panel_columns == max(128 if conv.key.tuning == "rapids" else 64, grain) and conv.key.panel_columns % grain == 0
    rng = np.random.default_rng(channels)
    for _run in range(2):
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("channels", "size", "outputs", "splits_lanes"), [(32, 40, 64, True), (32, 40, 160, False), (128, 7, 64, False)])
def test_two_threads_split_an_image_by_lane_chunks_or_rows(tmp_path, channels, size, outputs, splits_lanes):
    """On two threads an implicit call's shares are lane chunks where the weight has at
    most ROW_GROUP rows (each thread reads only its own lanes' planes) and the image
    more than one chunk, else rows (a 7 x 7 image is one chunk); all compute what the
    reference does, the residual-free epilogue included."""
    shape, attributes = [1, channels, size, size], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    conv_model(tmp_path / "conv.onnx", shape, outputs, attributes, 7)
    model = sparsec.load(tmp_path / "conv.onnx")
    model.apply("prune-magnitude{pattern=unstructured sparsity=0.7 min-elements=0},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=2)
    x = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)
    ((op, layer),) = executor.layers.items()
    conv = implicit_conv(op, layer.key, tuple(shape))  # pyright: ignore
    call = executor.steps[0].calls[tuple(shape)]
    assert conv is not None and conv.key.splits_lanes == splits_lanes and call.phase_copies
    units = math.ceil(conv.lanes / conv.key.lane_chunk) if splits_lanes else outputs
    assert conv.key.parallel_units(conv.lanes) == units and call.shares.threads == 2 and call.shares.bounds[-1][1] == units


def _multiply_adds(key: KernelKey) -> int:
    return kernel_llvm_ir(key).count('@"llvm.fma.')


@pytest.mark.parametrize("pattern", ["pattern=nm n=3 m=4", "pattern=block block-size=4 sparsity=0.75", "pattern=unstructured sparsity=0.6"])
def test_implicit_kernels_build_only_the_lane_tiles_their_calls_take(tmp_path, pattern):
    """An implicit variant's calls all take its image's lanes (KernelKey.lanes), so its
    kernel builds only the lane tiles that some lane chunk takes. 3x3 convolutions on
    images that leave 0, 16, 32 or 48 lanes past the widest tiles, in one chunk or in
    several (lanes split between two threads), compute what the reference does; a
    kernel that leaves a tile out has fewer multiply-adds than the one for calls of any
    lanes, and one that needs every tile has as many. A last chunk of 48 lanes after
    whole ones of 64-lane tiles (blocks at 24 x 24) takes three 16-lane tiles, no
    32-lane one."""
    dropped = kept = rest_narrowest = 0
    for size in (8, 9, 10, 13, 14, 24):
        shape, attributes = [1, 32, size, size], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
        conv_model(tmp_path / "conv.onnx", shape, 16, attributes, size)
        model = sparsec.load(tmp_path / "conv.onnx")
        model.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask,lower-kernels")
        x = np.random.default_rng(size).standard_normal(shape).astype(np.float32)
        expected = model.run({"x": x})["y"]
        for threads in (1, 2):
            np.testing.assert_allclose(Executor(model.module, model.weights, threads=threads).run({"x": x})["y"], expected, rtol=1e-4, atol=1e-4)
        ((op, layer),) = Executor(model.module, model.weights, threads=1).layers.items()
        conv = implicit_conv(op, layer.key, tuple(shape))  # pyright: ignore
        assert conv is not None and conv.key.lanes == conv.lanes
        generator = kernel_class(conv.key)(conv.key)
        widths = generator.lane_widths if conv.key.kind == "block" else generator.product_widths
        any_lanes = dataclasses.replace(conv.key, lanes=0)
        if conv.lanes > conv.key.lane_chunk and conv.key.lane_chunk % 64 == 0 and conv.lanes % conv.key.lane_chunk == 48:
            rest_narrowest += 1
            assert generator.widths_used(widths) == (widths[0], 1)
        if generator.widths_used(widths) == widths:
            kept += 1
            assert _multiply_adds(conv.key) == _multiply_adds(any_lanes)
        else:
            dropped += 1
            assert _multiply_adds(conv.key) < _multiply_adds(any_lanes)
    assert dropped and kept and (rest_narrowest or "block" not in pattern)


@pytest.mark.parametrize(("block", "sliced"), [(16, True), (12, True), (32, True), (8, False), (10, False)])
@pytest.mark.parametrize("outputs", [64, 72])
def test_wide_blocks_run_in_slices_of_four_rows(tmp_path, block, sliced, outputs):
    """A convolution's blocks wider than 8 rows (and a multiple of 4) run in slices of 4
    rows, a pass over the kept blocks each, on 64-lane tiles (KernelKey.block_slice):
    every slice computes what the reference does, also in a last row block that runs
    past the outputs (72 outputs in blocks of 16 or 32, 64 in blocks of 12), on 1 and
    2 threads; the kernel's code is one
    slice's, as many multiply-adds as a kernel for blocks of 4 of the same geometry."""
    shape, attributes = [1, 24, 10, 10], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    conv_model(tmp_path / "conv.onnx", shape, outputs, attributes, block)
    pattern = f"pattern=block block-size={block} sparsity=0.5 axis=0"
    checked_runs(tmp_path / "conv.onnx", pattern, 2, [shape], block).close()
    executor = checked_runs(tmp_path / "conv.onnx", pattern, 1, [shape], block)
    ((op, layer),) = executor.layers.items()
    conv = implicit_conv(op, layer.key, tuple(shape))  # pyright: ignore
    assert conv is not None and conv.key.block == block
    if sliced:
        assert (conv.key.block_slice, conv.key.block_lane_vectors) == (4, 4)
        assert _multiply_adds(conv.key) == _multiply_adds(dataclasses.replace(conv.key, block=4))
    else:
        assert conv.key.block_slice == block


@pytest.mark.parametrize(
    ("shape", "kernel", "groups", "implicit"),
    [
        ([1, 16, 9, 11], [3, 3], 1, True),
        ([2, 8, 20], [3], 1, True),
        ([1, 16, 9, 11], [3, 3], 2, True),
        ([1, 8, 4, 5, 6], [2, 3, 2], 1, False),
        ([1, 16, 4, 5, 6], [3, 1, 2], 2, False),
    ],
)
def test_nm_convolutions_with_a_window_read_their_columns_run_by_run(tmp_path, shape, kernel, groups, implicit):
    """An n:m weight with a window, its input channels (a group's) whole runs, runs the
    n:m kernel on its columns run by run (KernelKey.run_major): the implicit variant's
    offset table, and for 3-D convolutions the im2col windows, follow that order."""
    attributes = {"kernel_shape": kernel, "pads": [1] * 2 * len(kernel), "group": groups}
    conv_model(tmp_path / "conv.onnx", shape, 8, attributes, 3)
    model = sparsec.load(tmp_path / "conv.onnx")
    model.apply("prune-magnitude{pattern=nm n=2 m=4 min-elements=0},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=2)
    ((op, layer),) = executor.layers.items()
    assert layer.key.kind == "nm" and layer.key.run_major
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)
    assert bool(executor.steps[0].calls[tuple(shape)].phase_copies) == implicit


@pytest.mark.parametrize(
    ("shape", "attributes", "pattern", "pitch", "shifts"),
    [
        ([1, 32, 14, 14], {}, "nm n=3 m=4", 16, (0, 1, 2)),  # 288 columns: a second panel starts at tap column 1
        ([2, 40, 27, 27], {}, "nm n=2 m=4", 32, (0, 1, 2)),  # rows of 29 grown to 32; two kept a run
        ([1, 16, 56, 56], {}, "nm n=7 m=8", 64, (0, 1, 2)),  # 58 -> 64, lane chunks of whole rows
        ([1, 64, 13, 13], {}, "nm n=1 m=2", 16, (0, 1, 2)),
        ([1, 16, 12, 12], {"dilations": [2, 2], "pads": [2, 2, 2, 2]}, "nm n=3 m=4", 16, (0, 2, 4)),
        ([1, 16, 62, 62], {"strides": [2, 2]}, "nm n=3 m=4", 32, (0, 0, 1)),  # phase rows of 32: taps of two phases
        ([1, 16, 30, 30], {"strides": [2, 2]}, "nm n=3 m=4", 16, (0, 0, 1)),
        ([1, 16, 25, 25], {"strides": [2, 2]}, "nm n=3 m=4", 14, ()),  # strided rows keep their pitch
        ([1, 32, 7, 7], {}, "nm n=3 m=4", 9, ()),  # 9 -> 16 would compute 1.8x the lanes
        ([1, 16, 3, 60], {"kernel_shape": [3, 5]}, "nm n=3 m=4", 62, ()),  # 62 + 2: too wide a window for three sets of sums
        ([1, 32, 14, 14], {}, "unstructured sparsity=0.7", 16, (0, 1, 2)),  # products sorted by shift, panel by panel
        ([2, 24, 27, 27], {}, "unstructured sparsity=0.9", 32, (0, 1, 2)),
        ([1, 16, 12, 12], {"dilations": [2, 2], "pads": [2, 2, 2, 2]}, "unstructured sparsity=0.5", 16, (0, 2, 4)),
        ([1, 16, 62, 62], {"strides": [2, 2]}, "unstructured sparsity=0.7", 32, (0, 0, 1)),
        ([1, 16, 14, 14], {}, "block block-size=4 sparsity=0.75", 16, ()),  # a block kernel loads each input for four rows
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_taps_load_their_inputs_from_whole_lines(tmp_path, shape, attributes, pattern, pitch, shifts, threads):
    """An implicit n:m or bitmask convolution with a window up to 3 columns wide on rows
    of 16, 32 or 64 floats (its pitch grown to that within SHIFT_PITCH_SLACK at column
    stride 1) loads each tap's inputs from the line they start in, its column shift
    before them (KernelKey.column_shifts; a bitmask kernel sorts each panel's products
    by shift first), and moves each shift's sums into place with permutes; on two
    threads the lane chunks it splits are whole rows. The planes start on a line;
    every run matches the reference."""
    attributes = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], **attributes}
    conv_model(tmp_path / "conv.onnx", shape, 24, attributes, 5)
    executor = checked_runs(tmp_path / "conv.onnx", f"pattern={pattern}", threads, [tuple(shape)] * 2, 6)
    ((op, layer),) = executor.layers.items()
    conv = implicit_conv(op, layer.key, tuple(shape))  # pyright: ignore
    call = executor.steps[0].calls[tuple(shape)]
    assert conv is not None and conv.phase[1] == pitch and conv.key.column_shifts == shifts and call.phase_copies
    assert conv.key.lane_chunk % pitch == 0 if shifts else True
    assert ("vpermi2var.ps" in kernel_llvm_ir(conv.key)) == bool(shifts)
    assert (call.input_address + 4 * conv.line_start) % 64 == 0 and (conv.line_start == 0) == (pitch in (16, 32, 64) or conv.strides != (1, 1))
    executor.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_bitmask_shifts_of_unequal_counts(tmp_path, threads):
    """A bitmask 3x3 kernel sorts a panel's products by column shift, multiplies them
    in rounds of one product a shift while every shift has one, then each shift's
    rest (`sorted_multiply`): here output rows keep no weight at tap column 2, 0, or
    1 in turn, and none at another for half their channels in some rows, so the
    rounds take none and the rests range from nothing to every channel's products."""
    rng = np.random.default_rng(7)
    weight = rng.standard_normal((12, 40, 3, 3)).astype(np.float32) + 3.0  # none small enough to prune
    for row in range(12):
        weight[row, :, :, row % 3] = 0.0
        if row % 4 == 1:
            weight[row, :20, :, (row + 1) % 3] = 0.0
    bias = rng.standard_normal(12).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 40, 14, 14])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(tmp_path / "conv.onnx"))
    executor = checked_runs(tmp_path / "conv.onnx", "pattern=unstructured sparsity=0.3", threads, [(1, 40, 14, 14)] * 2, 8)
    ((op, layer),) = executor.layers.items()
    conv = implicit_conv(op, layer.key, (1, 40, 14, 14))  # pyright: ignore
    assert conv is not None and conv.key.kind == "bitmask" and conv.key.column_shifts == (0, 1, 2)
    assert kernel_class(conv.key)(conv.key).sorts_by_shift  # pyright: ignore
    executor.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_framed_1x1_convolutions_read_from_their_line_shift(tmp_path, threads):
    """SqueezeNet's case in small: a fire module whose 3x3 expand is pruned n:m and loads
    its taps from whole lines (rows of 14 grown to 16, planes from a line), while its
    1x1 expand, too small to prune, runs the float32 block kernel framed in the same
    planes. That one reads each row from one float past its line, so its kernel loads
    from the line and moves its sums one lane down (KernelKey.read_shift). Every
    output matches the reference."""
    fire_model(tmp_path / "fire.onnx", 12, 8, first=8)
    executor = checked_runs(tmp_path / "fire.onnx", "pattern=nm n=2 m=4", threads, [(1, 8, 12, 12)] * 2, 23, min_elements=100)
    steps = {step.op.results[0].name_hint: step for step in executor.steps}
    e1, f1 = (executor.layers[steps[name].op] for name in ("e1", "f1"))  # pyright: ignore
    assert (e1.key.kind, e1.key.values, f1.key.kind) == ("block", "f32", "nm")
    assert steps["e1"].frame == ((12, 12), (1, 1), (14, 16))
    ((call,),) = [steps["e1"].calls.values()]
    assert call.read_offset == 4 * 17 and (call.input_address + call.read_offset) % 64 == 4
    shifted = [key for layer in executor.layers.values() for key in layer.variant_calls if key.read_shift]
    assert [(key.kind, key.read_shift, key.window[3]) for key in shifted] == [("block", 1, 16)]
    executor.close()


@pytest.mark.parametrize("pattern", ["pattern=nm n=3 m=4", "pattern=unstructured sparsity=0.7"])
@pytest.mark.parametrize(("cap", "once"), [(None, True), (1024, False)])
@pytest.mark.parametrize("threads", [1, 2])
def test_implicit_kernels_decode_each_panel_once_a_call(tmp_path, monkeypatch, pattern, cap, once, threads):
    """An implicit call of several lane chunks decodes every row's panels once, before
    its chunks, where they fit DECODED_MAX_BYTES on the stack (`decodes_once`), else
    once a chunk; both match the reference, on one thread and two (each thread decodes
    the rows of its own share, or all rows for its lanes): a 1x1 convolution at 40 x 40,
    1600 lanes. An empty kernel cache, for the cap is not part of the key."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path / "cache"))
    if cap is not None:
        monkeypatch.setattr(batched, "DECODED_MAX_BYTES", cap)
    conv_model(tmp_path / "conv.onnx", [1, 32, 40, 40], 48, {"kernel_shape": [1, 1]}, 11)
    executor = checked_runs(tmp_path / "conv.onnx", pattern, threads, [(1, 32, 40, 40)] * 2, 12)
    ((op, layer),) = executor.layers.items()
    conv = implicit_conv(op, layer.key, (1, 32, 40, 40))  # pyright: ignore
    assert conv is not None and conv.lanes > conv.key.lane_chunk
    assert kernel_class(conv.key)(conv.key).decodes_once == once
    executor.close()


def test_wide_convolutions_keep_the_explicit_path(tmp_path):
    """A convolution of more than WINDOW_MAX_COLUMNS weight columns (its kernel's table
    of column offsets would not fit the stack) runs the explicit path."""
    channels = WINDOW_MAX_COLUMNS // 9 + 1
    shape, attributes = [1, channels, 4, 4], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    conv_model(tmp_path / "conv.onnx", shape, 4, attributes, 5)
    model = sparsec.load(tmp_path / "conv.onnx")
    model.apply("prune-magnitude{pattern=nm n=3 m=4 min-elements=0},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=1)
    ((op, layer),) = executor.layers.items()
    assert layer.key.cols == 9 * channels > WINDOW_MAX_COLUMNS and implicit_conv(op, layer.key, tuple(shape)) is None  # pyright: ignore
    x = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("kernel", "dilations", "strides", "pads", "spatial", "window", "out", "lanes", "phases"),
    [
        ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1), (56, 56), (9, 3, 3712, 64, 1, 1, 1, 1), (56, 56), 56 * 64, 1),
        ((1, 1), (1, 1), (1, 1), (0, 0, 0, 0), (14, 14), (1, 1, 208, 14, 1, 1, 1, 1), (14, 14), 208, 1),
        ((3, 3), (2, 2), (1, 1), (2, 0, 2, 1), (10, 9), (9, 3, 144, 10, 2, 2, 1, 1), (10, 6), 112, 1),
        ((5,), (1,), (1,), (2, 2), (30,), (5, 5, 48, 34, 1, 1, 1, 1), (30,), 48, 1),
        ((3, 3), (1, 1), (2, 2), (1, 1, 1, 1), (56, 56), (9, 3, 848, 29, 1, 1, 2, 2), (28, 28), 816, 4),
        ((1, 1), (1, 1), (2, 2), (0, 0, 0, 0), (56, 56), (1, 1, 28 * 28, 28, 1, 1, 2, 2), (28, 28), 784, 1),
    ],
)
def test_implicit_layout(tmp_path, kernel, dilations, strides, pads, spatial, window, out, lanes, phases):
    """The window arithmetic: sh x sw phase planes of Hq x Wq per channel (the padded
    input itself at stride 1, its rows of 58 grown to 64 for an n:m 3x3 window to load
    its taps from whole lines), each Hq x Wq rounded up to 16 floats apart, one lane per
    column of each output row's Wq (Ho x Wq lanes, rounded up to 16); a 1x1
    convolution with stride 2 reads one phase of four."""
    shape = [1, 8, *spatial]
    attributes = {"kernel_shape": list(kernel), "dilations": list(dilations), "strides": list(strides), "pads": list(pads)}
    conv_model(tmp_path / "conv.onnx", shape, 8, attributes, 0)
    model = sparsec.load(tmp_path / "conv.onnx")
    model.apply("prune-magnitude{pattern=nm n=3 m=4 min-elements=0},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=1)
    ((op, layer),) = executor.layers.items()
    conv = implicit_conv(op, layer.key, tuple(shape))  # pyright: ignore
    assert conv is not None and conv.key.window == window and conv.spatial == out and conv.lanes == lanes
    assert len(conv.phases_read) == phases
    assert conv.key == dataclasses.replace(layer.key, batched=True, window=window, lanes=lanes) and layer.key.cols == 8 * math.prod(kernel)
    assert conv.key in executor.implicit_keys  # the IR's shapes are static: compiled with the others


def test_framed_layout(tmp_path):
    """A 1x1 convolution at 56 x 56 framed in the planes of a 3x3 sibling with pads 1
    (58 x 58) reads them from past the pads (59 floats in, the planes' float on a line)
    and lays its output lanes out as the sibling's (56 rows of 58 lanes); in planes
    whose rows of 64 start on a line, it reads from one float past a line
    (KernelKey.read_shift) as its sibling's taps do; framed at row pitch 58 without pads it
    reads images at that pitch in place, and no longer back-to-back ones, which the
    plain 1x1 convolution reads."""
    shape = (1, 8, 56, 56)
    conv_model(tmp_path / "conv.onnx", list(shape), 8, {"kernel_shape": [1, 1]}, 0)
    model = sparsec.load(tmp_path / "conv.onnx")
    model.apply("prune-magnitude{pattern=nm n=3 m=4 min-elements=0},pack-bitmask,lower-kernels")
    ((op, layer),) = Executor(model.module, model.weights, threads=1).layers.items()
    plain = implicit_conv(op, layer.key, shape)  # pyright: ignore
    assert plain is not None
    padded = framed(plain, (1, 1), (58, 58))
    assert (padded.key.window, padded.lanes, padded.read_offset, padded.lane_layout) == ((1, 1, 3376, 58, 1, 1, 1, 1), 56 * 58, 59, (3248, 58, 56, 56))
    shifted = framed(plain, (1, 1), (58, 64))  # planes whose rows of 64 start on a line: each row's image one float past it
    assert (shifted.key.window, shifted.read_offset, shifted.line_start, shifted.key.read_shift, shifted.key.column_shifts) == ((1, 1, 3712, 64, 1, 1, 1, 1), 65, 0, 1, (1,))
    assert padded.key.read_shift == 0 and padded.line_start == 59
    pitched = framed(plain, (0, 0), (56, 58))
    assert (pitched.key.window, pitched.read_offset, pitched.lane_layout) == ((1, 1, 3248, 58, 1, 1, 1, 1), 0, (3248, 58, 56, 56))
    lanes = np.zeros((1, 9, 3248), np.float32)
    at_pitch = lanes[:, :8, : 56 * 58].reshape(1, 8, 56, 58)[..., :56]
    back_to_back = np.zeros((1, 9, 3136), np.float32)[:, :8].reshape(shape)
    assert pitched.reads_in_place(at_pitch) and not pitched.reads_in_place(back_to_back)
    assert plain.reads_in_place(back_to_back) and not plain.reads_in_place(at_pitch) and not padded.reads_in_place(at_pitch)


def lowered_residual_block(path, open_axes: tuple[int, ...] = ()):
    """models.residual() saved at `path` (its input's and output's `open_axes` left
    to run time), loaded, pruned to n:m 3:4 and lowered to kernels."""
    proto = models.residual()
    for value in (proto.graph.input[0], proto.graph.output[0]):
        for axis in open_axes:
            value.type.tensor_type.shape.dim[axis].dim_param = f"axis{axis}"
    onnx.save(proto, str(path))
    model = sparsec.load(path)
    model.apply("prune-magnitude{pattern=nm n=3 m=4 min-elements=0},fold-batch-norm,pack-bitmask,lower-kernels")
    return model


def test_open_image_sizes_compile_their_implicit_variants_on_first_use(tmp_path):
    """With the image's height and width left open, no implicit kernel is known up
    front (the convolutions' own kernels are compiled instead); each image size
    compiles (or finds) its own on first use, and a ResNet block matches the
    reference at 1 and 3 images on two threads."""
    model = lowered_residual_block(tmp_path / "block.onnx", open_axes=(0, 2, 3))
    executor = Executor(model.module, model.weights, threads=2)
    assert executor.implicit_keys == [] and all(layer.kernel is not None for layer in executor.layers.values())
    for images in (1, 3):
        x = np.random.default_rng(images).standard_normal((images, 16, 12, 12)).astype(np.float32)
        np.testing.assert_allclose(executor.run({"x": x})["out"], model.run({"x": x})["out"], rtol=1e-4, atol=1e-4)
    windows = sorted(key.window for layer in executor.layers.values() for key in layer.variant_calls)
    assert windows == [(1, 1, 144, 12, 1, 1, 1, 1), (9, 3, 224, 16, 1, 1, 1, 1)]


@pytest.mark.parametrize("threads", [1, 2])
def test_open_image_sizes_run_in_any_order(tmp_path, threads):
    """Image sizes that come and go each keep output lanes of their own size (kept by
    shape: by op and image count, a second size met the first one's array) and match
    the reference, larger ones after smaller and back."""
    model = lowered_residual_block(tmp_path / "block.onnx", open_axes=(0, 2, 3))
    executor = Executor(model.module, model.weights, threads=threads)
    for images, size in [(1, (12, 12)), (1, (16, 16)), (2, (12, 12)), (1, (20, 24)), (1, (8, 8)), (1, (16, 16))]:
        x = np.random.default_rng(size[1]).standard_normal((images, 16, *size)).astype(np.float32)
        np.testing.assert_allclose(executor.run({"x": x})["out"], model.run({"x": x})["out"], rtol=1e-4, atol=1e-4, err_msg=f"{images} x {size}")
    executor.close()


def test_an_open_batch_compiles_what_runs_up_front(tmp_path):
    """With only the batch left open, the implicit variants (one image's lanes, the
    same at every batch) are compiled up front in one batch, as for static shapes, with
    the residual Add taken in; runs at 1 and 3 images compile nothing more and match
    the reference on two threads."""
    model = lowered_residual_block(tmp_path / "block.onnx", open_axes=(0,))
    executor = Executor(model.module, model.weights, threads=2)
    assert len(executor.compiled) == 1 and all(layer.kernel is None for layer in executor.layers.values())
    assert {key.symbol for key in executor.implicit_keys} < set(executor.compiled[0].functions)
    for images in (1, 3):
        x = np.random.default_rng(images).standard_normal((images, 16, 12, 12)).astype(np.float32)
        np.testing.assert_allclose(executor.run({"x": x})["out"], model.run({"x": x})["out"], rtol=1e-4, atol=1e-4)
    assert len(executor.compiled) == 1
    assert any(call.residual is not None for step in executor.steps for call in step.calls.values())


def test_static_shapes_compile_what_runs_up_front_in_one_batch(tmp_path):
    """With the IR's shapes static, the executor compiles in one batch (one engine) the
    implicit variants of a ResNet block's convolutions and the plane copy kernel of its
    3x3 one, but not the convolutions' own kernels, which those shapes never call; runs
    compile nothing more."""
    model = lowered_residual_block(tmp_path / "block.onnx")
    executor = Executor(model.module, model.weights, threads=1)
    assert len(executor.compiled) == 1 and all(layer.kernel is None for layer in executor.layers.values())
    compiled = set(executor.compiled[0].functions)
    assert {key.symbol for key in executor.implicit_keys} < compiled and any(symbol.startswith("planes_f32") for symbol in compiled)
    x = np.random.default_rng(1).standard_normal((1, 16, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(executor.run({"x": x})["out"], model.run({"x": x})["out"], rtol=1e-4, atol=1e-4)
    assert len(executor.compiled) == 1


def residual_model(path, kind: str) -> None:
    """x (2 x 16 x 12 x 12) -> 3x3 Conv `a` (pads 1) -> the residual op of `kind`:
    add_relu: Relu(Add(a, x)); sum: Relu(Sum(x, a)); returned: Relu(Add(a, x)) with
    the Add returned too; broadcast: Relu(Add(a, per-channel constant)); later: Relu(
    Add(a, b)), b a second Conv of x after `a`; dynamic: Relu(Add(a, z)), the batch
    axis left open, z a second input of a batch of its own (one type in the IR, which
    broadcasts where z has one image); grouped: add_relu with `a` in two groups."""
    rng = np.random.default_rng(3)
    groups = 2 if kind == "grouped" else 1
    weights = [numpy_helper.from_array((rng.standard_normal((16, 16 // groups, 3, 3)) / 12).astype(np.float32), "wa")]
    weights.append(numpy_helper.from_array((rng.standard_normal((16, 16, 3, 3)) / 12).astype(np.float32), "wb"))
    weights.append(numpy_helper.from_array(rng.standard_normal((1, 16, 1, 1)).astype(np.float32), "c"))
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], name="a", group=groups, **conv)]
    outputs = ["y"]
    if kind == "later":
        nodes.append(helper.make_node("Conv", ["x", "wb"], ["b"], name="b", **conv))
    other = {"broadcast": "c", "later": "b", "dynamic": "z"}.get(kind, "x")
    operands = [other, "a"] if kind == "sum" else ["a", other]
    nodes.append(helper.make_node("Sum" if kind == "sum" else "Add", operands, ["s"]))
    nodes.append(helper.make_node("Relu", ["s"], ["y"]))
    outputs += ["s"] if kind == "returned" else []
    value = lambda name, batch="batch": helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch if kind == "dynamic" else 2, 16, 12, 12])  # noqa: E731
    inputs = [value("x"), value("z", "other")] if kind == "dynamic" else [value("x")]
    graph = helper.make_graph(nodes, "residual", inputs, [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


@pytest.mark.parametrize(
    ("kind", "taken_in"),
    [("add_relu", {"a": True}), ("sum", {"a": True}), ("returned", {"a": False}), ("broadcast", {}), ("later", {"b": True}), ("grouped", {"a": True})],
)
@pytest.mark.parametrize("pattern", ["pattern=nm n=3 m=4", "pattern=block block-size=4 sparsity=0.75"])
def test_residual_adds_fold_into_implicit_calls(tmp_path, kind, taken_in, pattern):
    """A convolution whose only use is an Add (or Sum of two) of one type with a value
    made before it runs its accumulate variant on that value and skips the Add, and
    the Relu after it when that is the Add's only use (`taken_in`: the convolutions
    that take one in, and whether with the Relu). An Add that broadcasts, or whose
    other operand is made later, stays in numpy; results match the reference, twice
    (the outputs are refilled every run)."""
    residual_model(tmp_path / "residual.onnx", kind)
    model = sparsec.load(tmp_path / "residual.onnx")
    model.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=2)
    for seed in (0, 1):
        x = np.random.default_rng(seed).standard_normal((2, 16, 12, 12)).astype(np.float32)
        expected, got = model.run({"x": x}), executor.run({"x": x})
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-4)
    convs = [step for step in executor.steps if step.unit is not None]
    names = {step.op.results[0].name_hint: next(iter(step.calls.values())) for step in convs}
    assert {name: call.residual.relu for name, call in names.items() if call.residual is not None} == taken_in
    assert sum(key.accumulate for key in executor.implicit_keys) == len(taken_in)  # compiled up front with the others
    if kind == "later":  # two convolutions of x with one geometry fill one set of planes in turn
        assert names["a"].input is names["b"].input


@pytest.mark.parametrize("threads", [1, 2])
def test_residual_adds_at_an_open_batch_taken_in_where_the_shapes_agree(tmp_path, threads):
    """With the batch left to run time, an Add of one type in the IR may still
    broadcast: a call takes it in where the addend has the convolution's output
    shape, else the Add and Relu run after it (z of one image; x of one and z of
    three, whose Add outgrows the convolution). Calls are kept per pair of shapes, so
    runs that go back and forth take each its own; results match the reference."""
    residual_model(tmp_path / "residual.onnx", "dynamic")
    model = sparsec.load(tmp_path / "residual.onnx")
    model.apply("prune-magnitude{pattern=nm n=3 m=4 min-elements=0},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=threads)
    (step,) = [step for step in executor.steps if step.unit is not None]
    rng = np.random.default_rng(threads)
    for x_images, z_images, taken_in in [(2, 2, True), (2, 1, False), (1, 3, False), (2, 2, True), (1, 1, True), (2, 1, False)]:
        feeds = {"x": rng.standard_normal((x_images, 16, 12, 12)).astype(np.float32), "z": rng.standard_normal((z_images, 16, 12, 12)).astype(np.float32)}
        expected, got = model.run(feeds), executor.run(feeds)
        np.testing.assert_allclose(got["y"], expected["y"], rtol=1e-4, atol=1e-4)
        call = step.calls[((x_images, 16, 12, 12), (z_images, 16, 12, 12))]
        assert (call.residual is not None) == taken_in
    executor.close()


def bottleneck_model(path, images: int | str) -> None:
    """x (images x 8 x 12 x 12; a name leaves the batch to run time) -> 1x1
    Conv + Relu `a` (16 channels; 1x1 convolutions' rows drop no lanes), read by a 3x3
    Conv + Relu `b` (pads 1), a 3x3 Conv `p` (the planes b filled) and r1 = Relu(Add(
    c, a)), c a 1x1 Conv of b; r2 = Add(d, r1), d a 1x1 Conv of h, a 1x1 Conv + Relu
    of r1; `q`, a 3x3 Conv of r2 (the planes b filled from a's lanes, which now hold
    r2); y = Add(e, r2), e a 1x1 Conv of r2, with r2 also returned; a 3x3 Conv f of y,
    then r3 = Add(k, y), k a 1x1 Conv of y itself; z = Add(g, f), g a 1x1 Conv of f
    (f's lanes are laid out otherwise)."""
    rng = np.random.default_rng(16)
    weights, nodes = [], []

    def conv(source: str, name: str, shape: tuple[int, ...], relu: bool = False) -> None:
        weights.append(numpy_helper.from_array((rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))).astype(np.float32), f"{name}_w"))
        pads = [shape[2] // 2] * 4
        nodes.append(helper.make_node("Conv", [source, f"{name}_w"], [f"{name}_c" if relu else name], kernel_shape=list(shape[2:]), pads=pads))
        nodes.extend([helper.make_node("Relu", [f"{name}_c"], [name])] if relu else [])

    conv("x", "a", (16, 8, 1, 1), relu=True)
    conv("a", "b", (16, 16, 3, 3), relu=True)
    conv("a", "p", (16, 16, 3, 3))
    conv("b", "c", (16, 16, 1, 1))
    nodes += [helper.make_node("Add", ["c", "a"], ["s1"]), helper.make_node("Relu", ["s1"], ["r1"])]
    conv("r1", "h", (16, 16, 1, 1), relu=True)
    conv("h", "d", (16, 16, 1, 1))
    nodes.append(helper.make_node("Add", ["d", "r1"], ["r2"]))
    conv("r2", "q", (16, 16, 3, 3))
    conv("r2", "e", (16, 16, 1, 1))
    nodes.append(helper.make_node("Add", ["e", "r2"], ["y"]))
    conv("y", "f", (16, 16, 3, 3))
    conv("y", "k", (16, 16, 1, 1))
    nodes.append(helper.make_node("Add", ["k", "y"], ["r3"]))
    conv("f", "g", (16, 16, 1, 1))
    nodes.append(helper.make_node("Add", ["g", "f"], ["z"]))
    graph = helper.make_graph(
        nodes, "bottleneck", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [images, 8, 12, 12])], [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("z", "p", "q", "r2", "r3")], weights
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


@pytest.mark.parametrize("pattern", ["pattern=nm n=3 m=4", "pattern=block block-size=4 sparsity=0.75", "pattern=unstructured sparsity=0.6"])
@pytest.mark.parametrize(("images", "threads"), [(1, 1), (1, 2), (2, 2)])
def test_residual_adds_taken_into_the_addends_lanes(tmp_path, pattern, images, threads):
    """A convolution taking in a residual Add whose addend dies there (read by nothing
    after the convolution, not returned) and is another implicit call's output lanes,
    laid out as its own would be, adds into those lanes instead of copying the addend
    (`_Call.addend_in_place`): c into a's lanes, then d into them again. e's addend
    is returned, k reads its addend itself (in place, as its planes), and g's, f,
    drops lanes that g's rows keep: those three are copied. q reads r2 through the
    planes that b filled from a's lanes earlier in the run (and p read as they were):
    they are filled again. One image and two, two runs."""
    bottleneck_model(tmp_path / "bottleneck.onnx", images)
    executor = checked_runs(tmp_path / "bottleneck.onnx", pattern, threads, [(images, 8, 12, 12)] * 2, 17)
    steps = {step.op.results[0].name_hint: step for step in executor.steps if step.unit is not None}
    in_place = {name: all(call.addend_in_place is not None for call in step.calls.values()) for name, step in steps.items() if step.residual is not None}
    assert in_place == {"c": True, "d": True, "k": False, "e": False, "g": False}
    assert steps["p"].calls[(images, 16, 12, 12)].input is steps["q"].calls[(images, 16, 12, 12)].input  # one set of planes
    executor.close()


@pytest.mark.parametrize(("images", "threads"), [(2, 2), (3, 2), (5, 2), (5, 3), (7, 3)])
def test_images_run_side_by_side(tmp_path, images, threads):
    """On several threads, implicit calls run a batch's images side by side, an image a
    thread: those that read their images in place as many as the threads share evenly
    (`_images_side_by_side`), those that read phase planes a group of one per thread
    at a time, each from planes of its own that the thread fills (`_image_groups`,
    `_Call.twins`); images
    left over are split across the threads. Bit for bit what one thread computes,
    over two runs (a new input array each), and close to the reference."""
    bottleneck_model(tmp_path / "bottleneck.onnx", "batch")
    model = sparsec.load(tmp_path / "bottleneck.onnx")
    model.apply("prune-magnitude{pattern=nm n=3 m=4 min-elements=0},pack-bitmask,lower-kernels")
    several, one = (Executor(model.module, model.weights, threads=count) for count in (threads, 1))
    rng = np.random.default_rng(images)
    try:
        for _ in range(2):
            feeds = {"x": rng.standard_normal((images, 8, 12, 12)).astype(np.float32)}
            expected, got = one.run(feeds), several.run(feeds)
            for name, value in expected.items():
                np.testing.assert_array_equal(got[name], value, err_msg=name)
            np.testing.assert_allclose(got["z"], model.run(feeds)["z"], rtol=1e-4, atol=1e-4)
        calls = [call for step in several.steps if isinstance(step.op, SparseConvOp) for call in step.calls.values()]
        in_place = [call for call in calls if call.in_place]
        from_planes = [call for call in calls if call.twins]
        assert in_place and from_planes and len(in_place) + len(from_planes) == len(calls)
        assert all(call.images_side_by_side.read[1] == images - images % threads for call in in_place)  # pyright: ignore
        for call in from_planes:
            plan = call.images_side_by_side
            assert plan.read[-1] == images // threads and len(call.twins) == threads - 1  # pyright: ignore
            assert plan.filling[1].bounds[0][1] == 1 + len(call.plane_copies)  # pyright: ignore  # the threads fill their planes: an image's copies, then its call
            assert len({reader.input_address for reader in (call, *call.twins)}) == threads
    finally:
        several.close()
        one.close()


def prologue_model(path, kind: str) -> None:
    """x (2 x 16 x 12 x 12) -> BatchNormalization -> Relu -> 3x3 Conv (pads 1) `y`, as
    DenseNet's layers start: norm_relu; norm: without the Relu; shared: the Relu's
    result also returned; conv3d: the same on a 3-D input, whose convolution is not
    implicit; grouped: norm_relu before a convolution of two groups; strided: before a
    convolution at stride 2."""
    rng = np.random.default_rng(4)
    spatial = [12, 12, 3] if kind == "conv3d" else [12, 12]
    kernel = [3] * len(spatial)
    groups = 2 if kind == "grouped" else 1
    strides = [2, 2] if kind == "strided" else [1] * len(spatial)
    weights = [numpy_helper.from_array((rng.standard_normal((16, 16 // groups, *kernel)) / 12).astype(np.float32), "w")]
    norm = {"s": 1 + 0.3 * rng.standard_normal(16), "t": rng.standard_normal(16), "m": rng.standard_normal(16), "v": 0.5 + rng.random(16)}
    weights += [numpy_helper.from_array(value.astype(np.float32), name) for name, value in norm.items()]
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "t", "m", "v"], ["n"], name="bn")]
    if kind != "norm":
        nodes.append(helper.make_node("Relu", ["n"], ["r"], name="relu"))
    nodes.append(helper.make_node("Conv", ["n" if kind == "norm" else "r", "w"], ["y"], name="conv", kernel_shape=kernel, pads=[1] * 2 * len(kernel), group=groups, strides=strides))
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 16, *spatial])  # noqa: E731
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)] + ([value("r")] if kind == "shared" else [])
    graph = helper.make_graph(nodes, "prologue", [value("x")], outputs, weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


@pytest.mark.parametrize(("kind", "deferred", "applied"), [("norm_relu", 2, True), ("norm", 1, True), ("shared", 0, False), ("conv3d", 2, False), ("grouped", 2, True), ("strided", 2, True)])
def test_normalizations_before_a_convolution_apply_as_its_input_is_copied(tmp_path, kind, deferred, applied):
    """A batch normalization (and Relu) that only a convolution reads is put off to the
    convolution's step (`deferred` steps); an implicit call applies it while copying
    each image into its planes, any other call (a 3-D convolution) runs the put-off
    steps first. A Relu with another use stays where it is. Results match the
    reference on two runs."""
    prologue_model(tmp_path / "prologue.onnx", kind)
    model = sparsec.load(tmp_path / "prologue.onnx")
    model.apply("prune-magnitude{pattern=nm n=3 m=4 min-elements=0},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=2)
    shape = (2, 16, 12, 12, 3) if kind == "conv3d" else (2, 16, 12, 12)
    for seed in (0, 1):
        x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
        expected, got = model.run({"x": x}), executor.run({"x": x})
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-4)
    assert sum(step.deferred for step in executor.steps) == deferred
    (call,) = next(step for step in executor.steps if step.unit is not None).calls.values()
    assert (call.prologue is not None) == applied
    prologue = {"norm_relu": "affine_relu", "norm": "affine", "shared": "none", "grouped": "affine_relu", "strided": "affine_relu"}.get(kind)
    assert (call.plane_copies[0][0].key.prologue if call.plane_copies else None) == prologue


@pytest.mark.parametrize("prologue", PLANE_PROLOGUES)
@pytest.mark.parametrize("columns", [5, 16, 37])
@pytest.mark.parametrize("stride", [1, 2])
def test_plane_copy_kernel(prologue, columns, stride):
    """The plane copy kernel writes channels [begin, end) of an image, read in place at
    its strides (every other column at column stride 2), into the middle of their
    planes, 16 values at a time and a partial vector, through scale, shift and Relu as
    its key says; it writes nothing else (the pads keep what they hold)."""
    rng = np.random.default_rng(columns)
    channels, rows, (hq, wq, top, left) = 5, 3, (6, columns + 4, 2, 1)
    image = rng.standard_normal((channels, rows + 2, stride * columns + 7)).astype(np.float32)[:, 1 : rows + 1, 2 : 2 + stride * (columns - 1) + 1]
    source = image[:, :, ::stride]
    scale, shift = rng.standard_normal((2, channels)).astype(np.float32)
    planes = np.full((channels, hq, wq), 7.0, np.float32)
    geometry = np.array([image.strides[0] // 4, image.strides[1] // 4, rows, columns, hq * wq, wq, top * wq + left, 0], np.int64)
    key = PlaneKey(prologue, stride)
    compiled = compile_kernels([key])  # its engine holds the code while the kernel runs
    compiled.functions[key.symbol](image.ctypes.data, planes.ctypes.data, geometry.ctypes.data, scale.ctypes.data, shift.ctypes.data, 0, 0, 1, channels)
    values = source if prologue == "none" else source * scale[:, None, None] + shift[:, None, None]
    expected = np.full_like(planes, 7.0)
    expected[1:, top : top + rows, left : left + columns] = (np.maximum(values, 0) if prologue == "affine_relu" else values)[1:]
    np.testing.assert_allclose(planes, expected, rtol=1e-6, atol=1e-6)


def concat_model(path, reader: dict, readers: int = 1, returned: bool = False) -> None:
    """Two 1x1 convolutions of x (5 and 11 channels, Relu'd), concatenated along the
    channels, then read by `readers` nodes made from `reader` (op type and attributes;
    a Conv gets 8 output channels), and by the graph's outputs when `returned`."""
    rng = np.random.default_rng(7)
    spatial = reader.pop("spatial")
    weights = [numpy_helper.from_array(rng.standard_normal((c, 4, *([1] * len(spatial)))).astype(np.float32), f"w{c}") for c in (5, 11)]
    nodes = [helper.make_node("Conv", ["x", f"w{c}"], [f"c{c}"], kernel_shape=[1] * len(spatial)) for c in (5, 11)]
    nodes += [helper.make_node("Relu", [f"c{c}"], [f"r{c}"]) for c in (5, 11)]
    nodes.append(helper.make_node("Concat", ["r5", "r11"], ["cat"], axis=1))
    op = reader.pop("op")
    outputs = []
    for index in range(readers):
        inputs = ["cat"]
        if op == "Conv":
            weights.append(numpy_helper.from_array(rng.standard_normal((8, 16, *reader["kernel_shape"])).astype(np.float32), f"v{index}"))
            inputs.append(f"v{index}")
        nodes.append(helper.make_node(op, inputs, [f"y{index}"], **reader))
        outputs.append(f"y{index}")
    outputs += ["cat"] if returned else []
    graph = helper.make_graph(
        nodes, "concat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, *spatial])], [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs], weights
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


@pytest.mark.parametrize(
    ("reader", "readers", "returned", "put_off"),
    [
        ({"op": "Conv", "kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "spatial": [48, 48]}, 1, False, True),
        ({"op": "Conv", "kernel_shape": [3, 3], "strides": [2, 2], "spatial": [9, 21]}, 1, False, True),
        ({"op": "Conv", "kernel_shape": [3, 3], "strides": [3, 3], "spatial": [9, 21]}, 1, False, True),
        ({"op": "Conv", "kernel_shape": [3], "pads": [1, 1], "spatial": [30]}, 1, False, True),
        ({"op": "Conv", "kernel_shape": [1, 2, 1], "spatial": [3, 4, 5]}, 1, False, True),
        ({"op": "MaxPool", "kernel_shape": [3, 3], "strides": [2, 2], "spatial": [40, 40]}, 1, False, True),
        ({"op": "AveragePool", "kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "spatial": [9, 21]}, 1, False, True),
        ({"op": "Conv", "kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "spatial": [9, 21]}, 2, False, False),
        ({"op": "MaxPool", "kernel_shape": [2, 2], "spatial": [9, 21]}, 1, True, False),
    ],
)
def test_concats_put_off_to_their_reader(tmp_path, reader, readers, returned, put_off):
    """A Concat along the channels whose one reader is a convolution or pool step is
    put off to it: the reader copies each part into its planes' channels (the plane copy
    kernel on each part's shares of the channels, split between two threads for the
    48 x 48 and 40 x 40 images, a call a phase at stride 2, numpy's phase copies at
    stride 3, a pool's numpy copy for a batch of images), or makes the Concat's result first (an im2col 3-D
    convolution). Concats with two readers, or returned, run. Every case
    matches the reference, on one and two threads, for one image and two."""
    concat_model(tmp_path / "concat.onnx", dict(reader), readers, returned)
    model = sparsec.load(tmp_path / "concat.onnx")
    model.apply("prune-magnitude{pattern=unstructured sparsity=0.5 min-elements=0},pack-bitmask,lower-kernels")
    spatial = reader["spatial"]
    rng = np.random.default_rng(8)
    for threads in (1, 2):
        executor = Executor(model.module, model.weights, threads=threads)
        (concat,) = [step for step in executor.steps if step.op.name == "nn.concat"]
        assert concat.deferred == put_off and sum(step.concat is concat for step in executor.steps) == (readers if put_off else 0)
        for images in (1, 2, 1):
            x = rng.standard_normal((images, 4, *spatial)).astype(np.float32)
            expected = model.run({"x": x})
            for name, got in executor.run({"x": x}).items():
                np.testing.assert_allclose(got, expected[name], rtol=1e-4, atol=1e-4)
        executor.close()


def test_convolutions_reading_one_input_fill_their_shared_planes_once(tmp_path, monkeypatch):
    """Convolutions of one geometry share their phase planes; one that reads the input
    the planes already hold from this run skips the copy, and one after a convolution
    that filled them with another input, or in the next run, copies again. (c reads a
    numpy step's result: a kernel's output it would read in place.)"""
    rng = np.random.default_rng(9)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), f"w{index}") for index in range(4)]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["x", "w1"], ["b"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["x", "w3"], ["d"], kernel_shape=[1, 1]),
    ]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in "bcd"]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])], outputs, weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(tmp_path / "shared.onnx"))
    model = sparsec.load(tmp_path / "shared.onnx")
    model.apply("prune-magnitude{pattern=unstructured sparsity=0.5 min-elements=0},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=1)
    fills = []
    fill = executor._fill_planes
    monkeypatch.setattr(executor, "_fill_planes", lambda call, first, planes, address: fills.append(address) or fill(call, first, planes, address))
    x = np.empty((1, 8, 12, 12), np.float32)  # one array, new values each run
    for _ in range(2):
        fills.clear()
        x[...] = rng.standard_normal(x.shape)
        expected = model.run({"x": x})
        for name, got in executor.run({"x": x}).items():
            np.testing.assert_allclose(got, expected[name], rtol=1e-4, atol=1e-4)
        assert len(fills) == 3  # a (b reads the same), c (its own input), d (x again after c)


def lanes_model(path, reader: str, producer: str) -> None:
    """x (N x 8 x 12 x 12) -> `p`, by `producer`: a Conv with Relu (1x1, or 3x3 with
    pads 1, whose output rows drop lanes; 16 channels, positive weights), a depthwise
    3x3 Conv (pads 1, positive weights), a 3x3 MaxPool (stride 2, pads 1: 6 x 6
    planes, not whole lines), or that MaxPool also read by a Relu ("shared") -> Conv
    `y` of p by `reader`: 1x1, grouped (1x1 in two groups), strided (1x1, stride 2),
    padded (1x1, pads 1), 3x3 (pads 1), normalized (1x1 after a BatchNormalization
    of p)."""
    rng = np.random.default_rng(12)
    positive = lambda name, shape: numpy_helper.from_array(rng.uniform(0.1, 1.0, shape).astype(np.float32), name)  # noqa: E731  (an infinite input stays one)
    nodes, weights, outputs, channels = [], [], ["y"], 8
    if producer in ("1x1", "3x3"):
        kernel, channels = [3, 3] if producer == "3x3" else [1, 1], 16
        nodes += [helper.make_node("Conv", ["x", "wp"], ["c"], kernel_shape=kernel, pads=[k // 2 for k in kernel] * 2), helper.make_node("Relu", ["c"], ["p"])]
        weights.append(positive("wp", (16, 8, *kernel)))
    elif producer == "depthwise":
        nodes.append(helper.make_node("Conv", ["x", "wp"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8))
        weights.append(positive("wp", (8, 1, 3, 3)))
    else:
        nodes.append(helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
        if producer == "shared":
            nodes.append(helper.make_node("Relu", ["p"], ["q"]))
            outputs.append("q")
    attributes = {
        "1x1": {"kernel_shape": [1, 1]},
        "grouped": {"kernel_shape": [1, 1], "group": 2},
        "strided": {"kernel_shape": [1, 1], "strides": [2, 2]},
        "padded": {"kernel_shape": [1, 1], "pads": [1, 1, 1, 1]},
        "3x3": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
        "normalized": {"kernel_shape": [1, 1]},
    }[reader]
    source = "p"
    if reader == "normalized":
        weights += [numpy_helper.from_array(rng.uniform(0.5, 2.0, channels).astype(np.float32), name) for name in ("scale", "bias", "mean", "var")]
        nodes.append(helper.make_node("BatchNormalization", ["p", "scale", "bias", "mean", "var"], ["n"]))
        source = "n"
    weights.append(numpy_helper.from_array(rng.standard_normal((24, channels // attributes.get("group", 1), *attributes["kernel_shape"])).astype(np.float32) / 3, "wr"))
    nodes.append(helper.make_node("Conv", [source, "wr"], ["y"], **attributes))
    graph = helper.make_graph(
        nodes, "lanes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 12, 12])], [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs], weights
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the reference, on the infinite image
@pytest.mark.parametrize(
    ("reader", "producer", "in_place"),
    [
        ("1x1", "1x1", True), ("grouped", "1x1", True), ("strided", "1x1", False), ("padded", "1x1", False), ("3x3", "1x1", False), ("normalized", "1x1", False),
        ("1x1", "3x3", False), ("1x1", "depthwise", True), ("grouped", "maxpool", True), ("1x1", "shared", False), ("strided", "maxpool", False),
    ],
)  # fmt: skip
@pytest.mark.parametrize("pattern", ["pattern=nm n=2 m=4", "pattern=block block-size=4 sparsity=0.75", "pattern=unstructured sparsity=0.6"])
@pytest.mark.parametrize("threads", [1, 2])
def test_1x1_convolutions_read_output_lanes_in_place(tmp_path, reader, producer, in_place, pattern, threads):
    """A 1x1 convolution at stride 1 without pads or a put-off normalization reads an
    implicit call's output lanes in place as its planes when its rows drop no lanes,
    and a pool's (or depthwise convolution's) whose readers are all such convolutions
    (`_Call.in_place`, `_Pool.lanes`). Each image's outputs are followed by a zero
    plane that the padding products read: an infinity in the second image leaves the
    first image's outputs finite and right. One and two images; the outputs are
    refilled every run."""
    lanes_model(tmp_path / "lanes.onnx", reader, producer)
    model = sparsec.load(tmp_path / "lanes.onnx")
    model.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=threads)
    rng = np.random.default_rng(13)
    for images in (1, 2, 2):
        x = rng.standard_normal((images, 8, 12, 12)).astype(np.float32)
        x[1:, :, 5, 6] = np.inf
        got, expected = executor.run({"x": x})["y"], model.run({"x": x})["y"]
        assert np.isfinite(got[0]).all()
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-4, atol=1e-4)
        x[1:] = rng.standard_normal(x[1:].shape)
        expected = model.run({"x": x})
        for name, got in executor.run({"x": x}).items():
            np.testing.assert_allclose(got, expected[name], rtol=1e-4, atol=1e-4)
    (reading,) = [step for step in executor.steps if step.op.name == "sparse.conv" and step.op.results[0].name_hint == "y"]
    assert all(call.in_place == in_place for call in reading.calls.values())
    assert [pool.lanes for pool in executor.pools.values()] == ([in_place] if producer in ("depthwise", "maxpool", "shared") else [])
    executor.close()


def checked_runs(path, pattern: str, threads: int, shapes: list[tuple[int, ...]], seed: int, min_elements: int = 0) -> Executor:
    """The model at `path` pruned by `pattern` (weights of at least `min_elements`), on
    an executor of `threads` threads that runs once on a random x of each of `shapes`,
    every output against the reference's; the executor (to close)."""
    model = sparsec.load(path)
    model.apply(f"prune-magnitude{{{pattern} min-elements={min_elements}}},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=threads)
    rng = np.random.default_rng(seed)
    for shape in shapes:
        x = rng.standard_normal(shape).astype(np.float32)
        expected = model.run({"x": x})
        for name, got in executor.run({"x": x}).items():
            np.testing.assert_allclose(got, expected[name], rtol=1e-4, atol=1e-4)
    return executor


def dense_block_model(path, pooled: bool = False) -> None:
    """A DenseNet block in small: x (N x 8 x 12 x 12), or with `pooled` a 3x3 MaxPool
    p of it (stride 1, pads 1, as DenseNet's blocks start with a pool); two layers each
    of a normalized 1x1 Conv to 16 channels with Relu, then a 3x3 Conv (pads 1) to 8
    channels, each layer reading the Concat of x (or p) and the layers before it (c1 =
    x + a1, c2 = c1 + a2);
    then a 1x1 Conv of c2 to 8 channels (a3: rows that drop no lanes, another geometry
    than a1's and a2's), a 3x3 Conv b3 of r2 like a2 but also returned, and c3 = c2 + a3
    + b3, read by a normalized 1x1 Conv y."""
    rng = np.random.default_rng(14)
    weights, nodes = [], []

    def norm(source: str, name: str, channels: int) -> str:
        for parameter, values in (("s", rng.uniform(0.5, 1.5, channels)), ("b", rng.standard_normal(channels)), ("m", rng.standard_normal(channels)), ("v", rng.uniform(0.5, 2, channels))):
            weights.append(numpy_helper.from_array(values.astype(np.float32), f"{name}_{parameter}"))
        nodes.append(helper.make_node("BatchNormalization", [source, *(f"{name}_{p}" for p in "sbmv")], [f"{name}_n"]))
        nodes.append(helper.make_node("Relu", [f"{name}_n"], [f"{name}_r"]))
        return f"{name}_r"

    def conv(source: str, name: str, shape: tuple[int, ...], pads: int = 0) -> str:
        weights.append(numpy_helper.from_array((rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))).astype(np.float32), f"{name}_w"))
        nodes.append(helper.make_node("Conv", [source, f"{name}_w"], [name], kernel_shape=list(shape[2:]), pads=[pads] * 4))
        return name

    features, channels = "x", 8
    if pooled:
        nodes.append(helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        features = "p"
    for layer in (1, 2):
        squeezed = conv(norm(features, f"n{layer}", channels), f"s{layer}", (16, channels, 1, 1))
        nodes.append(helper.make_node("Relu", [squeezed], [f"r{layer}"]))
        conv(f"r{layer}", f"a{layer}", (8, 16, 3, 3), pads=1)
        nodes.append(helper.make_node("Concat", [features, f"a{layer}"], [f"c{layer}"], axis=1))
        features, channels = f"c{layer}", channels + 8
    conv("c2", "a3", (8, 24, 1, 1))
    conv("r2", "b3", (8, 16, 3, 3), pads=1)
    nodes.append(helper.make_node("Concat", ["c2", "a3", "b3"], ["c3"], axis=1))
    conv(norm("c3", "n3", 40), "y", (8, 40, 1, 1))
    graph = helper.make_graph(
        nodes, "dense_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 12, 12])], [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("y", "c3", "b3")], weights
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


def copies_of_a_run(executor: Executor, x: np.ndarray) -> list[tuple[int, ...]]:
    """The shapes of the arrays a run of `executor` on x copies with np.copyto."""
    copied = []
    copy = np.copyto
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(np, "copyto", lambda target, source, **kw: copied.append(source.shape) or copy(target, source, **kw))
        executor.run({"x": x})
    return sorted(copied)


@pytest.mark.parametrize("pattern", ["pattern=nm n=3 m=4", "pattern=block block-size=4 sparsity=0.75", "pattern=unstructured sparsity=0.6"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("pooled", [False, True])
def test_convolutions_write_their_output_lanes_into_the_concat(tmp_path, pattern, threads, pooled):
    """A convolution whose one use is a Concat (a chain's, DenseNet's) writes its output
    lanes into the chain's lane buffer, laid out as a1's (the first placed), and the
    Concats copy only the other parts: x once, a3, whose lanes differ (a 1x1
    convolution's rows drop none), and b3, laid out as a1 and a2 but in its own output
    (it has another use). A pool the chain starts with (`pooled`) writes its rows
    into the buffer at its pitch, though the normalization reads it too and though it
    runs before a1 fixes the layout; then only a3 and b3 are copied. Every Concat's
    result, the returned one and those the normalized convolutions read through their
    planes, is right on one image and two, run after run."""
    dense_block_model(tmp_path / "block.onnx", pooled)
    executor = checked_runs(tmp_path / "block.onnx", pattern, threads, [(images, 8, 12, 12) for images in (1, 2, 1)], 15)
    steps = {step.op.results[0].name_hint: step for step in executor.steps}
    writers = ["a1", "a2", "a3", "p"] if pooled else ["a1", "a2", "a3"]
    assert sorted(op.results[0].name_hint for op in executor.concat_places) == writers
    ((buffer, _geometry),) = [kept for (end, images), kept in executor.kept.concat_lanes.items() if images == 1]
    placed = {name: any(np.shares_memory(call.output, buffer) for call in steps[name].calls.values()) for name in writers}
    assert placed == {"a1": True, "a2": True, "a3": False} | ({"p": True} if pooled else {})
    assert copies_of_a_run(executor, np.ones((1, 8, 12, 12), np.float32)) == [(1, 8, 12, 12)] * (2 if pooled else 3)  # (x into c1,) a3 and b3 into c3
    executor.close()


def shuffle_unit_model(path, images: int, returns_pool: bool = False) -> None:
    """x (images x 16 x 12 x 12) -> c = Concat(p, b), p an AveragePool 3x3 of x (stride
    2, pads 1), b a 1x1 Conv of a 3x3 Conv + Relu of x (stride 2, pads 1); r =
    Relu(c); then y = Relu(Add(e, r)), e a 1x1 Conv of d, a 1x1 Conv + Relu of r: a
    ShuffleNet unit that halves the image, then one that keeps it. p is returned too
    with `returns_pool`."""
    rng = np.random.default_rng(18)
    weights = [
        numpy_helper.from_array((rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))).astype(np.float32), name)
        for name, shape in (("wa", (16, 16, 3, 3)), ("wb", (16, 16, 1, 1)), ("wd", (32, 32, 1, 1)), ("we", (32, 32, 1, 1)))
    ]
    nodes = [
        helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "wa"], ["a0"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a0"], ["a"]),
        helper.make_node("Conv", ["a", "wb"], ["b"], kernel_shape=[1, 1]),
        helper.make_node("Concat", ["p", "b"], ["c"], axis=1),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Conv", ["r", "wd"], ["d0"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["d0"], ["d"]),
        helper.make_node("Conv", ["d", "we"], ["e"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["e", "r"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "shuffle_unit", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [images, 16, 12, 12])], [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ["y", "p"][: 1 + returns_pool]], weights
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


@pytest.mark.parametrize("pattern", ["pattern=nm n=3 m=4", "pattern=block block-size=4 sparsity=0.75", "pattern=unstructured sparsity=0.6"])
@pytest.mark.parametrize(("images", "threads"), [(1, 1), (2, 2)])
@pytest.mark.parametrize("returns_pool", [False, True])
def test_a_relu_of_a_concat_keeps_its_lanes(tmp_path, pattern, images, threads, returns_pool):
    """A Relu of a Concat that only it reads writes over the Concat's output
    (`_Step.in_place`), whose lanes, laid out as b's and followed by a zero plane, d
    then reads in place (the bitmask kernel's padding products read the zero plane)
    and e adds into (the Add's addend r dies there). The pool p writes into those
    lanes too, and the Concat copies nothing; but not where p is returned as well, as
    the Relu and the Add write over the lanes. Right on one image and two, twice."""
    shuffle_unit_model(tmp_path / "unit.onnx", images, returns_pool)
    executor = checked_runs(tmp_path / "unit.onnx", pattern, threads, [(images, 16, 12, 12)] * 2, 19)
    steps = {step.op.results[0].name_hint: step for step in executor.steps}
    assert [name for name, step in steps.items() if step.in_place] == ["r"]
    (d,), (e,) = steps["d"].calls.values(), steps["e"].calls.values()
    assert d.in_place and e.addend_in_place is not None
    assert sorted(op.results[0].name_hint for op in executor.concat_places) == (["b"] if returns_pool else ["b", "p"])
    assert copies_of_a_run(executor, np.ones((images, 16, 12, 12), np.float32)) == ([(images, 16, 6, 6)] if returns_pool else [])
    executor.close()


def fire_model(path, spatial: int, squeezed: int, images: int | str = "n", first: int = 6) -> None:
    """Two SqueezeNet fire modules in small: x (N x 8 x S x S) -> s1, a 1x1 Conv + Relu
    to `first` channels -> c1, the Concat of e1 and f1, a 1x1 and a 3x3 (pads 1) Conv + Relu
    of s1 to 8 channels each -> s2, a 1x1 Conv + Relu of c1 to `squeezed` channels
    (returned too) -> c2 = Concat(e2, f2) of s2 likewise -> y, a 3x3 MaxPool of c2
    (stride 2). `images` fixes the batch, or leaves it open (a name)."""
    rng = np.random.default_rng(20)
    weights, nodes = [], []

    def conv(source: str, name: str, shape: tuple[int, ...]) -> None:
        weights.append(numpy_helper.from_array((rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))).astype(np.float32), f"{name}_w"))
        nodes.append(helper.make_node("Conv", [source, f"{name}_w"], [f"{name}_c"], kernel_shape=list(shape[2:]), pads=[shape[-1] // 2] * 4))
        nodes.append(helper.make_node("Relu", [f"{name}_c"], [name]))

    source, channels = "x", 8
    for module, outputs in ((1, first), (2, squeezed)):
        conv(source, f"s{module}", (outputs, channels, 1, 1))
        conv(f"s{module}", f"e{module}", (8, outputs, 1, 1))
        conv(f"s{module}", f"f{module}", (8, outputs, 3, 3))
        nodes.append(helper.make_node("Concat", [f"e{module}", f"f{module}"], [f"c{module}"], axis=1))
        source, channels = f"c{module}", 16
    nodes.append(helper.make_node("MaxPool", ["c2"], ["y"], kernel_shape=[3, 3], strides=[2, 2]))
    graph = helper.make_graph(
        nodes, "fire", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [images, 8, spatial, spatial])], [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("y", "s2")], weights
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


@pytest.mark.parametrize("pattern", ["pattern=nm n=3 m=4", "pattern=block block-size=4 sparsity=0.75", "pattern=unstructured sparsity=0.6"])
@pytest.mark.parametrize(("images", "threads"), [(1, 1), (2, 2)])
@pytest.mark.parametrize(("spatial", "squeezed", "framed"), [(24, 6, True), (12, 6, True), (12, 400, False)])
def test_fire_modules_lay_their_concats_out_at_the_3x3_row_pitch(tmp_path, monkeypatch, pattern, images, threads, spatial, squeezed, framed):
    """At 24 x 24 the 1x1 expand e1 reads the padded planes of its 3x3 sibling f1
    (`implicit.framed`), so its output lanes lie at f1's row pitch (26) and both write
    c1's lane buffer; s2 reads that in place at the pitch, as e2 reads s2's output.
    c1 is made, copying nothing, not put off to s2, e1 reads whole lines (the planes
    start so that the image does, `_phase_planes`), and a run on one image fills
    planes for s1 (of x), e1 (f1 reads them too) and f2 only. So too at 12 x 12, where
    the pitch (14) adds 22% lanes (16 for unstructured weights, whose 3x3 kernel loads
    its taps from whole lines, KernelKey.column_shifts: e1 then reads from one float
    past each line, and its kernel knows, KernelKey.read_shift); but not where s2 has 400 outputs, whose
    multiply-adds in those lanes would cost more than its copies of c1
    (MULTIPLY_ADDS_PER_FLOAT_SAVED): no frames, c1 is put off to s2, which copies both
    parts. Right on one image and two, twice, with s2's pitched result returned;
    an infinity in the second image leaves the first image's outputs right. With the
    batch fixed, the frames' kernels are compiled up front, and `--emit-llvm`'s list
    (all_kernel_keys) holds them."""
    fire_model(tmp_path / "fire.onnx", spatial, squeezed)
    shape = (images, 8, spatial, spatial)
    executor = checked_runs(tmp_path / "fire.onnx", pattern, threads, [shape] * 2, 21)
    steps = {step.op.results[0].name_hint: step for step in executor.steps}
    frames = {name: step.frame for name, step in steps.items() if step.frame is not None}
    pitch = executor.layers[steps["f1"].op].key.shift_pitch(3, 1, 1, spatial + 2)  # pyright: ignore
    assert pitch == (16 if spatial == 12 and "unstructured" in pattern else spatial + 2)
    pitched = ((spatial, spatial), (0, 0), (spatial, pitch))
    assert frames == ({"e1": ((spatial, spatial), (1, 1), (spatial + 2, pitch)), "s2": pitched, "e2": pitched} if framed else {})
    assert [op.results[0].name_hint for op in executor.framed_concats] == (["c1"] if framed else [])
    assert steps["c1"].deferred != framed and steps["c2"].deferred
    ((s2,),) = [steps["s2"].calls.values()]
    assert s2.in_place == framed
    ((e1,),) = [steps["e1"].calls.values()]
    line_shift = 4 if framed and pitch in SHIFT_PITCHES else 0  # planes whose rows start on lines, for f1's taps
    assert e1.read_offset == (4 * (pitch + 1) if framed else 0) and (e1.input_address + e1.read_offset) % 64 == line_shift  # else shifted onto a line
    assert copies_of_a_run(executor, np.ones(shape, np.float32)) == []
    fire_model(tmp_path / "static.onnx", spatial, squeezed, images)  # the IR's shapes fix the frames' kernels
    static = sparsec.load(tmp_path / "static.onnx")
    static.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask,lower-kernels")
    planned = Executor(static.module, static.weights, threads=1)
    assert sum(step.frame is not None for step in planned.steps) == (3 if framed else 0)
    assert set(planned._up_front_keys()) <= set(all_kernel_keys(static.module, static.weights, Target.host()))  # --emit-llvm lists them
    planned.close()
    fills = []  # the planes filled (on this thread or the workers'), not found holding their image
    holds = executor._planes_hold
    monkeypatch.setattr(executor, "_planes_hold", lambda call, x, image: holds(call, x, image) or fills.append(call) or False)
    x = np.random.default_rng(22).standard_normal(shape).astype(np.float32)
    x[1:, :, 5, 6] = np.inf
    got = executor.run({"x": x})
    # Unframed: s1, f1, s2 (both parts into its planes), f2. Framed, two images: on one
    # thread the planes hold e1's last image, so f1 fills them again for both; on two
    # the images run as a pair, each in planes of its own, which f1 finds filled.
    assert len(fills) == (({1: 3, 2: 8 if threads == 1 else 6}[images]) if framed else 4 * images)
    model = sparsec.load(tmp_path / "fire.onnx")
    model.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask,lower-kernels")
    expected = model.run({"x": x[:1]})
    for name in ("y", "s2"):
        assert np.isfinite(got[name][0]).all()
        np.testing.assert_allclose(got[name][:1], expected[name], rtol=1e-4, atol=1e-4)
    executor.close()


def stem_model(path, kind: str, images: int) -> None:
    """x (images x 8 x 24 x 24) -> 3x3 Conv (16 outputs, bias) -> Relu -> pool `y`, as
    a network's first layers: max: the Conv at stride 2 with pads 1, then a 3x3 MaxPool
    at stride 2 with pads 1 (ResNet's); ceil: a 3x3 MaxPool at stride 2 in ceil mode;
    avg: a Conv at stride 1 with pads 1, then a 3x3 AveragePool at stride 2 whose pads
    count no taps (divisors change at the edges); shared: as max, the Relu's result
    also returned."""
    rng = np.random.default_rng(5)
    stride = 1 if kind == "avg" else 2
    weights = [numpy_helper.from_array((rng.standard_normal((16, 8, 3, 3)) / 6).astype(np.float32), "w"), numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b")]
    pool = {
        "max": helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        "ceil": helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        "avg": helper.make_node("AveragePool", ["r"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0),
        "shared": helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    }[kind]
    pool.name = "pool"
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3], strides=[stride] * 2, pads=[1] * 4), helper.make_node("Relu", ["c"], ["r"]), pool]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)] + ([helper.make_tensor_value_info("r", TensorProto.FLOAT, None)] if kind == "shared" else [])
    graph = helper.make_graph(nodes, "stem", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [images, 8, 24, 24])], outputs, weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


@pytest.mark.parametrize("pattern", ["pattern=nm n=3 m=4", "pattern=block block-size=4 sparsity=0.75", "pattern=unstructured sparsity=0.9"])
@pytest.mark.parametrize(("images", "threads"), [(1, 1), (2, 2)])
@pytest.mark.parametrize(
    ("kind", "band_bytes", "budget", "bands"),
    [("max", 5824, 16, 3), ("ceil", 5824, 16, 3), ("avg", 14976, 16, 4), ("shared", 5824, 16, 0), ("max", 5824, 0, 0)],
)
def test_a_pool_runs_the_convolution_before_it_in_bands(tmp_path, monkeypatch, pattern, images, threads, kind, band_bytes, budget, bands):
    """A convolution whose output only a pool reads, and is larger than BAND_FROM_BYTES,
    runs a band of output rows at a time, each band's rows pooled right after
    (implicit.PoolBands, small budgets here): the convolution's step is taken in by the
    pool's, which compiled the band kernel up front, not the convolution's whole one,
    and the results match the reference's on two runs. A convolution whose output is
    also returned runs whole, and so does one whose bands would compute rows twice
    beyond the multiply-adds budget (MULTIPLY_ADDS_PER_FLOAT_SAVED)."""
    monkeypatch.setattr(implicit, "BAND_FROM_BYTES", 4096)
    monkeypatch.setattr(implicit, "BAND_BYTES", band_bytes)  # 16 channels of 7 rows of 13 lanes (rounded up to 16), of 9 of 26
    monkeypatch.setattr(executor_module, "MULTIPLY_ADDS_PER_FLOAT_SAVED", budget)
    stem_model(tmp_path / "stem.onnx", kind, images)
    executor = checked_runs(tmp_path / "stem.onnx", pattern, threads, [(images, 8, 24, 24)] * 2, seed=7)
    conv_step, pool_step = (step for step in executor.steps if step.unit is not None)
    assert len(executor.pool_bands[pool_step.op].bands if pool_step.op in executor.pool_bands else ()) == bands
    assert conv_step.deferred == (pool_step.band is conv_step) == bool(bands)
    conv = executor.static_convs[conv_step.op]
    compiled = set(executor.compiled[0].functions)
    if bands:
        plan = executor.pool_bands[pool_step.op]
        assert plan.key.symbol in compiled and conv.key.symbol not in compiled and plan.key in all_kernel_keys(executor.module, executor.weights, executor.target)
        rows = plan.conv_rows * len(plan.bands)
        assert conv.out[0] < rows < 2 * conv.out[0]  # overlapping bands compute a few rows twice
        profile = executor.profile({"x": np.ones((images, 8, 24, 24), np.float32)}, 1)
        runs_as = {step.name: (step.runs_as, step.taken_in_by) for step in profile.steps}
        assert runs_as["conv"] == ("(taken in)", "pool") and runs_as["pool"][0].endswith("pool kernel in bands")
    executor.close()
