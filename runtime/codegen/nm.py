"""n:m kernels: m - n kept values per run of m columns, with their positions; no mask."""

from __future__ import annotations

import math

from xdsl.dialects import llvm
from xdsl.dialects.builtin import IntegerType, f16, f32, i1, i8, i16, i32, i64
from xdsl.ir import SSAValue

from sparsec.runtime.codegen.base import F32x16, Kernel, Panel, panelled, tiled
from sparsec.runtime.codegen.batched import BatchedKernel
from sparsec.runtime.codegen.builder import vector


class NMKernel(Kernel):
    def position(self, index: SSAValue) -> SSAValue:
        """The kept position number `index`, decoded from the bit stream."""
        b, bits = self.b, self.key.position_bits
        if bits == 0:
            return b.const(0, i64)
        offset = b.mul(index, b.const(bits, i64))
        byte = b.lshr(offset, b.const(3, i64))
        word = b.load_at(b.element_ptr(self.a1, byte, i8), i16, alignment=1)
        shifted = b.lshr(b.zext(word, i64), b.and_(offset, b.const(7, i64)))
        return b.and_(shifted, b.const((1 << bits) - 1, i64))

    @property
    def runs(self) -> int:
        return math.ceil(self.key.cols / self.key.m)

    def sum_runs(self, row: SSAValue, batch_row: SSAValue, first_run: SSAValue, acc: SSAValue) -> SSAValue:
        """acc + the products of runs [first_run, runs) of `row` with batch row `batch_row`."""
        b, key = self.b, self.key
        kept = key.m - key.n
        ragged = key.cols % key.m != 0

        def run_body(run: SSAValue, state) -> list[SSAValue]:
            (acc,) = state
            first = b.mul(b.add(b.mul(row, b.const(self.runs, i64)), run), b.const(kept, i64))
            col_base = b.mul(run, b.const(key.m, i64))

            def slot_body(slot: SSAValue, inner) -> list[SSAValue]:
                (total,) = inner
                index = b.add(first, slot)
                col = b.add(col_base, self.position(index))
                if ragged:  # the last run's padding slots hold zeros past column K
                    inside = b.icmp("slt", col, b.const(key.cols, i64))
                    col = b.select(inside, col, b.const(0, i64))
                product = b.fmuladd(self.value(self.a0, index), self.x_at(batch_row, col), total)
                if ragged:
                    product = b.select(inside, product, total)
                return [product]

            return list(b.loop(b.const(0, i64), b.const(kept, i64), [acc], slot_body))

        (acc,) = b.loop(first_run, b.const(self.runs, i64), [acc], run_body)
        return acc

    def build(self) -> llvm.FuncOp:
        def row_body(row: SSAValue, _state) -> list[SSAValue]:
            self.finish(self.sum_runs(row, self.batch_row, self.b.const(0, i64), self.b.const(0.0, f32)), row, self.batch_row)
            return []

        return self.for_each_row(row_body)


