"""ONNX models (opsets 7 to 24) into sparsec IR.

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
from xdsl.irdl import VerificationContext
from xdsl.utils.exceptions import VerifyException

from sparsec import reference
from sparsec.context import SparsecContext
from sparsec.dialects import nn, nn_index
from sparsec.dialects.literals import ir_element_type, is_float_type, numpy_dtype, tensor_type_of
from sparsec.dialects.nn import NNOp, WeightOp, build_inferred
from sparsec.dialects.shapes import DYNAMIC, ShapeError
from sparsec.errors import ModelImportError, SparsecError
from sparsec.frontend.onnx_symbols import Dim, symbolic_dims
from sparsec.frontend.onnx_wire import Span, split_raw_data

MIN_OPSET, MAX_OPSET = 7, 24
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
    "RMSNormalization": {"stash_type"},
    "Softmax": {"axis"},
    "Unsqueeze": {"axes"},
    "Squeeze": {"axes"},
    "Slice": {"starts", "ends", "axes"},
    "Pad": {"mode", "pads", "value"},
    "ReduceMean": {"axes", "noop_with_empty_axes"},
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
    model: onnx.ModelProto
    values: dict[str, SSAValue] = field(default_factory=dict[str, SSAValue])
    _symbols: dict[str, list[Dim]] | None = None

    def symbols(self) -> dict[str, list[Dim]]:
        """ONNX's symbolic dimensions by tensor name (`onnx_symbols`), worked out on
        first need: most models compute no shapes at run time."""
        if self._symbols is None:
            initializers = {t.name for t in self.model.graph.initializer}
            names = {
                name: value.owner.weight_name.data
                for name, value in self.values.items()
                if name in initializers and isinstance(value.owner, WeightOp)
            }
            self._symbols = symbolic_dims(self.model, self.ctx.weights, names)
        return self._symbols

    def static_dims(self, name: str) -> tuple[int, ...] | None:
        """The sizes ONNX's inference proves for tensor `name` (-1 where it cannot)."""
        dims = self.symbols().get(name)
        return None if dims is None else tuple(d if isinstance(d, int) else -1 for d in dims)

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

    def required(self, node: onnx.NodeProto, index: int, role: str) -> SSAValue:
        """Input `index`, which the op cannot do without."""
        value = self.operand(node, index)
        if value is None:
            raise self.fail(node, f"input #{index} ({role}) is required")
        return value

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
            try:
                defined[prop].constr.verify(props[prop], VerificationContext())
            except VerifyException as error:
                type_name = onnx.AttributeProto.AttributeType.Name(attr.type)
                raise self.fail(node, f"attribute '{attr.name}' of type {type_name} does not fit: {error}") from None
        return props

    def emit(
        self,
        node: onnx.NodeProto,
        op_type: type[NNOp],
        operands: list[SSAValue | None],
        props: dict[str, Attribute],
        element_type: Attribute | None = None,
        refined: tuple[int, ...] | None = None,
        output: str | None = None,
    ) -> SSAValue:
        """`op_type` built on `operands` for `node`'s result `output` (its first by
        default), folded if its value is known now. A result shape that follows from
        values takes static sizes from `refined`, else from ONNX's inference."""
        output = output or node.output[0]
        if getattr(op_type, "SHAPE_FROM_VALUES", False):
            inferred = self.static_dims(output)
            if refined is None or inferred is None or len(inferred) != len(refined):
                refined = refined or inferred
            else:
                refined = tuple(mine if mine >= 0 else theirs for mine, theirs in zip(refined, inferred))
        try:
            op = build_inferred(op_type, operands, props, element_type, refined)
            op.verify()
        except (ShapeError, VerifyException) as error:
            raise self.fail(node, str(error)) from None
        folded = self.fold(output, op)
        if folded is not None:
            op.drop_all_references()
            return folded
        if node.name:
            op.location = NameLoc(StringAttr(node.name), NoneAttr())
        self.block.add_op(op)
        return op.results[0]

    def known_value(self, value: SSAValue) -> np.ndarray | None:
        """A value known at import: a weight's array, or the sizes an `nn.shape` takes,
        `UNKNOWN_SIZE` standing for those only known at run time."""
        if isinstance(value.owner, WeightOp):
            return self.ctx.weights[value.owner.weight_name.data]
        if isinstance(value.owner, nn_index.ShapeOp) and isinstance(value.owner.input.type, TensorType):
            dims = value.owner.dims(value.owner.input.type.get_shape())
            return np.array([UNKNOWN_SIZE if d == DYNAMIC else d for d in dims], dtype=np.int64)
        return None

    def fold(self, output: str, op: NNOp) -> SSAValue | None:
        """Shape and index arithmetic on values known at import, computed now: a
        constant then feeds Reshape, Unsqueeze or Slice, and no step runs for it.
        Sizes known only at run time pass through the ops that only pick or move
        elements; every other op needs all its operands known."""
        result_type = op.results[0].type
        assert isinstance(result_type, TensorType)
        if type(op) not in FOLDABLE or (is_float_type(result_type.element_type) and type(op) not in nn_index.INDEX_OPS):
            return None
        known = [self.known_value(v) for v in op.operands]
        if any(k is None for k in known):
            return None
        unknown = [k.dtype == np.int64 and bool((k == UNKNOWN_SIZE).any()) for k in known]  # pyright: ignore
        partly = any(unknown)
        if partly and not (type(op) in PICKING and not any(unknown[PICKING[type(op)] :])):
            return None
        try:
            array = reference.evaluate(op, known)  # pyright: ignore
        except SparsecError:
            return None  # it fails the same way at run time, where the error names the node
        if array.size > FOLDED_ELEMENTS or (partly and (array == UNKNOWN_SIZE).any()):
            return None
        return self.add_weight(output, array.astype(numpy_dtype(result_type.element_type)))

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


