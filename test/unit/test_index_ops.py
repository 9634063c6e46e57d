"""The shape, index and mask ops exported transformers use (`nn_index`, and Pow, Sqrt,
ReduceMean), one node each against onnxruntime: imported and run by the reference
interpreter, and compiled to an artifact and run by the executor.

Run-time inputs have symbolic dimensions, so that nothing folds at import; the
folding itself is tested at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import models
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import sparsec
from sparsec.dialects import nn_index

INT64_MAX = np.iinfo(np.int64).max


@dataclass
class Case:
    op: str
    feeds: dict[str, np.ndarray]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    attributes: dict = field(default_factory=dict)
    inputs: list[str] | None = None
    opset: int = 17
    static: tuple[str, ...] = ()
    """Run-time inputs of static shape (a shape operand's length fixes a rank)."""

    def model(self) -> onnx.ModelProto:
        names = self.inputs if self.inputs is not None else [*self.feeds, *self.constants]
        node = helper.make_node(self.op, names, ["out"], name="node", **self.attributes)
        graph_inputs = [
            helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape) if name in self.static else [f"{name}{i}" for i in range(a.ndim)]
            )
            for name, a in self.feeds.items()
        ]
        initializers = [numpy_helper.from_array(a, name) for name, a in self.constants.items()]
        return _with_inferred_output(helper.make_graph([node], self.op, graph_inputs, [], initializers), self.opset)


