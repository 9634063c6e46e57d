"""Bitmask kernels: a mask word per 16 columns, the non-zero values packed in row order."""

from __future__ import annotations

import math

from xdsl.dialects import llvm
from xdsl.dialects.builtin import f16, f32, i1, i8, i16, i32, i64
from xdsl.ir import SSAValue

from sparsec.kernels import GATHER_SPAN
from sparsec.runtime.codegen.base import F32x16, ColumnStepKernel, Kernel
from sparsec.runtime.codegen.batched import BatchedKernel
from sparsec.runtime.codegen.builder import vector


class BitmaskKernel(Kernel):
    def build(self) -> llvm.FuncOp:
        b, key = self.b, self.key
        words = math.ceil(key.cols / 16)

        def row_body(row: SSAValue, _state) -> list[SSAValue]:
            start = b.load(self.a2, b.mul(row, b.const(key.panels, i64)), i64)

            def word_body(word: SSAValue, state) -> list[SSAValue]:
                position, acc = state
                bits = b.zext(b.load(self.a0, b.add(b.mul(row, b.const(key.mask_words, i64)), word), i16), i32)
                col_base = b.mul(word, b.const(16, i64))

                def bit_body(bit: SSAValue, inner) -> list[SSAValue]:
                    k, total = inner
                    col = b.add(col_base, b.zext(bit, i64))
                    total = b.fmuladd(self.value(self.a1, k), self.x_at(self.batch_row, col), total)
                    return [b.add(k, b.const(1, i64)), total]

                return list(b.while_bits(bits, [position, acc], bit_body))

            _, acc = b.loop(b.const(0, i64), b.const(words, i64), [start, b.const(0.0, f32)], word_body)
            self.finish(acc, row, self.batch_row)
            return []

        return self.for_each_row(row_body)


