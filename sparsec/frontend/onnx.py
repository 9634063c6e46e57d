"""ONNX models (opsets 7 to 22) into sparsec IR.

The graph becomes `func.func @main`: graph inputs are arguments, initializers and
folded constants (Constant, ConstantOfShape) become `nn.weight` ops whose bytes go
into the weight store, and every node becomes one `nn` op whose result type sparsec
infers itself. ONNX tensor names survive as `sparsec.name` argument and result
attributes and as SSA name hints; node names become op locations (`loc("fc1")`,
shown with --print-debuginfo), which per-layer pruning configs can refer to.

Peak memory stays near one copy of the weights: protobuf parses the file without its
initializers' raw bytes (`onnx_wire`), which are read from the file straight into
their arrays; initializers in external data files are memory-mapped, not read.
"""

from __future__ import annotations

import math
import mmap
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    NameLoc,
    NoneAttr,
    StringAttr,
    TensorType,
    f32,
    i64,
)
from xdsl.ir import Attribute, Block, Region, SSAValue
from xdsl.utils.exceptions import VerifyException

from sparsec.context import SparsecContext
from sparsec.dialects import nn
from sparsec.dialects.literals import ir_element_type, tensor_type_of
from sparsec.dialects.nn import NNOp, WeightOp, build_inferred
from sparsec.dialects.shapes import DYNAMIC, ShapeError
from sparsec.errors import ModelImportError, SparsecError
from sparsec.frontend.onnx_wire import Span, split_raw_data

MIN_OPSET, MAX_OPSET = 7, 22
NAME_ATTR = "sparsec.name"

_RENAMED_ATTRIBUTES = {"transA": "trans_a", "transB": "trans_b"}
"""ONNX attribute names that are not already snake case."""

_SCALAR_ATTRIBUTE_TYPES = {
    onnx.AttributeProto.INT,
    onnx.AttributeProto.FLOAT,
    onnx.AttributeProto.STRING,
    onnx.AttributeProto.INTS,
}

_IGNORED_ATTRIBUTES = {
    "Dropout": {"ratio", "is_test", "seed"},
    "BatchNormalization": {"momentum", "spatial", "training_mode"},
    "MaxPool": {"storage_order"},
    "LayerNormalization": {"stash_type"},
    "Softmax": {"axis"},
    "Unsqueeze": {"axes"},
    "Squeeze": {"axes"},
}
"""Attributes that are handled by hand or carry no meaning at inference."""


def _ssa_hint(name: str) -> str | None:
    hint = re.sub(r"[^A-Za-z0-9_$.]", "_", name)
    if not hint or hint[0].isdigit():
        hint = "v" + hint
    return hint if re.fullmatch(r"[A-Za-z_$.][A-Za-z0-9_$.]*", hint) else None


def _attribute_value(attr: onnx.AttributeProto) -> int | float | str | list[int] | list[float]:
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    return value


def _to_property(value: int | float | str | list, prop_type: str) -> Attribute:
    if isinstance(value, str):
        return StringAttr(value)
    if isinstance(value, list):
        return nn._ints([int(v) for v in value])
    if isinstance(value, float):
        return FloatAttr(value, f32)
    if prop_type == "float":
        return FloatAttr(float(value), f32)
    return IntegerAttr(int(value), i64)


