"""Pooling and depthwise convolutions in the reference interpreter (which the executor
runs for every op without a kernel) against onnxruntime, over random 1-D, 2-D and 3-D
geometries: kernels, strides, pads, dilations, ceil_mode and count_include_pad, channel
multipliers."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import sparsec
from conftest import onnxruntime_outputs


@st.composite
def pools(draw):
    rank = draw(st.integers(1, 3))
    kernel = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    strides = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    op = draw(st.sampled_from(["MaxPool", "AveragePool"]))
    dilations = draw(st.lists(st.integers(1, 2), min_size=rank, max_size=rank)) if op == "MaxPool" else [1] * rank
    pads = [draw(st.integers(0, k - 1)) for k in kernel] + [draw(st.integers(0, k - 1)) for k in kernel]
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    spatial = [draw(st.integers(max(1, span - pads[i] - pads[i + rank]), 9)) for i, span in enumerate(spans)]
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
