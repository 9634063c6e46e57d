"""The transposing copies of the batched kernels' rows (sparsec.kernels.TransposeKey):
blocks of 16 x 16 floats, 16 vector loads, a transposition in registers, 16 vector
stores, the edges under lane masks. Same signature as the matrix kernels, with

    x = the rows read, y = the rows written,
    batch = B, the batch rows (P = B rounded up to 16, the transposed side's pitch),
    [begin, end) = the blocks of 16 of `count` to copy.

Inward, block u reads x[b, 16u:16u + 16] (row pitch `pitch`) and writes columns[k, b]
(pitch P) for each 16 batch rows b; outward, it reads y[r, b] (pitch P) for r in
16u .. 16u + 16 and writes out[b, r] (pitch `pitch`), or with `combine` out[b, r] + or
* a0[b, r], a0 at the output's pitch.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects.builtin import f32, i1, i32, i64
from xdsl.ir import SSAValue

from sparsec.kernels import TransposeKey
from sparsec.runtime.codegen.base import F32x16, UnitKernel
from sparsec.runtime.codegen.builder import FunctionBuilder


def transposed(b: FunctionBuilder, rows: list[SSAValue]) -> list[SSAValue]:
    """The 16 columns of the 16 x 16 block whose rows are `rows`: four rounds of
    two-input shuffles, each swapping the off-diagonal halves of the 2d x 2d blocks
    (d = 8, 4, 2, 1), 64 shuffles in all."""
    rows = list(rows)
    for d in (8, 4, 2, 1):
        low = tuple(k if not k & d else 16 + k - d for k in range(16))
        high = tuple(k + d if not k & d else 16 + k for k in range(16))
        for i in (i for i in range(16) if not i & d):
            rows[i], rows[i + d] = b.shuffle(rows[i], rows[i + d], low), b.shuffle(rows[i], rows[i + d], high)
    return rows


@dataclass(frozen=True)
class _Side:
    """One side of a block: row i of 16 lies at `start` + i x `pitch` floats, exists
    where `first_row` + i < `rows`, and holds the lanes `lanes` (None: all 16)."""

    start: SSAValue
    pitch: SSAValue
    first_row: SSAValue
    rows: SSAValue
    lanes: SSAValue | None


class TransposeKernel(UnitKernel):
    """Units are blocks of 16 of `count` (TransposeKey.units)."""

    def __init__(self, key: TransposeKey):
        super().__init__(key)
        b = self.b
        self.x, self.y, self.other = b.args[:3]
        self.batch = b.args[6]
        self.padded = b.mul(b.udiv(b.add(self.batch, b.const(15, i64)), b.const(16, i64)), b.const(16, i64))
        self.no_lanes = b.vector_const([0] * 16, i1)
        self.all_lanes = b.vector_const([1] * 16, i1)

    def lanes_below(self, first: SSAValue, limit: SSAValue) -> SSAValue:
        """The lanes l with first + l < limit."""
        b = self.b
        return b.low_lanes(b.trunc(b.smax(b.smin(b.sub(limit, first), b.const(16, i64)), b.const(0, i64)), i32))

    def unit(self, block: SSAValue, _state) -> list[SSAValue]:
        b, key = self.b, self.key
        first = b.mul(block, b.const(16, i64))  # of `count`
        count = b.const(key.count, i64)
        count_lanes = self.lanes_below(first, count)
        pitch = b.const(key.pitch, i64)

        def batch_block(batch_first: SSAValue, _inner) -> list[SSAValue]:
            batch_lanes = self.lanes_below(batch_first, self.batch)
            if key.inward:  # x's batch rows -> the columns' rows (k)
                read = _Side(b.add(b.mul(batch_first, pitch), first), pitch, batch_first, self.batch, count_lanes)
                write = _Side(b.add(b.mul(first, self.padded), batch_first), self.padded, first, count, batch_lanes)
            else:  # the transposed outputs' rows (r) -> output rows (batch rows)
                read = _Side(b.add(b.mul(first, self.padded), batch_first), self.padded, first, count, None)
                write = _Side(b.add(b.mul(batch_first, pitch), first), pitch, batch_first, self.batch, count_lanes)
            self.block(read, write)
            return []

        b.loop(b.const(0, i64), self.batch, [], batch_block, step=16)
        return []

    def row_lanes(self, side: _Side, row: int) -> SSAValue:
        """The lanes of row `row` of a block side: its lanes where the row exists, else none."""
        b = self.b
        exists = b.icmp("slt", b.add(side.first_row, b.const(row, i64)), side.rows)
        return b.select(exists, side.lanes if side.lanes is not None else self.all_lanes, self.no_lanes)

    def block(self, read: _Side, write: _Side) -> None:
        """One 16 x 16 block: rows read where they exist (their other lanes read as 0),
        transposed, and written where they exist."""
        b = self.b

        def at(base: SSAValue, side: _Side, row: int) -> SSAValue:
            return b.element_ptr(base, b.add(side.start, b.mul(b.const(row, i64), side.pitch)), f32)

        rows = [b.masked_load(at(self.x, read, i), self.row_lanes(read, i), F32x16) for i in range(16)]
        combine = {"add": b.fadd, "mul": b.fmul}.get(self.key.combine)
        for j, column in enumerate(transposed(b, rows)):
            lanes = self.row_lanes(write, j)
            if combine is not None:
                column = combine(column, b.masked_load(at(self.other, write, j), lanes, F32x16))
            b.store_lanes(column, at(self.y, write, j), lanes)
