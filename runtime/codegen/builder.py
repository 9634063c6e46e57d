"""A small builder for functions in xDSL's `llvm` dialect: constants, arithmetic,
memory, and structured loops expressed with blocks and block arguments (phis).

Kernels are written against this builder so that they read like loops while the IR
they produce stays plain `llvm` dialect, printable in lit tests and translated to
llvmlite by `xdsl.backend.llvm`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from functools import cache, reduce

from xdsl.dialects import llvm
from xdsl.dialects.builtin import (
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    VectorType,
    f16,
    f32,
    i1,
    i8,
    i16,
    i32,
    i64,
)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue

PTR = llvm.LLVMPointerType()
_ELEMENT_BYTES = {f16: 2, f32: 4, i8: 1, i16: 2, i32: 4, i64: 8}
_ELEMENT_NAMES = {f16: "f16", f32: "f32", i16: "i16"}
"""Element suffixes of the masked-load and masked-store intrinsics' names, by element type."""


@cache
def vector(element: Attribute, lanes: int) -> VectorType:
    """The vector type of `lanes` `element`s. Attributes are immutable, so each is built
    once: building and verifying xDSL attributes is a large share of generating a kernel."""
    return VectorType(element, [lanes])


_FOLDED_ARITHMETIC: dict[type[Operation], Callable[[int, int], int]] = {
    llvm.AddOp: operator.add,
    llvm.SubOp: operator.sub,
    llvm.MulOp: operator.mul,
    llvm.ShlOp: operator.lshift,
    llvm.LShrOp: operator.rshift,
    llvm.UDivOp: operator.floordiv,
    llvm.URemOp: operator.mod,
    llvm.AndOp: operator.and_,
    llvm.OrOp: operator.or_,
}
"""Integer ops `FunctionBuilder.binary` folds."""
_IDENTITIES: dict[type[Operation], int] = {
    llvm.AddOp: 0, llvm.SubOp: 0, llvm.ShlOp: 0, llvm.LShrOp: 0, llvm.MulOp: 1, llvm.UDivOp: 1,
}  # fmt: skip
"""The right operand each arithmetic op leaves its left one unchanged by (and its left
one, where it commutes); `and` and `or` are FunctionBuilder._decided's."""
_COMMUTATIVE = frozenset({llvm.AddOp, llvm.MulOp})
PREFETCH_UNROLLED = 8
"""The most lines `FunctionBuilder.prefetch` asks for one prefetch each."""
_COMPARISONS: dict[str, Callable[[int, int], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
}  # fmt: skip
"""Integer comparisons by the end of an `icmp` predicate's name (the operands are
made unsigned first for the u predicates)."""

_PURE: frozenset[type[Operation]] = frozenset({
    llvm.AddOp, llvm.SubOp, llvm.MulOp, llvm.AndOp, llvm.OrOp, llvm.ShlOp, llvm.LShrOp, llvm.UDivOp, llvm.URemOp,
    llvm.FAddOp, llvm.FSubOp, llvm.FMulOp, llvm.FDivOp, llvm.FMAOp, llvm.SelectOp, llvm.ICmpOp,
    llvm.ZExtOp, llvm.TruncOp, llvm.FPExtOp, llvm.BitcastOp,
    llvm.GEPOp, llvm.ShuffleVectorOp, llvm.InsertElementOp, llvm.UndefOp,
})  # fmt: skip
"""Ops without effects, whose result depends on their operands alone (`FunctionBuilder.templated`)."""

_Template = tuple[type[Operation], dict[str, Attribute], list[Attribute]]
_TEMPLATES: dict[tuple, _Template] = {}
"""Kind, properties and result types of the first op built for a key (`FunctionBuilder.templated`
and `_constant`), in this process."""


def _folded_value(kind: type[Operation], x: int, y: int, width: int) -> int | None:
    """`x kind y` for integers of `width` bits, or None where LLVM's result would not be
    Python's (shifts by the width or more, division of negatives or by zero, results
    past the signed range)."""
    if kind in (llvm.ShlOp, llvm.LShrOp) and not (x >= 0 and 0 <= y < width):
        return None
    if kind in (llvm.UDivOp, llvm.URemOp) and not (x >= 0 and y > 0):
        return None
    value = _FOLDED_ARITHMETIC[kind](x, y)
    bound = 1 << (width - 1)
    return value if -bound <= value < bound else None


def _low_bits(value: int, width: int) -> int:
    """The low `width` bits of integer `value`, as an unsigned number (a constant of
    `width` bits takes it; xDSL stores it in its signed form)."""
    return value & ((1 << width) - 1)


def _template(key: tuple, make: Callable[[], Operation]) -> tuple[_Template, Operation | None]:
    """The template for `key`, and the op `make()` built for it if this is the first."""
    template = _TEMPLATES.get(key)
    if template is not None:
        return template, None
    op = make()
    _TEMPLATES[key] = (type(op), dict(op.properties), [result.type for result in op.results])
    return _TEMPLATES[key], op


def _instance(template: _Template, operands: Sequence[SSAValue] = (), successors: Sequence[Block] = ()) -> Operation:
    """A new op of `template` on `operands`."""
    kind, properties, results = template
    return kind.create(operands=list(operands), result_types=results, properties=dict(properties), successors=list(successors))


class FunctionBuilder:
    """Builds one `llvm.func` with external linkage, block by block."""

    def __init__(self, name: str, arg_types: Sequence[Attribute], arg_names: Sequence[str]):
        self.entry = Block(arg_types=list(arg_types))
        for arg, hint in zip(self.entry.args, arg_names):
            arg.name_hint = hint
        self.region = Region([self.entry])
        self.function = llvm.FuncOp(
            name,
            llvm.LLVMFunctionType(list(arg_types), llvm.LLVMVoidType()),
            linkage=llvm.LinkageAttr("external"),
            body=self.region,
        )
        self.block = self.entry
        self.constants: dict[tuple, SSAValue] = {}
        self.pure: dict[tuple, SSAValue] = {}
        self.last_constant: Operation | None = None

    @property
    def args(self) -> tuple[SSAValue, ...]:
        return self.entry.args

    def emit(self, op: Operation) -> SSAValue:
        self.block.add_op(op)
        return op.results[0] if op.results else None  # pyright: ignore

    def new_block(self, arg_types: Sequence[Attribute] = ()) -> Block:
        block = Block(arg_types=list(arg_types))
        self.region.add_block(block)
        return block

    # --- values ------------------------------------------------------------------------

    def _constant(self, key: tuple, make: Callable[[], Operation]) -> SSAValue:
        """One constant op per distinct value, at the top of the entry block (where it
        dominates every use), in creation order: fewer ops to build and translate.
        Built from a template after the first (`templated`), as building its value's
        attribute again cost more than the op: with templates, the 41 kernels of
        benchmarks/jit.py took 0.73x the time to generate and 0.91x to translate to
        llvmlite (alternated in one process, eight rounds)."""
        if key not in self.constants:
            template, op = _template(("constant", *key), make)
            if op is None:
                op = _instance(template)
            if self.last_constant is not None:
                self.entry.insert_op_after(op, self.last_constant)
            elif self.entry.first_op is not None:
                self.entry.insert_op_before(op, self.entry.first_op)
            else:
                self.entry.add_op(op)
            self.last_constant = op
            self.constants[key] = op.results[0]
        return self.constants[key]

    def const(self, value: int | float, ty: Attribute) -> SSAValue:
        if isinstance(ty, IntegerType):
            return self._constant((int(value), ty), lambda: llvm.ConstantOp(IntegerAttr(int(value), ty), ty))
        return self._constant((float(value), ty), lambda: llvm.ConstantOp(FloatAttr(float(value), ty), ty))  # pyright: ignore

    def constant_value(self, value: SSAValue) -> int | None:
        """The integer `value` holds when it is a constant, else None."""
        op = value.owner
        if isinstance(op, llvm.ConstantOp) and isinstance(op.value, IntegerAttr):
            return op.value.value.data
        return None

    def constant_lanes(self, value: SSAValue) -> tuple[int | float, ...] | None:
        """The lanes of vector `value` when it is a constant, else None."""
        op = value.owner
        if isinstance(op, llvm.ConstantOp) and isinstance(op.value, DenseIntOrFPElementsAttr):
            return op.value.get_values()
        return None

    def constant_number(self, value: SSAValue) -> int | float | None:
        """The integer or float scalar `value` holds when it is a constant, else None."""
        op = value.owner
        if isinstance(op, llvm.ConstantOp) and isinstance(op.value, (IntegerAttr, FloatAttr)):
            return op.value.value.data
        return None

    def templated(self, key: tuple, operands: Sequence[SSAValue], make: Callable[[], Operation], successors: Sequence[Block] = ()) -> SSAValue:
        """The op `make()` builds on `operands`, for ops whose properties and result types
        depend on `key` alone: the first is built by its constructor, the others are
        `create`d from its properties, the same op at a fifth of the cost (a constructor
        converts and checks its arguments anew; kernels have hundreds of such ops).

        A pure op already built on the same operands in the current block is reused
        rather than built again (unrolled steps compute the same offsets and addresses
        from different places of the generator)."""
        template, op = _template(key, make)
        # By the template's identity: hashing `key` again (attributes hash field by
        # field) would cost more than it saves.
        built = (self.block, id(template), *operands)
        if built in self.pure:
            return self.pure[built]
        result = self.emit(_instance(template, operands, successors) if op is None else op)
        if template[0] in _PURE:
            self.pure[built] = result
        return result

    def binary(self, kind: type[Operation], a: SSAValue, b: SSAValue) -> SSAValue:
        """`a kind b`, for arithmetic ops whose result has the operands' type (no flags);
        integer adds, subtractions, multiplications, divisions and shifts of constants
        (scalars, or vectors lane by lane), and by 0 or 1, folded here: kernels are
        written with indices that are often constant (unrolled steps, first rows,
        lanes a constant shift on), and every op left for LLVM to fold costs its
        building, translation and parsing."""
        folded = self._folded(kind, a, b)
        if folded is not None:
            return folded
        return self.templated((kind, a.type), [a, b], lambda: kind(a, b))  # pyright: ignore

    def _folded(self, kind: type[Operation], a: SSAValue, b: SSAValue) -> SSAValue | None:
        """`a kind b` without an op, when constants decide it, else None."""
        if kind not in _FOLDED_ARITHMETIC:
            return None
        if isinstance(a.type, VectorType):
            return self._folded_lanes(kind, a, b)
        if not isinstance(a.type, IntegerType):
            return None
        x, y = self.constant_value(a), self.constant_value(b)
        if x is not None and y is not None:
            value = _folded_value(kind, x, y, a.type.width.data)
            return None if value is None else self.const(value, a.type)
        if (kind is llvm.MulOp and 0 in (x, y)) or (kind is llvm.URemOp and y == 1):
            return self.const(0, a.type)
        if kind in (llvm.AndOp, llvm.OrOp):
            return self._decided(kind, a, b, x, y)
        if kind not in _IDENTITIES:
            return None
        identity = _IDENTITIES[kind]
        if y == identity:
            return a
        if x == identity and kind in _COMMUTATIVE:
            return b
        return None

    def _decided(self, kind: type[Operation], a: SSAValue, b: SSAValue, x: int | None, y: int | None) -> SSAValue | None:
        """Integer `a and b` or `a or b` (`x`, `y`: their constant values, or None) without
        an op where a constant operand decides it (and with 0, or with all ones) or
        leaves the other (and with all ones, or with 0): conditions that are constant
        for a key (a lane chunk that is the call's last) then leave no branch behind
        (Kernel.only_if)."""
        ones = (1 << a.type.width.data) - 1  # pyright: ignore
        absorbing, neutral = (0, ones) if kind is llvm.AndOp else (ones, 0)
        for operand, other, constant in ((a, b, x), (b, a, y)):
            if constant is not None and constant & ones == absorbing:
                return operand
            if constant is not None and constant & ones == neutral:
                return other
        return None

    def _folded_lanes(self, kind: type[Operation], a: SSAValue, b: SSAValue) -> SSAValue | None:
        """`a kind b` as a vector constant, when both are integer vector constants."""
        element = a.type.element_type  # pyright: ignore
        xs, ys = self.constant_lanes(a), self.constant_lanes(b)
        if xs is None or ys is None or not isinstance(element, IntegerType):
            return None
        values = [_folded_value(kind, x, y, element.width.data) for x, y in zip(xs, ys)]
        return None if None in values else self.vector_const(values, element)  # pyright: ignore

    def add(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.binary(llvm.AddOp, a, b)

    def sub(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.binary(llvm.SubOp, a, b)

    def mul(self, a: SSAValue, b: SSAValue) -> SSAValue:
        """a * b; (x + c) * d as x * d + c * d for constants c and d, so that the
        addresses of an unrolled loop's consecutive elements differ by constants, which
        address modes take (where LLVM's loop strength reduction would otherwise have
        had to find them)."""
        factor, owner = self.constant_value(b), a.owner
        if factor is not None and isinstance(owner, llvm.AddOp) and (offset := self.constant_value(owner.rhs)) is not None:
            return self.add(self.mul(owner.lhs, b), self.const(offset * factor, a.type))
        return self.binary(llvm.MulOp, a, b)

    def and_(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.binary(llvm.AndOp, a, b)

    def all_of(self, *conditions: SSAValue | None) -> SSAValue | None:
        """The `and` of the conditions given (None standing for always true), or None
        when there are none."""
        given = [condition for condition in conditions if condition is not None]
        return reduce(self.and_, given) if given else None

    def lshr(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.binary(llvm.LShrOp, a, b)

    def shl(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.binary(llvm.ShlOp, a, b)

    def or_(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.binary(llvm.OrOp, a, b)

    def udiv(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.binary(llvm.UDivOp, a, b)

    def urem(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.binary(llvm.URemOp, a, b)

    def fmuladd(self, a: SSAValue, b: SSAValue, c: SSAValue) -> SSAValue:
        """a * b + c, fused when the target can."""
        return self.templated(("fma", a.type), [a, b, c], lambda: llvm.FMAOp(a, b, c))

    def fadd(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.binary(llvm.FAddOp, a, b)

    def fsub(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.binary(llvm.FSubOp, a, b)

    def fmul(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.binary(llvm.FMulOp, a, b)

    def fdiv(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.binary(llvm.FDivOp, a, b)

    def select(self, condition: SSAValue, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.templated(("select", condition.type, a.type), [condition, a, b], lambda: llvm.SelectOp(condition, a, b))

    def smin(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self._extreme("smin", min, a, b)

    def smax(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self._extreme("smax", max, a, b)

    def _extreme(self, name: str, pick: Callable[[int, int], int], a: SSAValue, b: SSAValue) -> SSAValue:
        """The signed min or max (`name`, `pick`) of integers: the constant one when both are."""
        x, y = self.constant_value(a), self.constant_value(b)
        if x is not None and y is not None:
            return a if pick(x, y) == x else b
        return self.intrinsic(f"llvm.{name}.i{a.type.width.data}", [a, b], a.type)  # pyright: ignore

    def round_down(self, value: SSAValue, multiple: int) -> SSAValue:
        """`value` (>= 0) rounded down to a multiple of `multiple`: where a loop in steps
        of `multiple` ends and its remainder loop starts."""
        return self.sub(value, self.urem(value, self.const(multiple, value.type)))

    def masked_load(self, at: SSAValue, mask: SSAValue, ty: VectorType, passthru: SSAValue | None = None) -> SSAValue:
        """A vector of `ty` from `at`, lanes where `mask` is off not read: zero, or
        `passthru`'s lanes when given."""
        lanes, element = ty.get_shape()[0], ty.element_type
        name = f"llvm.masked.load.v{lanes}{_ELEMENT_NAMES[element]}.p0"
        alignment = self.const(_ELEMENT_BYTES[element], i32)
        if passthru is None:
            passthru = self.vector_const([0 if isinstance(element, IntegerType) else 0.0] * lanes, element)
        return self.intrinsic(name, [at, alignment, mask, passthru], ty)

    def load_lanes(self, at: SSAValue, ty: VectorType, lanes: SSAValue | None) -> SSAValue:
        """A vector of `ty` from `at`: whole (aligned to its element), or under the lane
        mask `lanes` when given (the end of a row, rows past N)."""
        if lanes is None:
            return self.load_at(at, ty, alignment=_ELEMENT_BYTES[ty.element_type])
        return self.masked_load(at, lanes, ty)

    def store_lanes(self, value: SSAValue, at: SSAValue, lanes: SSAValue | None) -> None:
        """Store vector `value` at `at`: whole, or under the lane mask `lanes` when given.
        The masked store is called by its full name: xDSL's translation of its own
        masked-store op declares the unsuffixed intrinsic, so a second vector type in
        the same module fails to translate."""
        element = value.type.element_type  # pyright: ignore
        alignment = _ELEMENT_BYTES[element]
        if lanes is None:
            self.store_at(value, at, alignment=alignment)
        else:
            lanes_count = value.type.get_shape()[0]  # pyright: ignore
            name = f"llvm.masked.store.v{lanes_count}{_ELEMENT_NAMES[element]}.p0"
            self.intrinsic(name, [value, at, self.const(alignment, i32), lanes], None)

    def like(self, value: int | float, shape_of: SSAValue, element: Attribute | None = None) -> SSAValue:
        """The constant `value` as a scalar or vector shaped like `shape_of` (of its element
        type, or `element`)."""
        ty = shape_of.type
        if isinstance(ty, VectorType):
            return self.vector_const([value] * ty.get_shape()[0], element or ty.element_type)
        return self.const(value, element or ty)

    def fmax(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.emit(llvm.VectorFMaxOp(a, b))

    def zext(self, value: SSAValue, ty: Attribute) -> SSAValue:
        constant = self.constant_value(value)
        if constant is not None:
            return self.const(_low_bits(constant, value.type.width.data), ty)  # pyright: ignore
        return self.templated(("zext", value.type, ty), [value], lambda: llvm.ZExtOp(value, ty))

    def fpext(self, value: SSAValue, ty: Attribute = f32) -> SSAValue:
        return self.templated(("fpext", value.type, ty), [value], lambda: llvm.FPExtOp(value, ty))

    def trunc(self, value: SSAValue, ty: Attribute) -> SSAValue:
        constant = self.constant_value(value)
        if constant is not None:
            return self.const(_low_bits(constant, ty.width.data), ty)  # pyright: ignore
        return self.templated(("trunc", value.type, ty), [value], lambda: llvm.TruncOp(value, ty))

    def half_bits_to_float(self, bits16: SSAValue) -> SSAValue:
        """float16 bits (i16) to f32 with integer operations only.

        (bits & 0x7fff) << 13, read as a float and scaled by 2^112, is exact for
        normals, subnormals and zero; infinities and NaNs get the all-ones exponent;
        then the sign bit is copied.
        """
        bits = self.zext(bits16, i32)
        magnitude = self.shl(self.and_(bits, self.const(0x7FFF, i32)), self.const(13, i32))
        scaled = self.fmul(self.bitcast(magnitude, f32), self.const(2.0**112, f32))
        scaled_bits = self.bitcast(scaled, i32)
        special = self.icmp("eq", self.and_(bits, self.const(0x7C00, i32)), self.const(0x7C00, i32))
        exponent = self.select(special, self.const(0x7F800000, i32), self.const(0, i32))
        sign = self.shl(self.and_(bits, self.const(0x8000, i32)), self.const(16, i32))
        combined = self.or_(self.or_(scaled_bits, exponent), sign)
        return self.bitcast(combined, f32)

    # --- vectors -----------------------------------------------------------------------

    def vector_const(self, values: Sequence[int | float], element: Attribute) -> SSAValue:
        ty = vector(element, len(values))
        return self._constant((tuple(values), ty), lambda: llvm.ConstantOp(DenseIntOrFPElementsAttr.from_list(ty, list(values)), ty))

    def intrinsic(self, name: str, operands: Sequence[SSAValue], result: Attribute | None) -> SSAValue:
        """A call of LLVM intrinsic `name` (result None: returns nothing)."""
        key = ("intrinsic", name, result, tuple(operand.type for operand in operands))
        return self.templated(key, operands, lambda: llvm.CallIntrinsicOp(name, list(operands), [] if result is None else [result]))

    def bitcast(self, value: SSAValue, ty: Attribute) -> SSAValue:
        return self.templated(("bitcast", value.type, ty), [value], lambda: llvm.BitcastOp(value, ty))

    def shuffle(self, a: SSAValue, b: SSAValue, indices: tuple[int, ...]) -> SSAValue:
        """Lanes of a and b (numbered on from a's) at `indices`."""
        ty = vector(a.type.element_type, len(indices))  # pyright: ignore
        mask = (i32, list(indices))
        return self.templated(("shuffle", a.type, indices), [a, b], lambda: llvm.ShuffleVectorOp(a, b, DenseArrayBase.from_list(*mask), ty))

    def gather_lanes(self, vectors: Sequence[SSAValue], indices: Sequence[int]) -> SSAValue:
        """The lanes `indices` of `vectors` (of 16 lanes each) laid end to end, as one
        vector: a shuffle of each pair of vectors some index falls in, then shuffles
        merging those (three two-source permutes for 16 lanes out of 64)."""
        parts: list[tuple[list[int], SSAValue]] = []
        for first in range(0, len(vectors), 2):
            pair = vectors[first : first + 2]
            low, high = pair[0], pair[-1]
            lanes = [index - 16 * first if 16 * first <= index < 16 * (first + len(pair)) else -1 for index in indices]
            if any(lane >= 0 for lane in lanes):
                parts.append((lanes, self.shuffle(low, high, tuple(max(lane, 0) for lane in lanes))))
        lanes, merged = parts[0]
        for other_lanes, other in parts[1:]:
            merged = self.shuffle(merged, other, tuple(lane if lanes[lane] >= 0 else len(indices) + lane for lane in range(len(indices))))
            lanes = [max(a, b) for a, b in zip(lanes, other_lanes)]
        return merged

    def lanes(self, source: SSAValue, first: int, count: int) -> SSAValue:
        """Lanes [first, first + count) of `source` as a vector of `count` lanes."""
        return self.shuffle(source, source, tuple(range(first, first + count)))

    def expand(self, packed: SSAValue, mask: SSAValue) -> SSAValue:
        """AVX-512's expand: the low lanes of `packed` (a vector of i16 or i32) moved, in
        order, to the lanes `mask` selects, zeros elsewhere. Written as inline assembly,
        for LLVM folds a load of `packed` into the expand's memory form, which on Zen 4
        ran the bitmask kernel 1.4x as slow as a load, then the register form."""
        suffix = {i16: "w", i32: "d"}[packed.type.element_type]  # pyright: ignore
        expand = llvm.InlineAsmOp(f"vpexpand{suffix} $1, $0 {{$2}} {{z}}", "=v,v,^Yk", [packed, mask], [packed.type])
        return self.emit(expand)

    def low_lanes(self, count: SSAValue, lanes: int = 16) -> SSAValue:
        """The lane mask of the lowest `count` (an i32, at most `lanes`) of `lanes`."""
        bits = self.sub(self.shl(self.const(1, i32), count), self.const(1, i32))
        return self.bitcast(self.trunc(bits, IntegerType(lanes)), vector(i1, lanes))

    def splat(self, value: SSAValue, count: int) -> SSAValue:
        """`value` in every one of `count` lanes: a vector constant when `value` is a
        constant."""
        constant = self.constant_number(value)
        if constant is not None:
            return self.vector_const([constant] * count, value.type)
        one = self.packed([value], count)
        return self.shuffle(one, one, (0,) * count)

    def packed(self, values: Sequence[SSAValue], lanes: int = 0) -> SSAValue:
        """A vector of `lanes` lanes (default: one per value) holding `values` in its
        first lanes, lane by lane; the others undefined."""
        ty = vector(values[0].type, lanes or len(values))
        packed = self.templated(("undef", ty), [], lambda: llvm.UndefOp(ty))
        for lane, value in enumerate(values):
            position = self.const(lane, i32)
            packed = self.templated(("insert", ty), [packed, value, position], lambda: llvm.InsertElementOp(packed, value, position))
        return packed

    def sum_lanes(self, values: SSAValue) -> SSAValue:
        """The sum of a vector's lanes, added pairwise (a tree of log2(lanes) vector adds
        rather than the strictly ordered chain an un-flagged reduction would be)."""
        return self.reduce_lanes(values, self.fadd)

    def reduce_lanes(self, values: SSAValue, combine: Callable[[SSAValue, SSAValue], SSAValue]) -> SSAValue:
        """A vector's lanes combined by `combine` (of two vectors) in a tree: the low half
        of the lanes with the high half, log2(lanes) times."""
        count = values.type.get_shape()[0]  # pyright: ignore
        while count > 1:
            count //= 2
            values = combine(self.lanes(values, 0, count), self.lanes(values, count, count))
        # A one-lane vector and its element have the same bits.
        return self.bitcast(values, values.type.element_type)  # pyright: ignore

    def sum_lanes_each(self, vectors: Sequence[SSAValue]) -> list[SSAValue]:
        """`sum_lanes` of each of 2^k vectors (of at least 2^k lanes) (`lane_sums`)."""
        if len(vectors) == 1:
            return [self.sum_lanes(vectors[0])]
        merged = self.lane_sums(vectors)
        return [self.bitcast(self.lanes(merged, g, 1), merged.type.element_type) for g in range(len(vectors))]  # pyright: ignore

    def lane_sums(self, vectors: Sequence[SSAValue]) -> SSAValue:
        """The lane sum of each of 2^k vectors (of at least 2^k lanes), in lanes 0 to
        2^k - 1 of one vector, sharing the adds: pairs of vectors are merged first, the
        lanes of both halves added in one vector add, so four 16-lane sums take 10
        shuffles and 5 adds instead of 16 and 16."""
        return self.lanes_combined(vectors, self.fadd)

    def lanes_combined(self, vectors: Sequence[SSAValue], combine: Callable[[SSAValue, SSAValue], SSAValue]) -> SSAValue:
        """`lane_sums` with `combine` (of two vectors) for the add: each vector's lanes
        combined, in lane g for vector g."""
        count = len(vectors)
        assert count & (count - 1) == 0, "lanes_combined takes a power of two of vectors"
        lanes = vectors[0].type.get_shape()[0]  # pyright: ignore
        groups = 1  # each vector: `groups` runs of lanes, one per vector merged into it
        while len(vectors) > 1:
            width = lanes // groups
            firsts = [g * width + lane for g in range(groups) for lane in range(width // 2)]
            seconds = [index + width // 2 for index in firsts]
            low = tuple(firsts + [lanes + index for index in firsts])
            high = tuple(seconds + [lanes + index for index in seconds])
            vectors = [combine(self.shuffle(a, b, low), self.shuffle(a, b, high)) for a, b in zip(vectors[::2], vectors[1::2])]
            groups *= 2
        merged, width = vectors[0], lanes // count
        while width > 1:
            width //= 2
            firsts = tuple(g * 2 * width + lane for g in range(count) for lane in range(width))
            seconds = tuple(index + width for index in firsts)
            merged = combine(self.shuffle(merged, merged, firsts), self.shuffle(merged, merged, seconds))
        return merged

    def icmp(self, predicate: str, a: SSAValue, b: SSAValue) -> SSAValue:
        """`a predicate b` on integers; an i1 constant when both are constants (loops
        with constant bounds then need no guard, FunctionBuilder._rotated)."""
        x, y = self.constant_value(a), self.constant_value(b)
        if x is not None and y is not None:
            if predicate.startswith("u"):
                x, y = x % (1 << a.type.width.data), y % (1 << a.type.width.data)  # pyright: ignore
            return self.const(int(_COMPARISONS[predicate[-2:]](x, y)), i1)
        flag = llvm.ICmpPredicateFlag(predicate)
        return self.templated(("icmp", predicate, a.type), [a, b], lambda: llvm.ICmpOp(a, b, IntegerAttr(flag.to_int(), i64)))

    def fcmp(self, predicate: str, a: SSAValue, b: SSAValue) -> SSAValue:
        """`a predicate b` on floats, lane by lane ("ogt": ordered and greater, "uno":
        either is NaN, ...)."""
        flag = llvm.FCmpPredicateFlag(predicate)
        return self.templated(("fcmp", predicate, a.type), [a, b], lambda: llvm.FCmpOp(a, b, IntegerAttr(flag.to_int(), i64)))

    def cttz(self, value: SSAValue) -> SSAValue:
        """Index of the lowest set bit (`value` is known to be non-zero)."""
        width = value.type.width.data  # pyright: ignore
        poison = self.const(1, i1)
        return self.intrinsic(f"llvm.cttz.i{width}", [value, poison], value.type)

    # --- memory ------------------------------------------------------------------------

    def element_ptr(self, base: SSAValue, index: SSAValue, ty: Attribute) -> SSAValue:
        """The address of element `index` of `ty`s from `base`."""
        if self.constant_value(index) == 0:
            return base
        return self.templated(("gep", ty), [base, index], lambda: llvm.GEPOp.from_mixed_indices(base, [index], pointee_type=ty))

    def load(self, base: SSAValue, index: SSAValue, ty: Attribute) -> SSAValue:
        return self.load_at(self.element_ptr(base, index, ty), ty)

    def invariant_load(self, base: SSAValue, index: SSAValue, ty: Attribute) -> SSAValue:
        """`load` of memory that nothing writes while the kernel runs (a bias), reused
        within a block as a pure op is: an epilogue that finishes a row's vectors one
        by one then loads and splats the row's bias once."""
        at = self.element_ptr(base, index, ty)
        key = (self.block, "invariant load", ty, at)
        if key not in self.pure:
            self.pure[key] = self.load_at(at, ty)
        return self.pure[key]

    def load_at(self, at: SSAValue, ty: Attribute, alignment: int | None = None) -> SSAValue:
        """A `ty` from address `at` (`alignment`: what it is known to be aligned to)."""
        return self.templated(("load", ty, alignment), [at], lambda: llvm.LoadOp(at, ty, alignment=alignment))

    def store_at(self, value: SSAValue, at: SSAValue, alignment: int | None = None) -> None:
        """Store `value` at address `at`."""
        self.templated(("store", value.type, alignment), [value, at], lambda: llvm.StoreOp(value, at, alignment=alignment))

    def prefetch(self, at: SSAValue, lines: int = 1, write: bool = False, keep: int = 3) -> None:
        """Ask for the `lines` cache lines from `at` on ahead of their use, to be read
        or (`write`) written (a hint: it never faults, so it may point past the end of
        an array). Up to PREFETCH_UNROLLED lines are a prefetch each, more a loop: an
        implicit 7x7 convolution's spans of 38 lines took 154 prefetches, half of its
        kernel's ops and of its compile time."""
        read, keep, data = (self.const(flag, i32) for flag in (int(write), keep, 1))

        def line_body(offset: SSAValue, _state) -> list[SSAValue]:
            target = self.element_ptr(at, offset, i8) if self.constant_value(offset) != 0 else at
            self.intrinsic("llvm.prefetch.p0", [target, read, keep, data], None)
            return []

        self.loop(self.const(0, i64), self.const(64 * lines, i64), [], line_body, step=64, unrolled=lines <= PREFETCH_UNROLLED)

    def alloca(self, count: int, ty: Attribute) -> SSAValue:
        """A stack array of `count` elements of `ty`, 64-byte aligned; emitted where the
        builder is, which must be the entry block (a fixed part of the frame)."""
        array = self.emit(llvm.AllocaOp(self.const(count, i64), ty, alignment=64))
        # llvmlite types an alloca's pointer by its element; as an opaque pointer it
        # takes vector stores like any other.
        return self.bitcast(array, PTR)

    def load_words(self, base: SSAValue, names: Sequence[str]) -> dict[str, SSAValue]:
        """The int64 words at `base` by name, in order: a kernel's geometry operand."""
        return {name: self.load(base, self.const(index, i64), i64) for index, name in enumerate(names)}

    def store(self, value: SSAValue, base: SSAValue, index: SSAValue) -> None:
        self.store_at(value, self.element_ptr(base, index, value.type))

    # --- control flow ------------------------------------------------------------------

    def branch(self, dest: Block, *arguments: SSAValue) -> None:
        self.templated(("br", len(arguments)), arguments, lambda: llvm.BrOp(dest, *arguments), successors=[dest])

    def cond_branch(
        self,
        condition: SSAValue,
        then_block: Block,
        else_block: Block,
        else_arguments: Sequence[SSAValue] = (),
        then_arguments: Sequence[SSAValue] = (),
    ) -> None:
        """To `then_block` where `condition` holds, else to `else_block`, each with its arguments."""
        self.templated(
            ("cond_br", len(then_arguments), len(else_arguments)),
            [condition, *then_arguments, *else_arguments],
            lambda: llvm.CondBrOp(condition, then_block, list(then_arguments), else_block, list(else_arguments)),
            successors=[then_block, else_block],
        )

    def loop(
        self,
        start: SSAValue,
        stop: SSAValue,
        carried: Sequence[SSAValue],
        body: Callable[[SSAValue, tuple[SSAValue, ...]], Sequence[SSAValue]],
        step: int = 1,
        unrolled: bool = False,
    ) -> tuple[SSAValue, ...]:
        """for i in range(start, stop, step), threading `carried` values; returns their
        final values. `unrolled`: when both bounds are constants, the body once per
        index, with no loop (kernels compile without LLVM's unroll pass, whose runtime
        unrolling of every small loop cost a third of a batched kernel's compile time).
        A loop of constant bounds that runs once is always its body alone."""
        bounds = self.constant_value(start), self.constant_value(stop)
        if None not in bounds and (unrolled or len(range(bounds[0], bounds[1], step)) == 1):  # pyright: ignore
            state = tuple(carried)
            for index in range(bounds[0], bounds[1], step):  # pyright: ignore
                state = tuple(body(self.const(index, i64), state))
            return state

        def iteration(state: tuple[SSAValue, ...]) -> list[SSAValue]:
            index, *inner = state
            index.name_hint = "i"
            return [self.add(index, self.const(step, i64)), *body(index, tuple(inner))]

        return self._rotated([start, *carried], lambda state: self.icmp("slt", state[0], stop), iteration, results_from=1)

    def while_bits(
        self,
        bits: SSAValue,
        carried: Sequence[SSAValue],
        body: Callable[[SSAValue, tuple[SSAValue, ...]], Sequence[SSAValue]],
    ) -> tuple[SSAValue, ...]:
        """For each set bit of `bits`, lowest first: body(bit index, carried)."""
        zero = self.const(0, bits.type)

        def iteration(state: tuple[SSAValue, ...]) -> list[SSAValue]:
            remaining, *inner = state
            remaining.name_hint = "bits"
            updated = body(self.cttz(remaining), tuple(inner))
            return [self.and_(remaining, self.sub(remaining, self.const(1, remaining.type))), *updated]

        return self._rotated([bits, *carried], lambda state: self.icmp("ne", state[0], zero), iteration, results_from=1)

    def _rotated(
        self,
        carried: Sequence[SSAValue],
        condition: Callable[[tuple[SSAValue, ...]], SSAValue],
        body: Callable[[tuple[SSAValue, ...]], list[SSAValue]],
        results_from: int = 0,
    ) -> tuple[SSAValue, ...]:
        """A loop in LLVM's rotated form: a guard, then a body that ends by testing
        whether to go round again; returns the final values of carried[results_from:].

        The generator emits this form (rather than a test at the top, leaving rotation
        to LLVM) because kernels compile with a short pass pipeline that has no loop
        rotation (runtime/jit.py); unrolled, a loop tested at the top kept a register
        copy per accumulator and iteration (dense 11008x4096: 0.89x as fast)."""
        types = [v.type for v in carried]
        guard = condition(tuple(carried))
        entered = self.constant_value(guard)
        if entered == 0:
            return tuple(carried[results_from:])
        inner = self.new_block(types)
        if entered is None:
            exit_block = self.new_block(types[results_from:])
            self.cond_branch(guard, inner, exit_block, carried[results_from:], then_arguments=carried)
        else:
            self.branch(inner, *carried)
        self.block = inner
        updated = body(inner.args)
        if entered is not None:
            # Entered for certain: the exit is reached from the body alone, whose final
            # values need no block arguments to get there. It follows the body's blocks,
            # where they are defined (xdsl.backend.llvm translates blocks in order).
            exit_block = self.new_block()
        exit_arguments = updated[results_from:] if entered is None else ()
        self.cond_branch(condition(tuple(updated)), inner, exit_block, exit_arguments, then_arguments=updated)
        self.block = exit_block
        return exit_block.args if entered is None else tuple(updated[results_from:])

    def ret(self) -> llvm.FuncOp:
        self.emit(llvm.ReturnOp())
        return self.function
