"""Setting onnxruntime's profile beside sparsec's steps: its node times from the trace
(warm-up runs left out), and each of its nodes traced back to the step it grew from,
through onnxruntime's fusions and names."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sparsec.errors import SparsecError
from sparsec.ort_profile import Origins, run_profile


def _run(ts: int, dur: int) -> dict:
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}


def _node(name: str, op: str, ts: int, dur: int) -> dict:
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}


def test_node_times_average_the_counted_runs_only():
    """Run 0 is a warm-up (slow, uncounted); runs 1 and 2 count: a node's time is its
    mean over them, in seconds; fences and session events are not nodes."""
    events = [
        _run(0, 5000), _node("conv", "Conv", 10, 4000), _node("relu", "Relu", 4100, 500),
        _run(10_000, 1000), _node("conv", "Conv", 10_010, 600), _node("relu", "Relu", 10_700, 100),
        {"cat": "Node", "name": "conv_fence_before", "ts": 10_005, "dur": 0},
        _run(20_000, 1400), _node("conv", "Conv", 20_010, 800), _node("relu", "Relu", 20_900, 300),
        {"cat": "Session", "name": "session_initialization", "ts": 0, "dur": 99},
    ]  # fmt: skip
    result = run_profile(events, [False, True, True])
    assert {node.name: (node.op, node.seconds) for node in result.nodes} == {
        "conv": ("Conv", pytest.approx(700e-6)),
        "relu": ("Relu", pytest.approx(200e-6)),
    }
    assert result.seconds == pytest.approx(1200e-6)
    with pytest.raises(SparsecError, match="holds 3 runs where 2 were made"):
        run_profile(events, [False, True])


def _graph() -> onnx.GraphProto:
    """x -> conv (W) -> bn (its scale an Unsqueeze of an initializer) -> Relu r1 ->
    MaxPool p -> left, right 1x1 convs -> Add s (two computed inputs) -> Mul m (x 2)."""
    def weight(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array(np.ones(shape, np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c0"], name="conv"),
        helper.make_node("Unsqueeze", ["scale", "axes"], ["scale4"], name="unsqueeze"),
        helper.make_node("Mul", ["c0", "scale4"], ["b0"], name="bn"),
        helper.make_node("Relu", ["b0"], ["r1"], name="relu"),
        helper.make_node("MaxPool", ["r1"], ["p"], name="pool", kernel_shape=[2, 2]),
        helper.make_node("Conv", ["p", "W2"], ["left"], name="conv_left"),
        helper.make_node("Conv", ["p", "W2"], ["right"], name="conv_right"),
        helper.make_node("Add", ["left", "right"], ["s"], name="add"),
        helper.make_node("Mul", ["s", "two"], ["m"], name="double"),
    ]
    initializers = [
        weight("W", 4, 3, 1, 1), weight("W2", 4, 4, 1, 1), weight("scale", 4),
        numpy_helper.from_array(np.array([1, 2], np.int64), "axes"), weight("two", 1),
    ]  # fmt: skip
    return helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 4, 2, 2])],
        initializers,
    )  # fmt: skip


STEPS = {name: name for name in ("conv", "pool", "conv_left", "conv_right", "double")}
"""sparsec's steps in `_graph` (each standing for itself): its normalization folded,
its Relu fused, its Add taken into a convolution."""


@pytest.mark.parametrize(
    "ort_name, step",
    [
        ("conv", "conv"),  # a node of the model's, by name (a FusedConv keeps it)
        ("relu", "conv"),  # a node sparsec fused: up the chain, past the constant scale
        ("r1_nchwc", "conv"),  # a fused chain, named after its last output
        ("b0_mul_nchwc", "conv"),  # two suffixes
        ("fused bn/MatMulAddFusion", "conv"),  # a fusion of a few nodes, after the first
        ("pool", "pool"),
        ("p_nchwc", "pool"),
        ("conv_left", "conv_left"),  # a name that is also a prefix of its output's
        ("left_nchwc", "conv_left"),
        ("m_nchwc", "double"),
        ("s_nchwc", None),  # `add`: two computed inputs, so no one chain to walk up
        ("add", None),
        ("ReorderOutput_token_7", None),  # onnxruntime's own layout reorders
        ("ReorderInput", None),
    ],
)
def test_each_node_traces_back_to_its_step(ort_name: str, step: str | None):
    assert Origins(_graph(), STEPS).step_of(ort_name) == step


def test_a_step_taken_in_counts_as_the_one_that_takes_it_in():
    """With `pool` put off to `conv_left` (as sparsec puts a normalization off to the
    convolution after it), onnxruntime's pool counts as `conv_left`; with no step for
    `pool` at all, as the step before it."""
    assert Origins(_graph(), STEPS | {"pool": "conv_left"}).step_of("p_nchwc") == "conv_left"
    without_pool = {name: step for name, step in STEPS.items() if name != "pool"}
    assert Origins(_graph(), without_pool).step_of("pool") == "conv"