def _with_inferred_output(graph: onnx.GraphProto, opset: int) -> onnx.ModelProto:
    """The model with graph output "out", typed by ONNX's shape inference."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model)
    (out,) = [v for v in inferred.graph.value_info if v.name == "out"]
    model.graph.output.append(out)
    return model


def _f32(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _i64(values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


CASES = {
    "gather rows, negative index": Case("Gather", {"data": _f32(5, 3)}, {"indices": _i64([[0, -1], [2, 4]])}),
    "gather axis 1 by a scalar (a pooler)": Case("Gather", {"data": _f32(2, 3, 4)}, {"indices": _i64(0)}, {"axis": 1}),
    "embedding lookup": Case("Gather", {"indices": _i64([[1, 3, 3]])}, {"table": _f32(6, 4)}, inputs=["table", "indices"]),
    "gather_elements, negative index": Case("GatherElements", {"data": _f32(3, 4)}, {"indices": _i64([[0, -1, 2, 1], [2, 2, 0, 0]])}),
    "gather_elements along axis 1": Case("GatherElements", {"data": _f32(2, 5)}, {"indices": _i64([[4, 0], [1, 1]])}, {"axis": 1}),
    "cum_sum": Case("CumSum", {"x": _i64([[1, 2, 3], [4, 5, 6]])}, {"axis": _i64(1)}),
    "cum_sum, exclusive and reverse": Case("CumSum", {"x": _f32(3, 4)}, {"axis": _i64([0])}, {"exclusive": 1, "reverse": 1}),
    "gather_nd": Case("GatherND", {"data": _f32(2, 3, 4)}, {"indices": _i64([[[0, 1]], [[1, 2]]])}),
    "slice, negative step, clamped end": Case(
        "Slice", {"data": _f32(4, 6)}, {"starts": _i64([1, -1]), "ends": _i64([3, -100]), "axes": _i64([0, 1]), "steps": _i64([1, -2])}
    ),
    "slice to the end, default axes": Case("Slice", {"data": _f32(3, 5)}, {"starts": _i64([1]), "ends": _i64([INT64_MAX])}),
    "slice, opset 9 attributes": Case("Slice", {"data": _f32(3, 5)}, attributes={"starts": [0, 2], "ends": [2, 4]}, opset=9),
    "slice by run-time bounds": Case("Slice", {"data": _f32(4, 6), "ends": _i64([3])}, {"starts": _i64([1]), "axes": _i64([1])}, inputs=["data", "starts", "ends", "axes"]),
    "range of int64": Case("Range", {"limit": _i64(7)}, {"start": _i64(1), "delta": _i64(2)}, inputs=["start", "limit", "delta"]),
    "range of float32": Case("Range", {"start": np.array(0.5, np.float32)}, {"limit": np.array(2.0, np.float32), "delta": np.array(0.25, np.float32)}),
    "expand": Case("Expand", {"x": _f32(3, 1)}, {"shape": _i64([2, 1, 4])}),
    "expand to a run-time shape": Case("Expand", {"x": _f32(1), "shape": _i64([2, 3])}, static=("shape",)),
    "where": Case("Where", {"c": np.array([[True], [False]]), "x": _f32(1, 3)}, {"y": np.array(-3.4e38, np.float32)}),
    "equal": Case("Equal", {"a": _i64([[1, 2, 3]]), "b": _i64([[1], [2]])}),
    "greater": Case("Greater", {"a": _f32(2, 3), "b": _f32(3, seed=1)}),
    "greater or equal": Case("GreaterOrEqual", {"a": _i64([[0, 1, 2]])}, {"b": _i64(1)}),
    "less": Case("Less", {"a": _i64([[0, 1, 2]])}, {"b": _i64(1)}),
    "less or equal": Case("LessOrEqual", {"a": _i64([[0, 1, 2]])}, {"b": _i64(1)}),
    "and": Case("And", {"a": np.array([[True, False]]), "b": np.array([[True], [False]])}),
    "or": Case("Or", {"a": np.array([[True, False]]), "b": np.array([[True], [False]])}),
    "not": Case("Not", {"a": np.array([True, False])}),
    "is nan": Case("IsNaN", {"a": np.array([1.0, np.nan, -np.inf], np.float32)}),
    "cast float to int64 truncates": Case("Cast", {"a": np.array([-1.7, 2.9], np.float32)}, attributes={"to": TensorProto.INT64}),
    "cast int64 to float": Case("Cast", {"a": _i64([3, -4])}, attributes={"to": TensorProto.FLOAT}),
    "cast int64 to bool": Case("Cast", {"a": _i64([0, 5])}, attributes={"to": TensorProto.BOOL}),
    "cast float to float16": Case("Cast", {"a": _f32(4)}, attributes={"to": TensorProto.FLOAT16}),
    "max of three": Case("Max", {"a": _f32(2, 3), "b": _f32(3, seed=1), "c": _f32(2, 1, seed=2)}),
    "min of two": Case("Min", {"a": _i64([[1, 5]]), "b": _i64([[3], [0]])}),
    "pow": Case("Pow", {"a": np.abs(_f32(2, 3))}, {"e": np.array(0.5, np.float32)}),
    "sqrt": Case("Sqrt", {"a": np.abs(_f32(5))}),
    "reduce_mean, last axis": Case("ReduceMean", {"a": _f32(2, 3, 4)}, attributes={"axes": [-1]}),
    "reduce_mean, axes input, no kept dims": Case("ReduceMean", {"a": _f32(2, 3, 4)}, {"axes": _i64([1])}, {"keepdims": 0}, opset=18),
    "reduce_mean, all axes": Case("ReduceMean", {"a": _f32(2, 3)}),
    "shape, start and end": Case("Shape", {"a": _f32(2, 3, 4, 5)}, attributes={"start": 1, "end": -1}),
    "integer div truncates": Case("Div", {"a": _i64([-7, 7, 6])}, {"b": _i64([2, -2, 4])}),
    "integer mul": Case("Mul", {"a": _i64([[2, 3]])}, {"b": _i64(-4)}),
    "neg of int64": Case("Neg", {"a": _i64([[3, -4, 0]])}),
    "abs": Case("Abs", {"a": _f32(2, 3)}),
    "exp": Case("Exp", {"a": _f32(2, 3)}),
    "log": Case("Log", {"a": np.abs(_f32(2, 3)) + 0.1}),
    "cos": Case("Cos", {"a": _f32(2, 3)}),
    "sin": Case("Sin", {"a": _f32(2, 3)}),
    "reciprocal": Case("Reciprocal", {"a": _f32(2, 3)}),
    "mod of int64, the divisor's sign": Case("Mod", {"a": _i64([-7, 7, -8, 9])}, {"b": _i64([3, -3, 4, 4])}),
    "fmod of float32": Case("Mod", {"a": np.array([-7.5, 7.5, 2.0], np.float32)}, {"b": np.array([2.0, -2.0, 3.0], np.float32)}, {"fmod": 1}),
    "arg_max, kept axis": Case("ArgMax", {"a": _f32(2, 5)}, attributes={"axis": 1}),
    "arg_max, last of ties, no kept axis": Case("ArgMax", {"a": _i64([[1, 3, 3], [2, 2, 0]])}, attributes={"axis": -1, "keepdims": 0, "select_last_index": 1}),
    "pad, value input": Case("Pad", {"a": _f32(2, 3)}, {"pads": _i64([0, 1, 1, 2]), "v": np.array(-1.5, np.float32)}),
    "pad, negative counts crop": Case("Pad", {"a": _f32(3, 4)}, {"pads": _i64([-1, 0, 0, -2])}),
    "pad, axes input": Case("Pad", {"a": _f32(2, 3, 4)}, {"pads": _i64([1, 2]), "v": np.array(0.0, np.float32), "axes": _i64([-1])}, opset=18),
    "pad, opset 7 attributes": Case("Pad", {"a": _f32(2, 3)}, attributes={"pads": [1, 0, 0, 1], "value": 2.0}, opset=7),
    "reshape to a run-time shape": Case("Reshape", {"x": _f32(2, 3, 4), "shape": _i64([0, -1])}, static=("shape",)),
    "LRN over 3 of 4 channels": Case("LRN", {"x": _f32(2, 4, 3, 3)}, attributes={"size": 3, "alpha": 0.01, "bias": 1.5}),
    "LRN over more channels than there are": Case("LRN", {"x": _f32(2, 4, 3, 3)}, attributes={"size": 9, "alpha": 0.01}),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_op_matches_onnxruntime(tmp_path, case: Case):
    path = tmp_path / "op.onnx"
    onnx.save(case.model(), str(path))
    (expected,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, case.feeds)
    model = sparsec.load(path)
    model.save(tmp_path / "op.spx")
    compiled = sparsec.load(tmp_path / "op.spx")
    for got in (model.run(case.feeds)["out"], compiled.run(case.feeds)["out"]):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        # Float means sum in float64 here, in float32 in onnxruntime: the last bit may differ.
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)


def test_lrn_wider_than_all_channels_sums_them_all(tmp_path):
    """An LRN window past every channel (the fuzz test's size of 387 million, which had
    the reference pad 26 GiB) sums the squares of all channels, in memory of the input's
    size (onnxruntime takes 23 s to walk such a window, so the formula is the oracle)."""
    size, x = 387017381, _f32(2, 4, 3, 3)
    path = tmp_path / "lrn.onnx"
    onnx.save(Case("LRN", {"x": x}, attributes={"size": size, "alpha": 1e7}).model(), str(path))
    expected = x / (1.0 + 1e7 / size * (x * x).sum(axis=1, keepdims=True)) ** 0.75
    np.testing.assert_allclose(sparsec.load(path).run({"x": x})["out"], expected, rtol=1e-5)


def test_constant_of_shape_at_a_run_time_shape(tmp_path):
    """ConstantOfShape of a computed shape runs as its fill value expanded to it."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["out"], value=numpy_helper.from_array(_i64([7]))),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", 3])], [])
    path = tmp_path / "m.onnx"
    onnx.save(_with_inferred_output(graph, 17), str(path))
    model = sparsec.load(path)
    assert any(isinstance(op, nn_index.ExpandOp) for op in model.module.walk())
    np.testing.assert_array_equal(model.run({"x": _f32(2, 3)})["out"], np.full((2, 3), 7))


