"""The pooling kernel (sparsec.kernels.PoolKey): 2-D max or average pooling, or a
depthwise convolution, of already padded planes, 16 outputs of a row at a time. Same
signature as the matrix kernels, with

    x = the padded planes (images x channels of them, one after another, then slack),
    y = the outputs (Ho x Wo per plane, one after another),
    a0 = int64 geometry: a padded plane's floats, its pitch, Ho, Wo, the kernel's rows
         and columns, the row stride, the dilations (rows, columns), the channels,
    a1 = the average's divisors, one float per output position (Ho x Wo; average), or
         the depthwise convolution's weights, kernel rows x columns per channel,
    bias = the depthwise convolution's bias, one float per channel (with `bias`),
    [begin, end) = the planes to pool.

The column stride (1 or 2) is the key's: at stride 2 a vector of inputs is the even
lanes of two consecutive vectors. Loads may read past a row's last input (into the next
row, or the POOL_SLACK floats after the last plane); those lanes are never stored. Taps
are reduced in the reference's order (a depthwise tap's product rounded before it is
added, as numpy's separate multiply and add round it), so the results are the
reference's exactly.
"""

from __future__ import annotations

from xdsl.dialects.builtin import f32, i32, i64
from xdsl.ir import SSAValue

from sparsec.kernels import PoolKey
from sparsec.runtime.codegen.base import F32x16, UnitKernel

GEOMETRY = ("plane", "pitch", "out_rows", "out_columns", "kernel_rows", "kernel_columns", "row_stride", "row_dilation", "column_dilation", "channels")
"""The int64 words of a0, in order."""


class PoolKernel(UnitKernel):
    """Units are planes."""

    def __init__(self, key: PoolKey):
        super().__init__(key)
        self.x, self.y, geometry, self.a1 = self.b.args[:4]
        self.bias = self.b.args[5]
        self.g = self.b.load_words(geometry, GEOMETRY)

    def unit(self, plane: SSAValue, _state) -> list[SSAValue]:
        b, g = self.b, self.g
        inputs = b.element_ptr(self.x, b.mul(plane, g["plane"]), f32)
        outputs = b.element_ptr(self.y, b.mul(plane, b.mul(g["out_rows"], g["out_columns"])), f32)
        weights = bias = None
        if self.key.kind == "depthwise":
            channel = b.urem(plane, g["channels"])
            weights = b.element_ptr(self.a1, b.mul(channel, b.mul(g["kernel_rows"], g["kernel_columns"])), f32)
            bias = b.splat(b.load(self.bias, channel, f32), 16) if self.key.bias else None

        def row(out_row: SSAValue, _rows) -> list[SSAValue]:
            first_row = b.element_ptr(inputs, b.mul(b.mul(out_row, g["row_stride"]), g["pitch"]), f32)
            position = b.mul(out_row, g["out_columns"])

            def vector(column: SSAValue, _columns) -> list[SSAValue]:
                lanes = b.low_lanes(b.trunc(b.smin(b.sub(g["out_columns"], column), b.const(16, i64)), i32))
                total = self.window(b.element_ptr(first_row, b.mul(column, b.const(self.key.stride, i64)), f32), weights)
                at = b.add(position, column)
                if self.key.kind == "avg":
                    total = b.fdiv(total, b.load_lanes(b.element_ptr(self.a1, at, f32), F32x16, lanes))
                if bias is not None:
                    total = b.fadd(total, bias)
                b.store_lanes(total, b.element_ptr(outputs, at, f32), lanes)
                return []

            b.loop(b.const(0, i64), g["out_columns"], [], vector, step=16)
            return []

        b.loop(b.const(0, i64), g["out_rows"], [], row)
        return []

    def window(self, corner: SSAValue, weights: SSAValue | None) -> SSAValue:
        """The maximum, the sum or (depthwise) the sum weighted by `weights` of the window
        taps of 16 outputs whose first window's top-left input is at `corner`, tap by
        tap, rows first."""
        b, g = self.b, self.g
        start = b.vector_const([float("-inf") if self.key.kind == "max" else 0.0] * 16, f32)

        def tap_row(i: SSAValue, state) -> list[SSAValue]:
            at = b.element_ptr(corner, b.mul(b.mul(i, g["row_dilation"]), g["pitch"]), f32)
            row_weights = None if weights is None else b.element_ptr(weights, b.mul(i, g["kernel_columns"]), f32)

            def tap(j: SSAValue, inner) -> list[SSAValue]:
                values = self.inputs(b.element_ptr(at, b.mul(j, g["column_dilation"]), f32))
                if self.key.kind == "max":
                    return [b.intrinsic("llvm.maximum.v16f32", [inner[0], values], F32x16)]
                if row_weights is not None:
                    values = b.fmul(values, b.splat(b.load(row_weights, j, f32), 16))
                return [b.fadd(inner[0], values)]

            return list(b.loop(b.const(0, i64), g["kernel_columns"], list(state), tap))

        (total,) = b.loop(b.const(0, i64), g["kernel_rows"], [start], tap_row)
        return total

    def inputs(self, at: SSAValue) -> SSAValue:
        """The inputs of 16 consecutive outputs' same tap: 16 floats from `at`, or at
        stride 2 the even ones of 32."""
        b = self.b
        low = b.load_lanes(at, F32x16, None)
        if self.key.stride == 1:
            return low
        high = b.load_lanes(b.element_ptr(at, b.const(16, i64), f32), F32x16, None)
        return b.shuffle(low, high, tuple(range(0, 32, 2)))
