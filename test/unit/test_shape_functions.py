"""The executor keeps, per set of input shapes, the values that follow from the inputs'
shapes alone (`Executor._shape_functions`): an exported transformer's reshape targets,
position ids and masks from `nn.shape`. Runs on shapes met before skip those steps and
compute what the reference interpreter computes; values that follow from the inputs'
values are never kept, nor is a Shape of something a value sized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import sparsec
from sparsec.runtime.executor import KEPT_SHAPE_SETS, Executor

EXPORTS = Path(__file__).parent.parent / "exports"


def _ops_of(executor: Executor, slots: list[int]) -> list[str]:
    by_result = {step.result: step.op.name for step in executor.steps}
    return [by_result[slot] for slot in slots]


def _model(tmp_path: Path, value_sized: bool = True) -> Path:
    """out = x * (position ids of x's rows, 0 .. n - 1, from Shape, Gather, Range), plus
    (where `value_sized`) the length of Range(0, x[0, 0]) as a float: sized by a value,
    never kept."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["rows"], axis=0),
        helper.make_node("Range", ["zero", "rows", "one"], ["positions"]),
        helper.make_node("Cast", ["positions"], ["positions_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["positions_f", "last"], ["column"]),
        helper.make_node("Mul", ["x", "column"], ["scaled" if value_sized else "out"]),
    ]
    if value_sized:
        nodes += [
            helper.make_node("Cast", ["x"], ["x_int"], to=TensorProto.INT64),
            helper.make_node("Gather", ["x_int", "zero"], ["first_row"], axis=0),
            helper.make_node("Gather", ["first_row", "zero"], ["limit"], axis=0),
            helper.make_node("Range", ["zero", "limit", "one"], ["counted"]),
            helper.make_node("Shape", ["counted"], ["count"]),
            helper.make_node("Cast", ["count"], ["count_f"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["scaled", "count_f"], ["out"]),
        ]
    constants = {"zero": np.array(0, np.int64), "one": np.array(1, np.int64), "last": np.array([1], np.int64)}
    graph = helper.make_graph(
        nodes, "shape_functions", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["rows", 4])],
        [numpy_helper.from_array(array, name) for name, array in constants.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return path


def test_values_from_shapes_are_kept_and_values_from_values_are_not(tmp_path):
    reference = sparsec.load(_model(tmp_path))
    executor = Executor(reference.module, reference.weights)
    try:
        assert _ops_of(executor, executor.shape_functions) == ["nn.shape", "nn.gather", "nn.range", "nn.cast", "nn.unsqueeze"]
        rng = np.random.default_rng(0)
        for rows in (3, 5, 3, 3, 1, 5):
            x = rng.integers(1, 6, (rows, 4)).astype(np.float32)  # the first value changes from run to run
            np.testing.assert_array_equal(executor.run({"x": x})["out"], reference.run({"x": x})["out"])
        assert sorted(executor.kept.known) == [((1, 4),), ((3, 4),), ((5, 4),)]
    finally:
        executor.close()


def test_the_sets_of_shapes_since_the_kept_arrays_were_dropped_are_kept(tmp_path):
    """Shape functions' values are kept with the other arrays made for their input
    shapes, and dropped with them (KEPT_SHAPE_SETS)."""
    reference = sparsec.load(_model(tmp_path, value_sized=False))
    executor = Executor(reference.module, reference.weights)
    try:
        for rows in range(1, KEPT_SHAPE_SETS + 3):
            x = np.ones((rows, 4), np.float32)
            np.testing.assert_array_equal(executor.run({"x": x})["out"], reference.run({"x": x})["out"])
        assert sorted(executor.kept.known) == [((rows, 4),) for rows in (KEPT_SHAPE_SETS + 1, KEPT_SHAPE_SETS + 2)]
    finally:
        executor.close()


@pytest.mark.parametrize("name", ["llama_torchscript_17", "bert_sdpa_dynamo_18", "gpt2_torchscript_17"])
def test_exported_transformers_skip_their_shape_arithmetic(name):
    """Most of the exporters' Shape, Gather, Unsqueeze and Concat steps are kept, and
    of their values only those the other steps read are copied; runs on shapes met
    before, with other tokens and masks, compute what the reference interpreter does."""
    reference = sparsec.load(EXPORTS / f"{name}.onnx")
    executor = Executor(reference.module, reference.weights)
    try:
        kept = _ops_of(executor, executor.shape_functions)
        assert kept.count("nn.shape") >= 4 and "nn.concat" in kept
        # only the values the other steps read are copied for later runs
        assert 0 < len(executor.shape_values) < len(executor.shape_functions) / 2
        inputs = [arg.name_hint for arg in executor.function.args]
        rng = np.random.default_rng(1)
        for batch, sequence in [(2, 7), (1, 3), (2, 7), (2, 7)]:
            mask = (rng.random((batch, sequence)) < 0.8).astype(np.int64)
            mask[:, 0] = 1
            feeds = {"input_ids": rng.integers(0, 128, (batch, sequence)), "attention_mask": mask, "token_type_ids": np.zeros((batch, sequence), np.int64)}
            feeds = {name: feeds[name] for name in inputs}
            np.testing.assert_allclose(executor.run(feeds)["last_hidden_state"], reference.run(feeds)["last_hidden_state"], rtol=1e-5, atol=1e-5)
        copied = {slot for known in executor.kept.known.values() for slot in executor.shape_functions if known.env[slot] is not None}
        assert copied == set(executor.shape_values)
    finally:
        executor.close()