@dataclass
class _GraphImporter:
    """Converts one ONNX graph, node by node, into the body of `@main`."""

    model_path: str
    opset: int
    ctx: SparsecContext
    block: Block
    consumed: set[str]
    values: dict[str, SSAValue] = field(default_factory=dict[str, SSAValue])

    def fail(self, node: onnx.NodeProto, message: str) -> ModelImportError:
        label = node.name or (node.output[0] if node.output else "?")
        return ModelImportError(f"{self.model_path}: node '{label}' ({node.op_type}): {message}")

    def add_weight(self, name: str, array: np.ndarray) -> SSAValue:
        name = self.ctx.weights.unique_name(name)
        self.ctx.weights[name] = array
        op = WeightOp(name, tensor_type_of(array))
        self.block.add_op(op)
        op.result.name_hint = _ssa_hint(name)
        return op.result

    def constant(self, node: onnx.NodeProto, input_name: str) -> np.ndarray:
        """The value of an input that must be known at compile time."""
        value = self.values.get(input_name)
        if value is None or not isinstance(value.owner, WeightOp):
            raise self.fail(node, f"input '{input_name}' must be a constant (an initializer or Constant)")
        return self.ctx.weights[value.owner.weight_name.data]

    def operand(self, node: onnx.NodeProto, index: int) -> SSAValue | None:
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.values:
            raise self.fail(node, f"input '{name}' is not produced by any earlier node, input or initializer")
        return self.values[name]

    def properties(self, node: onnx.NodeProto, op_type: type[NNOp]) -> dict[str, Attribute]:
        """Node attributes as op properties, checked against the op's definition."""
        defined = op_type.get_irdl_definition().properties
        ignored = _IGNORED_ATTRIBUTES.get(node.op_type, set())
        props: dict[str, Attribute] = {}
        for attr in node.attribute:
            if attr.name in ignored:
                continue
            prop = _RENAMED_ATTRIBUTES.get(attr.name, attr.name)
            if prop not in defined:
                raise self.fail(
                    node,
                    f"attribute '{attr.name}' is not supported (supported: "
                    f"{', '.join(sorted(defined)) or 'none'})",
                )
            if attr.type not in _SCALAR_ATTRIBUTE_TYPES:
                raise self.fail(node, f"attribute '{attr.name}' has type {attr.type}, expected an int, float, string or ints")
            kind = "float" if attr.type == onnx.AttributeProto.FLOAT else "other"
            props[prop] = _to_property(_attribute_value(attr), kind)
        return props

    def emit(
        self,
        node: onnx.NodeProto,
        op_type: type[NNOp],
        operands: list[SSAValue | None],
        props: dict[str, Attribute],
    ) -> SSAValue:
        try:
            op = build_inferred(op_type, operands, props)
            op.verify()
        except (ShapeError, VerifyException) as error:
            raise self.fail(node, str(error)) from None
        if node.name:
            op.location = NameLoc(StringAttr(node.name), NoneAttr())
        self.block.add_op(op)
        return op.results[0]

    def import_node(self, node: onnx.NodeProto) -> None:
        if node.domain not in ("", "ai.onnx"):
            raise self.fail(node, f"ops of domain '{node.domain}' are not supported; {_supported()}")
        converter = _CONVERTERS.get(node.op_type)
        if converter is None:
            raise self.fail(node, f"op type '{node.op_type}' is not supported; {_supported()}")
        needed = _MIN_INPUTS.get(node.op_type, 1)
        if sum(1 for name in node.input if name) < needed:
            raise self.fail(node, f"needs at least {needed} input(s), got {len([n for n in node.input if n])}")
        try:
            results = converter(self, node)
        except (ValueError, IndexError, TypeError, KeyError, OverflowError) as error:
            # Malformed attribute or constant values that numpy or onnx refuse.
            raise self.fail(node, f"malformed node: {error}") from None
        for index, name in enumerate(node.output):
            if not name:
                continue
            if index >= len(results):
                if name in self.consumed:
                    raise self.fail(node, f"output #{index} ('{name}') is not supported at inference")
                continue
            self.values[name] = results[index]
            if results[index].name_hint is None:
                results[index].name_hint = _ssa_hint(name)


def _supported() -> str:
    return "supported ops: " + ", ".join(sorted(_CONVERTERS))


Converter = Callable[[_GraphImporter, onnx.NodeProto], list[SSAValue]]


def _generic(op_type: type[NNOp], arity: int | None = None) -> Converter:
    """A node whose inputs are the op's operands and whose attributes are its properties."""

    def convert(importer: _GraphImporter, node: onnx.NodeProto) -> list[SSAValue]:
        count = len(node.input) if arity is None else arity
        operands = [importer.operand(node, i) for i in range(count)]
        return [importer.emit(node, op_type, operands, importer.properties(node, op_type))]

    return convert


def _constant(importer: _GraphImporter, node: onnx.NodeProto) -> list[SSAValue]:
    attr = node.attribute[0] if node.attribute else None
    if attr is None:
        raise importer.fail(node, "Constant has no value attribute")
    match attr.name:
        case "value":
            array = numpy_helper.to_array(attr.t)
        case "value_float" | "value_int":
            array = np.array(_attribute_value(attr), dtype=np.float32 if "float" in attr.name else np.int64)
        case "value_floats" | "value_ints":
            array = np.array(_attribute_value(attr), dtype=np.float32 if "float" in attr.name else np.int64)
        case other:
            raise importer.fail(node, f"Constant attribute '{other}' is not supported (value, value_float(s), value_int(s))")
    return [importer.add_weight(node.output[0], array)]


