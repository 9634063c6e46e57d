"""The `sparse` dialect: how a weight's zeros are laid out, and packed weights.

`#sparse.pattern` is the structural guarantee a pruning pass attaches to a weight, so
that packing and code generation can rely on it without rescanning the values:

    #sparse.pattern<unstructured, sparsity = 0.5>       any positions, half of them zero
    #sparse.pattern<block 4, axis = 0, sparsity = 0.75>  zeros come in whole runs of 4
                                                          along axis 0
    #sparse.pattern<nm 3:4, axis = 1>                    3 of every 4 consecutive values
                                                          along axis 1 are zero (75%
                                                          sparse, as Core ML counts n:m)

`sparsity` is the fraction the pruner guaranteed (omitted when unknown, implied by
n/m for n:m).

Axes refer to the (out_channels, in_channels, *kernel) view of the weight, whatever
the ONNX layout of the tensor it describes.

`sparse.packed` is a weight stored in a packed encoding (`sparsec/packing.py` defines
the layouts). Its arrays live in the weight store as `NAME:mask`, `NAME:values`, ...;
small ones print inline:

    %w = sparse.packed "fc.w" {encoding = #sparse.encoding<bitmask, values = f16>, bytes = 3 : i64}
           (mask = dense<130> : tensor<1xui8>, values = dense<[7.0, 56.3125]> : tensor<2xf16>)
           : tensor<1x8xf32>

The encoding's axis refers to the stored tensor, so decoding needs nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

import numpy as np
from xdsl.dialects.builtin import (
    I64,
    DenseIntOrFPElementsAttr,
    Float16Type,
    Float32Type,
    FloatData,
    IntAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    f16,
    f32,
    i64,
)
from xdsl.ir import Attribute, ParametrizedAttribute
from xdsl.irdl import (
    IRDLOperation,
    irdl_attr_definition,
    irdl_op_definition,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.parser import AttrParser, Parser
from xdsl.printer import Printer
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from sparsec.dialects.literals import format_dense, numpy_dtype
from sparsec.packing import Encoding, decode_bitmask, decode_block, decode_nm


class PatternKind(str, Enum):
    UNSTRUCTURED = "unstructured"
    BLOCK = "block"
    NM = "nm"


@irdl_attr_definition
class PatternAttr(ParametrizedAttribute):
    """The structure of a pruned weight's zeros: unstructured, block or n:m."""

    name = "sparse.pattern"

    kind: StringAttr
    block_size: IntAttr
    n: IntAttr
    m: IntAttr
    axis: IntAttr
    sparsity: FloatData

    @staticmethod
    def make(kind: PatternKind, block_size: int = 0, n: int = 0, m: int = 0, axis: int = 0, sparsity: float = 0.0) -> PatternAttr:
        return PatternAttr(
            StringAttr(kind.value), IntAttr(block_size), IntAttr(n), IntAttr(m), IntAttr(axis), FloatData(sparsity)
        )

    @staticmethod
    def unstructured(sparsity: float = 0.0) -> PatternAttr:
        return PatternAttr.make(PatternKind.UNSTRUCTURED, sparsity=sparsity)

    @staticmethod
    def block(block_size: int, axis: int, sparsity: float = 0.0) -> PatternAttr:
        return PatternAttr.make(PatternKind.BLOCK, block_size=block_size, axis=axis, sparsity=sparsity)

    @staticmethod
    def nm(n: int, m: int, axis: int) -> PatternAttr:
        return PatternAttr.make(PatternKind.NM, n=n, m=m, axis=axis, sparsity=n / m)

    @property
    def target_sparsity(self) -> float:
        return self.sparsity.data

    @property
    def pattern_kind(self) -> PatternKind:
        return PatternKind(self.kind.data)

    def verify(self) -> None:
        kinds = [kind.value for kind in PatternKind]
        if self.kind.data not in kinds:
            raise VerifyException(
                f"#sparse.pattern: unknown kind '{self.kind.data}', expected one of {kinds}"
            )
        _verify_structure("#sparse.pattern", self.kind.data, self.block_size.data, self.n.data, self.m.data)
        if self.axis.data < 0:
            raise VerifyException(f"#sparse.pattern: axis must be >= 0, got {self.axis.data}")
        if not 0.0 <= self.sparsity.data <= 1.0:
            raise VerifyException(f"#sparse.pattern: sparsity must be in [0, 1], got {self.sparsity.data}")

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_string(_structure_text(self.kind.data, self.block_size.data, self.n.data, self.m.data, self.axis.data))
            if kind_has_sparsity(self.pattern_kind) and self.sparsity.data:
                printer.print_string(f", sparsity = {self.sparsity.data!r}")

    @classmethod
    def parse_parameters(
        cls, parser: AttrParser
    ) -> tuple[StringAttr, IntAttr, IntAttr, IntAttr, IntAttr, FloatData]:
        with parser.in_angle_brackets():
            kind = parser.parse_identifier(" (unstructured, block or nm)")
            if kind not in [k.value for k in PatternKind]:
                parser.raise_error(f"unknown sparsity pattern '{kind}', expected unstructured, block or nm")
            block_size, n, m, axis = _parse_structure(parser, kind)
            sparsity = 0.0
            if kind == PatternKind.NM.value:
                sparsity = n / m if m else 0.0
            elif parser.parse_optional_punctuation(",") is not None:
                parser.parse_keyword("sparsity")
                parser.parse_punctuation("=")
                sparsity = parser.parse_float()
        return StringAttr(kind), IntAttr(block_size), IntAttr(n), IntAttr(m), IntAttr(axis), FloatData(sparsity)


