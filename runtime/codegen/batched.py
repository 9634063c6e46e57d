"""The batched kernel structure (from 4 to 13 batch rows on, KernelKey.batched_from): work
in proportion to the non-zeros, on transposed activations. bitmask.py and nm.py say how
a panel's products are decoded; block.py has a batched kernel of its own, whose kept
blocks need no decoding."""

from __future__ import annotations

import functools

from xdsl.dialects import llvm
from xdsl.dialects.builtin import f16, f32, i1, i16, i32, i64
from xdsl.ir import SSAValue

from sparsec.kernels import DECODED_MAX_BYTES, ROW_GROUP, epilogue_activation
from sparsec.runtime.codegen.base import F32x16, Kernel
from sparsec.runtime.codegen.builder import vector


class BatchedKernel(Kernel):
    """Kernels for larger batches, with the work proportional to the non-zeros: x is
    the transposed input ((K + 1) x P, P a multiple of 16 holding the batch zero-padded,
    row K all zeros) and y the transposed output (N x P: the first panel stores, the
    others add, so y needs no zeroing), so one weight multiplies 16 batch rows' inputs
    at its column in one vector multiply-add. `batch` is P.

    Rows go in groups of ROW_GROUP; a group's weight is taken one column panel
    (KernelKey.panel_columns) at a time for all its rows, adding into y: the inputs a
    panel reads (panel x P floats) stay in L1 instead of streaming all K x P from L2 for
    every row. Bias and activation follow in one pass at the end.

    A row's products in a panel are first decoded into two small stack arrays, their
    columns and their values widened to float32 (`decode`, vectorized: a compress
    of column numbers per mask word, 16 values widened at a time); the batch then goes
    64 lanes (four vectors, on AVX-512) at a time, then 32 and 16, through a plain loop
    over those arrays: per product, a column load, a broadcast value and one
    multiply-add per vector, rotating over `ways` sets of accumulators so that enough
    multiply-adds are in flight. The arrays are followed by products that add nothing
    (weight 0 at the zero row K), so a loop runs to a whole number of rounds with no
    remainder loop. Decoding once per panel row serves every lane tile, and the kernel
    is small enough to compile about as fast as the others. Where a store is final
    (one column panel) it applies the bias and activation itself (`fuses_epilogue`).

    Four vectors a product halve the column loads and broadcasts per multiply-add of
    two, and need fewer accumulator sets to sum at the end: a small implicit 1x1
    convolution (34 channels to 34, 784 positions) spent a sixth of its time summing
    eight accumulators for three rounds of products."""

    WAYS = 4
    """The most accumulator sets a lane tile rotates over (`ways`)."""
    PREFETCH_ROWS = 4
    VECTOR_EPILOGUE = False
    EXPLICIT_VECTORS = True

    def build(self) -> llvm.FuncOp:
        b = self.b
        # 16 slots of slack: decoding writes whole vectors past the last product.
        self.columns = b.alloca(self.key.panel_columns + 16, i32)
        self.weights = b.alloca(self.key.panel_columns + 16, f32)
        if self.sorts_by_shift:
            self.sorted_columns = b.alloca(len(self.distinct_shifts) * self.sort_stride, i32)
            self.sorted_weights = b.alloca(len(self.distinct_shifts) * self.sort_stride, f32)
        if self.key.window and self.key.window[0] > 1:
            self.offset_table()
        if self.decodes_once:
            entries = self.key.rows * self.key.panels
            self.decoded = (b.alloca(entries * self.decoded_slots, i32), b.alloca(entries * self.decoded_slots, f32), b.alloca(entries, i64))
        self.lane_chunks(self.chunk_pass)
        return self.ret()

    def lane_chunks(self, chunk_pass) -> None:
        """`chunk_pass(first, last)` for each chunk of KernelKey.lane_chunk lanes, on the
        rows `chunk_rows`, then the chunk's epilogue while its outputs are still in
        cache; an implicit variant prefetches the next chunk's inputs first, and its
        outputs row by row as `chunk_pass` goes (`prefetch_outputs`). Units [begin, end)
        are the rows (of all lanes), or the lane chunks (on all rows) where the key
        `splits_lanes`."""
        b, key = self.b, self.key
        if key.splits_lanes:
            self.chunk_rows = (b.const(0, i64), b.const(key.rows, i64))
            start, stop = (b.mul(unit, b.const(key.lane_chunk, i64)) for unit in (self.begin, self.end))
        else:
            self.chunk_rows = self.output_rows()
            start, stop = b.const(0, i64), self.batch
        if self.decodes_once:
            self.decode_rows()

        def chunk_body(first: SSAValue, _state) -> list[SSAValue]:
            last = b.smin(b.add(first, b.const(key.lane_chunk, i64)), self.batch)
            if key.window:
                self.next_chunk = (last, b.icmp("slt", last, stop))
                self.prefetch_inputs(last)
            chunk_pass(first, last)
            if key.epilogue != "none" and not self.fuses_epilogue:
                self.batch_epilogue(first, last)
            return []

        b.loop(start, stop, [], chunk_body, step=key.lane_chunk)

    def prefetch_inputs(self, first: SSAValue) -> None:
        """Prefetch the next chunk's lanes from `first` on of each input channel: the
        spans its taps read (KernelKey.tap_spans). Lanes of one row lie a plane apart
        (tens of KiB at 56 x 56), hundreds of short streams no hardware prefetcher
        follows."""
        b, key = self.b, self.key

        def channel_body(channel: SSAValue, _state) -> list[SSAValue]:
            at = b.element_ptr(self.x, b.add(b.mul(channel, b.const(key.channel_floats, i64)), first), f32)
            for offset, floats in key.tap_spans(key.lane_chunk):
                b.prefetch(b.element_ptr(at, b.const(offset, i64), f32), -(-floats * 4 // 64), keep=2)
            return []

        b.loop(b.const(0, i64), b.const(key.cols // key.window[0] * key.groups, i64), [], channel_body)

    def prefetch_outputs(self, row: SSAValue, when: SSAValue | None = None) -> None:
        """In an implicit variant, prefetch output row `row`'s lanes of the next chunk,
        to be written, (where `when` holds) where that chunk is this call's. Without
        it the outputs of a 1x1 convolution took 3x as long in a network as in a loop
        over the one layer. A chunk pass asks once a row as it reaches it, so the
        prefetches go out spread over the chunk's work: every row's at the chunk's
        start, a burst of rows x 16 lines, held the fill buffers while the chunk's own
        loads waited (ResNet50 at n:m 3:4, 64 -> 256 1x1 at 56 x 56: 1.03 -> 0.70 ms;
        the network 1.07x). A chunk past the call's, split by lanes, is another
        thread's to write, so its lines are left alone (taking them for writing cost 3
        to 8% on two threads: 256 -> 64 1x1 at 56 x 56, 0.56 -> 0.53 ms)."""
        b = self.b
        first, own = self.next_chunk
        lines = self.key.lane_chunk * 4 // 64
        self.only_if(own if when is None else b.and_(own, when), lambda: b.prefetch(b.element_ptr(self.y, b.add(b.mul(row, self.batch), first), f32), lines, write=True))

    @property
    def fuses_epilogue(self) -> bool:
        """Whether bias and activation are applied as the outputs are stored, rather than
        in a pass of their own after each lane chunk: where one store is final, a weight
        of one column panel, and the activation is cheap (a Gelu at every store of
        every lane tile made a block 8 kernel's compile take twice as long)."""
        return self.key.panels == 1 and self.cheap_epilogue

    @property
    def cheap_epilogue(self) -> bool:
        return epilogue_activation(self.key.epilogue) in (None, "relu")

    def lane_tiles(self, first: SSAValue, last: SSAValue, body, widths: tuple[int, ...] = (2, 1)) -> None:
        """`body(lane, vectors)` over lanes [first, last) of a lane chunk: 16 x widths[0]
        lanes at a time, then each narrower width in turn for what is left (only the
        widths some chunk takes, `widths_used`)."""
        b = self.b
        widths = self.widths_used(widths)
        start = first
        for vectors in widths:
            stop = last if vectors == widths[-1] else b.add(start, b.round_down(b.sub(last, start), 16 * vectors))
            b.loop(start, stop, [], lambda lane, _s, v=vectors: body(lane, v) or [], step=16 * vectors)
            start = stop

    def widths_used(self, widths: tuple[int, ...]) -> tuple[int, ...]:
        """The lane tile widths (vectors, widest first) that some lane chunk takes where
        every call has the same lanes (KernelKey.lanes: chunks of `lane_chunk` lanes,
        then what is left), else all of them. A chunk takes whole tiles of each width
        in turn from what the wider ones left, so a width that no chunk takes changes
        no tile when left out, and the narrowest one kept ends the chunk. Half of an
        implicit block kernel's IR was its two narrower tiles.

        The last chunk's lanes, where it is shorter, take the narrowest tile alone
        where they would need two widths more: those take under one chunk's lanes of
        the call's (ResNet50's 3x3 convolutions at 56 x 56: 3248 lanes, 48 past the
        last whole chunk of 64, as three 16-lane tiles rather than a 32- and a 16-lane
        one), and each width is a tile body to generate and compile (805 -> 619 lines
        of IR, 55 -> 42 ms cold)."""
        lanes, chunk = self.key.lanes, self.key.lane_chunk
        if not lanes:
            return widths
        used = {widths[0], *_tiles_taken(min(lanes, chunk), widths)}
        rest = _tiles_taken(lanes % chunk if lanes > chunk else 0, widths) - used
        if len(rest) > 1:
            rest = {widths[-1]}
        return tuple(vectors for vectors in widths if vectors in used | rest)

    @property
    def product_widths(self) -> tuple[int, ...]:
        """The lane tiles of `multiply`, in vectors: on AVX-512 (32 registers) four
        vectors first, whose products each load their column and weight once for four
        multiply-adds, needing fewer accumulator sets (`ways`); two vectors elsewhere."""
        return (4, 2, 1) if self.key.avx512 else (2, 1)

    def ways(self, vectors: int) -> int:
        """Accumulator sets for a tile of `vectors`: enough independent multiply-add
        chains to cover their latency, 8 (4 on AMD Zen, whose 16-lane multiply-adds
        issue one a cycle); fewer sets leave fewer to add up at the end and fewer
        products to pad."""
        chains = 4 if self.key.tuning == "zen" else 8
        return max(1, min(self.WAYS, chains // vectors))

    def chunk_pass(self, first_lane: SSAValue, last_lane: SSAValue) -> None:
        """The products of every row of `chunk_rows` on lanes [first_lane, last_lane),
        in groups of ROW_GROUP rows."""
        b = self.b
        first, last = self.chunk_rows

        def group_body(first_row: SSAValue, _state) -> list[SSAValue]:
            last_row = b.smin(b.add(first_row, b.const(ROW_GROUP, i64)), last)

            def panel_body(panel: SSAValue, _inner) -> list[SSAValue]:
                first_panel = b.icmp("eq", panel, b.const(0, i64))

                def row_body(row: SSAValue, _rows) -> list[SSAValue]:
                    if self.key.window:
                        self.prefetch_outputs(row, first_panel)
                    stack = self.columns, self.weights
                    count = self.decoded_products(row, panel) if self.decodes_once else self.decoded_panel(row, panel)
                    if self.sorts_by_shift:
                        counts = self.sort_by_shift(row, count)
                        self.lane_tiles(first_lane, last_lane, lambda lane, vectors: self.sorted_multiply(row, lane, counts, vectors, first_panel), self.product_widths)
                    elif self.shifts_taps:
                        self.lane_tiles(first_lane, last_lane, lambda lane, vectors: self.shifted_multiply(row, lane, panel, count, vectors, first_panel), self.product_widths)
                    else:
                        self.lane_tiles(first_lane, last_lane, lambda lane, vectors: self.multiply(row, lane, count, vectors, first_panel), self.product_widths)
                    self.columns, self.weights = stack
                    return []

                b.loop(first_row, last_row, [], row_body)
                return []

            b.loop(b.const(0, i64), b.const(self.key.panels, i64), [], panel_body)
            return []

        b.loop(first, last, [], group_body, step=ROW_GROUP)

    def decoded_panel(self, row: SSAValue, panel: SSAValue) -> SSAValue:
        """Decode `row`'s products in column panel `panel` into `self.columns` (an
        implicit variant's: their input offsets) and `self.weights`, followed by 16
        padding products; return how many there are."""
        count = self.pad(row, self.decode(row, panel))
        if self.key.window and not self.decodes_offsets:
            self.column_offsets(count)
            if self.key.groups > 1:  # the conversion took column K to the end of the group's own planes
                self.store_padding(count, self.padding(row, offsets=True))
        return count

    @property
    def decodes_once(self) -> bool:
        """Whether an implicit variant decodes each row's panels once a call, before its
        lane chunks (`decode_rows`), rather than once a chunk: where an image takes
        several chunks and the decoded products of every row (`decoded_slots` a panel)
        stay within DECODED_MAX_BYTES. A 3x3 convolution of 64 channels at 56 x 56
        takes 28 chunks of 128 lanes, each of two 64-lane tiles: decoding a panel
        (offsets gathered from the table, values widened) for every chunk cost about
        as much as its products. Not for weights sorted by shift (`sorts_by_shift`)."""
        key = self.key
        several = bool(key.window) and key.lanes > key.lane_chunk and key.kind in ("nm", "bitmask") and not self.sorts_by_shift
        return several and key.rows * key.panels * self.decoded_slots * 8 <= DECODED_MAX_BYTES

    @property
    def decoded_slots(self) -> int:
        """Product slots of one row's panel in the decoded products: its most products
        (the kept slots of an n:m panel's runs, a bitmask panel's columns), and 16
        for whole-vector stores and the padding products past the last."""
        key = self.key
        most = key.panel_columns * (key.m - key.n) // key.m if key.kind == "nm" else key.panel_columns
        return most + 16

    def decoded_at(self, row: SSAValue, panel: SSAValue) -> tuple[SSAValue, SSAValue, SSAValue]:
        """Where `row`'s panel `panel` lies in the decoded products: its columns, its
        weights and its entry of the counts."""
        b = self.b
        entry = b.add(b.mul(row, b.const(self.key.panels, i64)), panel)
        first = b.mul(entry, b.const(self.decoded_slots, i64))
        columns, weights, counts = self.decoded
        return b.element_ptr(columns, first, i32), b.element_ptr(weights, first, f32), b.element_ptr(counts, entry, i64)

    def decode_rows(self) -> None:
        """Decode every panel of the rows `chunk_rows` into the decoded products
        (`decodes_once`), each with its count."""
        b = self.b
        stack = self.columns, self.weights

        def row_body(row: SSAValue, _state) -> list[SSAValue]:
            def panel_body(panel: SSAValue, _inner) -> list[SSAValue]:
                self.columns, self.weights, count_at = self.decoded_at(row, panel)
                b.store_at(self.decoded_panel(row, panel), count_at)
                return []

            b.loop(b.const(0, i64), b.const(self.key.panels, i64), [], panel_body)
            return []

        b.loop(*self.chunk_rows, [], row_body)
        self.columns, self.weights = stack

    def decoded_products(self, row: SSAValue, panel: SSAValue) -> SSAValue:
        """Point `self.columns` and `self.weights` at `row`'s decoded panel `panel`
        (`decode_rows`); return its count."""
        self.columns, self.weights, count_at = self.decoded_at(row, panel)
        return self.b.load_at(count_at, i64)

    def decode(self, row: SSAValue, panel: SSAValue) -> SSAValue:
        """Write `row`'s products in column panel `panel` to `self.columns` (i32: their
        columns, or input offsets where `decodes_offsets`) and `self.weights` (f32), in
        order; return how many there are."""
        raise NotImplementedError

    @property
    def decodes_offsets(self) -> bool:
        """Whether `decode` writes an implicit convolution's input offsets itself, rather
        than columns for `column_offsets` to turn into offsets: reading back columns just
        written one at a time stalls on the stores (a tenth of a small 1x1 convolution's
        time)."""
        return False

    def row_ahead(self, row: SSAValue) -> SSAValue:
        """The row PREFETCH_ROWS after `row` (the last row at most), whose weights in
        the same panel the decoders prefetch: a group visits its rows panel by panel,
        a stride the hardware prefetcher does not follow (20% of the time at 16 batch
        rows went to waiting for them)."""
        b = self.b
        ahead = b.add(row, b.const(self.PREFETCH_ROWS, i64))
        return b.smin(ahead, b.const(self.key.rows - 1, i64))

    def pad(self, row: SSAValue, count: SSAValue) -> SSAValue:
        """Follow row `row`'s `count` products in the arrays with 16 that add nothing
        (weight 0 at `padding`; a zero weight alone could meet an infinite input), so
        `multiply` may run up to a whole number of rounds; return `count`."""
        b = self.b
        self.store_padding(count, self.padding(row, self.decodes_offsets))
        b.store_at(b.vector_const([0.0] * 16, f32), b.element_ptr(self.weights, count, f32), alignment=4)
        return count

    def store_padding(self, count: SSAValue, padding: SSAValue) -> None:
        b = self.b
        b.store_at(padding, b.element_ptr(self.columns, count, i32), alignment=4)

    def padding(self, row: SSAValue, offsets: bool) -> SSAValue:
        """The padding products' 16 columns: K, x's zero row (an implicit convolution's
        zero plane, once `column_offsets` converts it); or where `offsets`, the zero
        plane's input offset for row `row`, which reads from its group's planes on
        (`group_floats`). The zero plane follows the last group's planes, so the column
        K of another group would read the next group's first channel instead."""
        b, key = self.b, self.key
        if not offsets:
            return b.vector_const([key.cols] * 16, i32)
        every_channel = key.groups * (key.cols // key.window[0]) * key.channel_floats
        return b.splat(b.trunc(b.sub(b.const(every_channel, i64), self.group_floats(row)), i32), 16)

    def offset_table(self) -> None:
        """`self.offsets`[k] = weight column k's input offset (KernelKey.window): channel
        c x the floats of a channel's planes + tap t's offset within them, written once
        a call, a unit's columns at a time from a constant vector of their offsets from
        the unit's first channel: a channel's taps, or for `run_major` columns a run's m
        channels at each tap. Column K, the padding products', becomes the zero plane
        after the last channel's."""
        b, key = self.b, self.key
        channels = key.cols // key.window[0]
        run = key.m if key.run_major else 1  # the channels of a unit of columns
        pattern = [offset + channel * key.channel_floats for offset in key.tap_offsets for channel in range(run)]
        tables = [pattern[start : start + 16] for start in range(0, len(pattern), 16)]
        self.offsets = b.alloca(key.cols + 16 * len(tables), i32)
        unit_vectors = [b.vector_const(table + [0] * (16 - len(table)), i32) for table in tables]

        def unit_body(unit: SSAValue, _state) -> list[SSAValue]:
            base = b.splat(b.trunc(b.mul(unit, b.const(run * key.channel_floats, i64)), i32), 16)
            at = b.element_ptr(self.offsets, b.mul(unit, b.const(len(pattern), i64)), i32)
            for start, offsets in enumerate(unit_vectors):  # the lanes past the unit's are overwritten by the next unit's
                b.store_at(b.add(base, offsets), b.element_ptr(at, b.const(16 * start, i64), i32), alignment=4)
            return []

        b.loop(b.const(0, i64), b.const(channels // run + 1, i64), [], unit_body)

    def column_offsets(self, count: SSAValue) -> None:
        """Turn `self.columns[0:count]` into input offsets: the implicit convolution
        reads column k's inputs for batch lane l at offset(k) + l of the phase planes,
        so a product's 16 lanes are still one load. Other targets than AVX-512 look a
        window's offsets up one by one."""
        b = self.b
        if self.key.window[0] > 1 and not self.key.avx512:
            b.loop(b.const(0, i64), count, [], lambda j, _s: b.store(b.load(self.offsets, b.zext(b.load(self.columns, j, i32), i64), i32), self.columns, j) or [])
            return

        def step_body(first: SSAValue, _state) -> list[SSAValue]:
            at = b.element_ptr(self.columns, first, i32)
            b.store_at(self.offsets_of(b.load_at(at, vector(i32, 16), alignment=4)), at, alignment=4)
            return []

        b.loop(b.const(0, i64), count, [], step_body, step=16, unrolled=True)

    def offsets_of(self, columns: SSAValue) -> SSAValue:
        """The input offsets of 16 columns: a 1x1 window's column is its channel, so one
        multiply; other windows' are gathered from `self.offsets`."""
        b, key = self.b, self.key
        if key.window[0] == 1:
            return b.mul(columns, b.vector_const([key.channel_floats] * 16, i32))
        every_lane = b.bitcast(b.const(-1, i16), vector(i1, 16))
        return b.intrinsic("llvm.x86.avx512.mask.gather.dpi.512", [columns, self.offsets, columns, every_lane, b.const(4, i32)], vector(i32, 16))

    def offset_of(self, column: SSAValue) -> SSAValue:
        """The input offset (i32) of weight column `column` (i64), `offsets_of` one at a time."""
        b, key = self.b, self.key
        if key.window[0] == 1:
            return b.trunc(b.mul(column, b.const(key.channel_floats, i64)), i32)
        return b.load(self.offsets, column, i32)

    def widen_values(self, values: SSAValue, count: SSAValue) -> None:
        """`self.weights[0:count]` = the `count` weight values at `values`, as float32:
        16 at a time under a lane mask, so nothing past the last is read."""
        b = self.b
        if self.value_type == f16 and not self.key.native_f16:
            b.loop(b.const(0, i64), count, [], lambda j, _s: b.store(self.value(values, j), self.weights, j) or [])
            return

        def chunk_body(first: SSAValue, _state) -> list[SSAValue]:
            # The lanes below min(count - first, 16), from bits (cheaper than a vector compare).
            inside = b.low_lanes(b.trunc(b.smin(b.sub(count, first), b.const(16, i64)), i32))
            if self.value_type == f16:
                bits = b.masked_load(b.element_ptr(values, first, i16), inside, vector(i16, 16))
                widened = b.fpext(b.bitcast(bits, vector(f16, 16)), F32x16)
            else:
                widened = b.masked_load(b.element_ptr(values, first, f32), inside, F32x16)
            b.store_at(widened, b.element_ptr(self.weights, first, f32), alignment=4)
            return []

        b.loop(b.const(0, i64), count, [], chunk_body, step=16, unrolled=True)

    def multiply(self, row: SSAValue, lane: SSAValue, count: SSAValue, vectors: int, first_panel: SSAValue) -> None:
        """y[row, lane:lane + 16 * vectors] = (on the first panel) or += (on the others)
        the `count` decoded products times their inputs; with the bias and activation
        when this store is final (`fuses_epilogue`). A framed 1x1 window's inputs lie
        its `read_shift` past their lines: they load from the lines, and the sums move
        into place (`moved_into_place`)."""
        shift = self.key.read_shift
        x_lanes = self.lines(self.input_lanes(row, lane), shift)
        ways = self.ways(vectors)
        sums = self.product_sums([(x_lanes, self.columns, self.weights)], ways, count, vectors, ways, 1)
        self.store_tile(row, lane, self.moved_into_place([shift], sums, vectors) if shift else sums[0], first_panel)

    def product_sums(self, sources: list[tuple[SSAValue, SSAValue, SSAValue]], stride: int, count: SSAValue, vectors: int, per_source: int, per_set: int) -> list[list[SSAValue]]:
        """For each source (inputs, columns, weights), the sum of its products' weights
        times their `vectors` vectors of inputs, in rounds over products [0, count) of
        the round strides: a round takes `per_source` products from each source in turn
        (from round x `stride` on in its arrays), each `per_set` consecutive ones into
        one set of accumulators, so that enough multiply-adds are in flight. The last
        round may take padding products, which add nothing."""
        b = self.b
        sets = len(sources) * per_source // per_set

        def round_body(first: SSAValue, accs) -> list[SSAValue]:
            accs = list(accs)
            for way in range(len(sources) * per_source):
                (x_lanes, columns, weights), at = sources[way // per_source], way // per_set * vectors
                index = b.add(first, b.const(way % per_source, i64))
                column = b.zext(b.load(columns, index, i32), i64)
                weight = b.splat(b.load(weights, index, f32), 16)
                inputs = b.element_ptr(x_lanes, column if self.key.window else b.mul(column, self.batch), f32)
                for v in range(vectors):
                    loaded = b.load_at(b.element_ptr(inputs, b.const(16 * v, i64), f32), F32x16, alignment=4)
                    accs[at + v] = b.fmuladd(weight, loaded, accs[at + v])
            return accs

        zero = b.vector_const([0.0] * 16, f32)
        accs = b.loop(b.const(0, i64), b.round_down(b.add(count, b.const(stride - 1, i64)), stride), [zero] * (sets * vectors), round_body, step=stride)
        per = sets // len(sources)  # a source's sets of accumulators, one after the other
        return [[functools.reduce(b.fadd, accs[source * per * vectors + v :: vectors][:per]) for v in range(vectors)] for source in range(len(sources))]

    def store_tile(self, row: SSAValue, lane: SSAValue, sums: list[SSAValue], first_panel: SSAValue) -> None:
        """y[row, lane:lane + 16 * len(sums)] = (on the first panel) or += (on the others)
        `sums`; with the bias and activation when this store is final (`fuses_epilogue`)."""
        b = self.b
        zero = b.vector_const([0.0] * 16, f32)
        for v, total in enumerate(sums):
            at = b.element_ptr(self.y, b.add(b.mul(row, self.batch), b.add(lane, b.const(16 * v, i64))), f32)
            if self.key.accumulate or self.fuses_epilogue:
                total = self.accumulated(total, at)
            else:
                total = b.fadd(total, b.select(first_panel, zero, b.load_at(at, F32x16, alignment=4)))
            self.store_output(total, row, at)

    @property
    def shifts_taps(self) -> bool:
        """Whether the kernel loads the inputs of a window wider than one column from
        whole lines (KernelKey.column_shifts), each tap column's products summed apart."""
        return len(self.key.column_shifts) > 1

    def shifted_multiply(self, row: SSAValue, lane: SSAValue, panel: SSAValue, count: SSAValue, vectors: int, first_panel: SSAValue) -> None:
        """`multiply` for an n:m kernel that loads its taps' inputs from whole lines
        (`shifts_taps`): each tap column's products sum apart, loading from their shift
        before their inputs, and each sum moves into place at the end by a permute with
        the vector after it. (A row's last vector would take lanes from the next row's,
        but those are past its output columns, and dropped.) The runs go through the
        window's taps in turn (`run_major`), so a round of kernel-width runs holds one
        of each tap column (`round_shifts`)."""
        b, key = self.b, self.key
        kept, width = key.m - key.n, key.window[1]
        x_lanes = self.input_lanes(row, lane)
        shifts = self.round_shifts(panel)
        sources = [(self.lines(x_lanes, shift), *(b.element_ptr(array, b.const(way * kept, i64), ty) for array, ty in ((self.columns, i32), (self.weights, f32)))) for way, shift in enumerate(shifts)]
        sums = self.product_sums(sources, width * kept, count, vectors, kept, kept)
        self.store_tile(row, lane, self.moved_into_place(shifts, sums, vectors), first_panel)

    def lines(self, x_lanes: SSAValue, shift: SSAValue | int) -> SSAValue:
        """Where inputs `shift` floats past `x_lanes` (on their lines) load from."""
        b = self.b
        if isinstance(shift, int):
            return b.element_ptr(x_lanes, b.const(-shift, i64), f32) if shift else x_lanes
        return b.element_ptr(x_lanes, b.sub(b.const(0, i64), shift), f32)

    def moved_into_place(self, shifts: list[SSAValue | int], sums: list[list[SSAValue]], vectors: int) -> list[SSAValue]:
        """The total of each source's `sums` (summed from the lines before its inputs)
        moved `shifts` lanes down, each vector's last lanes from the vector after it:
        one two-source permute a vector. A row's last vector takes nothing from the
        next row's first (those lanes are past its output columns, and dropped)."""
        b, pitch = self.b, self.key.window[3]
        assert 16 * vectors % pitch == 0, f"a tile of {vectors} vectors splits rows of {pitch} lanes"
        zero = b.vector_const([0.0] * 16, f32)
        moved = []
        for shift, source_sums in zip(shifts, sums):
            if isinstance(shift, int) and shift == 0:
                moved.append(source_sums)
                continue
            shift = b.const(shift, i64) if isinstance(shift, int) else shift
            picks = b.add(b.vector_const(list(range(16)), i32), b.splat(b.trunc(shift, i32), 16))  # lanes `shift` on of the vector and the next
            following = [source_sums[v + 1] if v + 1 < vectors and 16 * (v + 1) % pitch else zero for v in range(vectors)]
            moved.append([b.intrinsic("llvm.x86.avx512.vpermi2var.ps.512", [source_sums[v], picks, following[v]], F32x16) for v in range(vectors)])
        return [functools.reduce(b.fadd, parts) for parts in zip(*moved)]

    @property
    def sorts_by_shift(self) -> bool:
        """Whether a panel's decoded products are sorted by column shift before they
        multiply (`sort_by_shift`): a bitmask weight's with a window, whose kept
        columns, channel by channel, say nothing of their tap columns in advance."""
        return self.key.kind == "bitmask" and self.shifts_taps

    @property
    def distinct_shifts(self) -> list[int]:
        return sorted(set(self.key.column_shifts))

    @property
    def sort_stride(self) -> int:
        """The slots of one shift's products (`sort_by_shift`): a panel's, and 16 for
        whole-vector stores and padding products past the last."""
        return self.key.panel_columns + 16

    def sort_by_shift(self, row: SSAValue, count: SSAValue) -> list[SSAValue]:
        """Copy the `count` decoded products into one array a column shift (an input
        offset's floats past its line), each followed by 16 padding products; return
        each shift's count. 16 products at a time: per shift, a compress of the offsets
        and one of the weights, each stored whole."""
        b = self.b
        stride = self.sort_stride

        def step_body(first: SSAValue, written) -> list[SSAValue]:
            inside = b.low_lanes(b.trunc(b.smin(b.sub(count, first), b.const(16, i64)), i32))
            offsets = b.load_at(b.element_ptr(self.columns, first, i32), vector(i32, 16), alignment=4)
            weights = b.load_at(b.element_ptr(self.weights, first, f32), F32x16, alignment=4)
            shift = b.and_(offsets, b.vector_const([15] * 16, i32))
            updated = []
            for index, (value, at) in enumerate(zip(self.distinct_shifts, written)):
                mask = b.and_(inside, b.icmp("eq", shift, b.vector_const([value] * 16, i32)))
                slot = b.add(b.const(index * stride, i64), at)
                for array, values, name in ((self.sorted_columns, offsets, "v16i32"), (self.sorted_weights, weights, "v16f32")):
                    packed = b.intrinsic(f"llvm.experimental.vector.compress.{name}", [values, mask, values], values.type)
                    b.store_at(packed, b.element_ptr(array, slot, values.type.element_type), alignment=4)  # pyright: ignore
                updated.append(b.add(at, b.zext(b.intrinsic("llvm.ctpop.i16", [b.bitcast(mask, i16)], i16), i64)))
            return updated

        counts = b.loop(b.const(0, i64), count, [b.const(0, i64)] * len(self.distinct_shifts), step_body, step=16)
        padding = self.padding(row, offsets=True)
        for index, at in enumerate(counts):
            slot = b.add(b.const(index * stride, i64), at)
            b.store_at(padding, b.element_ptr(self.sorted_columns, slot, i32), alignment=4)
            b.store_at(b.vector_const([0.0] * 16, f32), b.element_ptr(self.sorted_weights, slot, f32), alignment=4)
        return list(counts)

    def sorted_multiply(self, row: SSAValue, lane: SSAValue, counts: list[SSAValue], vectors: int, first_panel: SSAValue) -> None:
        """`multiply` of products sorted by column shift (`sort_by_shift`): rounds of one
        product of each shift while every shift has one, each into its own accumulators
        and loaded from its lines, then each shift's rest; each shift's sums then move
        into place (`moved_into_place`)."""
        b = self.b
        x_lanes = self.input_lanes(row, lane)
        common = functools.reduce(b.smin, counts)
        arrays = [(b.element_ptr(self.sorted_columns, b.const(index * self.sort_stride, i64), i32), b.element_ptr(self.sorted_weights, b.const(index * self.sort_stride, i64), f32)) for index in range(len(counts))]
        sources = [(self.lines(x_lanes, shift), *array) for shift, array in zip(self.distinct_shifts, arrays)]
        sums = self.product_sums(sources, 1, common, vectors, 1, 1)
        totals = []
        for (lines, columns, weights), rest, source_sums in zip(sources, counts, sums):
            after = [b.element_ptr(array, common, ty) for array, ty in ((columns, i32), (weights, f32))]
            (rest_sums,) = self.product_sums([(lines, *after)], 1, b.sub(rest, common), vectors, 1, 1)
            totals.append([b.fadd(one, other) for one, other in zip(source_sums, rest_sums)])
        self.store_tile(row, lane, self.moved_into_place(list(self.distinct_shifts), totals, vectors), first_panel)

    def round_shifts(self, panel: SSAValue) -> list[SSAValue]:
        """The column shift of each run of a round of kernel-width runs in column panel
        `panel`: its first run lies at tap column (first run mod width), from where
        the round's runs take the tap columns in turn."""
        b, key = self.b, self.key
        width = key.window[1]
        rotation = b.urem(b.mul(panel, b.const(key.panel_columns // key.m, i64)), b.const(width, i64))
        shifts = []
        for way in range(width):
            column = b.urem(b.add(rotation, b.const(way, i64)), b.const(width, i64))
            shift = b.const(key.column_shifts[0], i64)
            for other, value in enumerate(key.column_shifts[1:], 1):
                shift = b.select(b.icmp("eq", column, b.const(other, i64)), b.const(value, i64), shift)
            shifts.append(shift)
        return shifts

    def accumulated(self, total: SSAValue, at: SSAValue) -> SSAValue:
        """`total` plus the outputs at `at` where the key `accumulate`s (a residual Add
        taken in, copied there first), else `total`."""
        b = self.b
        return b.fadd(total, b.load_at(at, F32x16, alignment=4)) if self.key.accumulate else total

    def input_lanes(self, row: SSAValue, lane: SSAValue) -> SSAValue:
        """Where weight row `row`'s inputs of lane `lane` start: in its group's planes
        (`group_floats`), at the lane."""
        return self.b.element_ptr(self.x, self.b.add(lane, self.group_floats(row)), f32)

    def group_floats(self, row: SSAValue) -> SSAValue:
        """Where weight row `row`'s group of a grouped convolution's implicit variant
        starts in the planes: its first channel's planes (0 without groups). One call
        takes every group's rows, split between the threads as any call's rows: a
        call per group was too small to split (ShuffleNet's grouped 1x1 convolutions
        ran no faster on two threads than on one)."""
        b, key = self.b, self.key
        if key.groups == 1:
            return b.const(0, i64)
        group = b.udiv(row, b.const(key.rows // key.groups, i64))
        return b.mul(group, b.const(key.cols // key.window[0] * key.channel_floats, i64))

    def store_output(self, total: SSAValue, row: SSAValue, at: SSAValue) -> None:
        """Store output row `row`'s 16 lanes `total` at `at`, finished where the kernel
        `fuses_epilogue`."""
        self.b.store_at(self.finished(total, row) if self.fuses_epilogue else total, at, alignment=4)

    def finished(self, acc: SSAValue, row: SSAValue) -> SSAValue:
        """Output row `row`'s 16 lanes `acc` with the bias and activation."""
        b = self.b
        if self.key.epilogue.startswith("bias"):
            acc = b.fadd(acc, b.splat(b.invariant_load(self.bias, row, f32), 16))
        return self.activation(acc)

    def batch_epilogue(self, first_lane: SSAValue, last_lane: SSAValue) -> None:
        """Bias and activation on the finished outputs of the rows `chunk_rows`, lanes
        [first_lane, last_lane), 16 at a time."""
        b = self.b
        first, last = self.chunk_rows

        def row_body(row: SSAValue, _state) -> list[SSAValue]:
            def lanes_body(lane: SSAValue, _inner) -> list[SSAValue]:
                at = b.element_ptr(self.y, b.add(b.mul(row, self.batch), lane), f32)
                b.store_at(self.finished(b.load_at(at, F32x16, alignment=4), row), at, alignment=4)
                return []

            b.loop(first_lane, last_lane, [], lanes_body, step=16)
            return []

        b.loop(first, last, [], row_body)


def _tiles_taken(lanes: int, widths: tuple[int, ...]) -> set[int]:
    """The widths (vectors, widest first) whose tiles take some of `lanes` lanes when
    each width takes as many whole tiles as fit in what the wider ones left."""
    taken = set()
    for vectors in widths:
        if lanes >= 16 * vectors:
            taken.add(vectors)
            lanes %= 16 * vectors
    return taken