UNKNOWN_SIZE = -(1 << 62)
"""Stands for a size known only at run time in `known_value`'s arrays."""

FOLDED_ELEMENTS = 1 << 16
"""The largest result `fold` computes at import: shape arithmetic, not data."""


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
    """A constant shape gives a weight; a shape computed at run time, the fill value
    expanded to it."""
    fill = np.zeros(1, dtype=np.float32)
    for attr in node.attribute:
        if attr.name == "value":
            fill = numpy_helper.to_array(attr.t).reshape(-1)
    if fill.size != 1:
        raise importer.fail(node, f"value must hold exactly one element, got {fill.size}")
    shape_value = importer.required(node, 0, "shape")
    known = importer.known_value(shape_value)
    if known is None or (known == UNKNOWN_SIZE).any():
        scalar = importer.add_weight(f"{node.output[0]}_value", fill.reshape(()))
        return [importer.emit(node, nn_index.ExpandOp, [scalar, shape_value], {})]
    shape = known.astype(np.int64).reshape(-1)
    if (shape < 0).any() or math.prod(int(d) for d in shape) > MAX_CONSTANT_ELEMENTS:
        raise importer.fail(node, f"shape {shape.tolist()} must be non-negative and at most {MAX_CONSTANT_ELEMENTS} elements")
    array = np.full(tuple(int(d) for d in shape), fill[0], dtype=fill.dtype)
    return [importer.add_weight(node.output[0], array)]


def _reshape(importer: _GraphImporter, node: onnx.NodeProto) -> list[SSAValue]:
    """A Reshape to a constant shape, or to one that ONNX's inference names in terms of
    the input's own dimensions (`_named_target`), is an `nn.reshape`; any other runs
    as `nn.dynamic_reshape` on the shape computed at run time."""
    if importer.opset < 5 or len(node.input) < 2:
        raise importer.fail(node, "Reshape needs its shape as a second input (opset >= 5)")
    x, shape = importer.operand(node, 0), importer.required(node, 1, "shape")
    props = importer.properties(node, nn.ReshapeOp)
    known = importer.known_value(shape)
    if known is not None and not (known == UNKNOWN_SIZE).any():
        props["shape"] = nn._ints(known.astype(np.int64).tolist())
        return [importer.emit(node, nn.ReshapeOp, [x], props)]
    target = _named_target(importer, node)
    if target is not None:
        props.pop("allowzero", None)
        props["shape"] = nn._ints(target)
        return [importer.emit(node, nn.ReshapeOp, [x], props)]
    return [importer.emit(node, nn_index.DynamicReshapeOp, [x, shape], props)]