MAX_CONSTANT_ELEMENTS = 1 << 31


def _constant_of_shape(importer: _GraphImporter, node: onnx.NodeProto) -> list[SSAValue]:
    shape = importer.constant(node, node.input[0]).astype(np.int64).reshape(-1)
    fill = np.zeros(1, dtype=np.float32)
    for attr in node.attribute:
        if attr.name == "value":
            fill = numpy_helper.to_array(attr.t).reshape(-1)
    if fill.size != 1:
        raise importer.fail(node, f"value must hold exactly one element, got {fill.size}")
    if (shape < 0).any() or math.prod(int(d) for d in shape) > MAX_CONSTANT_ELEMENTS:
        raise importer.fail(node, f"shape {shape.tolist()} must be non-negative and at most {MAX_CONSTANT_ELEMENTS} elements")
    array = np.full(tuple(int(d) for d in shape), fill[0], dtype=fill.dtype)
    return [importer.add_weight(node.output[0], array)]


def _reshape(importer: _GraphImporter, node: onnx.NodeProto) -> list[SSAValue]:
    if importer.opset < 5 or len(node.input) < 2:
        raise importer.fail(node, "Reshape needs its shape as a second input (opset >= 5)")
    props = importer.properties(node, nn.ReshapeOp)
    props["shape"] = nn._ints(importer.constant(node, node.input[1]).astype(np.int64).tolist())
    return [importer.emit(node, nn.ReshapeOp, [importer.operand(node, 0)], props)]


def _axes(importer: _GraphImporter, node: onnx.NodeProto) -> list[int] | None:
    """Unsqueeze/Squeeze axes: an attribute before opset 13, an input from 13 on."""
    if len(node.input) > 1 and node.input[1]:
        return importer.constant(node, node.input[1]).astype(np.int64).tolist()
    for attr in node.attribute:
        if attr.name == "axes":
            return list(attr.ints)
    return None


def _unsqueeze(importer: _GraphImporter, node: onnx.NodeProto) -> list[SSAValue]:
    axes = _axes(importer, node)
    if axes is None:
        raise importer.fail(node, "Unsqueeze needs axes")
    props: dict[str, Attribute] = {"axes": nn._ints(axes)}
    return [importer.emit(node, nn.UnsqueezeOp, [importer.operand(node, 0)], props)]


def _squeeze(importer: _GraphImporter, node: onnx.NodeProto) -> list[SSAValue]:
    axes = _axes(importer, node)
    props: dict[str, Attribute] = {} if axes is None else {"axes": nn._ints(axes)}
    return [importer.emit(node, nn.SqueezeOp, [importer.operand(node, 0)], props)]


def _softmax(importer: _GraphImporter, node: onnx.NodeProto) -> list[SSAValue]:
    """Before opset 13 Softmax normalizes over all axes from `axis` on (default 1)."""
    x = importer.operand(node, 0)
    assert x is not None and isinstance(x.type, TensorType)
    shape = x.type.get_shape()
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if importer.opset >= 13 else 1)
    if not -len(shape) <= axis < len(shape):
        raise importer.fail(node, f"axis {axis} is out of range for rank {len(shape)}")
    axis %= len(shape)
    if importer.opset >= 13 or axis == len(shape) - 1:
        return [importer.emit(node, nn.SoftmaxOp, [x], {"axis": nn._int(axis)})]
    if DYNAMIC in shape[axis:]:
        raise importer.fail(node, f"opset {importer.opset} Softmax over dynamic dimensions {shape} is not supported")
    flat = importer.emit(node, nn.ReshapeOp, [x], {"shape": nn._ints([0] * axis + [-1])})
    soft = importer.emit(node, nn.SoftmaxOp, [flat], {"axis": nn._int(-1)})
    return [importer.emit(node, nn.ReshapeOp, [soft], {"shape": nn._ints([0] * axis + list(shape[axis:]))})]


def _batch_norm(importer: _GraphImporter, node: onnx.NodeProto) -> list[SSAValue]:
    for attr in node.attribute:
        if attr.name == "spatial" and attr.i != 1:
            raise importer.fail(node, "BatchNormalization with spatial = 0 is not supported")
        if attr.name == "training_mode" and attr.i != 0:
            raise importer.fail(node, "BatchNormalization in training mode is not supported")
    return _generic(nn.BatchNormOp, 5)(importer, node)


