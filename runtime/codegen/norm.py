"""The layer normalization kernel (sparsec.kernels.NormKey): three passes over each row
of N floats, 16 lanes at a time with the last partial vector under a lane mask: the
sum, the sum of squared deviations from the mean, then the normalized, scaled and
shifted outputs. Same signature as the matrix kernels, with

    a0 = scale (N floats), a1 = bias (N floats), a2 = epsilon (one float),
    batch = rows, [begin, end) = the rows to normalize.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.dialects.builtin import f32, i1, i64
from xdsl.ir import SSAValue

from sparsec.kernels import NormKey
from sparsec.runtime.codegen.base import F32x16, UnitKernel


class LayerNormKernel(UnitKernel):
    """Units are rows."""

    def __init__(self, key: NormKey):
        super().__init__(key)
        self.x, self.y, self.scale, self.bias, self.epsilon = self.b.args[:5]
        whole, self.tail = divmod(key.cols, 16)
        self.whole_columns = 16 * whole
        self.tail_lanes = self.b.vector_const([int(lane < self.tail) for lane in range(16)], i1) if self.tail else None
        self.zero = self.b.vector_const([0.0] * 16, f32)

    def unit(self, row: SSAValue, _state) -> list[SSAValue]:
        b, cols = self.b, self.key.cols
        inputs = b.element_ptr(self.x, b.mul(row, b.const(cols, i64)), f32)
        outputs = b.element_ptr(self.y, b.mul(row, b.const(cols, i64)), f32)
        (total,) = self.vectors(inputs, [self.zero], lambda _column, values, _lanes, acc: [b.fadd(acc[0], values)])
        mean = b.splat(b.fmul(b.sum_lanes(total), b.const(1 / cols, f32)), 16)

        def squares(_column, values, lanes, acc) -> list[SSAValue]:
            deviation = b.fsub(values, mean)
            if lanes is not None:  # lanes past N hold 0, not a deviation
                deviation = b.select(lanes, deviation, self.zero)
            return [b.fmuladd(deviation, deviation, acc[0])]

        (squared,) = self.vectors(inputs, [self.zero], squares)
        variance = b.fmul(b.sum_lanes(squared), b.const(1 / cols, f32))
        spread = b.intrinsic("llvm.sqrt.f32", [b.fadd(variance, b.load(self.epsilon, b.const(0, i64), f32))], f32)
        inverse = b.splat(b.fdiv(b.const(1.0, f32), spread), 16)
        self.vectors(inputs, [], lambda column, values, lanes, _acc: self.store(outputs, column, values, lanes, mean, inverse))
        return []

    def vectors(self, inputs: SSAValue, carried: list[SSAValue], step: Callable[..., list[SSAValue]]) -> list[SSAValue]:
        """step(column, 16 inputs, lanes or None, carried) -> carried over a row's whole
        vectors, then over its partial one under `tail_lanes` (if N is not a multiple
        of 16)."""
        b = self.b

        def body(column: SSAValue, state) -> list[SSAValue]:
            return step(column, b.load_lanes(b.element_ptr(inputs, column, f32), F32x16, None), None, list(state))

        carried = list(b.loop(b.const(0, i64), b.const(self.whole_columns, i64), carried, body, step=16))
        if self.tail:
            column = b.const(self.whole_columns, i64)
            carried = step(column, b.load_lanes(b.element_ptr(inputs, column, f32), F32x16, self.tail_lanes), self.tail_lanes, carried)
        return carried

    def store(self, outputs: SSAValue, column: SSAValue, values: SSAValue, lanes: SSAValue | None, mean: SSAValue, inverse: SSAValue) -> list[SSAValue]:
        """outputs[column:column + 16] = (values - mean) * inverse * scale + bias (under `lanes`)."""
        b = self.b
        scale, bias = (b.load_lanes(b.element_ptr(base, column, f32), F32x16, lanes) for base in (self.scale, self.bias))
        normalized = b.fmuladd(b.fmul(b.fsub(values, mean), inverse), scale, bias)
        b.store_lanes(normalized, b.element_ptr(outputs, column, f32), lanes)
        return []
