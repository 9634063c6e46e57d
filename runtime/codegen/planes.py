"""The plane copy kernel (sparsec.kernels.PlaneKey): an image's channels into an implicit
convolution's planes, each row 16 floats at a time with the last partial vector under a
lane mask, through the put-off normalization (and Relu) of the convolution's input in
the same pass. At column stride 2 (a phase plane of a strided convolution, whose rows
the geometry's row stride already steps) each 16 outputs are the even lanes of 31
inputs. Same signature as the matrix kernels, with

    x = the image's first value, y = the first plane,
    a0 = int64 geometry: the image's channel and row strides (floats), its rows and
         columns, a plane's floats, its pitch, the offset of the image's first
         value in its plane (past the pads before it), and the channel of the image's
         first value (0, or for a part of a Concat the planes take in, its first
         channel's: channel c is then read at x + (c - that channel) x its stride),
    a1, a2 = scale and shift (one float per channel; read by the prologue kinds only),
    [begin, end) = the channels to copy.

The pads around the image are never written: they stay zero from the planes' first use.
"""

from __future__ import annotations

from xdsl.dialects.builtin import f32, i32, i64
from xdsl.ir import SSAValue

from sparsec.kernels import PlaneKey
from sparsec.runtime.codegen.base import F32x16, UnitKernel

GEOMETRY = ("channel_stride", "row_stride", "rows", "columns", "plane", "pitch", "first", "first_channel")
"""The int64 words of a0, in order."""


class PlaneCopyKernel(UnitKernel):
    """Units are channels."""

    def __init__(self, key: PlaneKey):
        super().__init__(key)
        self.x, self.y, geometry, self.scale, self.shift = self.b.args[:5]
        self.geometry = self.b.load_words(geometry, GEOMETRY)

    def unit(self, channel: SSAValue, _state) -> list[SSAValue]:
        b, g = self.b, self.geometry
        source = b.element_ptr(self.x, b.mul(b.sub(channel, g["first_channel"]), g["channel_stride"]), f32)
        target = b.element_ptr(self.y, b.add(b.mul(channel, g["plane"]), g["first"]), f32)
        affine = None
        if self.key.prologue != "none":
            affine = tuple(b.splat(b.load(values, channel, f32), 16) for values in (self.scale, self.shift))
        whole = b.round_down(g["columns"], 16)
        rest = b.trunc(b.sub(g["columns"], whole), i32)

        def row(index: SSAValue, _rows) -> list[SSAValue]:
            inputs = b.element_ptr(source, b.mul(index, g["row_stride"]), f32)
            outputs = b.element_ptr(target, b.mul(index, g["pitch"]), f32)

            def vector(column: SSAValue, _columns) -> list[SSAValue]:
                self.copy(inputs, outputs, column, None, affine)
                return []

            b.loop(b.const(0, i64), whole, [], vector, step=16)
            self.copy(inputs, outputs, whole, rest, affine)  # the partial vector: no lanes when W is a multiple of 16
            return []

        b.loop(b.const(0, i64), g["rows"], [], row)
        return []

    def copy(self, inputs: SSAValue, outputs: SSAValue, column: SSAValue, count: SSAValue | None, affine: tuple[SSAValue, SSAValue] | None) -> None:
        """outputs[column:column + 16] = prologue of the inputs from column x stride on,
        every stride-th (the first `count`, an i32, when given)."""
        b = self.b
        lanes = None if count is None else b.low_lanes(count)
        if self.key.stride == 1:
            values = b.load_lanes(b.element_ptr(inputs, column, f32), F32x16, lanes)
        else:
            values = self.even_lanes(b.element_ptr(inputs, b.add(column, column), f32), count)
        if affine is not None:
            values = b.fmuladd(values, *affine)
            if self.key.prologue == "affine_relu":
                values = b.fmax(values, b.vector_const([0.0] * 16, f32))
        b.store_lanes(values, b.element_ptr(outputs, column, f32), lanes)

    def even_lanes(self, at: SSAValue, count: SSAValue | None) -> SSAValue:
        """Every other float of the 31 from `at` (of the 2 x count - 1 that `count`
        outputs read, when given): the one past the last is not read, as it may lie
        past the image."""
        b = self.b
        if count is None:
            low = b.load_lanes(at, F32x16, None)
            high = b.masked_load(b.element_ptr(at, b.const(16, i64), f32), b.low_lanes(b.const(15, i32)), F32x16)
        else:
            needed = b.smax(b.sub(b.add(count, count), b.const(1, i32)), b.const(0, i32))
            low = b.masked_load(at, b.low_lanes(b.smin(needed, b.const(16, i32))), F32x16)
            high = b.masked_load(b.element_ptr(at, b.const(16, i64), f32), b.low_lanes(b.smax(b.sub(needed, b.const(16, i32)), b.const(0, i32))), F32x16)
        return b.shuffle(low, high, tuple(range(0, 32, 2)))