def test_shape_arithmetic_on_known_sizes_folds_to_a_constant_reshape(tmp_path):
    """x is [?, 6]: Shape, Gather of index 1 (known: 6), Div by 2, Concat with -1
    fold to the constant target [-1, 3, 2]; Gather of index 0 (only known at run
    time) would not."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["cols"], axis=0),
        helper.make_node("Div", ["cols", "two"], ["half"]),
        helper.make_node("Concat", ["minus_one", "half", "two"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["out"]),
    ]
    constants = [numpy_helper.from_array(_i64(v), n) for n, v in (("one", [1]), ("two", [2]), ("minus_one", [-1]))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", 6])], [], constants)
    path = tmp_path / "m.onnx"
    onnx.save(_with_inferred_output(graph, 17), str(path))
    model = sparsec.load(path)
    ops = [op.name for op in model.module.walk() if op.name.startswith("nn.")]
    assert ops == ["nn.reshape"]
    assert str(model.module).count("array<i64: -1, 3, 2>") == 1
    x = _f32(4, 6)
    np.testing.assert_array_equal(model.run({"x": x})["out"], x.reshape(-1, 3, 2))


@pytest.mark.parametrize("batch, sequence", [(1, 1), (2, 5), (3, 12)])
def test_exporter_shape_arithmetic_matches_onnxruntime(tmp_path, batch, sequence):
    """models.run_time_shapes: embeddings, sliced position ids, per-head reshape and
    additive mask, reference and compiled."""
    path = tmp_path / "m.onnx"
    onnx.save(models.run_time_shapes(), str(path))
    rng = np.random.default_rng(sequence)
    feeds = {"ids": rng.integers(0, 16, (batch, sequence)), "mask": rng.integers(0, 2, (batch, sequence))}
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    model = sparsec.load(path)
    model.save(tmp_path / "m.spx")
    for run in (model.run, sparsec.load(tmp_path / "m.spx").run):
        for got, want in zip(run(feeds).values(), expected, strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "sizes, attributes, opset",
    [(None, {"axis": 1}, 17), ([2, 4], {"axis": -1}, 17), (None, {"axis": 1, "split": [1, 5]}, 11), (None, {"axis": 1, "num_outputs": 2}, 18)],
    ids=["equal parts", "sizes input", "split attribute", "num_outputs"],
)
def test_split_is_one_slice_per_output(tmp_path, sizes, attributes, opset):
    """GPT-2 splits its fused query-key-value projection in three."""
    inputs = ["x"] if sizes is None else ["x", "sizes"]
    constants = [] if sizes is None else [numpy_helper.from_array(_i64(sizes), "sizes")]
    node = helper.make_node("Split", inputs, ["a", "b"], **attributes)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in "ab"], constants,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    x = _f32(3, 6)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    imported = sparsec.load(path)
    slices = [op for op in imported.module.walk() if isinstance(op, nn_index.SliceOp)]
    assert [op.results[0].type.get_shape()[1] for op in slices] == [e.shape[1] for e in expected]
    for got, want in zip(imported.run({"x": x}).values(), expected, strict=True):
        np.testing.assert_array_equal(got, want)