_CONVERTERS: dict[str, Converter] = {
    "Gemm": _generic(nn.GemmOp),
    "MatMul": _generic(nn.MatMulOp, 2),
    "Conv": _generic(nn.ConvOp),
    "Relu": _generic(nn.ReluOp, 1),
    "Gelu": _generic(nn.GeluOp, 1),
    "Erf": _generic(nn.ErfOp, 1),
    "Sigmoid": _generic(nn.SigmoidOp, 1),
    "Tanh": _generic(nn.TanhOp, 1),
    "Softmax": _softmax,
    "Add": _generic(nn.AddOp, 2),
    "Sub": _generic(nn.SubOp, 2),
    "Mul": _generic(nn.MulOp, 2),
    "Div": _generic(nn.DivOp, 2),
    "Sum": _generic(nn.SumOp),
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _generic(nn.LayerNormOp, 3),
    "LRN": _generic(nn.LRNOp, 1),
    "MaxPool": _generic(nn.MaxPoolOp, 1),
    "AveragePool": _generic(nn.AveragePoolOp, 1),
    "GlobalAveragePool": _generic(nn.GlobalAveragePoolOp, 1),
    "Reshape": _reshape,
    "Flatten": _generic(nn.FlattenOp, 1),
    "Transpose": _generic(nn.TransposeOp, 1),
    "Concat": _generic(nn.ConcatOp),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Dropout": _generic(nn.DropoutOp, 1),
    "Identity": _generic(nn.IdentityOp, 1),
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
}


_MIN_INPUTS = {
    "Gemm": 2, "MatMul": 2, "Conv": 2, "Add": 2, "Sub": 2, "Mul": 2, "Div": 2, "BatchNormalization": 5,
    "LayerNormalization": 2, "Reshape": 2, "Constant": 0,
}  # fmt: skip
"""Required inputs per op type (1 when not listed)."""


def model_skeleton(path: Path) -> onnx.ModelProto:
    """The ONNX model at `path` without its initializers' raw bytes: its graph's nodes,
    names and shapes for what needs no weights (bench joining onnxruntime's profile to
    the steps), with no second copy of them in memory."""
    return _load_model(path)[0]


def _load_model(path: Path) -> tuple[onnx.ModelProto, list[Span | None]]:
    """The model without its initializers' raw bytes, and where each lies in the file
    (`onnx_wire`); a file the wire walk cannot follow goes to onnx.load whole, which
    says what is wrong with it."""
    if not path.is_file():
        raise ModelImportError(f"{path}: no such file")
    try:
        with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            skeleton, spans = split_raw_data(data)
    except ValueError:  # a WireError, or an empty file, which cannot be mapped
        skeleton, spans = None, []
    try:
        if skeleton is None:
            model = onnx.load(str(path), load_external_data=False)
        else:
            model = onnx.load_model_from_string(skeleton)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise ModelImportError(f"{path} is not a valid ONNX model: {error}") from None
    if not model.HasField("graph"):
        raise ModelImportError(f"{path} is not a valid ONNX model: it has no graph")
    return model, spans or [None] * len(model.graph.initializer)