class VectorBitmaskKernel(ColumnStepKernel):
    """The bitmask kernel on 16 lanes. One 64-bit load takes a step's four mask words.
    With AVX-512 VBMI2 each word's 16 lanes are a 16-value load from where the word before it
    ends, expanded under the word (`FunctionBuilder.expand`: VBMI2 `vpexpandw` in
    its register form; KernelKey.vbmi2) and widened; the loads read up to 32 bytes past the values,
    which `runtime/operands.py` leaves readable (VALUE_SLACK_BYTES). Elsewhere each
    32-bit half selects how many values a 32-lane expand-load takes (as i16: the same
    load on half is scalarized). The only loop-carried integer chain is one
    popcount-add per step. The partial step's inputs load under the mask words (zero
    past column K). The plain variant prefetches values and mask words ahead: on
    Zen 4, 11008x4096 at 50% ran 3.7 ms without, 2.8 with."""

    PREFETCH_VALUES = 2048
    """Values the plain variant prefetches ahead of a step's (4 KiB)."""
    PREFETCH_WORDS = 256
    """Mask words it prefetches ahead of a step's (512 bytes: 128 steps)."""

    def row_state(self, row: SSAValue, first_step: SSAValue) -> list[SSAValue]:
        b = self.b
        self.masks = b.element_ptr(self.a0, b.mul(row, b.const(self.key.mask_words, i64)), i16)
        # The value offset at the step's panel (a2 has one per row and panel; panels are whole steps).
        entry = b.add(b.mul(row, b.const(self.key.panels, i64)), b.udiv(first_step, b.const(self.key.panel_columns // 64, i64)))
        position = b.load(self.a2, entry, i64)
        if self.key.panelled:  # where the next row's values are, relative to this row's (the last row: its own)
            below = b.icmp("slt", row, b.const(self.key.rows - 1, i64))
            next_entry = b.add(entry, b.select(below, b.const(self.key.panels, i64), b.const(0, i64)))
            self.next_row = b.sub(b.load(self.a2, next_entry, i64), position)
        return [position]

    def prefetch_next_row(self, step: SSAValue, state: list[SSAValue]) -> None:
        b, key = self.b, self.key
        (position,) = state
        b.prefetch(b.element_ptr(self.masks, b.add(b.mul(step, b.const(4, i64)), b.const(key.mask_words, i64)), i16))
        b.prefetch(b.element_ptr(self.a1, b.add(position, self.next_row), i16), 2)

    def decode(self, row: SSAValue, step: SSAValue, state: list[SSAValue], partial: int):
        b = self.b
        (position,) = state
        words = b.element_ptr(self.masks, b.mul(step, b.const(4, i64)), i16)
        if not self.key.panelled:
            b.prefetch(b.element_ptr(self.a1, b.add(position, b.const(self.PREFETCH_VALUES, i64)), i16))
            b.prefetch(b.element_ptr(words, b.const(self.PREFETCH_WORDS, i64), i16))
        bits = b.load_at(words, i64, alignment=2)
        weights = self.expanded_words(bits, position) if self.key.vbmi2 else self.expanded_halves(bits, position)
        input_masks = [self.quarter_mask(bits, q) for q in range(4)] if partial else []
        return weights, [b.add(position, b.intrinsic("llvm.ctpop.i64", [bits], i64))], input_masks

    def expanded_words(self, bits: SSAValue, position: SSAValue) -> list[SSAValue]:
        """A step's four weight vectors, one register-form expand per mask word (on
        Zen 4 a little faster than two 32-lane expands, which also need their upper
        halves extracted)."""
        b = self.b
        weights, start = [], position
        for quarter in range(4):
            word = b.trunc(b.lshr(bits, b.const(16 * quarter, i64)), i16)
            packed = b.load_at(b.element_ptr(self.a1, start, i16), vector(i16, 16), alignment=2)
            expanded = b.expand(packed, b.bitcast(word, vector(i1, 16)))
            weights.append(b.fpext(b.bitcast(expanded, vector(f16, 16)), F32x16))
            start = b.add(start, b.zext(b.intrinsic("llvm.ctpop.i16", [word], i16), i64))
        return weights

    def expanded_halves(self, bits: SSAValue, position: SSAValue) -> list[SSAValue]:
        """A step's four weight vectors, one 32-lane expand-load per half of its mask
        (the second half starting where the popcount of the first ends)."""
        b = self.b
        low = b.and_(bits, b.const(0xFFFFFFFF, i64))
        halves = [(position, low), (b.add(position, b.intrinsic("llvm.ctpop.i64", [low], i64)), b.lshr(bits, b.const(32, i64)))]
        weights = []
        for start, half in halves:
            lane_mask = b.bitcast(b.trunc(half, i32), vector(i1, 32))
            packed = b.intrinsic(
                "llvm.masked.expandload.v32i16",
                [b.element_ptr(self.a1, start, i16), lane_mask, b.vector_const([0] * 32, i16)],
                vector(i16, 32),
            )
            widened = b.fpext(b.bitcast(packed, vector(f16, 32)), vector(f32, 32))
            weights += [b.lanes(widened, 0, 16), b.lanes(widened, 16, 16)]
        return weights

    def quarter_mask(self, bits: SSAValue, quarter: int) -> SSAValue:
        """Mask word `quarter` of a 64-bit step as 16 lane flags."""
        b = self.b
        word = b.trunc(b.lshr(bits, b.const(16 * quarter, i64)), i16)
        return b.bitcast(word, vector(i1, 16))


class ChunkBitmaskKernel(Kernel):
    """The chunk variants (KernelKey.chunk_span): a row is a run of chunks of up to 16
    non-zeros within `chunk_span` columns, each a 20-byte record: a 32-bit word with the
    chunk's base column (low 24 bits) and count (high 8), then every non-zero's byte
    offset from that column. Per chunk, the inputs at those offsets are picked from
    span / 16 loaded vectors by span / 32 `vpermi2ps`, merged on the offset's bits 5 and
    up (span 64, the window, or 128, the wide window for sparser weights), or gathered by
    `vgatherdps` (span 256, where gathers are fast); the values load
    contiguously under the count's lane mask from the weight's own value array; one
    multiply-add, masked, takes the chunk. The bytes and work follow the non-zeros
    (3.25 bytes each in full chunks), not the columns. Both streams are prefetched
    PREFETCH_BYTES ahead: the hardware prefetcher alone leaves ~15% of the bandwidth
    unused here (on Zen 4, 11008x4096 at 75%: 2.7 ms without, 2.2 with). Chunks go in
    pairs, which prefetch once (a pair reads at most 64 bytes of values and 40 of
    records): on Zen 4 the window variant is bound by its loads, and a prefetch takes a
    load slot (2.19 -> 2.09 ms). (A 16-bit column with the lane mask taken from the
    non-zero offsets saves two bytes a chunk but measured slower.)"""

    RECORD_BYTES = 20
    EXPLICIT_VECTORS = True
    PREFETCH_BYTES = 2048

    def build(self) -> llvm.FuncOp:
        b, key = self.b, self.key

        def row_body(row: SSAValue, _state) -> list[SSAValue]:
            entry = b.mul(row, b.const(2, i64))
            first, start, last = (b.load(self.a2, b.add(entry, b.const(j, i64)), i64) for j in range(3))
            x_row = b.element_ptr(self.x, b.mul(self.batch_row, b.const(key.cols, i64)), f32)

            def chunk(index: SSAValue, position: SSAValue, acc: SSAValue, prefetch: bool) -> list[SSAValue]:
                record = b.element_ptr(self.a0, b.mul(index, b.const(self.RECORD_BYTES, i64)), i8)
                word = b.load_at(record, i32, alignment=4)
                base = b.element_ptr(x_row, b.zext(b.and_(word, b.const((1 << 24) - 1, i32)), i64), f32)
                count = b.lshr(word, b.const(24, i32))
                mask = b.low_lanes(count)
                offsets = b.load_at(b.element_ptr(record, b.const(4, i64), i8), vector(i8, 16), alignment=4)
                inputs = self.inputs(base, b.zext(offsets, vector(i32, 16)), mask)
                at = b.element_ptr(self.a1, position, i16)
                if prefetch:
                    b.prefetch(b.element_ptr(at, b.const(self.PREFETCH_BYTES, i64), i8))
                    b.prefetch(b.element_ptr(record, b.const(self.PREFETCH_BYTES * self.RECORD_BYTES // 32, i64), i8))
                values = b.masked_load(at, mask, vector(i16, 16))
                widened = b.fpext(b.bitcast(values, vector(f16, 16)), F32x16)
                # Masked: the window's spare lanes hold real inputs, which may be infinite.
                acc = b.select(mask, b.fmuladd(widened, inputs, acc), acc)
                return [b.add(position, b.zext(count, i64)), acc]

            def pair(index: SSAValue, state) -> list[SSAValue]:
                position, acc = chunk(index, state[0], state[1], True)
                return chunk(b.add(index, b.const(1, i64)), position, acc, False)

            paired = b.add(first, b.round_down(b.sub(last, first), 2))
            state = b.loop(first, paired, [start, b.vector_const([0.0] * 16, f32)], pair, step=2)
            _, acc = b.loop(paired, last, state, lambda index, st: chunk(index, st[0], st[1], True))
            self.finish(b.sum_lanes(acc), row, self.batch_row)
            return []

        return self.for_each_row(row_body)

    def inputs(self, base: SSAValue, offsets: SSAValue, mask: SSAValue) -> SSAValue:
        """The inputs at base + offsets, in the lanes `mask` selects."""
        b = self.b
        if self.key.chunk_span == GATHER_SPAN:
            zero = b.vector_const([0.0] * 16, f32)
            return b.intrinsic("llvm.x86.avx512.mask.gather.dps.512", [zero, base, offsets, mask, b.const(4, i32)], F32x16)
        window = [b.load_at(b.element_ptr(base, b.const(16 * q, i64), f32), F32x16, alignment=4) for q in range(self.key.chunk_span // 16)]
        picked = [b.intrinsic("llvm.x86.avx512.vpermi2var.ps.512", [low, offsets, high], F32x16) for low, high in zip(window[::2], window[1::2])]
        bit = 32
        while len(picked) > 1:  # merge pairs of 32-column picks on offset bits 5, 6, ...
            upper = b.icmp("ne", b.and_(offsets, b.vector_const([bit] * 16, i32)), b.vector_const([0] * 16, i32))
            picked = [b.select(upper, high, low) for low, high in zip(picked[::2], picked[1::2])]
            bit *= 2
        return picked[0]


class BatchedBitmaskKernel(BatchedKernel):
    """Batched bitmask: a panel's products are its set bits. Each 16-bit mask word
    compresses the column numbers of its set bits into the lowest lanes of a register
    (`vpcompressd` on AVX-512), stored whole after those of the words before it (its
    memory form, whose store the loads that follow must wait for, measured 15% slower);
    a2 gives where each panel's values start."""

    def decode(self, row: SSAValue, panel: SSAValue) -> SSAValue:
        b, key = self.b, self.key
        entry = b.add(b.mul(row, b.const(key.panels, i64)), panel)
        start = b.load(self.a2, entry, i64)
        count = b.sub(b.load(self.a2, b.add(entry, b.const(1, i64)), i64), start)
        panel_words = key.panel_columns // 16
        first_word = b.mul(panel, b.const(panel_words, i64))
        words = b.smin(b.const(panel_words, i64), b.sub(b.const(key.mask_words, i64), first_word))
        masks = b.element_ptr(self.a0, b.add(b.mul(row, b.const(key.mask_words, i64)), first_word), i16)
        ahead = self.row_ahead(row)
        b.prefetch(b.element_ptr(self.a1, b.load(self.a2, b.add(b.mul(ahead, b.const(key.panels, i64)), panel), i64), self.value_type), 4)
        b.prefetch(b.element_ptr(masks, b.mul(b.sub(ahead, row), b.const(key.mask_words, i64)), i16))
        self.widen_values(b.element_ptr(self.a1, start, self.value_type), count)
        lanes = b.vector_const(list(range(16)), i32)
        first_column = b.trunc(b.mul(first_word, b.const(16, i64)), i32)

        def word_body(word: SSAValue, state) -> list[SSAValue]:
            (written,) = state
            bits = b.load(masks, word, i16)
            column = b.add(first_column, b.trunc(b.mul(word, b.const(16, i64)), i32))
            columns = b.add(b.splat(column, 16), lanes)
            packed = b.intrinsic("llvm.experimental.vector.compress.v16i32", [columns, b.bitcast(bits, vector(i1, 16)), columns], vector(i32, 16))
            b.store_at(packed, b.element_ptr(self.columns, written, i32), alignment=4)
            return [b.add(written, b.zext(b.intrinsic("llvm.ctpop.i16", [bits], i16), i64))]

        b.loop(b.const(0, i64), words, [b.const(0, i64)], word_body)
        return count
