"""The `sparse` dialect: how a weight's zeros are laid out.

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
"""

from __future__ import annotations

from enum import Enum

from xdsl.dialects.builtin import FloatData, IntAttr, StringAttr
from xdsl.ir import Dialect, ParametrizedAttribute
from xdsl.irdl import irdl_attr_definition
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException


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
        kind = self.pattern_kind
        if kind is PatternKind.BLOCK and self.block_size.data < 2:
            raise VerifyException(
                f"#sparse.pattern: block size must be >= 2, got {self.block_size.data}"
            )
        if kind is PatternKind.NM and not (
            self.m.data >= 1 and 0 <= self.n.data <= self.m.data
        ):
            raise VerifyException(
                f"#sparse.pattern: n:m needs m >= 1 and 0 <= n <= m, "
                f"got {self.n.data}:{self.m.data}"
            )
        if self.axis.data < 0:
            raise VerifyException(f"#sparse.pattern: axis must be >= 0, got {self.axis.data}")
        if not 0.0 <= self.sparsity.data <= 1.0:
            raise VerifyException(f"#sparse.pattern: sparsity must be in [0, 1], got {self.sparsity.data}")

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_string(self.kind.data)
            match self.pattern_kind:
                case PatternKind.BLOCK:
                    printer.print_string(f" {self.block_size.data}, axis = {self.axis.data}")
                case PatternKind.NM:
                    printer.print_string(
                        f" {self.n.data}:{self.m.data}, axis = {self.axis.data}"
                    )
                case PatternKind.UNSTRUCTURED:
                    pass
            if kind_has_sparsity(self.pattern_kind) and self.sparsity.data:
                printer.print_string(f", sparsity = {self.sparsity.data!r}")

    @classmethod
    def parse_parameters(
        cls, parser: AttrParser
    ) -> tuple[StringAttr, IntAttr, IntAttr, IntAttr, IntAttr, FloatData]:
        with parser.in_angle_brackets():
            kind = parser.parse_identifier(" (unstructured, block or nm)")
            block_size = n = m = axis = 0
            sparsity = 0.0
            if kind == PatternKind.BLOCK.value:
                block_size = parser.parse_integer(allow_boolean=False, allow_negative=False)
                axis = _parse_axis(parser)
            elif kind == PatternKind.NM.value:
                n = parser.parse_integer(allow_boolean=False, allow_negative=False)
                parser.parse_punctuation(":")
                m = parser.parse_integer(allow_boolean=False, allow_negative=False)
                axis = _parse_axis(parser)
            elif kind != PatternKind.UNSTRUCTURED.value:
                parser.raise_error(
                    f"unknown sparsity pattern '{kind}', expected unstructured, block or nm"
                )
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


def _parse_axis(parser: AttrParser) -> int:
    parser.parse_punctuation(",")
    parser.parse_keyword("axis")
    parser.parse_punctuation("=")
    return parser.parse_integer(allow_boolean=False, allow_negative=False)


Sparse = Dialect("sparse", [], [PatternAttr])
