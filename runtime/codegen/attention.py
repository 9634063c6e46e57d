"""The attention kernel (sparsec.kernels.AttentionKey): softmax(scale * q @ kt + mask)
@ v for one unit at a time (a batch, a head and ATTENTION_UNIT_ROWS of its query rows),
two query rows at a time (ROWS; an odd last row is taken twice), the keys 16 at a
time (the last block under a lane mask past T),
with the Softmax taken online (as FlashAttention does) so the scores are never
written out: for each block of 16 keys,

    s = scale * q_row @ kt[:, block] + mask[row, block]      (16 lanes; past T: -inf)
    m' = max(m, max(s)),  c = e^(m - m'),  p = e^(s - m')
    l = l c + sum(p),     acc = acc c + sum_j p_j v[block_j]
    m = m'

and the row's output is acc / l. With a mask, the rows' key blocks run only over the
span of blocks where some key is live for them (`live_span`): a causal mask's rows
skip the blocks after their last key, a padding mask's the blocks before the first.
Where m' is -inf (every score so far masked out) it
counts as 0, so c and p are 0 rather than NaN; a row masked out entirely gives 0 / 0,
NaN, as the five ops it stands for do, or zeros where the key says NaN rows give
zeros (l is then 0 or NaN, and only then). Same signature as the matrix kernels, with

    x = q, y = the output, a0 = kt, a1 = v, a2 = the mask (unread without one),
    bias = the geometry (ATTENTION_GEOMETRY), [begin, end) = units
    (b * H + h) * row blocks + row block, ceil(S / ATTENTION_UNIT_ROWS) row blocks.

Each operand is read where it lies, at the geometry's strides, its last axis
contiguous; a key or value head serves `key_group` or `value_group` query heads
(grouped-query attention) and a stride of 0 broadcasts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import reduce

from xdsl.dialects.builtin import f32, i1, i16, i32, i64
from xdsl.ir import SSAValue

from sparsec.kernels import ATTENTION_GEOMETRY, ATTENTION_UNIT_ROWS, AttentionKey
from sparsec.runtime.codegen.base import F32x16, UnitKernel
from sparsec.runtime.codegen.builder import vector
from sparsec.runtime.codegen.elementwise import exp

ROWS = 2
"""Query rows taken together: each block's key and value loads serve them all, and
their multiply-adds make independent chains. 9 heads of 128 x 128 x 64, one thread:
one row at a time 0.93 ms, two 0.52, four 0.59 (their state no longer fits the
registers). A unit's odd last row is taken with itself, so the kernel has one body
for rows: a decoding step (one query row) takes 1.1x as long as the row alone did."""
DEPTH_STEP = 8
"""Query values a step of the loop over D takes (its greatest common divisor with D):
one loaded vector of them, and 8 multiply-adds per row. With VALUE_STEP, one body
for rows and one for key blocks, the kernel (D = Dv = 64) is 616 lines of IR; with
D and a block's 16 value rows unrolled, and bodies of their own for a block past T
and a last odd row, it was 2,175 lines, took 2.7x to 3.4x as long to compile, and
ran 128 x 128 attention 1.06x to 1.09x as fast. Steps of 16 were 663 lines and ran
as fast as 8 (9 heads of 128 x 128 x 64: 0.50 against 0.49 ms, a decoding step 9.1
against 9.1 us); steps of 32 or 64, no faster."""
VALUE_STEP = 4
"""Keys a step of the loop over a block's value rows takes, then one at a time to the
block's last key below T."""
PRODUCT_CHAINS = 4
"""Accumulators a block's scores are summed in over the query's D values, interleaved
(split among the rows taken together): one chain of D dependent multiply-adds would
wait on each one's latency."""


DEAD_MASK = -1e30
"""Mask values at or below this mark a dead key (PyTorch's exports write float32's
lowest, -3.4e38, for -inf). In a row with a live key its weight e^(s + mask - m) is
exactly 0 in float32 unless a scaled score reaches about 1e22 (the mask values either
side of the mark differ by at least 7.6e22), so skipping it changes nothing; a row
with no live key takes every key, as the five ops do."""