def _named_target(importer: _GraphImporter, node: onnx.NodeProto) -> list[int] | None:
    """The reshape target as constants: a size ONNX proves, 0 where the result's
    dimension has the same symbol as the input's at that index, and -1 for at most
    one dimension left."""
    symbols = importer.symbols()
    result, source = symbols.get(node.output[0]), symbols.get(node.input[0])
    if result is None or source is None:
        return None
    target = []
    for index, dim in enumerate(result):
        if isinstance(dim, int) and dim > 0:
            target.append(dim)
        elif isinstance(dim, str) and index < len(source) and source[index] == dim:
            target.append(0)
        else:
            target.append(-1)
    return target if target.count(-1) <= 1 else None


def _slice(importer: _GraphImporter, node: onnx.NodeProto) -> list[SSAValue]:
    """Slice's starts, ends, axes and steps, as attributes before opset 10 and inputs
    from 10 on, become four int64 operands; absent axes and steps are made explicit."""
    data = importer.required(node, 0, "data")
    if importer.opset < 10:
        given = {a.name: list(a.ints) for a in node.attribute}
        if "starts" not in given or "ends" not in given:
            raise importer.fail(node, "Slice needs starts and ends")
        parts: list[SSAValue | None] = [
            importer.add_weight(f"{node.output[0]}_{role}", np.array(given[role], dtype=np.int64))
            for role in ("starts", "ends") + (("axes",) if "axes" in given else ())
        ]
    else:
        parts = [importer.required(node, 1, "starts"), importer.required(node, 2, "ends")]
        parts += [importer.operand(node, i) for i in range(3, 5)]
    count = parts[0].type.get_shape()  # pyright: ignore
    if len(count) != 1 or count[0] == DYNAMIC:
        raise importer.fail(node, f"starts must be a 1-D tensor of static length, got {parts[0].type}")  # pyright: ignore
    parts += [None] * (4 - len(parts))
    if parts[2] is None:
        parts[2] = importer.add_weight(f"{node.output[0]}_axes", np.arange(count[0], dtype=np.int64))
    if parts[3] is None:
        parts[3] = importer.add_weight(f"{node.output[0]}_steps", np.ones(count[0], dtype=np.int64))
    return [importer.emit(node, nn_index.SliceOp, [data, *parts], {}, refined=_sliced_shape(importer, data, parts))]


def _sliced_shape(importer: _GraphImporter, data: SSAValue, parts: list[SSAValue | None]) -> tuple[int, ...] | None:
    """What a Slice's own bounds tell of its result: axes it does not slice keep their
    size, and a sliced static size with known bounds is counted (-1: unknown)."""
    shape = data.type.get_shape()  # pyright: ignore
    starts, ends, axes, steps = (importer.known_value(p) for p in parts)  # pyright: ignore
    if axes is None or not all(-len(shape) <= a < len(shape) for a in axes.reshape(-1).tolist()):
        return None
    sliced = [int(a) % len(shape) for a in axes.reshape(-1)]
    result = list(shape)
    for index, axis in enumerate(sliced):
        bounds = [b.reshape(-1)[index] if b is not None else UNKNOWN_SIZE for b in (starts, ends, steps)]
        known = shape[axis] != DYNAMIC and UNKNOWN_SIZE not in bounds
        result[axis] = len(range(shape[axis])[slice(*(int(b) for b in bounds))]) if known else DYNAMIC
    return tuple(result)


