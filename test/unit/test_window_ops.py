"""Pooling and depthwise convolutions in the reference interpreter (which the executor
runs for every op without a kernel) against onnxruntime, over random 1-D, 2-D and 3-D
geometries: kernels, strides, pads, dilations, ceil_mode and count_include_pad, channel
multipliers; and 2-D pools and depthwise convolutions through the executor's pool
kernels."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import sparsec
from conftest import onnxruntime_outputs
from sparsec import reference
from sparsec.dialects.sparse import PackedWeightOp
from sparsec.kernels import POOL_WHOLE_MAX_COLUMNS, PoolKey
from sparsec.runtime.codegen.pool import GEOMETRY
from sparsec.runtime.executor import Executor


@st.composite
def pools(draw, ranks=st.integers(1, 3), largest_kernel: int = 3, widest: int = 9):
    """A pool's op, input shape and attributes: `ranks` spatial dimensions of up to
    `widest` values, kernels of up to `largest_kernel`."""
    rank = draw(ranks)
    kernel = draw(st.lists(st.integers(1, largest_kernel), min_size=rank, max_size=rank))
    strides = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    op = draw(st.sampled_from(["MaxPool", "AveragePool"]))
    dilations = draw(st.lists(st.integers(1, 2), min_size=rank, max_size=rank)) if op == "MaxPool" else [1] * rank
    pads = [draw(st.integers(0, k - 1)) for k in kernel] + [draw(st.integers(0, k - 1)) for k in kernel]
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    spatial = [draw(st.integers(max(1, span - pads[i] - pads[i + rank]), widest)) for i, span in enumerate(spans)]
    attributes = {"kernel_shape": kernel, "strides": strides, "pads": pads, "ceil_mode": draw(st.integers(0, 1))}
    if op == "MaxPool":
        attributes["dilations"] = dilations
    else:
        attributes["count_include_pad"] = draw(st.integers(0, 1))
    return op, [draw(st.integers(1, 2)), draw(st.integers(1, 3)), *spatial], attributes


def pool_model(path, op: str, shape: list[int], attributes: dict, initializers=(), inputs=("x",)) -> None:
    node = helper.make_node(op, list(inputs), ["y"], name="window", **attributes)
    graph = helper.make_graph(
        [node], "window", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        list(initializers),
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


@settings(max_examples=40, deadline=None)
@given(pools(st.just(2), largest_kernel=8, widest=40), st.integers(0, 99), st.sampled_from([1, 2]))
def test_pool_kernels_match_onnxruntime(tmp_path_factory, pool, seed, threads):
    """2-D pools at column stride 1 or 2 run the pool kernel (its planes padded once, the
    average's divisors per position, its taps unrolled for windows of up to 8x8 with
    rows of a few vectors), other strides numpy; both match onnxruntime, on two runs
    with the input contiguous and as a channels-last view."""
    op, shape, attributes = pool
    shape[1] = 8 * shape[1]  # channels enough for shares of planes on two threads
    path = tmp_path_factory.mktemp("pool") / "pool.onnx"
    pool_model(path, op, shape, attributes)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    executor = executor_matching_onnxruntime(path, x, threads, rtol=1e-5, atol=1e-6)
    one_window = attributes["kernel_shape"] == shape[2:] and not any(attributes["pads"]) and set(attributes.get("dilations", [1])) == {1}
    assert bool(executor.pools) == (attributes["strides"][1] in (1, 2) or one_window)


def executor_matching_onnxruntime(path, x: np.ndarray, threads: int, rtol: float, atol: float) -> Executor:
    """An executor of the model at `path`, checked against onnxruntime on x contiguous
    and as a channels-last view (as a kernel's output is laid out)."""
    expected = onnxruntime_outputs(path, {"x": x})["y"]
    model = sparsec.load(path)
    executor = Executor(model.module, model.weights, threads=threads)
    channels_last = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)
    for layout in (x, channels_last):
        np.testing.assert_allclose(executor.run({"x": layout})["y"], expected, rtol=rtol, atol=atol)
    return executor


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("strides", [[1, 1], [2, 2]])
def test_pool_kernels_at_borders(tmp_path, op, strides):
    """Pads on every side, rows of more than 16 outputs (a whole vector and a partial
    one) and an average not counting the pads: each output position divides by its
    own count."""
    attributes = {"kernel_shape": [3, 3], "strides": strides, "pads": [1, 1, 1, 1]}
    attributes |= {"count_include_pad": 0} if op == "AveragePool" else {}
    pool_model(tmp_path / "pool.onnx", op, [2, 8, 9, 41], attributes)
    x = np.random.default_rng(3).standard_normal((2, 8, 9, 41)).astype(np.float32)
    model = sparsec.load(tmp_path / "pool.onnx")
    executor = Executor(model.module, model.weights, threads=2)
    np.testing.assert_allclose(executor.run({"x": x})["y"], onnxruntime_outputs(tmp_path / "pool.onnx", {"x": x})["y"], rtol=1e-5, atol=1e-6)
    assert executor.pools


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_windows_of_more_taps_than_a_pool_kernel_takes_run_in_numpy(tmp_path, op):
    """A 9x9 window (81 taps, past POOL_MAX_TAPS, whose taps a kernel would unroll) runs
    in numpy, and still matches onnxruntime."""
    pool_model(tmp_path / "pool.onnx", op, [1, 4, 20, 20], {"kernel_shape": [9, 9], "strides": [1, 1]})
    x = np.random.default_rng(5).standard_normal((1, 4, 20, 20)).astype(np.float32)
    assert not executor_matching_onnxruntime(tmp_path / "pool.onnx", x, 1, rtol=1e-5, atol=1e-6).pools


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["GlobalAveragePool", "AveragePool", "MaxPool"]), st.integers(1, 2), st.integers(1, 40), st.integers(1, 20),
    st.integers(1, 140), st.integers(1, 3), st.integers(0, 99), st.sampled_from([1, 2]),
)  # fmt: skip
def test_whole_image_pools_match_onnxruntime(tmp_path_factory, op, images, channels, rows, columns, stride, seed, threads):
    """A global average pool, and a max or average pool whose one window is its whole
    unpadded image (at any stride), run the whole-image pool kernel (one output a plane:
    rows summed down, each row's vectors unrolled, the last under its lane mask) up to
    POOL_WHOLE_MAX_COLUMNS columns, numpy past that. A max pool's NaNs propagate, as in
    the reference (onnxruntime's maximum drops them), and its infinities stay."""
    shape = [images, channels, rows, columns]
    attributes = {} if op == "GlobalAveragePool" else {"kernel_shape": [rows, columns], "strides": [stride, stride]}
    path = tmp_path_factory.mktemp("whole") / "pool.onnx"
    pool_model(path, op, shape, attributes)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    executor = executor_matching_onnxruntime(path, x, threads, rtol=1e-5, atol=1e-6)
    keys = [pool.key for pool in executor.pools.values()]
    assert keys == ([PoolKey("max" if op == "MaxPool" else "avg", 1, (rows, columns), whole=True)] if columns <= POOL_WHOLE_MAX_COLUMNS else [])
    if op == "MaxPool":
        x.reshape(-1)[seed::97] = np.nan
        x.reshape(-1)[seed + 3 :: 89] = np.inf
        model = sparsec.load(path)
        np.testing.assert_array_equal(executor.run({"x": x})["y"], reference.run(model.module, model.weights, {"x": x})["y"])


