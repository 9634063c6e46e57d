"""The normalization kernels (sparsec.kernels.NormKey): three passes over each row of N
floats, 16 lanes at a time with the last partial vector under a lane mask. A layer
normalization takes the sum, the sum of squared deviations from the mean, then the
normalized, scaled and shifted outputs; an RMS normalization the sum of squares, then
the scaled outputs (two passes); a Softmax the maximum, then each e^(x - max)
(stored) and their sum, then the stored values divided by the sum, as numpy's
reference computes it. Same signature as the matrix kernels, with

    a0 = scale (N floats), a1 = bias (N floats), a2 = epsilon (one float), which a
         Softmax does not read (nor an RMS normalization the bias),
    batch = rows, [begin, end) = the rows to normalize.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from xdsl.dialects.builtin import f32, i1, i64
from xdsl.ir import SSAValue

from sparsec.kernels import NormKey
from sparsec.runtime.codegen.base import F32x16, UnitKernel
from sparsec.runtime.codegen.elementwise import exp


class RowKernel(UnitKernel):
    """Units are rows of `cols` floats, taken a vector at a time (`vectors`)."""

    def __init__(self, key: NormKey):
        super().__init__(key)
        self.x, self.y, self.scale, self.bias, self.epsilon = self.b.args[:5]
        whole, self.tail = divmod(key.cols, 16)
        self.whole_columns = 16 * whole
        self.tail_lanes = self.b.vector_const([int(lane < self.tail) for lane in range(16)], i1) if self.tail else None
        self.zero = self.b.vector_const([0.0] * 16, f32)

    def vectors(self, inputs: SSAValue, carried: list[SSAValue], step: Callable[..., list[SSAValue]], past_row: SSAValue | None = None) -> list[SSAValue]:
        """step(column, 16 inputs, lanes or None, carried) -> carried over a row's whole
        vectors, then over its partial one under `tail_lanes` (if N is not a multiple
        of 16), whose lanes past the row hold `past_row` (default zero)."""
        b = self.b

        def body(column: SSAValue, state) -> list[SSAValue]:
            return step(column, b.load_lanes(b.element_ptr(inputs, column, f32), F32x16, None), None, list(state))

        carried = list(b.loop(b.const(0, i64), b.const(self.whole_columns, i64), carried, body, step=16))
        if self.tail:
            column = b.const(self.whole_columns, i64)
            values = b.masked_load(b.element_ptr(inputs, column, f32), self.tail_lanes, F32x16, past_row)  # pyright: ignore
            carried = step(column, values, self.tail_lanes, carried)
        return carried

    def row_pointers(self, row: SSAValue) -> tuple[SSAValue, SSAValue]:
        """Where row `row`'s inputs and outputs start."""
        b = self.b
        start = b.mul(row, b.const(self.key.cols, i64))
        return b.element_ptr(self.x, start, f32), b.element_ptr(self.y, start, f32)


class LayerNormKernel(RowKernel):
    """(x - mean) / sqrt(variance + epsilon) * scale + bias, a row at a time."""

    def unit(self, row: SSAValue, _state) -> list[SSAValue]:
        b, cols = self.b, self.key.cols
        inputs, outputs = self.row_pointers(row)
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

    def store(self, outputs: SSAValue, column: SSAValue, values: SSAValue, lanes: SSAValue | None, mean: SSAValue, inverse: SSAValue) -> list[SSAValue]:
        """outputs[column:column + 16] = (values - mean) * inverse * scale + bias (under `lanes`)."""
        b = self.b
        scale, bias = (b.load_lanes(b.element_ptr(base, column, f32), F32x16, lanes) for base in (self.scale, self.bias))
        normalized = b.fmuladd(b.fmul(b.fsub(values, mean), inverse), scale, bias)
        b.store_lanes(normalized, b.element_ptr(outputs, column, f32), lanes)
        return []


class RMSNormKernel(RowKernel):
    """x / sqrt(mean(x^2) + epsilon) * scale, a row at a time (lanes past N read 0)."""

    def unit(self, row: SSAValue, _state) -> list[SSAValue]:
        b = self.b
        inputs, outputs = self.row_pointers(row)
        (squared,) = self.vectors(inputs, [self.zero], lambda _column, values, _lanes, acc: [b.fmuladd(values, values, acc[0])])
        mean_square = b.fmul(b.sum_lanes(squared), b.const(1 / self.key.cols, f32))
        spread = b.intrinsic("llvm.sqrt.f32", [b.fadd(mean_square, b.load(self.epsilon, b.const(0, i64), f32))], f32)
        inverse = b.splat(b.fdiv(b.const(1.0, f32), spread), 16)

        def store(column, values, lanes, _acc) -> list[SSAValue]:
            scale = b.load_lanes(b.element_ptr(self.scale, column, f32), F32x16, lanes)
            b.store_lanes(b.fmul(b.fmul(values, inverse), scale), b.element_ptr(outputs, column, f32), lanes)
            return []

        self.vectors(inputs, [], store)
        return []


class SoftmaxKernel(RowKernel):
    """e^(x - max) / sum e^(x - max), a row at a time: the row's lanes past its end read
    as -inf, so they add e^-inf = 0 to the sum."""

    def unit(self, row: SSAValue, _state) -> list[SSAValue]:
        b = self.b
        inputs, outputs = self.row_pointers(row)
        lowest = b.vector_const([-math.inf] * 16, f32)

        def larger(a: SSAValue, c: SSAValue) -> SSAValue:
            # (NaNs need no care: one in a row makes its sum, so every output, NaN)
            return b.select(b.fcmp("ogt", a, c), a, c)

        (most,) = self.vectors(inputs, [lowest], lambda _column, values, _lanes, acc: [larger(acc[0], values)], past_row=lowest)
        most = b.splat(b.reduce_lanes(most, larger), 16)

        def exponentials(column, values, lanes, acc) -> list[SSAValue]:
            powers = exp(b, b.fsub(values, most))  # 0 in lanes past the row (e^-inf)
            b.store_lanes(powers, b.element_ptr(outputs, column, f32), lanes)
            return [b.fadd(acc[0], powers)]

        (total,) = self.vectors(inputs, [self.zero], exponentials, past_row=lowest)
        inverse = b.splat(b.fdiv(b.const(1.0, f32), b.sum_lanes(total)), 16)

        def scale(column, values, lanes, _acc) -> list[SSAValue]:
            b.store_lanes(b.fmul(values, inverse), b.element_ptr(outputs, column, f32), lanes)
            return []

        self.vectors(outputs, [], scale)
        return []