def _cast(importer: _GraphImporter, node: onnx.NodeProto) -> list[SSAValue]:
    props = importer.properties(node, nn_index.CastOp)
    to = props["to"].value.data if "to" in props else None  # pyright: ignore
    if to not in nn_index.ONNX_DTYPES:
        raise importer.fail(node, f"cannot cast to ONNX data type {to} (supported: {sorted(nn_index.ONNX_DTYPES)})")
    element_type = ir_element_type(nn_index.ONNX_DTYPES[to])
    return [importer.emit(node, nn_index.CastOp, [importer.operand(node, 0)], props, element_type)]


def _reduce_mean(importer: _GraphImporter, node: onnx.NodeProto) -> list[SSAValue]:
    """ReduceMean's axes: an attribute before opset 18, an input from 18 on."""
    props = importer.properties(node, nn.ReduceMeanOp)
    axes = _axes(importer, node)
    if axes:
        props["axes"] = nn._ints(axes)
    elif any(a.name == "noop_with_empty_axes" and a.i for a in node.attribute):
        return [importer.operand(node, 0)]  # pyright: ignore
    return [importer.emit(node, nn.ReduceMeanOp, [importer.operand(node, 0)], props)]


def _split(importer: _GraphImporter, node: onnx.NodeProto) -> list[SSAValue]:
    """Split becomes one Slice per output, its sizes constant: the `split` attribute
    (before opset 13) or input, else equal parts of a dimension known at import
    (`num_outputs` from opset 18 on, else the number of outputs)."""
    x = importer.required(node, 0, "input")
    assert isinstance(x.type, TensorType)
    shape = x.type.get_shape()
    attributes = {a.name: a for a in node.attribute}
    axis = attributes["axis"].i if "axis" in attributes else 0
    if not -len(shape) <= axis < len(shape):
        raise importer.fail(node, f"axis {axis} is out of range for rank {len(shape)}")
    axis %= len(shape)
    if len(node.input) > 1 and node.input[1]:
        sizes = importer.constant(node, node.input[1]).astype(np.int64).reshape(-1).tolist()
    elif "split" in attributes:
        sizes = list(attributes["split"].ints)
    else:
        parts = attributes["num_outputs"].i if "num_outputs" in attributes else len(node.output)
        if shape[axis] == DYNAMIC:
            raise importer.fail(node, f"splitting dimension {axis} of {x.type} into equal parts needs its size at import")
        step = -(-shape[axis] // parts)
        sizes = [min(step, shape[axis] - i * step) for i in range(parts)]
    if len(sizes) != len(node.output):
        raise importer.fail(node, f"{len(sizes)} split sizes for {len(node.output)} outputs")
    results = []
    start = 0
    for output, size in zip(node.output, sizes, strict=True):
        bounds = [importer.add_weight(f"{output}_{role}", np.array([value], dtype=np.int64))
                  for role, value in (("start", start), ("end", start + size), ("axis", axis), ("step", 1))]  # fmt: skip
        refined = tuple(size if i == axis else d for i, d in enumerate(shape))
        results.append(importer.emit(node, nn_index.SliceOp, [x, *bounds], {}, refined=refined, output=output))
        start += size
    return results


def _pad(importer: _GraphImporter, node: onnx.NodeProto) -> list[SSAValue]:
    """Pad, mode constant: its counts an attribute before opset 11 and an input from 11
    on, over the axes an `axes` input names (opset 18) or all; the value an attribute,
    then an optional input."""
    attributes = {a.name: a for a in node.attribute}
    mode = attributes["mode"].s.decode() if "mode" in attributes else "constant"
    if mode != "constant":
        raise importer.fail(node, f"mode '{mode}' is not supported (only constant)")
    data = importer.required(node, 0, "data")
    rank = len(data.type.get_shape())  # pyright: ignore
    if importer.opset < 11:
        pads = importer.add_weight(f"{node.output[0]}_pads", np.array(list(attributes["pads"].ints) if "pads" in attributes else [], np.int64))
        fill = attributes["value"].f if "value" in attributes else 0.0
        value = importer.add_weight(f"{node.output[0]}_value", np.array(fill, numpy_dtype(data.type.element_type)))  # pyright: ignore
    else:
        pads = importer.required(node, 1, "pads")
        given = importer.operand(node, 2)
        value = given or importer.add_weight(f"{node.output[0]}_value", np.zeros((), numpy_dtype(data.type.element_type)))  # pyright: ignore
    if (axes := importer.operand(node, 3)) is not None:
        pads = _pads_over_all_axes(importer, node, pads, axes, rank)
    known = importer.known_value(pads)
    refined = None
    if known is not None and known.size == 2 * rank and not (known == UNKNOWN_SIZE).any():
        shape = data.type.get_shape()  # pyright: ignore
        refined = tuple(DYNAMIC if d == DYNAMIC else d + int(known[i]) + int(known[i + rank]) for i, d in enumerate(shape))
    return [importer.emit(node, nn_index.PadOp, [data, pads, value], {}, refined=refined)]


def _pads_over_all_axes(importer: _GraphImporter, node: onnx.NodeProto, pads: SSAValue, axes: SSAValue, rank: int) -> SSAValue:
    """Pad's counts for the axes an `axes` input names, spread over all axes (0 elsewhere)."""
    named = [int(a) % rank for a in importer.constant(node, node.input[3]).reshape(-1)]
    counts = importer.constant(node, node.input[1]).astype(np.int64).reshape(-1)
    if len(counts) != 2 * len(named):
        raise importer.fail(node, f"{len(counts)} pads for {len(named)} axes")
    spread = np.zeros(2 * rank, np.int64)
    for index, axis in enumerate(named):
        spread[axis], spread[axis + rank] = counts[index], counts[index + len(named)]
    return importer.add_weight(f"{node.output[0]}_pads", spread)


def _identity(importer: _GraphImporter, node: onnx.NodeProto) -> list[SSAValue]:
    """An Identity of a weight is the weight itself: exporters alias tied weights so,
    and pruning must see the weight a layer reads."""
    x = importer.operand(node, 0)
    if x is not None and isinstance(x.owner, WeightOp):
        return [x]
    return _generic(nn.IdentityOp, 1)(importer, node)


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
    "Swish": _generic(nn.SwishOp, 1),
    "Tanh": _generic(nn.TanhOp, 1),
    "Softmax": _softmax,
    "Add": _generic(nn.AddOp, 2),
    "Sub": _generic(nn.SubOp, 2),
    "Mul": _generic(nn.MulOp, 2),
    "Div": _generic(nn.DivOp, 2),
    "Sum": _generic(nn.SumOp),
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _generic(nn.LayerNormOp, 3),
    "RMSNormalization": _generic(nn.RMSNormOp, 2),
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
    "Identity": _identity,
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Pow": _generic(nn.PowOp, 2),
    "Sqrt": _generic(nn.SqrtOp, 1),
    "ReduceMean": _reduce_mean,
    "Shape": _generic(nn_index.ShapeOp, 1),
    "Gather": _generic(nn_index.GatherOp, 2),
    "GatherND": _generic(nn_index.GatherNDOp, 2),
    "Slice": _slice,
    "Split": _split,
    "GatherElements": _generic(nn_index.GatherElementsOp, 2),
    "CumSum": _generic(nn_index.CumSumOp, 2),
    "Range": _generic(nn_index.RangeOp, 3),
    "Expand": _generic(nn_index.ExpandOp, 2),
    "Cast": _cast,
    "Where": _generic(nn_index.WhereOp, 3),
    "Equal": _generic(nn_index.EqualOp, 2),
    "Greater": _generic(nn_index.GreaterOp, 2),
    "GreaterOrEqual": _generic(nn_index.GreaterOrEqualOp, 2),
    "Less": _generic(nn_index.LessOp, 2),
    "LessOrEqual": _generic(nn_index.LessOrEqualOp, 2),
    "And": _generic(nn_index.AndOp, 2),
    "Or": _generic(nn_index.OrOp, 2),
    "Not": _generic(nn_index.NotOp, 1),
    "IsNaN": _generic(nn_index.IsNaNOp, 1),
    "Max": _generic(nn_index.MaxOp),
    "Min": _generic(nn_index.MinOp),
    "Neg": _generic(nn_index.NegOp, 1),
    "Abs": _generic(nn_index.AbsOp, 1),
    "Exp": _generic(nn.ExpOp, 1),
    "Log": _generic(nn.LogOp, 1),
    "Cos": _generic(nn.CosOp, 1),
    "Sin": _generic(nn.SinOp, 1),
    "Reciprocal": _generic(nn.ReciprocalOp, 1),
    "Mod": _generic(nn_index.ModOp, 2),
    "ArgMax": _generic(nn_index.ArgMaxOp, 1),
    "Pad": _pad,
}

