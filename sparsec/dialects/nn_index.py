"""`nn` ops for what exported transformers compute besides their layers: shapes,
indices, masks and positions.

PyTorch's exporters write a BERT's embedding lookups as Gather, its position ids as a
Slice of a buffer up to the run-time sequence length, and its attention mask as
Range, comparisons, And, GatherND, Expand and Where over int64 and bool tensors;
LLaMA's rotary embeddings add Neg, Swin's windows Mod and Pad, CLIP's pooling ArgMax.
These ops carry that work; it is small next to the layers, and runs in numpy.

Where a result's shape depends on an operand's *values* (Range, Slice, Expand, Pad, a
Reshape to a run-time shape), `infer_shape` knows only the rank and returns `?` for
every dimension; the importer fills in the dimensions that constant operands or ONNX's
own shape inference prove static (`SHAPE_FROM_VALUES`).
"""

from __future__ import annotations

from abc import ABC
from typing import ClassVar

import numpy as np
from xdsl.dialects.builtin import I64, IntegerAttr, TensorType, i1, i64
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, operand_def, opt_prop_def, prop_def, result_def
from xdsl.utils.exceptions import VerifyException

from sparsec.dialects import shapes
from sparsec.dialects.literals import ir_element_type, is_float_type
from sparsec.dialects.nn import BroadcastOp, ElementwiseOp, NNOp, VariadicBroadcastOp, _int
from sparsec.dialects.shapes import DYNAMIC, Shape, ShapeError

ONNX_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32), 2: np.dtype(np.uint8), 3: np.dtype(np.int8), 5: np.dtype(np.int16),
    6: np.dtype(np.int32), 7: np.dtype(np.int64), 9: np.dtype(np.bool_), 10: np.dtype(np.float16),
    11: np.dtype(np.float64),
}  # fmt: skip
"""ONNX TensorProto data types that Cast may convert to."""


def _static_length(shape: Shape, what: str) -> int:
    """The length of a 1-D operand that lists dimensions: it fixes the result's rank."""
    if len(shape) != 1 or shape[0] == DYNAMIC:
        raise ShapeError(f"{what} must be a 1-D tensor of static length, got {shapes.fmt(shape)}")
    return shape[0]


class ValueShapedOp(NNOp, ABC):
    """An op whose result dimensions follow from an operand's values, not its shape."""

    SHAPE_FROM_VALUES: ClassVar[bool] = True


class BoolResultOp(NNOp, ABC):
    """An op whose result is a bool tensor (i1)."""

    @staticmethod
    def result_element_type(operand_types: list[TensorType]) -> Attribute:
        return i1


@irdl_op_definition
class ShapeOp(NNOp):
    """The operand's dimensions from `start` to `end` (Python slice rules) as int64."""

    name = "nn.shape"
    ONNX_OP: ClassVar[str] = "Shape"

    input = operand_def(TensorType)
    start = opt_prop_def(IntegerAttr[I64], default_value=_int(0))
    end = opt_prop_def(IntegerAttr[I64])
    output = result_def(TensorType)

    def dims(self, shape: Shape) -> Shape:
        end = self.end.value.data if self.end is not None else None
        return tuple(shape[self.start.value.data : end])

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        return (len(self.dims(operand_shapes[0])),)

    @staticmethod
    def result_element_type(operand_types: list[TensorType]) -> Attribute:
        return i64


@irdl_op_definition
class GatherOp(NNOp):
    """Slices of `data` along `axis` picked by integer `indices` (embedding lookups)."""

    name = "nn.gather"
    ONNX_OP: ClassVar[str] = "Gather"

    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    axis = opt_prop_def(IntegerAttr[I64], default_value=_int(0))
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        data, indices = operand_shapes
        axis = shapes.normalize_axis(self.axis.value.data, len(data))
        return (*data[:axis], *indices, *data[axis + 1 :])


@irdl_op_definition
class GatherNDOp(NNOp):
    """Elements or slices of `data` at the index tuples in the last axis of `indices`
    (batch_dims = 0 only)."""

    name = "nn.gather_nd"
    ONNX_OP: ClassVar[str] = "GatherND"

    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    batch_dims = opt_prop_def(IntegerAttr[I64], default_value=_int(0))
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        data, indices = operand_shapes
        if self.batch_dims.value.data != 0:
            raise ShapeError(f"batch_dims {self.batch_dims.value.data} is not supported (only 0)")
        if not indices or indices[-1] == DYNAMIC or indices[-1] > len(data):
            raise ShapeError(f"indices {shapes.fmt(indices)} need a static last axis of at most rank {len(data)}")
        return (*indices[:-1], *data[indices[-1] :])