def _external_array(path: Path, tensor: onnx.TensorProto) -> np.ndarray:
    """An initializer stored in an external file, memory-mapped rather than read."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    where = f"{path}: external data of initializer '{tensor.name}'"
    location = info.get("location", "")
    data_file = (path.parent / location).resolve()
    if not location or path.parent.resolve() not in data_file.parents:
        raise ModelImportError(f"{where}: location '{location}' must name a file beside the model")
    if not data_file.is_file():
        raise ModelImportError(f"{where} cannot be read: '{data_file}' does not exist")
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
        offset = int(info.get("offset", 0))
    except (KeyError, TypeError, ValueError) as error:
        raise ModelImportError(f"{where} cannot be read: {error}") from None
    shape = tuple(int(d) for d in tensor.dims)
    length = int(np.prod(shape)) * dtype.itemsize
    if int(info.get("length", length)) != length or offset + length > data_file.stat().st_size:
        raise ModelImportError(f"{where} cannot be read: the file is shorter than its {shape} {dtype} values")
    if length == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(data_file, dtype=dtype, mode="r", offset=offset, shape=shape)


def _check_names(path: Path, graph: onnx.GraphProto) -> None:
    """Protobuf hands back bytes for names that are not UTF-8; such a model is damaged."""
    names = [v.name for v in (*graph.input, *graph.output, *graph.initializer)]
    for node in graph.node:
        names += [node.name, node.op_type, node.domain, *node.input, *node.output]
        names += [a.name for a in node.attribute]
    if any(not isinstance(name, str) for name in names):
        raise ModelImportError(f"{path} is not a valid ONNX model: some names are not UTF-8 text")


def _initializer_array(path: Path, tensor: onnx.TensorProto, span: Span | None, file: BinaryIO) -> np.ndarray:
    if span is not None:
        return _embedded_array(path, tensor, span, file)
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return _external_array(path, tensor)
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as error:
        raise ModelImportError(f"{path}: initializer '{tensor.name}' is malformed: {error}") from None


def _embedded_array(path: Path, tensor: onnx.TensorProto, span: Span, file: BinaryIO) -> np.ndarray:
    """An initializer's raw bytes (little-endian), read from the file into its array."""
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
    shape = tuple(int(d) for d in tensor.dims)
    count = math.prod(shape)
    if count * dtype.itemsize != span.length:
        raise ModelImportError(
            f"{path}: initializer '{tensor.name}' is malformed: {span.length} bytes of raw data for {shape} {dtype}"
        )
    file.seek(span.offset)
    array = np.fromfile(file, dtype=dtype, count=count).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _input_type(path: Path, value: onnx.ValueInfoProto) -> TensorType:
    tensor_type = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
        raise ModelImportError(f"{path}: graph input '{value.name}' needs a tensor type with a known rank")
    dims = [d.dim_value if d.HasField("dim_value") else DYNAMIC for d in tensor_type.shape.dim]
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        return TensorType(ir_element_type(dtype), dims)
    except (KeyError, SparsecError) as error:
        raise ModelImportError(f"{path}: graph input '{value.name}' has an unsupported type: {error}") from None


def _opset(path: Path, model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    opset = versions[0] if versions else 1
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelImportError(
            f"{path}: opset {opset} is not supported (supported: {MIN_OPSET} to {MAX_OPSET})"
        )
    return opset


def import_onnx(path: str | Path, ctx: SparsecContext) -> ModuleOp:
    """Import the ONNX model at `path`; its weights go into `ctx.weights`."""
    path = Path(path)
    model, spans = _load_model(path)
    opset = _opset(path, model)
    graph = model.graph
    _check_names(path, graph)
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]

    block = Block(arg_types=[_input_type(path, v) for v in inputs])
    consumed = {name for node in graph.node for name in node.input}
    consumed |= {output.name for output in graph.output}
    importer = _GraphImporter(str(path), opset, ctx, block, consumed)
    for value, arg in zip(inputs, block.args):
        importer.values[value.name] = arg
        arg.name_hint = _ssa_hint(value.name)
    with path.open("rb") as file:
        for tensor, span in zip(graph.initializer, spans, strict=True):
            importer.values[tensor.name] = importer.add_weight(tensor.name, _initializer_array(path, tensor, span, file))
    for node in graph.node:
        importer.import_node(node)

    results: list[SSAValue] = []
    for output in graph.output:
        if output.name not in importer.values:
            raise ModelImportError(f"{path}: graph output '{output.name}' is not produced by any node")
        results.append(importer.values[output.name])
    block.add_op(func.ReturnOp(*results))
    _drop_unused_weights(block, ctx)

    function = func.FuncOp(
        "main",
        ([a.type for a in block.args], [r.type for r in results]),
        Region(block),
        arg_attrs=_name_attrs([v.name for v in inputs]),
        res_attrs=_name_attrs([o.name for o in graph.output]),
    )
    module = ModuleOp([function])
    try:
        module.verify()
    except VerifyException as error:
        raise ModelImportError(f"{path}: the imported module does not verify: {error}") from None
    return module


def _drop_unused_weights(block: Block, ctx: SparsecContext) -> None:
    """Constants consumed only at import time (shapes, axes) leave no trace."""
    for op in list(block.ops):
        if isinstance(op, WeightOp) and not op.result.uses:
            ctx.weights.pop(op.weight_name.data)
            block.erase_op(op)


def _name_attrs(names: list[str]) -> ArrayAttr[DictionaryAttr]:
    return ArrayAttr([DictionaryAttr({NAME_ATTR: StringAttr(n)}) for n in names])