def test_whole_image_pool_kernel_sums_rows_then_lanes():
    """The whole-image kernel loops over the rows with an accumulator per row vector
    (three for 40 columns, the last loaded under a mask), and reduces the lanes in a tree
    (16 -> 8 -> 4 -> 2 -> 1): no per-tap loads, no 16 outputs a vector."""
    from sparsec.runtime.codegen.kernels import kernel_module

    text = str(kernel_module([PoolKey("avg", 1, (7, 40), whole=True)]))
    assert text.count("llvm.masked.load") == 3
    assert all(f"vector<{lanes}xf32>" in text for lanes in (8, 4, 2, 1))
    assert text.count("llvm.fdiv") == 1


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "Conv"])
@pytest.mark.parametrize("images", [1, 2])
def test_pools_read_their_inputs_in_place(tmp_path, op, images):
    """A pool (or depthwise convolution) reads its images where they are, its pads
    virtual (no padded copy), split between the threads by planes; a channels-last view
    is copied contiguous first. Rows of 41 columns read at column stride 2 take whole
    vectors, a partial one and lanes past the row under the mask."""
    shape, rng = [images, 64, 30, 41], np.random.default_rng(8)
    attributes = {"kernel_shape": [3, 3], "strides": [1, 2], "pads": [1, 1, 1, 1]}
    if op == "Conv":
        attributes["group"] = shape[1]
        pool_model(tmp_path / "pool.onnx", op, shape, attributes, [numpy_helper.from_array(rng.standard_normal((64, 1, 3, 3)).astype(np.float32), "w")], ("x", "w"))
    else:
        pool_model(tmp_path / "pool.onnx", op, shape, attributes)
    executor = executor_matching_onnxruntime(tmp_path / "pool.onnx", rng.standard_normal(shape).astype(np.float32), 2, rtol=1e-4, atol=1e-5)
    (call,) = executor.steps[0].calls.values()
    assert call.input is None and call.pool_geometry is not None and not call.alone