@irdl_op_definition
class GatherElementsOp(NNOp):
    """`data` picked along `axis` at each position of `indices` (result: its shape)."""

    name = "nn.gather_elements"
    ONNX_OP: ClassVar[str] = "GatherElements"

    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    axis = opt_prop_def(IntegerAttr[I64], default_value=_int(0))
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        data, indices = operand_shapes
        shapes.normalize_axis(self.axis.value.data, len(data))
        if len(indices) != len(data):
            raise ShapeError(f"indices {shapes.fmt(indices)} must have the rank of data {shapes.fmt(data)}")
        return indices


@irdl_op_definition
class CumSumOp(NNOp):
    """Running sums along the axis given as a scalar operand (RoBERTa's position ids)."""

    name = "nn.cum_sum"
    ONNX_OP: ClassVar[str] = "CumSum"

    input = operand_def(TensorType)
    axis = operand_def(TensorType)
    exclusive = opt_prop_def(IntegerAttr[I64], default_value=_int(0))
    reverse = opt_prop_def(IntegerAttr[I64], default_value=_int(0))
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        if len(operand_shapes[1]) > 1 or shapes.product(operand_shapes[1]) not in (1, DYNAMIC):
            raise ShapeError(f"axis must be a scalar or a single value, got {shapes.fmt(operand_shapes[1])}")
        return operand_shapes[0]


@irdl_op_definition
class SliceOp(ValueShapedOp):
    """`data[starts:ends:steps]` along `axes`, all four given as int64 tensors (the
    importer makes ONNX's default axes and steps explicit)."""

    name = "nn.slice"
    ONNX_OP: ClassVar[str] = "Slice"

    data = operand_def(TensorType)
    starts = operand_def(TensorType)
    ends = operand_def(TensorType)
    axes = operand_def(TensorType)
    steps = operand_def(TensorType)
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        return (DYNAMIC,) * len(operand_shapes[0])


@irdl_op_definition
class RangeOp(ValueShapedOp):
    """`start, start + delta, ...` below `limit`, from three scalars."""

    name = "nn.range"
    ONNX_OP: ClassVar[str] = "Range"

    start = operand_def(TensorType)
    limit = operand_def(TensorType)
    delta = operand_def(TensorType)
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        if any(shape != () for shape in operand_shapes):
            raise ShapeError(f"start, limit and delta must be scalars, got {', '.join(map(shapes.fmt, operand_shapes))}")
        return (DYNAMIC,)


@irdl_op_definition
class ExpandOp(ValueShapedOp):
    """`input` broadcast to a shape given as an int64 tensor (1 keeps a dimension)."""

    name = "nn.expand"
    ONNX_OP: ClassVar[str] = "Expand"

    input = operand_def(TensorType)
    shape = operand_def(TensorType)
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        x, target = operand_shapes
        rank = max(len(x), _static_length(target, "shape"))
        return (DYNAMIC,) * rank


@irdl_op_definition
class DynamicReshapeOp(ValueShapedOp):
    """Reshape to a shape computed at run time (`nn.reshape` takes a constant one)."""

    name = "nn.dynamic_reshape"
    ONNX_OP: ClassVar[str] = "Reshape"

    input = operand_def(TensorType)
    shape = operand_def(TensorType)
    allowzero = opt_prop_def(IntegerAttr[I64], default_value=_int(0))
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        return (DYNAMIC,) * _static_length(operand_shapes[1], "shape")


@irdl_op_definition
class CastOp(NNOp):
    """Elements converted to the ONNX data type `to`."""

    name = "nn.cast"
    ONNX_OP: ClassVar[str] = "Cast"

    input = operand_def(TensorType)
    to = prop_def(IntegerAttr[I64])
    output = result_def(TensorType)

    def target_dtype(self) -> np.dtype:
        dtype = ONNX_DTYPES.get(self.to.value.data)
        if dtype is None:
            raise ShapeError(f"cannot cast to ONNX data type {self.to.value.data} (supported: {sorted(ONNX_DTYPES)})")
        return dtype

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        self.target_dtype()
        return operand_shapes[0]

    def verify_(self) -> None:
        super().verify_()
        expected = ir_element_type(self.target_dtype())
        if self.output.type.element_type != expected:  # pyright: ignore
            raise VerifyException(f"'nn.cast': result element type must be {expected} for to = {self.to.value.data}")


@irdl_op_definition
class WhereOp(NNOp):
    """`x` where `condition` holds, else `y`, broadcasting all three."""

    name = "nn.where"
    ONNX_OP: ClassVar[str] = "Where"

    condition = operand_def(TensorType)
    x = operand_def(TensorType)
    y = operand_def(TensorType)
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        return shapes.broadcast(*operand_shapes)

    @staticmethod
    def result_element_type(operand_types: list[TensorType]) -> Attribute:
        return operand_types[1].element_type


class CompareOp(BoolResultOp, BroadcastOp, ABC):
    """A comparison or logical op: bool results of broadcast operands."""


@irdl_op_definition
class EqualOp(CompareOp):
    name = "nn.equal"
    ONNX_OP: ClassVar[str] = "Equal"


