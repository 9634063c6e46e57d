"""The `nn` dialect: model-level tensor ops with ONNX semantics.

Each op mirrors one ONNX operator (`ONNX_OP`), with ONNX attribute names written in
snake case (`transB` -> `trans_b`) and ONNX defaults as property defaults. Inputs that
ONNX passes as constant tensors but that are really configuration (Reshape's shape,
Unsqueeze's axes) are properties here.

Every op infers its result shape from its operands (`infer_shape`), which serves
both the importer, which builds ops without trusting ONNX value_info, and the
verifier, which checks that the result type agrees.

Weights are first-class values: `nn.weight` names a tensor in the weight store
(`sparsec.weights`). Its bytes are not part of the op, except in printed IR where a
small weight is shown inline so that tests stay readable:

    %w = nn.weight "fc.weight" : tensor<128x784xf32>
    %b = nn.weight "fc.bias" dense<[0.5, -1.0]> : tensor<2xf32>
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects.builtin import (
    I64,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    f32,
    i64,
)
from xdsl.ir import Attribute, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    VarOperandDef,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from sparsec.dialects import shapes
from sparsec.dialects.shapes import DYNAMIC, Shape, ShapeError
from sparsec.dialects.literals import format_dense, is_float_type
from sparsec.dialects.sparse import PatternAttr


def _int(value: int) -> IntegerAttr[I64]:
    return IntegerAttr(value, i64)


def _float(value: float) -> FloatAttr:
    return FloatAttr(value, f32)


def _ints(values: Sequence[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, tuple(values))


def ints_of(attr: DenseArrayBase | None) -> tuple[int, ...]:
    return tuple(int(v) for v in attr.get_values()) if attr is not None else ()


def _broadcasts_to(shape: Shape, target: Shape) -> bool:
    try:
        return shapes.compatible(shapes.broadcast(shape, target), target)
    except ShapeError:
        return False


class NNOp(IRDLOperation, ABC):
    """An op with ONNX semantics whose single result shape follows from its operands."""

    ONNX_OP: ClassVar[str]
    """The ONNX operator this op stands for."""

    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(Pure())
    assembly_format = "operands attr-dict `:` functional-type(operands, results)"

    @abstractmethod
    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        """The result shape for these operand shapes; raises `ShapeError`."""

    def verify_(self) -> None:
        # Operands are TensorType by the op definition, which xDSL checks first.
        operand_shapes = [operand.type.get_shape() for operand in self.operands]  # pyright: ignore
        try:
            expected = self.infer_shape(operand_shapes)
        except ShapeError as error:
            raise VerifyException(f"'{self.name}': {error}") from None
        result = self.results[0].type
        assert isinstance(result, TensorType)
        if not shapes.compatible(result.get_shape(), expected):
            raise VerifyException(
                f"'{self.name}': result shape {shapes.fmt(result.get_shape())} does not "
                f"match the inferred shape {shapes.fmt(expected)}"
            )


class FloatComputeOp(NNOp, ABC):
    """An op whose operands are float tensors of one element type."""

    def verify_(self) -> None:
        element_types = {
            operand.type.element_type  # pyright: ignore
            for operand in self.operands
            if isinstance(operand.type, TensorType)
        }
        for index, operand in enumerate(self.operands):
            if isinstance(operand.type, TensorType) and not is_float_type(operand.type.element_type):
                raise VerifyException(
                    f"'{self.name}': operand #{index} must be a float tensor, got {operand.type}"
                )
        if len(element_types) > 1:
            raise VerifyException(
                f"'{self.name}': operands must share one element type, got "
                f"{', '.join(str(t) for t in element_types)}"
            )
        super().verify_()


class ElementwiseOp(NNOp, ABC):
    """One operand, and a result of its shape."""

    input = operand_def(TensorType)
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        return operand_shapes[0]


class UnaryOp(FloatComputeOp, ElementwiseOp, ABC):
    """An elementwise op on a float tensor."""


class BroadcastOp(NNOp, ABC):
    """Two operands broadcast against each other (numpy's rules), as ONNX's elementwise
    binary operators take them."""

    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        return shapes.broadcast(*operand_shapes)


class VariadicBroadcastOp(NNOp, ABC):
    """One or more operands broadcast against each other (Sum, Max, Min)."""

    inputs = var_operand_def(TensorType)
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        if not operand_shapes:
            raise ShapeError("needs at least one operand")
        return shapes.broadcast(*operand_shapes)


class BinaryOp(BroadcastOp, ABC):
    """Elementwise arithmetic with broadcasting, on float tensors or, as exported
    models compute indices, integer ones; both operands of one element type."""

    def verify_(self) -> None:
        lhs, rhs = (operand.type.element_type for operand in self.operands)  # pyright: ignore
        if lhs != rhs:
            raise VerifyException(f"'{self.name}': operands must share one element type, got {lhs} and {rhs}")
        super().verify_()


@irdl_op_definition
class WeightOp(IRDLOperation):
    """A named tensor of the weight store, as an SSA value."""

    name = "nn.weight"

    weight_name = prop_def(StringAttr)
    sparsity = opt_prop_def(PatternAttr)
    value = opt_prop_def(DenseIntOrFPElementsAttr)
    """Only present in printed IR: the bytes of a small weight, shown inline."""

    result = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(
        self,
        weight_name: str,
        result_type: TensorType,
        sparsity: PatternAttr | None = None,
    ):
        properties: dict[str, Attribute] = {"weight_name": StringAttr(weight_name)}
        if sparsity is not None:
            properties["sparsity"] = sparsity
        super().__init__(properties=properties, result_types=[result_type])

    @property
    def tensor_type(self) -> TensorType:
        ty = self.result.type
        assert isinstance(ty, TensorType)
        return ty  # pyright: ignore

    def stored_tensors(self) -> dict[str, str]:
        """Role -> name in the weight store (one role, `value`)."""
        return {"value": self.weight_name.data}

    def verify_(self) -> None:
        if any(dim == DYNAMIC for dim in self.tensor_type.get_shape()):
            raise VerifyException(
                f"'nn.weight' \"{self.weight_name.data}\": weights need a static shape, "
                f"got {self.tensor_type}"
            )
        if self.value is not None and self.value.type != self.tensor_type:
            raise VerifyException(
                f"'nn.weight' \"{self.weight_name.data}\": inline value of type "
                f"{self.value.type} does not match result type {self.tensor_type}"
            )

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_string_literal(self.weight_name.data)
        extra = {k: v for k, v in self.properties.items() if k not in ("weight_name", "value")}
        extra.update(self.attributes)
        if extra:
            printer.print_string(" ")
            printer.print_attr_dict(extra)
        if self.value is not None:
            printer.print_string(" " + format_dense(self.value))
        printer.print_string(" : ")
        printer.print_attribute(self.tensor_type)

    @classmethod
    def parse(cls, parser: Parser) -> WeightOp:
        weight_name = parser.parse_str_literal(" (the weight's name)")
        attrs = parser.parse_optional_attr_dict()
        value: Attribute | None = None
        if parser.parse_optional_punctuation(":") is None:
            value = parser.parse_attribute()
            if not isinstance(value, DenseIntOrFPElementsAttr):
                parser.raise_error(f"expected a dense<...> value for weight '{weight_name}'")
            result_type = value.type
        else:
            result_type = parser.parse_type()
        if not isinstance(result_type, TensorType):
            parser.raise_error(f"weight '{weight_name}' must have a tensor type")
        sparsity = attrs.pop("sparsity", None)
        if sparsity is not None and not isinstance(sparsity, PatternAttr):
            parser.raise_error(f"'sparsity' of weight '{weight_name}' must be a #sparse.pattern")
        op = cls(weight_name, result_type, sparsity)  # pyright: ignore
        if value is not None:
            op.value = value  # pyright: ignore
        op.attributes.update(attrs)
        return op


@irdl_op_definition
class GemmOp(FloatComputeOp):
    """Y = alpha * op(A) @ op(B) + beta * C, op transposing when trans_a / trans_b."""

    name = "nn.gemm"
    ONNX_OP: ClassVar[str] = "Gemm"

    a = operand_def(TensorType)
    b = operand_def(TensorType)
    c = opt_operand_def(TensorType)
    alpha = opt_prop_def(FloatAttr, default_value=_float(1.0))
    beta = opt_prop_def(FloatAttr, default_value=_float(1.0))
    trans_a = opt_prop_def(IntegerAttr[I64], default_value=_int(0))
    trans_b = opt_prop_def(IntegerAttr[I64], default_value=_int(0))
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        a, b = operand_shapes[0], operand_shapes[1]
        if len(a) != 2 or len(b) != 2:
            raise ShapeError(f"A and B must be matrices, got {shapes.fmt(a)} and {shapes.fmt(b)}")
        m, k = (a[1], a[0]) if self.trans_a.value.data else a
        k2, n = (b[1], b[0]) if self.trans_b.value.data else b
        if k != k2 and DYNAMIC not in (k, k2):
            raise ShapeError(
                f"inner dimensions differ: A is {shapes.fmt(a)} (trans_a = "
                f"{self.trans_a.value.data}), B is {shapes.fmt(b)} (trans_b = "
                f"{self.trans_b.value.data})"
            )
        if len(operand_shapes) == 3 and not _broadcasts_to(operand_shapes[2], (m, n)):
            raise ShapeError(f"C of shape {shapes.fmt(operand_shapes[2])} does not broadcast to {shapes.fmt((m, n))}")
        return (m, n)


@irdl_op_definition
class MatMulOp(FloatComputeOp):
    """numpy.matmul semantics: batched, broadcasting, 1-D operands promoted."""

    name = "nn.matmul"
    ONNX_OP: ClassVar[str] = "MatMul"

    a = operand_def(TensorType)
    b = operand_def(TensorType)
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        a, b = operand_shapes
        if not a or not b:
            raise ShapeError("operands must have rank >= 1")
        a2 = (1, *a) if len(a) == 1 else a
        b2 = (*b, 1) if len(b) == 1 else b
        if a2[-1] != b2[-2] and DYNAMIC not in (a2[-1], b2[-2]):
            raise ShapeError(
                f"inner dimensions differ: {shapes.fmt(a)} @ {shapes.fmt(b)}"
            )
        batch = shapes.broadcast(a2[:-2], b2[:-2])
        result = (*batch, a2[-2], b2[-1])
        if len(a) == 1:
            result = (*result[:-2], result[-1])
        if len(b) == 1:
            result = result[:-1]
        return result


class WindowOp(FloatComputeOp, ABC):
    """Shared geometry of Conv and the pooling ops: kernel, strides, pads, dilations."""

    auto_pad = opt_prop_def(StringAttr, default_value=StringAttr("NOTSET"))
    strides = opt_prop_def(DenseArrayBase)
    pads = opt_prop_def(DenseArrayBase)
    dilations = opt_prop_def(DenseArrayBase)

    def geometry(self, input_shape: Shape, kernel: Shape) -> tuple[Shape, Shape, Shape]:
        """(strides, dilations, explicit pads) for an input of this shape."""
        rank = len(kernel)
        strides = ints_of(self.strides) or (1,) * rank
        dilations = ints_of(self.dilations) or (1,) * rank
        pads = ints_of(self.pads) or (0,) * (2 * rank)
        if len(strides) != rank or len(dilations) != rank or len(pads) != 2 * rank:
            raise ShapeError(
                f"strides, dilations and pads need {rank}, {rank} and {2 * rank} values "
                f"for {rank} spatial dimensions, got {len(strides)}, {len(dilations)}, {len(pads)}"
            )
        if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0:
            raise ShapeError("strides and dilations must be >= 1 and pads >= 0")
        pads = shapes.resolve_pads(
            self.auto_pad.data, input_shape[2:], kernel, strides, dilations, pads
        )
        return strides, dilations, pads


class ConvolutionOp(WindowOp, ABC):
    """N-d convolution (cross-correlation) with groups: operands, geometry, shapes."""

    x = operand_def(TensorType)
    w = operand_def(TensorType)
    b = opt_operand_def(TensorType)
    group = opt_prop_def(IntegerAttr[I64], default_value=_int(1))
    kernel_shape = opt_prop_def(DenseArrayBase)
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        x, w = operand_shapes[0], operand_shapes[1]
        if len(x) < 3 or len(w) != len(x):
            raise ShapeError(
                f"X must be (N, C, spatial...) and W (M, C/group, kernel...) of the same rank, "
                f"got {shapes.fmt(x)} and {shapes.fmt(w)}"
            )
        group = self.group.value.data
        if group < 1 or (w[0] % group != 0):
            raise ShapeError(f"group {group} must be >= 1 and divide M = {w[0]}")
        if x[1] != DYNAMIC and x[1] != w[1] * group:
            raise ShapeError(
                f"input channels {x[1]} != W channels {w[1]} x group {group}"
            )
        if len(operand_shapes) == 3 and operand_shapes[2] != (w[0],):
            raise ShapeError(f"bias must have shape {w[0]}, got {shapes.fmt(operand_shapes[2])}")
        kernel = tuple(w[2:])
        if self.kernel_shape is not None and ints_of(self.kernel_shape) != kernel:
            raise ShapeError(f"kernel_shape {ints_of(self.kernel_shape)} != W's {kernel}")
        strides, dilations, pads = self.geometry(x, kernel)
        return (x[0], w[0], *shapes.window_output(x[2:], kernel, strides, dilations, pads))


@irdl_op_definition
class ConvOp(ConvolutionOp):
    """N-d convolution (cross-correlation) with groups, as ONNX Conv."""

    name = "nn.conv"
    ONNX_OP: ClassVar[str] = "Conv"


class PoolOp(WindowOp, ABC):
    x = operand_def(TensorType)
    kernel_shape = prop_def(DenseArrayBase)
    ceil_mode = opt_prop_def(IntegerAttr[I64], default_value=_int(0))
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        x = operand_shapes[0]
        kernel = ints_of(self.kernel_shape)
        if len(x) != len(kernel) + 2:
            raise ShapeError(f"kernel_shape {kernel} does not fit input {shapes.fmt(x)}")
        strides, dilations, pads = self.geometry(x, kernel)
        spatial = shapes.window_output(
            x[2:], kernel, strides, dilations, pads, bool(self.ceil_mode.value.data)
        )
        return (x[0], x[1], *spatial)


@irdl_op_definition
class MaxPoolOp(PoolOp):
    name = "nn.max_pool"
    ONNX_OP: ClassVar[str] = "MaxPool"


@irdl_op_definition
class AveragePoolOp(PoolOp):
    name = "nn.average_pool"
    ONNX_OP: ClassVar[str] = "AveragePool"

    count_include_pad = opt_prop_def(IntegerAttr[I64], default_value=_int(0))


@irdl_op_definition
class GlobalAveragePoolOp(UnaryOp):
    name = "nn.global_average_pool"
    ONNX_OP: ClassVar[str] = "GlobalAveragePool"

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        x = operand_shapes[0]
        if len(x) < 3:
            raise ShapeError(f"input must be (N, C, spatial...), got {shapes.fmt(x)}")
        return (x[0], x[1], *(1,) * (len(x) - 2))


@irdl_op_definition
class ReluOp(UnaryOp):
    name = "nn.relu"
    ONNX_OP: ClassVar[str] = "Relu"


@irdl_op_definition
class SigmoidOp(UnaryOp):
    name = "nn.sigmoid"
    ONNX_OP: ClassVar[str] = "Sigmoid"


@irdl_op_definition
class SwishOp(UnaryOp):
    """x sigmoid(alpha x): SiLU at alpha = 1, the activation of LLaMA's gated MLP."""

    name = "nn.swish"
    ONNX_OP: ClassVar[str] = "Swish"

    alpha = opt_prop_def(FloatAttr, default_value=_float(1.0))


@irdl_op_definition
class TanhOp(UnaryOp):
    name = "nn.tanh"
    ONNX_OP: ClassVar[str] = "Tanh"


@irdl_op_definition
class ErfOp(UnaryOp):
    name = "nn.erf"
    ONNX_OP: ClassVar[str] = "Erf"


@irdl_op_definition
class GeluOp(UnaryOp):
    """GELU, exact (`approximate = "none"`) or with the tanh approximation."""

    name = "nn.gelu"
    ONNX_OP: ClassVar[str] = "Gelu"

    approximate = opt_prop_def(StringAttr, default_value=StringAttr("none"))

    def verify_(self) -> None:
        if self.approximate.data not in ("none", "tanh"):
            raise VerifyException(
                f"'nn.gelu': approximate must be \"none\" or \"tanh\", got \"{self.approximate.data}\""
            )
        super().verify_()


@irdl_op_definition
class IdentityOp(UnaryOp):
    name = "nn.identity"
    ONNX_OP: ClassVar[str] = "Identity"


@irdl_op_definition
class DropoutOp(UnaryOp):
    """Dropout at inference: the identity."""

    name = "nn.dropout"
    ONNX_OP: ClassVar[str] = "Dropout"


class AxisOp(UnaryOp, ABC):
    axis = opt_prop_def(IntegerAttr[I64], default_value=_int(-1))

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        shapes.normalize_axis(self.axis.value.data, len(operand_shapes[0]))
        return operand_shapes[0]


@irdl_op_definition
class SoftmaxOp(AxisOp):
    """Softmax along `axis` (opset >= 13 semantics; older models are rewritten on import)."""

    name = "nn.softmax"
    ONNX_OP: ClassVar[str] = "Softmax"


@irdl_op_definition
class AddOp(BinaryOp):
    name = "nn.add"
    ONNX_OP: ClassVar[str] = "Add"


@irdl_op_definition
class SubOp(BinaryOp):
    name = "nn.sub"
    ONNX_OP: ClassVar[str] = "Sub"


@irdl_op_definition
class MulOp(BinaryOp):
    name = "nn.mul"
    ONNX_OP: ClassVar[str] = "Mul"


@irdl_op_definition
class DivOp(BinaryOp):
    name = "nn.div"
    ONNX_OP: ClassVar[str] = "Div"


@irdl_op_definition
class PowOp(BinaryOp):
    """`lhs ** rhs` (a LayerNorm written out squares with it)."""

    name = "nn.pow"
    ONNX_OP: ClassVar[str] = "Pow"


@irdl_op_definition
class SqrtOp(UnaryOp):
    name = "nn.sqrt"
    ONNX_OP: ClassVar[str] = "Sqrt"


@irdl_op_definition
class ExpOp(UnaryOp):
    name = "nn.exp"
    ONNX_OP: ClassVar[str] = "Exp"


@irdl_op_definition
class LogOp(UnaryOp):
    name = "nn.log"
    ONNX_OP: ClassVar[str] = "Log"


@irdl_op_definition
class CosOp(UnaryOp):
    """(rotary position embeddings' angles)"""

    name = "nn.cos"
    ONNX_OP: ClassVar[str] = "Cos"


@irdl_op_definition
class SinOp(UnaryOp):
    name = "nn.sin"
    ONNX_OP: ClassVar[str] = "Sin"


@irdl_op_definition
class ReciprocalOp(UnaryOp):
    name = "nn.reciprocal"
    ONNX_OP: ClassVar[str] = "Reciprocal"


@irdl_op_definition
class ReduceMeanOp(FloatComputeOp):
    """The mean over `axes` (all axes when absent), kept as size-1 axes if `keepdims`."""

    name = "nn.reduce_mean"
    ONNX_OP: ClassVar[str] = "ReduceMean"

    input = operand_def(TensorType)
    axes = opt_prop_def(DenseArrayBase)
    keepdims = opt_prop_def(IntegerAttr[I64], default_value=_int(1))
    output = result_def(TensorType)

    def reduced_axes(self, rank: int) -> tuple[int, ...]:
        if self.axes is None:
            return tuple(range(rank))
        return tuple(sorted({shapes.normalize_axis(a, rank, "axes value") for a in ints_of(self.axes)}))

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        x = operand_shapes[0]
        axes = self.reduced_axes(len(x))
        if self.keepdims.value.data:
            return tuple(1 if i in axes else d for i, d in enumerate(x))
        return tuple(d for i, d in enumerate(x) if i not in axes)


@irdl_op_definition
class SumOp(FloatComputeOp, VariadicBroadcastOp):
    name = "nn.sum"
    ONNX_OP: ClassVar[str] = "Sum"


@irdl_op_definition
class BatchNormOp(FloatComputeOp):
    """Inference-mode batch normalization over channel axis 1."""

    name = "nn.batch_norm"
    ONNX_OP: ClassVar[str] = "BatchNormalization"

    x = operand_def(TensorType)
    scale = operand_def(TensorType)
    b = operand_def(TensorType)
    mean = operand_def(TensorType)
    var = operand_def(TensorType)
    epsilon = opt_prop_def(FloatAttr, default_value=_float(1e-5))
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        x = operand_shapes[0]
        if len(x) < 2:
            raise ShapeError(f"input must be (N, C, ...), got {shapes.fmt(x)}")
        for label, shape in zip(("scale", "B", "mean", "var"), operand_shapes[1:]):
            if not shapes.compatible(shape, (x[1],)):
                raise ShapeError(f"{label} must have shape {x[1]} (the channels), got {shapes.fmt(shape)}")
        return x


class NormalizationOp(FloatComputeOp, ABC):
    """A normalization over the dimensions of `x` from `axis` on, then a scale (and
    bias) that broadcast to them."""

    x = operand_def(TensorType)
    scale = operand_def(TensorType)
    axis = opt_prop_def(IntegerAttr[I64], default_value=_int(-1))
    epsilon = opt_prop_def(FloatAttr, default_value=_float(1e-5))
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        x = operand_shapes[0]
        axis = shapes.normalize_axis(self.axis.value.data, len(x))
        for name, shape in zip(("scale", "bias"), operand_shapes[1:]):
            if not _broadcasts_to(shape, x[axis:]):
                raise ShapeError(f"{name} of shape {shapes.fmt(shape)} does not broadcast to the normalized shape {shapes.fmt(x[axis:])}")
        return x


@irdl_op_definition
class LayerNormOp(NormalizationOp):
    """(x - mean) / sqrt(variance + epsilon) * scale + b over the normalized dimensions."""

    name = "nn.layer_norm"
    ONNX_OP: ClassVar[str] = "LayerNormalization"

    x = operand_def(TensorType)  # restated so that the operands keep ONNX's order
    scale = operand_def(TensorType)
    b = opt_operand_def(TensorType)


@irdl_op_definition
class RMSNormOp(NormalizationOp):
    """x / sqrt(mean(x^2) + epsilon) * scale over the normalized dimensions: LLaMA's
    normalization (ONNX's RMSNormalization, opset 23)."""

    name = "nn.rms_norm"
    ONNX_OP: ClassVar[str] = "RMSNormalization"


@irdl_op_definition
class RotaryEmbeddingOp(FloatComputeOp):
    """x cos + rotate_half(x) sin with rotate_half(x) = concat(-x[..., D/2:], x[..., :D/2]):
    rotary position embeddings as LLaMA, Mistral and GPT-NeoX compute them, cos and sin
    over x's last dimension (each angle twice) broadcasting to x. ONNX's
    RotaryEmbedding (opset 23) takes half-width tables and position ids instead: export
    writes the seven ops this one stands for (`fuse-rotary`)."""

    name = "nn.rotary_embedding"
    ONNX_OP: ClassVar[str] = "RotaryEmbedding"

    x = operand_def(TensorType)
    cos = operand_def(TensorType)
    sin = operand_def(TensorType)
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        x = operand_shapes[0]
        if not x or x[-1] == DYNAMIC or x[-1] % 2:
            raise ShapeError(f"x's last dimension must be static and even, got {shapes.fmt(x)}")
        if shapes.broadcast(*operand_shapes) != x:
            raise ShapeError(f"cos and sin of shapes {shapes.fmt(operand_shapes[1])} and {shapes.fmt(operand_shapes[2])} do not broadcast to x's {shapes.fmt(x)}")
        return x


@irdl_op_definition
class AttentionOp(FloatComputeOp):
    """softmax(scale * q @ kt + mask) @ v over the last axis, per batch and head:
    queries q (B, H, S, D), keys already transposed kt (B, Hk, D, T), values v (B, Hv,
    T, Dv), an additive mask (optional) broadcasting to the scores (B, H, S, T).
    Query head h reads key head h * Hk / H and value head h * Hv / H, so Hk and Hv may
    be H, 1 or (grouped-query attention) a divisor of H; batches broadcast. With
    `nan_rows_to_zero`, a row whose probabilities are NaN (every score masked out to
    -inf, or a NaN among them) gives zeros, as PyTorch's scaled_dot_product_attention
    exports it (IsNaN and Where after the Softmax). What `fuse-attention` makes of the
    ops exporters write; ONNX's Attention (opset 23) takes keys untransposed, so
    export writes the ops back."""

    name = "nn.attention"
    ONNX_OP: ClassVar[str] = "Attention"

    q = operand_def(TensorType)
    kt = operand_def(TensorType)
    v = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    scale = opt_prop_def(FloatAttr, default_value=_float(1.0))
    nan_rows_to_zero = opt_prop_def(IntegerAttr[I64], default_value=_int(0))
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        q, kt, v = operand_shapes[:3]
        if any(len(shape) != 4 for shape in (q, kt, v)):
            raise ShapeError(f"q, kt and v must have rank 4, got {shapes.fmt(q)}, {shapes.fmt(kt)} and {shapes.fmt(v)}")
        if not shapes.compatible((q[3],), (kt[2],)) or not shapes.compatible((kt[3],), (v[2],)):
            raise ShapeError(f"q {shapes.fmt(q)}, kt {shapes.fmt(kt)} and v {shapes.fmt(v)} do not chain: q's width must be kt's rows, kt's columns v's rows")
        heads = q[1]
        for name, shared in (("kt", kt[1]), ("v", v[1])):
            if DYNAMIC not in (heads, shared) and heads % shared:
                raise ShapeError(f"{name}'s {shared} heads do not divide q's {heads}")
        batch = shapes.broadcast((q[0],), (kt[0],), (v[0],))[0]
        scores = (batch, heads, q[2], kt[3])
        if len(operand_shapes) == 4 and (len(operand_shapes[3]) > 4 or not shapes.compatible(shapes.broadcast(operand_shapes[3], scores), scores)):
            raise ShapeError(f"mask {shapes.fmt(operand_shapes[3])} does not broadcast to the scores {shapes.fmt(scores)}")
        return (batch, heads, q[2], v[3])


@irdl_op_definition
class LRNOp(UnaryOp):
    """Local response normalization across channels."""

    name = "nn.lrn"
    ONNX_OP: ClassVar[str] = "LRN"

    size = prop_def(IntegerAttr[I64])
    alpha = opt_prop_def(FloatAttr, default_value=_float(1e-4))
    beta = opt_prop_def(FloatAttr, default_value=_float(0.75))
    bias = opt_prop_def(FloatAttr, default_value=_float(1.0))

    def verify_(self) -> None:
        if self.size.value.data < 1:
            raise VerifyException(f"'{self.name}': size must be at least 1 (channels summed over), got {self.size.value.data}")
        super().verify_()


@irdl_op_definition
class ReshapeOp(NNOp):
    """Reshape to a constant shape; 0 copies the input dimension, -1 is inferred."""

    name = "nn.reshape"
    ONNX_OP: ClassVar[str] = "Reshape"

    input = operand_def(TensorType)
    shape = prop_def(DenseArrayBase)
    allowzero = opt_prop_def(IntegerAttr[I64], default_value=_int(0))
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        x = operand_shapes[0]
        requested = ints_of(self.shape)
        if requested.count(-1) > 1:
            raise ShapeError(f"shape {requested} has more than one -1")
        target = list(requested)
        if not self.allowzero.value.data:
            for i, dim in enumerate(requested):
                if dim == 0:
                    if i >= len(x):
                        raise ShapeError(f"shape {requested}: 0 at index {i} has no input dimension to copy")
                    target[i] = x[i]
        total = shapes.product(x)
        if -1 in requested:
            inferred = requested.index(-1)
            # Dimensions copied by 0 cancel: [?, ?, 32] into [0, 0, -1, 8] gives 4 heads.
            copied = {i for i, dim in enumerate(requested) if dim == 0 and not self.allowzero.value.data}
            total = shapes.product([d for i, d in enumerate(x) if i not in copied])
            rest = shapes.product([d for i, d in enumerate(target) if i != inferred and i not in copied])
            if DYNAMIC in (total, rest):
                target[inferred] = DYNAMIC
                return tuple(target)
            if rest == 0 or total % rest:
                raise ShapeError(f"cannot reshape {shapes.fmt(x)} into {requested}")
            target[inferred] = total // rest
        elif DYNAMIC not in (total, shapes.product(target)) and shapes.product(target) != total:
            raise ShapeError(f"cannot reshape {shapes.fmt(x)} ({total} values) into {requested}")
        return tuple(target)


@irdl_op_definition
class FlattenOp(NNOp):
    name = "nn.flatten"
    ONNX_OP: ClassVar[str] = "Flatten"

    input = operand_def(TensorType)
    axis = opt_prop_def(IntegerAttr[I64], default_value=_int(1))
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        x = operand_shapes[0]
        axis = self.axis.value.data
        if not -len(x) <= axis <= len(x):
            raise ShapeError(f"axis {axis} is out of range for rank {len(x)}")
        if axis < 0:
            axis += len(x)
        return (shapes.product(x[:axis]), shapes.product(x[axis:]))


@irdl_op_definition
class TransposeOp(NNOp):
    name = "nn.transpose"
    ONNX_OP: ClassVar[str] = "Transpose"

    input = operand_def(TensorType)
    perm = opt_prop_def(DenseArrayBase)
    output = result_def(TensorType)

    def permutation(self, rank: int) -> tuple[int, ...]:
        return ints_of(self.perm) or tuple(reversed(range(rank)))

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        x = operand_shapes[0]
        perm = self.permutation(len(x))
        if sorted(perm) != list(range(len(x))):
            raise ShapeError(f"perm {perm} is not a permutation of {len(x)} axes")
        return tuple(x[p] for p in perm)


@irdl_op_definition
class ConcatOp(NNOp):
    name = "nn.concat"
    ONNX_OP: ClassVar[str] = "Concat"

    inputs = var_operand_def(TensorType)
    axis = prop_def(IntegerAttr[I64])
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        if not operand_shapes:
            raise ShapeError("needs at least one operand")
        first = operand_shapes[0]
        axis = shapes.normalize_axis(self.axis.value.data, len(first))
        for shape in operand_shapes[1:]:
            rest_a = first[:axis] + first[axis + 1 :]
            rest_b = shape[:axis] + shape[axis + 1 :]
            if not shapes.compatible(rest_a, rest_b):
                raise ShapeError(
                    f"operands {shapes.fmt(first)} and {shapes.fmt(shape)} differ "
                    f"outside the concatenation axis {axis}"
                )
        size = 0
        for shape in operand_shapes:
            size = DYNAMIC if DYNAMIC in (size, shape[axis]) else size + shape[axis]
        return (*first[:axis], size, *first[axis + 1 :])


@irdl_op_definition
class UnsqueezeOp(NNOp):
    name = "nn.unsqueeze"
    ONNX_OP: ClassVar[str] = "Unsqueeze"

    input = operand_def(TensorType)
    axes = prop_def(DenseArrayBase)
    output = result_def(TensorType)

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        x = operand_shapes[0]
        rank = len(x) + len(ints_of(self.axes))
        axes = sorted(shapes.normalize_axis(a, rank, "axes value") for a in ints_of(self.axes))
        if len(set(axes)) != len(axes):
            raise ShapeError(f"axes {ints_of(self.axes)} repeat an axis")
        dims = iter(x)
        return tuple(1 if i in axes else next(dims) for i in range(rank))


@irdl_op_definition
class SqueezeOp(NNOp):
    name = "nn.squeeze"
    ONNX_OP: ClassVar[str] = "Squeeze"

    input = operand_def(TensorType)
    axes = opt_prop_def(DenseArrayBase)
    output = result_def(TensorType)

    def squeezed_axes(self, shape: Shape) -> tuple[int, ...]:
        if self.axes is None:
            return tuple(i for i, d in enumerate(shape) if d == 1)
        return tuple(shapes.normalize_axis(a, len(shape), "axes value") for a in ints_of(self.axes))

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        x = operand_shapes[0]
        axes = self.squeezed_axes(x)
        for axis in axes:
            if x[axis] not in (1, DYNAMIC):
                raise ShapeError(f"cannot squeeze axis {axis} of size {x[axis]}")
        return tuple(d for i, d in enumerate(x) if i not in axes)


COMPUTE_OPS: tuple[type[NNOp], ...] = (
    GemmOp, MatMulOp, ConvOp, ReluOp, GeluOp, SwishOp, ErfOp, SigmoidOp, TanhOp, SoftmaxOp,
    AddOp, SubOp, MulOp, DivOp, PowOp, SqrtOp, ExpOp, LogOp, CosOp, SinOp, ReciprocalOp,
    ReduceMeanOp, SumOp, BatchNormOp, LayerNormOp, RMSNormOp, RotaryEmbeddingOp, AttentionOp,
    LRNOp, MaxPoolOp, AveragePoolOp, GlobalAveragePoolOp, ReshapeOp, FlattenOp, TransposeOp,
    ConcatOp, UnsqueezeOp, SqueezeOp, DropoutOp, IdentityOp,
)  # fmt: skip
"""The `nn` ops for layers and tensor arithmetic (`nn_index` has those for shapes,
indices and masks; `sparsec.dialects.NN` registers both)."""


def build_inferred(
    op_type: type[NNOp],
    operands: Sequence[SSAValue | None],
    properties: dict[str, Attribute],
    element_type: Attribute | None = None,
    refined: Shape | None = None,
) -> NNOp:
    """Build an op whose result type is inferred from its operands and properties.

    `None` operands stand for absent optional operands. The element type defaults to
    `result_element_type`'s. `refined` gives static sizes for dimensions that
    inference leaves `?` (an op whose shape follows from an operand's values).
    """
    values = [v for v in operands if v is not None]
    definitions = op_type.get_irdl_definition().operands
    if len(definitions) == 1 and isinstance(definitions[0][1], VarOperandDef):
        layout: list[list[SSAValue]] = [values]
    else:
        if len(operands) > len(definitions):
            raise ShapeError(f"takes at most {len(definitions)} operands, got {len(operands)}")
        layout = [[v] if v is not None else [] for v in operands]
        layout += [[] for _ in range(len(definitions) - len(layout))]
    probe = op_type.build(operands=layout, properties=properties, result_types=[TensorType(f32, [])])
    try:
        operand_shapes = [v.type.get_shape() for v in values]  # pyright: ignore
        shape = probe.infer_shape(operand_shapes)
    finally:
        probe.drop_all_references()
    if element_type is None:
        element_type = result_element_type(op_type, [v.type for v in values])  # pyright: ignore
    if refined is not None and len(refined) == len(shape):
        shape = tuple(r if d == DYNAMIC and r >= 0 else d for d, r in zip(shape, refined))
    return op_type.build(
        operands=layout,
        properties=properties,
        result_types=[TensorType(element_type, shape)],  # pyright: ignore
    )


def result_element_type(op_type: type[NNOp], operand_types: list[TensorType]) -> Attribute:
    """An op's result element type: its own rule (`result_element_type`, for Cast,
    comparisons, Shape), else its first operand's."""
    rule = getattr(op_type, "result_element_type", None)
    if rule is not None:
        return rule(operand_types)
    return operand_types[0].element_type