class AttentionKernel(UnitKernel):
    """Units are (batch, head, block of ATTENTION_UNIT_ROWS query rows): a head's
    blocks spread over the threads, and a causal mask's short rows and long ones
    with them."""

    def __init__(self, key: AttentionKey):
        super().__init__(key)
        b = self.b
        self.q, self.out, self.kt, self.v, self.mask, geometry = b.args[:6]
        self.g = b.load_words(geometry, ATTENTION_GEOMETRY)
        self.scale = b.splat(b.load(geometry, b.const(2 * ATTENTION_GEOMETRY.index("scale"), i64), f32), 16)
        self.lowest = b.vector_const([-math.inf] * 16, f32)
        self.dead = b.vector_const([DEAD_MASK] * 16, f32)
        self.zero = b.vector_const([0.0] * 16, f32)
        vectors, tail = divmod(key.value_depth, 16)
        self.value_lanes = [None] * vectors + ([b.vector_const([int(lane < tail) for lane in range(16)], i1)] if tail else [])
        self.power_slots = b.alloca(16 * ROWS, f32)

    def base(self, operand: SSAValue, batch: SSAValue, head: SSAValue, name: str) -> SSAValue:
        """Where `operand`'s (batch, head) starts."""
        b, g = self.b, self.g
        return b.element_ptr(operand, b.add(b.mul(batch, g[f"{name}_batch"]), b.mul(head, g[f"{name}_head"])), f32)

    def unit(self, unit: SSAValue, _state) -> list[SSAValue]:
        b, g = self.b, self.g
        row_blocks = b.udiv(b.add(g["queries"], b.const(ATTENTION_UNIT_ROWS - 1, i64)), b.const(ATTENTION_UNIT_ROWS, i64))
        pair, row_block = b.udiv(unit, row_blocks), b.urem(unit, row_blocks)
        batch, head = b.udiv(pair, g["heads"]), b.urem(pair, g["heads"])
        self.heads = {
            "q": self.base(self.q, batch, head, "q"),
            "kt": self.base(self.kt, batch, b.udiv(head, g["key_group"]), "kt"),
            "v": self.base(self.v, batch, b.udiv(head, g["value_group"]), "v"),
            "out": self.base(self.out, batch, head, "out"),
        }
        if self.key.masked:
            self.heads["mask"] = self.base(self.mask, batch, head, "mask")
        first = b.mul(row_block, b.const(ATTENTION_UNIT_ROWS, i64))
        end = b.smin(g["queries"], b.add(first, b.const(ATTENTION_UNIT_ROWS, i64)))
        last = b.sub(end, b.const(1, i64))
        b.loop(first, end, [], lambda row, _state: self.rows(row, last), step=ROWS)
        return []

    def rows(self, first_row: SSAValue, last: SSAValue) -> list[SSAValue]:
        """Query rows first_row to first_row + ROWS - 1 (none past `last`, which repeats
        instead): their key blocks, then each row's acc / l."""
        b, g = self.b, self.g
        rows = [b.smin(b.add(first_row, b.const(r, i64)), last) if r else first_row for r in range(ROWS)]
        queries = [b.element_ptr(self.heads["q"], b.mul(row, g["q_row"]), f32) for row in rows]
        masks = [b.element_ptr(self.heads["mask"], b.mul(row, g["mask_row"]), f32) for row in rows] if self.key.masked else None
        state = [self.lowest, self.zero, *[self.zero] * len(self.value_lanes)] * ROWS
        start, stop = self.live_span(masks) if masks is not None else (b.const(0, i64), g["keys"])
        state = b.loop(start, stop, state, lambda first, carried: self.block(first, queries, masks, list(carried)), step=16)
        for row, (_most, total, *accumulators) in zip(rows, _per_row(state, 2 + len(self.value_lanes))):
            inverse = b.fdiv(b.like(1.0, total), total)
            # l is 0 or NaN exactly where the five ops' probabilities are NaN
            kept = b.fcmp("ogt", total, self.zero) if self.key.nan_rows_to_zero else None
            output = b.element_ptr(self.heads["out"], b.mul(row, g["out_row"]), f32)
            for index, (acc, lanes) in enumerate(zip(accumulators, self.value_lanes)):
                values = b.fmul(acc, inverse)
                if kept is not None:
                    values = b.select(kept, values, self.zero)
                b.store_lanes(values, b.element_ptr(output, b.const(16 * index, i64), f32), lanes)
        return []

    def live_span(self, masks: list[SSAValue]) -> tuple[SSAValue, SSAValue]:
        """[start, stop): from the first block of 16 keys where a key is live (its mask
        above DEAD_MASK, or NaN) for one of the rows to the end of the last such
        block (T if that is the partial one); every key when no key is live. A pass
        over the rows' mask values alone, a sixteenth of a key block's loads."""
        b, g = self.b, self.g
        keys = g["keys"]

        def scan(first: SSAValue, carried: tuple[SSAValue, ...]) -> list[SSAValue]:
            start, stop = carried
            lanes = self.tail_lanes(first)
            live = [b.fcmp("ugt", b.load_lanes(b.element_ptr(mask, first, f32), F32x16, lanes), self.dead) for mask in masks]
            any_live = b.icmp("ne", b.bitcast(b.and_(reduce(b.or_, live), lanes), i16), b.const(0, i16))
            return [b.select(any_live, b.smin(start, first), start), b.select(any_live, b.smin(keys, b.add(first, b.const(16, i64))), stop)]

        start, stop = b.loop(b.const(0, i64), keys, [keys, b.const(0, i64)], scan, step=16)
        none_live = b.icmp("eq", stop, b.const(0, i64))
        return b.select(none_live, b.const(0, i64), start), b.select(none_live, keys, stop)

    def query_weights(self, query: SSAValue, d0: SSAValue, step: int) -> Callable[[int], SSAValue]:
        """The query's value d0 + u in every lane, for u below `step` (at most 16): from
        one vector of the step's values at a step of 8 or 16, else loaded one by one.
        Instruction selection makes both a broadcast from memory into the multiply-add,
        the same code, but a splat of each loaded value is three ops where a shuffle of
        the vector is one."""
        b = self.b
        if step < 8:
            return lambda u: b.splat(b.load(query, b.add(d0, b.const(u, i64)), f32), 16)
        values = b.load_lanes(b.element_ptr(query, d0, f32), vector(f32, step), None)
        return lambda u: b.shuffle(values, values, (u,) * 16)

    def tail_lanes(self, first: SSAValue) -> SSAValue:
        """The lanes of keys [first, first + 16) below T."""
        b = self.b
        return b.low_lanes(b.trunc(b.smin(b.sub(self.g["keys"], first), b.const(16, i64)), i32))

    def block(self, first: SSAValue, queries: list[SSAValue], masks: list[SSAValue] | None, state: list[SSAValue]) -> list[SSAValue]:
        """Keys [first, first + 16), those below T, for each row: state = per row m, l
        and the accumulators (m and l in every lane)."""
        b, g = self.b, self.g
        width = 2 + len(self.value_lanes)
        chains = max(1, PRODUCT_CHAINS // ROWS)
        # A masked load costs what a load does, so a block past T needs no body of its own.
        lanes = self.tail_lanes(first)
        step = math.gcd(self.key.depth, DEPTH_STEP)

        def depths(d0: SSAValue, carried: tuple[SSAValue, ...]) -> list[SSAValue]:
            columns, *flat = carried
            sums = _per_row(flat, chains)
            weights = [self.query_weights(query, d0, step) for query in queries]
            for u in range(step):
                # kt's rows a stride apart: an add from one to the next rather than a multiply each
                keys = b.load_lanes(columns, F32x16, lanes)
                columns = b.element_ptr(columns, g["kt_row"], f32)
                for r in range(ROWS):
                    sums[r][u % chains] = b.fmuladd(weights[r](u), keys, sums[r][u % chains])
            return [columns, *(vector for row in sums for vector in row)]

        start = [b.element_ptr(self.heads["kt"], first, f32), *[self.zero] * (chains * ROWS)]
        _, *flat = b.loop(b.const(0, i64), b.const(self.key.depth, i64), start, depths, step=step)
        larger = lambda x, y: b.select(b.fcmp("ogt", x, y), x, y)  # noqa: E731
        rows = _per_row(state, width)
        scores = []
        for r, chain_sums in enumerate(_per_row(flat, chains)):
            while len(chain_sums) > 1:
                chain_sums = [b.fadd(chain_sums[i], chain_sums[i + 1]) for i in range(0, len(chain_sums), 2)]
            row_scores = b.fmul(chain_sums[0], self.scale)
            if masks is not None:
                row_scores = b.fadd(row_scores, b.load_lanes(b.element_ptr(masks[r], first, f32), F32x16, lanes))
            scores.append(b.select(lanes, row_scores, self.lowest))
        # The rows' reductions share their shuffles, and their corrections (each the same
        # in every lane) one exp, a row's in each half of its lanes: 719 -> 663 lines of
        # IR, 128 x 128 attention 1.01x to 1.02x slower.
        maxima = b.lanes_combined(scores, larger)
        shifts, news, gaps = [], [], []
        for r, (most, *_rest) in enumerate(rows):
            new_most = larger(most, b.shuffle(maxima, maxima, (r,) * 16))
            # Every score so far -inf: count the maximum as 0, so c and p are 0, not NaN.
            shift = b.select(b.fcmp("oeq", new_most, self.lowest), self.zero, new_most)
            news.append(new_most)
            shifts.append(shift)
            gaps.append(b.fsub(most, shift))
        half = 16 // ROWS
        corrections = exp(b, b.gather_lanes(gaps, [16 * (lane // half) for lane in range(16)]))
        powers = [exp(b, b.fsub(row_scores, shift)) for row_scores, shift in zip(scores, shifts)]
        totals = b.lane_sums(powers)
        updated = []
        for r, (_most, total, *accumulators) in enumerate(rows):
            correction = b.shuffle(corrections, corrections, (half * r,) * 16)
            total = b.fmuladd(total, correction, b.shuffle(totals, totals, (r,) * 16))
            updated.append([news[r], total, *[b.fmul(acc, correction) for acc in accumulators]])
        sums = self.value_sums(first, powers, [row_state[2:] for row_state in updated])
        return [value for row_state, row_sums in zip(updated, sums) for value in (*row_state[:2], *row_sums)]

    def value_sums(self, first: SSAValue, powers: list[SSAValue], accumulators: list[list[SSAValue]]) -> list[list[SSAValue]]:
        """Each row's `accumulators` plus sum_j p_j v[first + j] over the block's keys
        below T (`powers`: each row's p), VALUE_STEP keys a step, then one at a time:
        no value row past T is read."""
        b, g = self.b, self.g
        for r, power in enumerate(powers):
            b.store_at(power, b.element_ptr(self.power_slots, b.const(16 * r, i64), f32), alignment=64)
        width = len(self.value_lanes)

        def keys_body(count: int) -> Callable[[SSAValue, tuple[SSAValue, ...]], list[SSAValue]]:
            def body(j: SSAValue, carried: tuple[SSAValue, ...]) -> list[SSAValue]:
                at, *flat = carried
                summed = _per_row(flat, width)
                for u in range(count):
                    summed = self.weighted_values(at, b.add(j, b.const(u, i64)), summed)
                    at = b.element_ptr(at, g["v_row"], f32)
                return [at, *(acc for row_sums in summed for acc in row_sums)]

            return body

        keys = b.smin(b.sub(g["keys"], first), b.const(16, i64))
        stepped = b.round_down(keys, VALUE_STEP)
        state = [b.element_ptr(self.heads["v"], b.mul(first, g["v_row"]), f32), *(acc for row_sums in accumulators for acc in row_sums)]
        state = b.loop(b.const(0, i64), stepped, state, keys_body(VALUE_STEP), step=VALUE_STEP)
        _, *flat = b.loop(stepped, keys, list(state), keys_body(1))
        return _per_row(flat, width)

    def weighted_values(self, values: SSAValue, j: SSAValue, accumulators: list[list[SSAValue]]) -> list[list[SSAValue]]:
        """Each row's accumulators plus its power of key j (from `power_slots`) times
        the key's value row at `values`. The power's broadcast comes from memory (into
        the multiply-add): from the register, shifted down a lane a key so each
        broadcast is of a constant lane, 128 x 128 attention ran 1.05x slower, the
        permutes taking a port from the multiply-adds."""
        b = self.b
        loaded = [b.load_lanes(b.element_ptr(values, b.const(16 * index, i64), f32), F32x16, lanes) for index, lanes in enumerate(self.value_lanes)]
        summed = []
        for r, sums in enumerate(accumulators):
            power = b.splat(b.load(self.power_slots, b.add(b.const(16 * r, i64), j), f32), 16)
            summed.append([b.fmuladd(power, value, acc) for value, acc in zip(loaded, sums)])
        return summed


def _per_row(flat: Sequence[SSAValue], width: int) -> list[list[SSAValue]]:
    """`flat`, the rows' values one row after another, as a list a row of `width`."""
    return [list(flat[first : first + width]) for first in range(0, len(flat), width)]