@irdl_op_definition
class GreaterOp(CompareOp):
    name = "nn.greater"
    ONNX_OP: ClassVar[str] = "Greater"


@irdl_op_definition
class GreaterOrEqualOp(CompareOp):
    name = "nn.greater_or_equal"
    ONNX_OP: ClassVar[str] = "GreaterOrEqual"


@irdl_op_definition
class LessOp(CompareOp):
    name = "nn.less"
    ONNX_OP: ClassVar[str] = "Less"


@irdl_op_definition
class LessOrEqualOp(CompareOp):
    name = "nn.less_or_equal"
    ONNX_OP: ClassVar[str] = "LessOrEqual"


@irdl_op_definition
class AndOp(CompareOp):
    name = "nn.and"
    ONNX_OP: ClassVar[str] = "And"


@irdl_op_definition
class OrOp(CompareOp):
    name = "nn.or"
    ONNX_OP: ClassVar[str] = "Or"


@irdl_op_definition
class NotOp(BoolResultOp, ElementwiseOp):
    name = "nn.not"
    ONNX_OP: ClassVar[str] = "Not"


@irdl_op_definition
class IsNaNOp(BoolResultOp, ElementwiseOp):
    name = "nn.is_nan"
    ONNX_OP: ClassVar[str] = "IsNaN"

    def verify_(self) -> None:
        if not is_float_type(self.input.type.element_type):  # pyright: ignore
            raise VerifyException(f"'nn.is_nan': operand must be a float tensor, got {self.input.type}")
        super().verify_()


@irdl_op_definition
class NegOp(ElementwiseOp):
    name = "nn.neg"
    ONNX_OP: ClassVar[str] = "Neg"


@irdl_op_definition
class AbsOp(ElementwiseOp):
    name = "nn.abs"
    ONNX_OP: ClassVar[str] = "Abs"


@irdl_op_definition
class ModOp(BroadcastOp):
    """The remainder of a division: the divisor's sign (Python's %), or with `fmod` the
    dividend's (C's fmod), as Swin's window shifts compute it."""

    name = "nn.mod"
    ONNX_OP: ClassVar[str] = "Mod"

    fmod = opt_prop_def(IntegerAttr[I64], default_value=_int(0))


@irdl_op_definition
class ArgMaxOp(NNOp):
    """The index of the largest value along `axis` (the first, or the last with
    `select_last_index`), as int64: CLIP's text pooling picks its end token so."""

    name = "nn.arg_max"
    ONNX_OP: ClassVar[str] = "ArgMax"

    input = operand_def(TensorType)
    axis = opt_prop_def(IntegerAttr[I64], default_value=_int(0))
    keepdims = opt_prop_def(IntegerAttr[I64], default_value=_int(1))
    select_last_index = opt_prop_def(IntegerAttr[I64], default_value=_int(0))
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        x = operand_shapes[0]
        axis = shapes.normalize_axis(self.axis.value.data, len(x))
        if self.keepdims.value.data:
            return tuple(1 if i == axis else d for i, d in enumerate(x))
        return tuple(d for i, d in enumerate(x) if i != axis)

    @staticmethod
    def result_element_type(operand_types: list[TensorType]) -> Attribute:
        return i64


@irdl_op_definition
class PadOp(ValueShapedOp):
    """`data` padded with `constant_value` (0 when absent) by `pads`, an int64 tensor
    of the counts before each axis then after each (mode constant only)."""

    name = "nn.pad"
    ONNX_OP: ClassVar[str] = "Pad"

    data = operand_def(TensorType)
    pads = operand_def(TensorType)
    constant_value = operand_def(TensorType)
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        data, pads, value = operand_shapes
        if _static_length(pads, "pads") != 2 * len(data):
            raise ShapeError(f"pads {shapes.fmt(pads)} must hold two counts for each of the {len(data)} axes")
        if shapes.product(value) not in (1, DYNAMIC):
            raise ShapeError(f"constant_value must be a single value, got {shapes.fmt(value)}")
        return (DYNAMIC,) * len(data)


@irdl_op_definition
class MaxOp(VariadicBroadcastOp):
    name = "nn.max"
    ONNX_OP: ClassVar[str] = "Max"


@irdl_op_definition
class MinOp(VariadicBroadcastOp):
    name = "nn.min"
    ONNX_OP: ClassVar[str] = "Min"


INDEX_OPS: tuple[type[NNOp], ...] = (
    ShapeOp, GatherOp, GatherNDOp, GatherElementsOp, CumSumOp, SliceOp, RangeOp, ExpandOp, DynamicReshapeOp, CastOp, WhereOp,
    EqualOp, GreaterOp, GreaterOrEqualOp, LessOp, LessOrEqualOp, AndOp, OrOp, NotOp, IsNaNOp, MaxOp, MinOp,
    NegOp, AbsOp, ModOp, ArgMaxOp, PadOp,
)  # fmt: skip
