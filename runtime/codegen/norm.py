"""The layer normalization kernel (sparsec.kernels.NormKey): three passes over each row
of N floats, 16 lanes at a time with the last partial vector under a lane mask: the
sum, the sum of squared deviations from the mean, then the normalized, scaled and
shifted outputs. Same signature as the matrix kernels, with

    a0 = scale (N floats), a1 = bias (N floats), a2 = epsilon (one float),
    batch = rows, [begin, end) = the rows to normalize.
"""

from __future__ import annotations

from xdsl.dialects import llvm
from xdsl.dialects.builtin import f32, i1, i64
from xdsl.ir import SSAValue

from sparsec.kernels import NormKey
from sparsec.runtime.codegen.base import ARG_NAMES, ARG_TYPES, F32x16
from sparsec.runtime.codegen.builder import FunctionBuilder


class LayerNormKernel:
    EXPLICIT_VECTORS = True
    """Written in vectors with its loops rotated: the short LLVM pipeline (codegen Kernel)."""

    def __init__(self, key: NormKey):
        self.key = key
        self.b = FunctionBuilder(key.symbol, ARG_TYPES, ARG_NAMES)
        self.x, self.y, self.scale, self.bias, self.epsilon, _, _, self.begin, self.end = self.b.args

    def build(self) -> llvm.FuncOp:
        b, cols = self.b, self.key.cols
        whole, tail = divmod(cols, 16)
        tail_mask = b.vector_const([int(lane < tail) for lane in range(16)], i1) if tail else None
        zero = b.vector_const([0.0] * 16, f32)

        def chunks(row_x: SSAValue, carried: list[SSAValue], step) -> list[SSAValue]:
            """step(column, inputs, lanes or None, carried) over the row's whole vectors,
            then (if N is not a multiple of 16) its partial one."""
            def body(column: SSAValue, state) -> list[SSAValue]:
                return step(column, b.load_at(b.element_ptr(row_x, column, f32), F32x16, alignment=4), None, list(state))

            carried = list(b.loop(b.const(0, i64), b.const(16 * whole, i64), carried, body, step=16))
            if tail_mask is not None:
                column = b.const(16 * whole, i64)
                carried = step(column, b.masked_load(b.element_ptr(row_x, column, f32), tail_mask, F32x16), tail_mask, carried)
            return carried

        def row_body(row: SSAValue, _state) -> list[SSAValue]:
            row_x = b.element_ptr(self.x, b.mul(row, b.const(cols, i64)), f32)
            row_y = b.element_ptr(self.y, b.mul(row, b.const(cols, i64)), f32)
            (total,) = chunks(row_x, [zero], lambda _c, v, _m, acc: [b.fadd(acc[0], v)])
            mean = b.splat(b.fmul(b.sum_lanes(total), b.const(1 / cols, f32)), 16)

            def squares(_column, values, lanes, acc) -> list[SSAValue]:
                deviation = b.fsub(values, mean)
                if lanes is not None:  # lanes past N hold 0, not a deviation
                    deviation = b.select(lanes, deviation, zero)
                return [b.fmuladd(deviation, deviation, acc[0])]

            (squared,) = chunks(row_x, [zero], squares)
            variance = b.fmul(b.sum_lanes(squared), b.const(1 / cols, f32))
            spread = b.intrinsic("llvm.sqrt.f32", [b.fadd(variance, b.load(self.epsilon, b.const(0, i64), f32))], f32)
            inverse = b.splat(b.fdiv(b.const(1.0, f32), spread), 16)

            def outputs(column, values, lanes, _acc) -> list[SSAValue]:
                scale_at, bias_at = (b.element_ptr(base, column, f32) for base in (self.scale, self.bias))
                if lanes is None:
                    scale, bias = (b.load_at(at, F32x16, alignment=4) for at in (scale_at, bias_at))
                else:
                    scale, bias = (b.masked_load(at, lanes, F32x16) for at in (scale_at, bias_at))
                normalized = b.fmuladd(b.fmul(b.fsub(values, mean), inverse), scale, bias)
                at = b.element_ptr(row_y, column, f32)
                if lanes is None:
                    b.store_at(normalized, at, alignment=4)
                else:
                    b.emit(llvm.MaskedStoreOp(normalized, at, lanes, alignment=4))
                return []

            chunks(row_x, [], outputs)
            return []

        b.loop(self.begin, self.end, [], row_body)
        return b.ret()