def kind_has_sparsity(kind: PatternKind) -> bool:
    """n:m implies its sparsity; the other patterns carry it explicitly."""
    return kind is not PatternKind.NM


# Patterns and encodings spell their structure alike: `block B, axis = A`, `nm N:M, axis = A`.


def _structure_text(kind: str, block_size: int, n: int, m: int, axis: int) -> str:
    if kind == "block":
        return f"{kind} {block_size}, axis = {axis}"
    if kind == "nm":
        return f"{kind} {n}:{m}, axis = {axis}"
    return kind


def _parse_structure(parser: AttrParser, kind: str) -> tuple[int, int, int, int]:
    """(block size, n, m, axis) after the kind keyword; zeros for unstructured kinds."""
    block_size = n = m = axis = 0
    if kind == "block":
        block_size = parser.parse_integer(allow_boolean=False, allow_negative=False)
    elif kind == "nm":
        n = parser.parse_integer(allow_boolean=False, allow_negative=False)
        parser.parse_punctuation(":")
        m = parser.parse_integer(allow_boolean=False, allow_negative=False)
    else:
        return block_size, n, m, axis
    parser.parse_punctuation(",")
    parser.parse_keyword("axis")
    parser.parse_punctuation("=")
    axis = parser.parse_integer(allow_boolean=False, allow_negative=False)
    return block_size, n, m, axis


def _verify_structure(what: str, kind: str, block_size: int, n: int, m: int) -> None:
    if kind == "block" and block_size < 2:
        raise VerifyException(f"{what}: block size must be >= 2, got {block_size}")
    if kind == "nm" and not (m >= 1 and 0 <= n <= m):
        raise VerifyException(f"{what}: n:m needs m >= 1 and 0 <= n <= m, got {n}:{m}")


VALUE_TYPES: dict[str, Attribute] = {"f16": f16, "f32": f32}


@irdl_attr_definition
class EncodingAttr(ParametrizedAttribute):
    """How a packed weight is stored: bitmask, n:m or block, and the value type."""

    name = "sparse.encoding"

    kind: StringAttr
    block_size: IntAttr
    n: IntAttr
    m: IntAttr
    axis: IntAttr
    values: Float16Type | Float32Type

    @staticmethod
    def make(kind: Encoding, values: Attribute, block_size: int = 0, n: int = 0, m: int = 0, axis: int = 0) -> EncodingAttr:
        return EncodingAttr(StringAttr(kind.value), IntAttr(block_size), IntAttr(n), IntAttr(m), IntAttr(axis), values)

    @property
    def encoding(self) -> Encoding:
        return Encoding(self.kind.data)

    def roles(self) -> tuple[str, ...]:
        """The arrays this encoding stores."""
        return {Encoding.BITMASK: ("mask", "values"), Encoding.NM: ("values", "positions"), Encoding.BLOCK: ("blocks", "values")}[self.encoding]

    def verify(self) -> None:
        kinds = [k.value for k in Encoding]
        if self.kind.data not in kinds:
            raise VerifyException(f"#sparse.encoding: unknown encoding '{self.kind.data}', expected one of {kinds}")
        _verify_structure("#sparse.encoding", self.kind.data, self.block_size.data, self.n.data, self.m.data)

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_string(_structure_text(self.kind.data, self.block_size.data, self.n.data, self.m.data, self.axis.data))
            printer.print_string(", values = ")
            printer.print_attribute(self.values)

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> tuple[Attribute, ...]:
        with parser.in_angle_brackets():
            kind = parser.parse_identifier(" (bitmask, nm or block)")
            if kind not in [e.value for e in Encoding]:
                parser.raise_error(f"unknown encoding '{kind}', expected bitmask, nm or block")
            block_size, n, m, axis = _parse_structure(parser, kind)
            parser.parse_punctuation(",")
            parser.parse_keyword("values")
            parser.parse_punctuation("=")
            values = parser.parse_type()
            if values not in VALUE_TYPES.values():
                parser.raise_error(f"packed values must be f16 or f32, got {values}")
        return StringAttr(kind), IntAttr(block_size), IntAttr(n), IntAttr(m), IntAttr(axis), values