@settings(max_examples=60, deadline=None)
@given(pools(), st.integers(0, 99))
def test_pooling_matches_onnxruntime(tmp_path_factory, pool, seed):
    op, shape, attributes = pool
    path = tmp_path_factory.mktemp("pool") / "pool.onnx"
    pool_model(path, op, shape, attributes)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    expected = onnxruntime_outputs(path, {"x": x})["y"]
    model = sparsec.load(path)
    channels_last = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)  # as a kernel's output is laid out
    for layout in (x, channels_last):
        got = model.run({"x": layout})["y"]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(pools(), st.integers(1, 2), st.booleans(), st.integers(0, 99))
def test_depthwise_convolution_matches_onnxruntime(tmp_path_factory, pool, multiplier, bias, seed):
    """A convolution with one input channel per group (and `multiplier` outputs per
    channel), on the pooling cases' geometries (ceil_mode and count_include_pad aside)."""
    _, shape, attributes = pool
    rank, channels = len(shape) - 2, shape[1]
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((channels * multiplier, 1, *attributes["kernel_shape"])).astype(np.float32)
    conv = {k: v for k, v in attributes.items() if k in ("kernel_shape", "strides", "pads", "dilations")}
    conv.setdefault("dilations", [1] * rank)
    initializers = [numpy_helper.from_array(weight, "w")] + ([numpy_helper.from_array(rng.standard_normal(len(weight)).astype(np.float32), "b")] if bias else [])
    path = tmp_path_factory.mktemp("conv") / "conv.onnx"
    pool_model(path, "Conv", shape, {**conv, "group": channels}, initializers, ("x", "w", "b") if bias else ("x", "w"))
    x = rng.standard_normal(shape).astype(np.float32)
    expected = onnxruntime_outputs(path, {"x": x})["y"]
    got = sparsec.load(path).run({"x": x})["y"]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(pools(st.just(2), largest_kernel=8, widest=40), st.booleans(), st.integers(0, 99), st.sampled_from([1, 2]))
def test_depthwise_kernel_matches_onnxruntime(tmp_path_factory, pool, bias, seed, threads):
    """2-D depthwise convolutions (a group per channel, one output channel each) at
    column stride 1 or 2 run the pool kernel, its taps weighted by the channel's
    weights, then the bias; other strides numpy. Both match onnxruntime on one and two
    threads, the input contiguous and as a channels-last view."""
    _, shape, attributes = pool
    shape[1] = 8 * shape[1]  # channels enough for shares of planes on two threads
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((shape[1], 1, *attributes["kernel_shape"])).astype(np.float32)
    conv = {k: v for k, v in attributes.items() if k in ("kernel_shape", "strides", "pads")}
    conv["dilations"] = attributes.get("dilations", [1, 1])
    initializers = [numpy_helper.from_array(weight, "w")] + ([numpy_helper.from_array(rng.standard_normal(shape[1]).astype(np.float32), "b")] if bias else [])
    path = tmp_path_factory.mktemp("depthwise") / "conv.onnx"
    pool_model(path, "Conv", shape, {**conv, "group": shape[1]}, initializers, ("x", "w", "b") if bias else ("x", "w"))
    executor = executor_matching_onnxruntime(path, rng.standard_normal(shape).astype(np.float32), threads, rtol=1e-4, atol=1e-5)
    assert bool(executor.pools) == (attributes["strides"][1] in (1, 2))


