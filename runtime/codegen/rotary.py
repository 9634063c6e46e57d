"""The rotary embedding kernel (sparsec.kernels.RotaryKey): for each row of x's D
values, halves x1 = x[:D/2] and x2 = x[D/2:],

    y[:D/2] = x1 cos[:D/2] - x2 sin[:D/2],    y[D/2:] = x2 cos[D/2:] + x1 sin[D/2:]

16 lanes at a time, the last partial vector of a half under a lane mask. Each product
and the sum are rounded as the reference's numpy calls round them (no multiply-add
contraction), so the result is the same bit for bit. Same signature as the matrix
kernels, with

    x = x, y = the output (contiguous), a0 = cos, a1 = sin,
    bias = the geometry (ROTARY_GEOMETRY), [begin, end) = units b * H + h.
"""

from __future__ import annotations

from xdsl.dialects.builtin import f32, i1, i64
from xdsl.ir import SSAValue

from sparsec.kernels import ROTARY_GEOMETRY, RotaryKey
from sparsec.runtime.codegen.base import F32x16, UnitKernel


class RotaryKernel(UnitKernel):
    """Units are (batch, head) pairs, each over its rows."""

    def __init__(self, key: RotaryKey):
        super().__init__(key)
        b = self.b
        self.x, self.out, self.cos, self.sin, _, geometry = b.args[:6]
        self.g = b.load_words(geometry, ROTARY_GEOMETRY)
        self.half = key.width // 2
        vectors, tail = divmod(self.half, 16)
        self.lanes = [None] * vectors + ([b.vector_const([int(lane < tail) for lane in range(16)], i1)] if tail else [])

    def unit(self, unit: SSAValue, _state) -> list[SSAValue]:
        b, g = self.b, self.g
        batch, head = b.udiv(unit, g["heads"]), b.urem(unit, g["heads"])
        starts = {name: b.add(b.mul(batch, g[f"{name}_batch"]), b.mul(head, g[f"{name}_head"])) for name in ("x", "cos", "sin")}
        first_output = b.mul(unit, b.mul(g["rows"], b.const(self.key.width, i64)))

        def row(index: SSAValue, _inner) -> list[SSAValue]:
            at = {name: b.element_ptr(operand, b.add(starts[name], b.mul(index, g[f"{name}_row"])), f32) for name, operand in (("x", self.x), ("cos", self.cos), ("sin", self.sin))}
            output = b.element_ptr(self.out, b.add(first_output, b.mul(index, b.const(self.key.width, i64))), f32)
            for vector, lanes in enumerate(self.lanes):
                low, high = b.const(16 * vector, i64), b.const(self.half + 16 * vector, i64)

                def load(name: str, offset: SSAValue) -> SSAValue:
                    return b.load_lanes(b.element_ptr(at[name], offset, f32), F32x16, lanes)

                x1, x2 = load("x", low), load("x", high)
                first = b.fsub(b.fmul(x1, load("cos", low)), b.fmul(x2, load("sin", low)))
                second = b.fadd(b.fmul(x2, load("cos", high)), b.fmul(x1, load("sin", high)))
                b.store_lanes(first, b.element_ptr(output, low, f32), lanes)
                b.store_lanes(second, b.element_ptr(output, high, f32), lanes)
            return []

        b.loop(b.const(0, i64), g["rows"], [], row)
        return []