class VectorNMKernel(NMKernel):
    """The n:m kernel on 16 lanes, for m and kept-per-run dividing 16 on AVX-512.

    One step takes 16 consecutive kept values (contiguous float16, no mask) and their 16
    positions (one word of a2, see operands.py), which span `nm_span` columns. Lane l
    needs the input at column base_l + position_l, where base_l is its run's start; the
    span is read as 32-column chunks, and an AVX-512 two-source permute (vpermi2ps)
    picks each lane's input from its chunk, so the step is one multiply-add of 16
    useful products. Each step is decoded once for a tile of TILE batch rows. Runs past
    the last whole step go through the scalar code.

    A batch of one row takes the weight rows ROW_GROUP at a time instead, each step's
    inputs loaded once for the group: the loads of the inputs, not the arithmetic, bound
    a step on Zen 4, where the MLP block's layers (3072x768, 768x3072 at 3:4) took 0.068
    and 0.064 ms one row at a time, 0.056 and 0.053 in groups.

    Values and position words are prefetched ahead: a group's rows lie one after the
    other, so the rows ROW_GROUP further on (the panelled variant: the next row's, see
    ColumnStepKernel.prefetch_next_row; a lone row: PREFETCH_BYTES of values ahead). On
    AMD Zen 4 the hardware prefetcher leaves these streams at half the bandwidth:
    11008x4096 at 3:4 took 2.4-3.4 ms without, 1.3-1.4 with (2:4: 4.6, 2.4); in groups
    1.0-1.1 (2:4: 2.0-2.2, where one prefetch walking all four rows' values left it at
    2.9-3.5)."""

    TILE = 4
    ROW_GROUP = 4
    EXPLICIT_VECTORS = True
    PREFETCH_BYTES = 2048

    def build(self) -> llvm.FuncOp:
        if self.key.panelled or self.key.paired:  # (variants for several batch rows)
            return panelled(self, self.TILE, self.key.nm_span, self.tile_body)
        if self.key.group_tiles:
            self.group_tiles()
            return self.ret()
        b, key = self.b, self.key
        grouped_end = b.add(self.begin, b.round_down(b.sub(self.end, self.begin), self.ROW_GROUP))
        single = b.icmp("eq", self.batch, b.const(1, i64))
        planes = b.alloca(self.plane_floats, f32) if key.lane_planes else None

        def groups() -> None:
            if planes is not None:
                self.fill_planes(planes, self.x)
            b.loop(self.begin, grouped_end, [], lambda row, _state: self.group_body(row, planes, [(b.const(0, i64), None)]) or [], step=self.ROW_GROUP)

        self.only_if(single, groups)
        rest = b.select(single, grouped_end, self.begin)
        return tiled(self, self.TILE, lambda row, first, size: self.tile_body(row, first, size, None), rest)

    def group_tiles(self) -> None:
        """The group-tile variant: the batch `group_tiles` rows at a time, a last,
        partial tile reading the last batch row in place of those past it (`tile_rows`;
        the executor runs the rows past the whole tiles as a call of their own, but for
        three rows in a tile of four). With lane planes each tile fills its rows' planes
        on the stack first; otherwise its rows' windows are read in place."""
        b, tile = self.b, self.key.group_tiles
        planes = b.alloca(tile * self.plane_floats, f32) if self.key.lane_planes else None
        b.loop(b.const(0, i64), self.batch, [], lambda first, _state: self.group_tile(planes, first, tile) or [], step=tile)

    def group_tile(self, planes: SSAValue | None, first_batch_row: SSAValue, size: int) -> None:
        """A tile of `size` batch rows from `first_batch_row`: their planes (if any),
        then every row of [begin, end) in groups of ROW_GROUP. A group past the weight's
        last rows moves back to end there, and drops the outputs of the rows it takes
        twice (or of the next share's): no rows are left for another code path."""
        b, key = self.b, self.key
        batch_rows = self.tile_rows(first_batch_row, size)

        def fill(index: SSAValue, _state) -> list[SSAValue]:
            batch_row = b.smin(b.add(first_batch_row, index), b.sub(self.batch, b.const(1, i64)))
            x_row = b.element_ptr(self.x, b.mul(batch_row, b.const(key.cols, i64)), f32)
            self.fill_planes(b.element_ptr(planes, b.mul(index, b.const(self.plane_floats, i64)), f32), x_row)
            return []

        def group(first_row: SSAValue, _state) -> list[SSAValue]:
            start = b.smin(first_row, b.const(key.rows - self.ROW_GROUP, i64))
            self.group_body(start, planes, batch_rows, (first_row, self.end))
            return []

        if planes is not None:
            b.loop(b.const(0, i64), b.const(size, i64), [], fill)
        b.loop(self.begin, self.end, [], group, step=self.ROW_GROUP)

    def partial_tile_from(self) -> int:
        """A 4-row tile costs 1.8x (2:4) to 3x (7:8) one row: 3 rows ran 1.1x to 1.6x
        as fast as a partial tile as one at a time on 4096x4096 and 11008x4096 (0.98x
        to 1.2x on the MLP block's layers); 2 rows ran slower but at 2:4, and the
        paired variant takes them."""
        return 3

    @property
    def steps(self) -> int:
        return self.key.cols // self.key.nm_span

    @property
    def plane_floats(self) -> int:
        """The floats of one batch row's planes (`fill_planes`): m vectors a step."""
        return self.steps * self.key.m * 16

    def row_streams(self, row: SSAValue) -> tuple[SSAValue, SSAValue]:
        """Where `row`'s kept values and its step words start."""
        b, key = self.b, self.key
        values = b.element_ptr(self.a0, b.mul(row, b.const(self.runs * (key.m - key.n), i64)), i16)
        words = b.element_ptr(self.a2, b.mul(row, b.const(self.steps, i64)), IntegerType(key.nm_word_bits))
        return values, words

    def add_tail(self, total: SSAValue, row: SSAValue, batch_row: SSAValue, panel: Panel | None) -> SSAValue:
        """`total` plus the runs past the last whole step (in the last panel only)."""
        b, key = self.b, self.key
        tail_run = self.steps * key.nm_span // key.m
        if tail_run == self.runs:
            return total
        tail = b.const(tail_run, i64)
        if panel is not None:
            tail = b.select(panel.last(b, key), tail, b.const(self.runs, i64))
        return self.sum_runs(row, batch_row, tail, total)

    def group_body(
        self, first_row: SSAValue, planes: SSAValue | None, batch_rows: list[tuple[SSAValue, SSAValue | None]], stored: tuple[SSAValue, SSAValue] | None = None
    ) -> None:
        """Weight rows [first_row, first_row + ROW_GROUP) times `batch_rows` (each with
        whether it is inside the batch: `tile_rows`), storing the outputs of the rows
        within `stored` [first, end) (all when None). The rows lie one after another, so
        each row's streams are at constant distances from the first row's, and the loop
        carries one pointer per stream (values, words, inputs) rather than indexing
        each, which left LLVM's loop strength reduction to find those pointers (about
        0.5 ms of the kernel's compile time).

        A step's inputs load once for the group: the window of its columns, from which
        each row permutes its lanes' inputs by its position word; or, with `planes`
        (`lane_planes`, `fill_planes`: a tile's rows' planes one after another), the m
        planes, from which each row blends them by the bits of its positions (a 16-bit
        mask a bit, loaded into a mask register: m - 1 blends; at 3:4 five vector
        operations a row and step against nine, 3072x768 0.057 -> 0.047 ms; at 7:8 nine
        against thirteen, 0.061 -> 0.039 ms). A row's step is decoded (its values
        widened, its masks loaded) once for the tile's batch rows."""
        b, key = self.b, self.key
        group, kept = self.ROW_GROUP, key.m - key.n
        rows = [b.add(first_row, b.const(j, i64)) for j in range(group)]
        values, words = self.row_streams(first_row)
        words_type = IntegerType(key.nm_word_bits)
        tile = len(batch_rows)
        if planes is None:  # the batch rows' inputs in place, at distances from the first's
            inputs = b.element_ptr(self.x, b.mul(batch_rows[0][0], b.const(key.cols, i64)), f32)
            inputs_stride = key.nm_span
            first_batch_row = batch_rows[0][0]
            batch_offsets = [b.const(0, i64)] + [b.mul(b.sub(batch_row, first_batch_row), b.const(key.cols, i64)) for batch_row, _ in batch_rows[1:]]
        else:  # the lane masks come after every row's step words
            words = b.element_ptr(words, b.const(key.rows * self.steps, i64), words_type)
            inputs, inputs_stride = planes, 16 * key.m
            batch_offsets = [b.const(r * self.plane_floats, i64) for r in range(tile)]
        row_values = self.runs * kept

        def step_body(_step: SSAValue, state) -> list[SSAValue]:
            accs, (values_at, words_at, inputs_at, words_ahead) = state[: group * tile], state[group * tile :]
            # The next group's rows follow this group's: each row prefetches the values of
            # the row ROW_GROUP on; their words, one a row a step, are walked ROW_GROUP
            # words a step from the next group's first row's.
            b.prefetch(words_ahead)
            decoded = []
            for j in range(group):
                row_values_at = b.element_ptr(values_at, b.const(j * row_values, i64), i16)
                b.prefetch(b.element_ptr(row_values_at, b.const(group * row_values, i64), i16))
                weights = self.widened_at(row_values_at)
                row_words_at = b.element_ptr(words_at, b.const(j * self.steps, i64), words_type)
                picks = self.lane_columns(b.load_at(row_words_at, words_type)) if planes is None else self.lane_masks(row_words_at)
                decoded.append((weights, picks))
            updated = []
            for r in range(tile):
                batch_inputs_at = b.element_ptr(inputs_at, batch_offsets[r], f32)
                step_inputs = self.window_at(batch_inputs_at) if planes is None else self.planes_at(batch_inputs_at)
                for j, (weights, picks) in enumerate(decoded):
                    picked = self.pick(step_inputs, picks) if planes is None else self.plane_pick(step_inputs, picks)
                    updated.append(b.fmuladd(weights, picked, accs[r * group + j]))
            strides = [(values_at, 16, i16), (words_at, 1, words_type), (inputs_at, inputs_stride, f32), (words_ahead, group, words_type)]
            return updated + [b.element_ptr(at, b.const(stride, i64), ty) for at, stride, ty in strides]

        zero = b.vector_const([0.0] * 16, f32)
        words_ahead = b.element_ptr(words, b.const(group * self.steps, i64), words_type)
        state = b.loop(b.const(0, i64), b.const(self.steps, i64), [zero] * (group * tile) + [values, words, inputs, words_ahead], step_body)
        accs = list(state[: group * tile])
        if self.steps * key.nm_span < key.cols:  # runs past the last step: a scalar tail a row
            self.store_rows_each(rows, batch_rows, b.sum_lanes_each(accs), stored)
        else:
            self.store_groups(first_row, batch_rows, b.lane_sums(accs), stored)

    def store_rows_each(self, rows: list[SSAValue], batch_rows: list[tuple[SSAValue, SSAValue | None]], totals: list[SSAValue], stored: tuple[SSAValue, SSAValue] | None) -> None:
        """A group's outputs one at a time, each with its row's runs past the last step
        added (`group_body`)."""
        b = self.b
        row_stored = [None if stored is None else b.and_(b.icmp("sge", row, stored[0]), b.icmp("slt", row, stored[1])) for row in rows]
        for r, (batch_row, inside) in enumerate(batch_rows):
            for row, kept, total in zip(rows, row_stored, totals[r * len(rows) : (r + 1) * len(rows)]):
                self.finish_if(b.all_of(kept, inside), self.add_tail(total, row, batch_row, None), row, batch_row)

    def store_groups(self, first_row: SSAValue, batch_rows: list[tuple[SSAValue, SSAValue | None]], sums: SSAValue, stored: tuple[SSAValue, SSAValue] | None) -> None:
        """A group's outputs, ROW_GROUP consecutive ones a batch row (`group_body`), in
        one vector store each, under a lane mask where some are not stored."""
        b, key, group = self.b, self.key, self.ROW_GROUP
        rows_kept = None
        if stored is not None:
            rows = b.add(b.splat(first_row, group), b.vector_const(list(range(group)), i64))
            rows_kept = b.and_(b.icmp("sge", rows, b.splat(stored[0], group)), b.icmp("slt", rows, b.splat(stored[1], group)))
        for r, (batch_row, inside) in enumerate(batch_rows):
            lanes = b.all_of(rows_kept, None if inside is None else b.splat(inside, group))
            at = b.element_ptr(self.y, b.add(b.mul(batch_row, b.const(key.rows, i64)), first_row), f32)
            b.store_lanes(b.lanes(sums, r * group, group), at, lanes)

    def fill_planes(self, planes: SSAValue, x_row: SSAValue) -> None:
        """The planes of the batch row at `x_row` for `group_body`: per step, m vectors,
        plane p holding at lane l the input at its run's column p (lane l of a step is
        in run l // kept)."""
        b, key = self.b, self.key
        kept, span = key.m - key.n, key.nm_span
        lanes = [[key.m * (lane // kept) + p for lane in range(16)] for p in range(key.m)]

        def step_body(_step: SSAValue, state) -> list[SSAValue]:
            x_at, planes_at = state
            window = [b.load_at(b.element_ptr(x_at, b.const(16 * q, i64), f32), F32x16, alignment=4) for q in range(span // 16)]
            for p, indices in enumerate(lanes):
                b.store_at(b.gather_lanes(window, indices), b.element_ptr(planes_at, b.const(16 * p, i64), f32), alignment=4)
            return [b.element_ptr(x_at, b.const(span, i64), f32), b.element_ptr(planes_at, b.const(16 * key.m, i64), f32)]

        b.loop(b.const(0, i64), b.const(self.steps, i64), [x_row, planes], step_body)

    def planes_at(self, at: SSAValue) -> list[SSAValue]:
        """A step's m planes from `at`."""
        b = self.b
        return [b.load_at(b.element_ptr(at, b.const(16 * p, i64), f32), F32x16, alignment=4) for p in range(self.key.m)]

    def lane_masks(self, masks_at: SSAValue) -> list[SSAValue]:
        """A row's step's lane masks at `masks_at`, one a position bit, lowest first."""
        b = self.b
        loads = [b.load_at(b.element_ptr(masks_at, b.const(2 * bit, i64), i8), i16, alignment=2) for bit in range(self.key.position_bits)]
        return [b.bitcast(mask, vector(i1, 16)) for mask in loads]

    def plane_pick(self, inputs: list[SSAValue], masks: list[SSAValue]) -> SSAValue:
        """Each lane's input from `inputs` (m planes) at its position, whose bits are
        `masks` (`lane_masks`)."""
        b = self.b
        for mask in masks:
            inputs = [b.select(mask, high, low) for low, high in zip(inputs[::2], inputs[1::2])]
        return inputs[0]

    def tile_body(self, row: SSAValue, tile: SSAValue, size: int, panel: Panel | None) -> None:
        """Weight row `row` times `size` consecutive batch rows from `tile` on: all its
        columns, stored in y, or (`panel`) those of one column panel, added into y; the
        runs past the last whole step go with the last panel."""
        b, key = self.b, self.key
        if panel is None:
            first_step, last_step = b.const(0, i64), b.const(self.steps, i64)
        else:
            span = b.const(key.nm_span, i64)
            first_step = b.udiv(panel.first, span)
            last_step = b.smin(b.udiv(panel.end, span), b.const(self.steps, i64))
        batch_rows = self.tile_rows(tile, size)
        x_rows = [b.element_ptr(self.x, b.mul(batch_row, b.const(key.cols, i64)), f32) for batch_row, _ in batch_rows]
        values, words = self.row_streams(row)
        if key.panelled:  # the next row's weights for this step
            ahead = self.runs * (key.m - key.n), self.steps
        else:  # a step takes 16 values of two bytes
            ahead = self.PREFETCH_BYTES // 2, self.PREFETCH_BYTES // 32

        words_type = IntegerType(key.nm_word_bits)

        def step_body(_step: SSAValue, state) -> list[SSAValue]:
            accs, (values_at, words_at, *x_ats) = state[:size], state[size:]
            b.prefetch(b.element_ptr(values_at, b.const(ahead[0], i64), i16))
            b.prefetch(b.element_ptr(words_at, b.const(ahead[1], i64), words_type))
            weights, columns = self.decode_at(values_at, words_at)
            updated = [b.fmuladd(weights, self.pick(self.window_at(x_at), columns), acc) for x_at, acc in zip(x_ats, accs)]
            advanced = [b.element_ptr(values_at, b.const(16, i64), i16), b.element_ptr(words_at, b.const(1, i64), words_type)]
            return updated + advanced + [b.element_ptr(x_at, b.const(key.nm_span, i64), f32) for x_at in x_ats]

        zero = b.vector_const([0.0] * 16, f32)
        starts = [b.element_ptr(values, b.mul(first_step, b.const(16, i64)), i16), b.element_ptr(words, first_step, words_type)]
        x_starts = [b.element_ptr(x_row, b.mul(first_step, b.const(key.nm_span, i64)), f32) for x_row in x_rows]
        accs = b.loop(first_step, last_step, [zero] * size + starts + x_starts, step_body)[:size]
        for (batch_row, inside), total in zip(batch_rows, b.sum_lanes_each(list(accs))):
            total = self.add_tail(total, row, batch_row, panel)
            self.only_if(inside, lambda total=total, batch_row=batch_row: self.finish_panel(total, row, batch_row, panel))

    def decode_at(self, values_at: SSAValue, word_at: SSAValue) -> tuple[SSAValue, SSAValue]:
        """The 16 weights, widened, of the step whose values and position word are at
        `values_at` and `word_at`, and each lane's column within its 32-column chunk."""
        columns = self.lane_columns(self.b.load_at(word_at, IntegerType(self.key.nm_word_bits)))
        return self.widened_at(values_at), columns

    def widened_at(self, values_at: SSAValue) -> SSAValue:
        """The 16 float16 values at `values_at`, widened."""
        b = self.b
        return b.fpext(b.load_at(values_at, vector(f16, 16), alignment=2), F32x16)

    def lane_columns(self, word: SSAValue) -> SSAValue:
        """Each lane's column within its 32-column chunk, from the step's position word."""
        b, key = self.b, self.key
        kept, bits = key.m - key.n, key.position_bits
        wide = IntegerType(key.nm_word_bits)
        shifted = b.lshr(b.splat(word, 16), b.vector_const([bits * lane for lane in range(16)], wide))
        if key.nm_word_bits != 32:
            shifted = b.trunc(shifted, vector(i32, 16))
        positions = b.and_(shifted, b.vector_const([key.m - 1] * 16, i32))
        return b.add(positions, b.vector_const([(lane // kept) * key.m % 32 for lane in range(16)], i32))

    def window_at(self, at: SSAValue) -> list[tuple[SSAValue, SSAValue]]:
        """The `nm_span` inputs from `at`, as (low, high) vector pairs of 32 columns."""
        b = self.b
        vectors = [b.load_at(b.element_ptr(at, b.const(16 * q, i64), f32), F32x16, alignment=4) for q in range(self.key.nm_span // 16)]
        return list(zip(vectors[::2], vectors[1::2]))

    def pick(self, window: list[tuple[SSAValue, SSAValue]], columns: SSAValue) -> SSAValue:
        """Each lane's input: from its run's chunk of `window`, at its column there."""
        b, key = self.b, self.key
        kept = key.m - key.n
        chunk_of_lane = [(lane // kept) * key.m // 32 for lane in range(16)]
        inputs = None
        for chunk, (low, high) in enumerate(window):
            picked = b.intrinsic("llvm.x86.avx512.vpermi2var.ps.512", [low, columns, high], F32x16)
            if inputs is None:
                inputs = picked
            else:
                in_chunk = b.vector_const([int(c == chunk) for c in chunk_of_lane], i1)
                inputs = b.select(in_chunk, picked, inputs)
        return inputs


class BatchedNMKernel(BatchedKernel, NMKernel):
    """Batched n:m: a panel's products are its runs' kept slots, in order. Their columns
    come 16 at a time from the 16-lane layout's step words for the row's whole steps
    (KernelKey.nm_lanes), and one slot at a time from the packed stream for the rest,
    leaving out the padding slots of a ragged last run. An implicit convolution's
    decoder writes input offsets rather than columns (`decodes_offsets`)."""

    @property
    def decodes_offsets(self) -> bool:
        return bool(self.key.window)

    def decode(self, row: SSAValue, panel: SSAValue) -> SSAValue:
        b, key = self.b, self.key
        kept, runs_per_panel = key.m - key.n, key.panel_columns // key.m
        first_run = b.mul(panel, b.const(runs_per_panel, i64))
        last_run = b.smin(b.add(first_run, b.const(runs_per_panel, i64)), b.const(self.runs, i64))
        panel_slot = b.mul(first_run, b.const(kept, i64))  # the panel's first kept slot within the row
        first = b.add(b.mul(row, b.const(self.runs * kept, i64)), panel_slot)
        if key.cols % key.panel_columns == 0:  # every panel is whole: a constant trip count for LLVM
            count = b.const(runs_per_panel * kept, i64)
        else:
            count = b.mul(b.sub(last_run, first_run), b.const(kept, i64))
        ahead = b.mul(b.sub(self.row_ahead(row), row), b.const(self.runs * kept, i64))
        b.prefetch(b.element_ptr(self.a0, b.add(first, ahead), self.value_type), 4)
        if not key.nm_lanes:
            return self.slot_columns(first, first_run, count, b.const(0, i64))
        # The panel's slots in the row's whole steps (a multiple of 16), then the rest.
        if key.cols % key.nm_span == 0:
            stepped = count
        else:
            row_steps_slots = b.const(key.cols // key.nm_span * 16, i64)
            stepped = b.smin(b.smax(b.sub(row_steps_slots, panel_slot), b.const(0, i64)), count)
        self.widen_values(b.element_ptr(self.a0, first, self.value_type), stepped)
        self.step_columns(row, first_run, panel_slot, stepped)
        rest_run = b.add(first_run, b.udiv(stepped, b.const(kept, i64)))
        return self.slot_columns(b.add(first, stepped), rest_run, b.sub(count, stepped), stepped)

    def step_columns(self, row: SSAValue, first_run: SSAValue, panel_slot: SSAValue, count: SSAValue) -> None:
        """Columns (or input offsets) of slots [0, count) (a multiple of 16), a step word
        of 16 positions at a time."""
        b, key = self.b, self.key
        kept, wide = key.m - key.n, IntegerType(key.nm_word_bits)
        words = b.element_ptr(self.a2, b.mul(row, b.const(key.cols // key.nm_span, i64)), wide)
        shifts = b.vector_const([key.position_bits * lane for lane in range(16)], wide)
        run_starts = b.vector_const([(lane // kept) * key.m for lane in range(16)], i32)
        # Each lane's run start, carried from step to step (a step spans nm_span columns).
        first_bases = b.add(b.splat(b.trunc(b.mul(first_run, b.const(key.m, i64)), i32), 16), run_starts)

        def step_body(slot: SSAValue, state) -> list[SSAValue]:
            (bases,) = state
            word = b.load(words, b.lshr(b.add(panel_slot, slot), b.const(4, i64)), wide)
            shifted = b.lshr(b.splat(word, 16), shifts)
            if key.nm_word_bits != 32:
                shifted = b.trunc(shifted, vector(i32, 16))
            columns = b.add(bases, b.and_(shifted, b.vector_const([key.m - 1] * 16, i32)))
            b.store_at(self.offsets_of(columns) if self.decodes_offsets else columns, b.element_ptr(self.columns, slot, i32), alignment=4)
            return [b.add(bases, b.vector_const([key.nm_span] * 16, i32))]

        # Unrolled where the count is a constant: a batched row's decode ran 0.72x as fast rolled up.
        b.loop(b.const(0, i64), count, [first_bases], step_body, step=16, unrolled=True)

    def slot_columns(self, first: SSAValue, first_run: SSAValue, count: SSAValue, start: SSAValue) -> SSAValue:
        """Column (or input offset) and value of slots [0, count) one at a time, written
        from index `start` on; returns the index after the last written (the padding
        slots of a ragged last run, past column K, are not)."""
        b, key = self.b, self.key
        kept = key.m - key.n

        def slot_body(slot: SSAValue, state) -> list[SSAValue]:
            (written,) = state
            index = b.add(first, slot)
            run = b.add(first_run, b.udiv(slot, b.const(kept, i64)))
            column = b.add(b.mul(run, b.const(key.m, i64)), self.position(index))
            b.store(self.offset_of(column) if self.decodes_offsets else b.trunc(column, i32), self.columns, written)
            b.store(self.value(self.a0, index), self.weights, written)
            if key.cols % key.m == 0:
                return [b.add(written, b.const(1, i64))]
            return [b.add(written, b.zext(b.icmp("slt", column, b.const(key.cols, i64)), i64))]

        (written,) = b.loop(b.const(0, i64), count, [start], slot_body)
        return written