@irdl_op_definition
class PackedWeightOp(IRDLOperation):
    """A weight stored packed; its result is the dense tensor it stands for."""

    name = "sparse.packed"

    weight_name = prop_def(StringAttr)
    encoding = prop_def(EncodingAttr)
    packed_bytes = prop_def(IntegerAttr[I64], prop_name="bytes")
    sparsity = opt_prop_def(PatternAttr)
    mask = opt_prop_def(DenseIntOrFPElementsAttr)
    values = opt_prop_def(DenseIntOrFPElementsAttr)
    positions = opt_prop_def(DenseIntOrFPElementsAttr)
    blocks = opt_prop_def(DenseIntOrFPElementsAttr)
    """Only present in printed IR: the arrays of a small packed weight, shown inline."""

    result = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(
        self,
        weight_name: str,
        encoding: EncodingAttr,
        packed_bytes: int,
        result_type: TensorType,
        sparsity: PatternAttr | None = None,
    ):
        properties: dict[str, Attribute] = {
            "weight_name": StringAttr(weight_name),
            "encoding": encoding,
            "bytes": IntegerAttr(packed_bytes, i64),
        }
        if sparsity is not None:
            properties["sparsity"] = sparsity
        super().__init__(properties=properties, result_types=[result_type])

    @property
    def tensor_type(self) -> TensorType:
        ty = self.result.type
        assert isinstance(ty, TensorType)
        return ty  # pyright: ignore

    def stored_tensors(self) -> dict[str, str]:
        """Role -> name in the weight store, for each array of the encoding."""
        name = self.weight_name.data
        return {role: f"{name}:{role}" for role in self.encoding.roles()}

    def verify_(self) -> None:
        if self.encoding.axis.data >= max(1, len(self.tensor_type.get_shape())):
            raise VerifyException(
                f"'sparse.packed' \"{self.weight_name.data}\": encoding axis {self.encoding.axis.data} "
                f"does not exist in {self.tensor_type}"
            )

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_string_literal(self.weight_name.data)
        roles = self.encoding.roles()
        attrs = {k: v for k, v in self.properties.items() if k not in ("weight_name", *roles)}
        attrs.update(self.attributes)
        printer.print_string(" ")
        printer.print_attr_dict(attrs)
        inline = [(role, self.properties[role]) for role in roles if role in self.properties]
        if inline:
            printer.print_string(" (")
            for index, (role, value) in enumerate(inline):
                if index:
                    printer.print_string(", ")
                printer.print_string(f"{role} = {format_dense(value)} : ")  # pyright: ignore
                printer.print_attribute(value.type)  # pyright: ignore
            printer.print_string(")")
        printer.print_string(" : ")
        printer.print_attribute(self.tensor_type)

    @classmethod
    def parse(cls, parser: Parser) -> PackedWeightOp:
        weight_name = parser.parse_str_literal(" (the weight's name)")
        attrs = parser.parse_optional_attr_dict()
        inline: dict[str, Attribute] = {}
        if parser.parse_optional_punctuation("(") is not None:
            while True:
                role = parser.parse_identifier(" (mask, values, positions or blocks)")
                parser.parse_punctuation("=")
                inline[role] = parser.parse_attribute()
                if parser.parse_optional_punctuation(",") is None:
                    break
            parser.parse_punctuation(")")
        parser.parse_punctuation(":")
        result_type = parser.parse_type()
        encoding, packed_bytes = attrs.pop("encoding", None), attrs.pop("bytes", None)
        if not isinstance(encoding, EncodingAttr) or not isinstance(packed_bytes, IntegerAttr):
            parser.raise_error(f"packed weight '{weight_name}' needs 'encoding' and 'bytes' attributes")
        sparsity = attrs.pop("sparsity", None)
        if not isinstance(result_type, TensorType) or not (sparsity is None or isinstance(sparsity, PatternAttr)):
            parser.raise_error(f"packed weight '{weight_name}' needs a tensor type and a #sparse.pattern sparsity")
        op = cls(weight_name, encoding, packed_bytes.value.data, result_type, sparsity)  # pyright: ignore
        for role, value in inline.items():
            if role not in encoding.roles() or not isinstance(value, DenseIntOrFPElementsAttr):
                parser.raise_error(f"'{role}' is not an array of encoding {encoding}")
            op.properties[role] = value
        op.attributes.update(attrs)
        return op

    def decode(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """The dense tensor, from this weight's arrays by role."""
        encoding = self.encoding
        shape = self.tensor_type.get_shape()
        dtype = numpy_dtype(self.tensor_type.element_type)
        match encoding.encoding:
            case Encoding.BITMASK:
                return decode_bitmask(arrays, shape, dtype)
            case Encoding.NM:
                return decode_nm(arrays, shape, dtype, encoding.n.data, encoding.m.data, encoding.axis.data)
            case Encoding.BLOCK:
                return decode_block(arrays, shape, dtype, encoding.block_size.data, encoding.axis.data)