FOLDABLE: frozenset[type[NNOp]] = frozenset({
    *nn_index.INDEX_OPS, nn.AddOp, nn.SubOp, nn.MulOp, nn.DivOp, nn.ReshapeOp, nn.UnsqueezeOp,
    nn.SqueezeOp, nn.ConcatOp, nn.FlattenOp, nn.IdentityOp,
})  # fmt: skip
"""Ops `fold` may compute at import."""

PICKING: dict[type[NNOp], int] = {
    nn_index.GatherOp: 1, nn_index.SliceOp: 1, nn.ConcatOp: 1 << 30, nn.UnsqueezeOp: 1, nn.SqueezeOp: 1,
    nn.ReshapeOp: 1, nn.IdentityOp: 1,
}  # fmt: skip
"""Ops that only pick or move elements, by how many leading operands are the elements:
they carry `UNKNOWN_SIZE` there through unchanged (not in Gather's indices or Slice's
bounds, which decide what is picked)."""


_MIN_INPUTS = {
    "Gemm": 2, "MatMul": 2, "Conv": 2, "Add": 2, "Sub": 2, "Mul": 2, "Div": 2, "BatchNormalization": 5,
    "LayerNormalization": 2, "RMSNormalization": 2, "Reshape": 2, "Constant": 0, "Pow": 2, "Gather": 2, "GatherND": 2, "Range": 3,
    "Expand": 2, "Where": 3, "Equal": 2, "Greater": 2, "GreaterOrEqual": 2, "Less": 2, "LessOrEqual": 2,
    "And": 2, "Or": 2, "GatherElements": 2, "CumSum": 2, "Mod": 2,
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
    _initializer_dtype(path, tensor)
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as error:
        raise ModelImportError(f"{path}: initializer '{tensor.name}' is malformed: {error}") from None


def _initializer_dtype(path: Path, tensor: onnx.TensorProto) -> np.dtype:
    """The numpy dtype of an initializer's ONNX data type, little-endian as stored."""
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
    except KeyError:
        raise ModelImportError(f"{path}: initializer '{tensor.name}' is malformed: data type {tensor.data_type} is no ONNX tensor type") from None


def _embedded_array(path: Path, tensor: onnx.TensorProto, span: Span, file: BinaryIO) -> np.ndarray:
    """An initializer's raw bytes (little-endian), read from the file into its array."""
    dtype = _initializer_dtype(path, tensor)
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
    importer = _GraphImporter(str(path), opset, ctx, block, consumed, model)
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
    _drop_dead_ops(block)
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


def _drop_dead_ops(block: Block) -> None:
    """Ops no output depends on: shape arithmetic whose result became a constant
    reshape target (`_reshape`) or was folded (`_GraphImporter.fold`)."""
    for op in reversed(list(block.ops)):
        if isinstance(op, NNOp) and not any(result.uses for result in op.results):
            block.erase_op(op)


def _drop_unused_weights(block: Block, ctx: SparsecContext) -> None:
    """Constants consumed only at import time (shapes, axes) leave no trace."""
    for op in list(block.ops):
        if isinstance(op, WeightOp) and not op.result.uses:
            ctx.weights.pop(op.weight_name.data)
            block.erase_op(op)


def _name_attrs(names: list[str]) -> ArrayAttr[DictionaryAttr]:
    return ArrayAttr([DictionaryAttr({NAME_ATTR: StringAttr(n)}) for n in names])
