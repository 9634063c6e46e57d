"""The plane copy kernel (sparsec.kernels.PlaneKey): an image's channels into an implicit
convolution's planes at stride 1, each row 16 floats at a time with the last partial
vector under a lane mask, through the put-off normalization (and Relu) of the
convolution's input in the same pass. Same signature as the matrix kernels, with

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
        tail = b.low_lanes(b.trunc(b.sub(g["columns"], whole), i32))

        def row(index: SSAValue, _rows) -> list[SSAValue]:
            inputs = b.element_ptr(source, b.mul(index, g["row_stride"]), f32)
            outputs = b.element_ptr(target, b.mul(index, g["pitch"]), f32)

            def vector(column: SSAValue, _columns) -> list[SSAValue]:
                self.copy(inputs, outputs, column, None, affine)
                return []

            b.loop(b.const(0, i64), whole, [], vector, step=16)
            self.copy(inputs, outputs, whole, tail, affine)  # the partial vector: no lanes when W is a multiple of 16
            return []

        b.loop(b.const(0, i64), g["rows"], [], row)
        return []

    def copy(self, inputs: SSAValue, outputs: SSAValue, column: SSAValue, lanes: SSAValue | None, affine: tuple[SSAValue, SSAValue] | None) -> None:
        """outputs[column:column + 16] = prologue(inputs[column:column + 16]) (under `lanes`)."""
        b = self.b
        values = b.load_lanes(b.element_ptr(inputs, column, f32), F32x16, lanes)
        if affine is not None:
            values = b.fmuladd(values, *affine)
            if self.key.prologue == "affine_relu":
                values = b.fmax(values, b.vector_const([0.0] * 16, f32))
        b.store_lanes(values, b.element_ptr(outputs, column, f32), lanes)