@pytest.mark.parametrize("strides", [[1, 1], [2, 2]])
def test_max_pool_kernel_propagates_nan(tmp_path, strides):
    """A NaN anywhere in a window makes its maximum NaN, and infinities stay infinite,
    as in the reference (np.maximum): the kernel's maximum puts back the NaNs its
    compare and select drop, in whichever operand they are."""
    pool_model(tmp_path / "pool.onnx", "MaxPool", [1, 4, 9, 37], {"kernel_shape": [3, 3], "strides": strides, "pads": [1, 1, 1, 1]})
    x = np.random.default_rng(2).standard_normal((1, 4, 9, 37)).astype(np.float32)
    x.reshape(-1)[::23] = np.nan
    x.reshape(-1)[5::31] = np.inf
    x.reshape(-1)[7::29] = -np.inf
    model = sparsec.load(tmp_path / "pool.onnx")
    executor = Executor(model.module, model.weights, threads=1)
    got, expected = executor.run({"x": x})["y"], reference.run(model.module, model.weights, {"x": x})["y"]
    assert executor.pools and np.isnan(expected).any() and np.isinf(expected).any()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("strides", [[1, 1], [2, 2]])
def test_average_pool_kernel_keeps_the_sign_of_zero(tmp_path, strides):
    """A window of negative zeros sums to -0, its average -0, as in the reference, which
    sums from the first tap (a sum from +0 turned it into +0); a window that takes a pad
    (+0) in averages to +0."""
    pool_model(tmp_path / "pool.onnx", "AveragePool", [1, 4, 9, 37], {"kernel_shape": [3, 3], "strides": strides, "pads": [1, 1, 1, 1]})
    x = np.full((1, 4, 9, 37), -0.0, np.float32)
    model = sparsec.load(tmp_path / "pool.onnx")
    executor = Executor(model.module, model.weights, threads=1)
    got, expected = executor.run({"x": x})["y"], reference.run(model.module, model.weights, {"x": x})["y"]
    assert executor.pools and np.signbit(expected).any() and not np.signbit(expected).all()
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["MaxPool", "AveragePool", "AveragePool excluding pads", "Conv", "Conv with bias"]),
    st.integers(1, 4), st.integers(1, 4), st.integers(1, 2), st.integers(1, 9), st.integers(1, 15), st.sampled_from([1, 2]), st.integers(0, 99),
)  # fmt: skip
def test_pools_on_narrow_rows_go_as_flat_runs(tmp_path_factory, op, kh, kw, dilation, rows, columns, threads, seed):
    """Stride-1 pools and depthwise convolutions whose output rows are as wide as their
    input rows, narrower than a vector, take each plane as one flat run (a vector may
    span rows, each tap under a mask of its own): bit for bit the reference's, NaN and
    infinities where it has them, on one and two threads."""
    rng = np.random.default_rng(seed)
    channels = 16
    left = rng.integers(0, (kw - 1) * dilation + 1)
    top = rng.integers(0, (kh - 1) * dilation + 1)
    attributes = {"kernel_shape": [kh, kw], "strides": [1, 1], "pads": [top, left, rows % 2, (kw - 1) * dilation - left], "dilations": [dilation, dilation]}
    initializers, inputs = [], ("x",)
    if op.startswith("Conv"):
        initializers = [numpy_helper.from_array(rng.standard_normal((channels, 1, kh, kw)).astype(np.float32), "w")]
        initializers += [numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b")] if op.endswith("bias") else []
        inputs = ("x", "w", "b")[: 1 + len(initializers)]
        attributes["group"] = channels
    elif op.startswith("AveragePool"):
        del attributes["dilations"]
        attributes["count_include_pad"] = int(not op.endswith("pads"))
        attributes["pads"] = [min(top, kh - 1), min(left, kw - 1), rows % 2 if kh > 1 else 0, kw - 1 - min(left, kw - 1)]
    if (rows + sum(attributes["pads"][::2]) - ((kh - 1) * attributes.get("dilations", [1])[0] + 1)) < 0:
        return  # no output row
    path = tmp_path_factory.mktemp("flat") / "pool.onnx"
    pool_model(path, op.split()[0], [2, channels, rows, columns], attributes, initializers, inputs)
    model = sparsec.load(path)
    x = rng.standard_normal((2, channels, rows, columns)).astype(np.float32)
    x.reshape(-1)[:: 37] = np.nan
    x.reshape(-1)[5 :: 41] = -np.inf
    executor = Executor(model.module, model.weights, threads=threads)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(executor.run({"x": x})["y"], reference.run(model.module, model.weights, {"x": x})["y"])
    ((step,),) = [executor.steps]
    (call,) = step.calls.values()
    assert step.unit.key.whole or call.pool_geometry[GEOMETRY.index("flat_masks")] > 0  # where the flat run's masks start (a window on the whole image aside)


def test_depthwise_kernel_on_pruned_weights(tmp_path):
    """A depthwise convolution whose weights were pruned and packed (lower-kernels
    leaves grouped convolutions to the executor) runs the pool kernel on the decoded
    weights, exactly as the reference does."""
    shape = [2, 32, 12, 20]
    rng = np.random.default_rng(5)
    initializers = [numpy_helper.from_array(rng.standard_normal((32, 1, 3, 3)).astype(np.float32), "w")]
    pool_model(tmp_path / "conv.onnx", "Conv", shape, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "group": 32}, initializers, ("x", "w"))
    model = sparsec.load(tmp_path / "conv.onnx")
    model.apply("prune-magnitude{sparsity=0.5 min-elements=0},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights)
    x = rng.standard_normal(shape).astype(np.float32)
    (packed,) = [op for op in model.module.walk() if isinstance(op, PackedWeightOp)]
    np.testing.assert_array_equal(executor.run({"x": x})["y"], reference.run(model.module, model.weights, {"x": x})["y"])
    assert executor.pools and packed.results[0].uses


def regrouping_model(path, before: list[int], nodes: list, initializers=()) -> None:
    """A model of x (shape `before`) through `nodes`, the last of which writes y."""
    graph = helper.make_graph(
        nodes, "regroup", [helper.make_tensor_value_info("x", TensorProto.FLOAT, before)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        list(initializers),
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


def shape_constant(name: str, shape: list[int]):
    return numpy_helper.from_array(np.array(shape, np.int64), name)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("reader", ["depthwise", "MaxPool"])
def test_channel_shuffle_read_in_place_by_the_pool_that_reads_it(tmp_path, reader, threads):
    """A channel shuffle (reshape, transpose, reshape: ShuffleNet's) before a pool or a
    depthwise convolution: the last reshape, which would copy its transposed input, is
    put off to the pool, which reads the transposed view in place as a channel grid.
    The result matches onnxruntime, the input contiguous and as a strided view."""
    rng = np.random.default_rng(21)
    channels, groups = 24, 3
    initializers = [shape_constant("split", [1, groups, channels // groups, 9, 11]), shape_constant("merge", [1, channels, 9, 11])]
    nodes = [
        helper.make_node("Reshape", ["x", "split"], ["s"]),
        helper.make_node("Transpose", ["s"], ["t"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t", "merge"], ["shuffled"]),
    ]
    if reader == "depthwise":
        initializers.append(numpy_helper.from_array(rng.standard_normal((channels, 1, 3, 3)).astype(np.float32), "w"))
        nodes.append(helper.make_node("Conv", ["shuffled", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=channels))
    else:
        nodes.append(helper.make_node("MaxPool", ["shuffled"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]))
    regrouping_model(tmp_path / "shuffle.onnx", [1, channels, 9, 11], nodes, initializers)
    executor = executor_matching_onnxruntime(tmp_path / "shuffle.onnx", rng.standard_normal((1, channels, 9, 11)).astype(np.float32), threads, rtol=1e-5, atol=1e-5)
    (pool_step,) = [step for step in executor.steps if step.unit is not None]
    assert pool_step.regrouped is not None and pool_step.regrouped.deferred


def test_reshapes_a_pool_cannot_take_in(tmp_path):
    """A reshape whose result another op also reads runs in numpy; one that splits the
    rows is put off to the pool, which reads the reshape's view of its source."""
    rng = np.random.default_rng(22)
    nodes = [
        helper.make_node("Reshape", ["x", "square"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["x", "square"], ["q"]),
        helper.make_node("MaxPool", ["q"], ["m"], kernel_shape=[2, 2]),
        helper.make_node("Relu", ["q"], ["u"]),
        helper.make_node("Sum", ["p", "u"], ["pu"]),
        helper.make_node("GlobalAveragePool", ["m"], ["ms"]),
        helper.make_node("Add", ["pu", "ms"], ["y"]),
    ]
    regrouping_model(tmp_path / "reshapes.onnx", [2, 5, 64], nodes, [shape_constant("square", [2, 5, 8, 8])])
    executor = executor_matching_onnxruntime(tmp_path / "reshapes.onnx", rng.standard_normal((2, 5, 64)).astype(np.float32), 1, rtol=1e-5, atol=1e-5)
    regrouped = [step.regrouped is not None for step in executor.steps if step.unit is not None]
    assert regrouped == [True, False, False]  # the global average pool reads a pool's output
