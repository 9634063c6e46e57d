"""The ONNX wire walk (sparsec/frontend/onnx_wire.py): the skeleton parses to the same
model minus the raw bytes it left out, which lie where the spans say; the importer
reads initializers of every type to the arrays onnx gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import sparsec
from sparsec.errors import ModelImportError
from sparsec.frontend.onnx_wire import PLAIN_TYPES, split_raw_data

DTYPES = [np.float32, np.float16, np.float64, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64, np.uint64, np.bool_]
SHAPES = st.lists(st.integers(0, 5), max_size=3)


@st.composite
def tensors(draw, index: int) -> TensorProto:
    """A raw initializer of a plain type, one in typed fields, or a bfloat16 one."""
    shape = draw(SHAPES)
    kind = draw(st.sampled_from(["raw", "typed", "bfloat16"]))
    values = np.random.default_rng(index).standard_normal(shape) * 50
    if kind == "raw":
        return numpy_helper.from_array(values.astype(draw(st.sampled_from(DTYPES))), f"t{index}")
    if kind == "typed":
        return helper.make_tensor(f"t{index}", TensorProto.FLOAT, shape, values.astype(np.float32).ravel().tolist())
    return helper.make_tensor(f"t{index}", TensorProto.BFLOAT16, shape, values.astype(np.float32).ravel().tolist())


@st.composite
def models(draw) -> onnx.ModelProto:
    initializers = [draw(tensors(i)) for i in range(draw(st.integers(0, 6)))]
    nodes = [helper.make_node("Identity", [t.name], [f"o{t.name}"], name=f"n{t.name}") for t in initializers]
    outputs = [helper.make_tensor_value_info(f"o{t.name}", t.data_type, list(t.dims)) for t in initializers]
    graph = helper.make_graph(nodes, "g", [], outputs, initializers, doc_string=draw(st.text(max_size=20)))
    return helper.make_model(graph, producer_name=draw(st.text(max_size=10)))


@settings(max_examples=60, deadline=None)
@given(models())
def test_skeleton_is_the_model_without_the_spans(model: onnx.ModelProto):
    data = model.SerializeToString()
    skeleton, spans = split_raw_data(data)
    assert len(spans) == len(model.graph.initializer)
    expected = onnx.ModelProto()
    expected.CopyFrom(model)
    for tensor, span in zip(expected.graph.initializer, spans):
        left_out = tensor.data_type in PLAIN_TYPES and tensor.HasField("raw_data")
        assert (span is not None) == left_out
        if span is not None:
            assert data[span.offset : span.offset + span.length] == tensor.raw_data
            tensor.ClearField("raw_data")
    assert onnx.load_model_from_string(skeleton) == expected


def test_walk_leaves_damaged_files_to_onnx(tmp_path: Path):
    data = helper.make_model(helper.make_graph([], "g", [], [], [numpy_helper.from_array(np.ones(8, np.float32), "w")])).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) - 5])  # inside the initializer's raw data
    with pytest.raises(ModelImportError, match="cut.onnx is not a valid ONNX model"):
        sparsec.load(path)


def _add_model(weight: TensorProto) -> onnx.ModelProto:
    dims = list(weight.dims)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", weight.name], ["y"], name="add")],
        "g",
        [helper.make_tensor_value_info("x", weight.data_type, dims)],
        [helper.make_tensor_value_info("y", weight.data_type, dims)],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_imported_initializers_equal_onnx_arrays(dtype, tmp_path: Path):
    weight = numpy_helper.from_array((np.arange(12).reshape(3, 4) * 7 - 30).astype(dtype), "w")
    path = tmp_path / "add.onnx"
    onnx.save(_add_model(weight), str(path))
    array = sparsec.load(path).weights["w"]
    assert array.dtype == dtype and array.flags.c_contiguous
    np.testing.assert_array_equal(array, numpy_helper.to_array(weight))


def test_integer_initializers_fold(tmp_path: Path):
    """An int64 shape, read in place, is folded at import time."""
    shape = numpy_helper.from_array(np.array([3, 4], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
        [shape],
    )
    path = tmp_path / "reshape.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = np.arange(12, dtype=np.float32)
    np.testing.assert_array_equal(sparsec.load(path).run({"x": x})["y"], x.reshape(3, 4))


def test_raw_data_of_the_wrong_size_is_named(tmp_path: Path):
    weight = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    weight.raw_data = weight.raw_data[:-4]
    path = tmp_path / "short.onnx"
    onnx.save(_add_model(weight), str(path))
    with pytest.raises(ModelImportError, match=r"initializer 'w' is malformed: 44 bytes of raw data for \(3, 4\) float32"):
        sparsec.load(path)
