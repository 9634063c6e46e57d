"""Block kernels: kept blocks of B output rows at one column each."""

from __future__ import annotations

from xdsl.dialects import llvm
from xdsl.dialects.builtin import IntegerType, f16, f32, i1, i64
from xdsl.ir import SSAValue

from sparsec.runtime.codegen.base import F32x16, Kernel, tiled
from sparsec.runtime.codegen.batched import BatchedKernel
from sparsec.runtime.codegen.builder import vector


class BlockKernelBase(Kernel):
    """What the block kernels share: a kept block's stored column."""

    def column(self, kept: SSAValue) -> SSAValue:
        """The column of kept block `kept` (KernelKey.block_column_bits wide, unsigned)."""
        b = self.b
        return b.zext(b.load(self.a1, kept, IntegerType(self.key.block_column_bits)), i64)

    def columns(self, kept: SSAValue, count: int) -> list[SSAValue]:
        """The columns of `count` consecutive kept blocks from `kept`, 128 bits a load:
        a load per column took load slots the inputs needed (blocks of 4 at 50% on
        768x3072: 0.086 -> 0.075 ms)."""
        b = self.b
        bits = self.key.block_column_bits
        column_type, per_word = IntegerType(bits), min(count, 128 // bits)
        columns = []
        for first in range(0, count, per_word):
            word_type = IntegerType(bits * per_word)
            at = b.element_ptr(self.a1, b.add(kept, b.const(first, i64)), column_type)
            word = b.load_at(at, word_type, alignment=bits // 8)
            columns += [b.zext(b.trunc(b.lshr(word, b.const(bits * j, word_type)), column_type), i64) for j in range(per_word)]
        return columns


class BlockKernel(BlockKernelBase):
    def build(self) -> llvm.FuncOp:
        b, key = self.b, self.key
        size = key.block

        def row_block_body(row_block: SSAValue, _state) -> list[SSAValue]:
            first = b.load(self.a2, row_block, i64)
            last = b.load(self.a2, b.add(row_block, b.const(1, i64)), i64)

            def kept_body(kept: SSAValue, accs) -> list[SSAValue]:
                col = self.column(kept)
                xv = self.x_at(self.batch_row, col)
                base = b.mul(kept, b.const(size, i64))
                return [b.fmuladd(self.value(self.a0, b.add(base, b.const(r, i64))), xv, accs[r]) for r in range(size)]

            zero = b.const(0.0, f32)
            accs = b.loop(first, last, [zero] * size, kept_body)
            row_base = b.mul(row_block, b.const(size, i64))
            for r in range(size):
                row = b.add(row_base, b.const(r, i64))
                if key.rows % size:  # only the last row block has rows past N
                    self.finish_if(b.icmp("slt", row, b.const(key.rows, i64)), accs[r], row, self.batch_row)
                else:
                    self.finish(accs[r], row, self.batch_row)
            return []

        return self.for_each_row(row_block_body)


class VectorBlockKernel(BlockKernelBase):
    """The block kernel with a block's B rows as vector lanes: each kept block's values
    load and widen once per tile of batch rows and multiply every row's input at the
    block's column (one broadcast each) into that row's B-lane accumulator. A tile's
    accumulators are the tile's outputs for the row block: contiguous in y, stored as
    vectors (under a lane mask in a last row block that runs past N). One batch row
    prefetches values and columns PREFETCH_BYTES ahead from blocks of 8 on: on
    11008x4096 at 90% it ran 17% faster (one thread) and 16% (two). Narrower blocks
    prefetch on weights of more than PREFETCH_NARROW_FROM bytes as dense float16: on an
    Intel Xeon their prefetches cost what they saved, but on AMD Zen 4 the hardware
    prefetcher left them far from the bandwidth (block 4, 11008x4096 at 50%: 4.0 -> 2.7
    ms, 75%: 1.9 -> 1.25; 4096x4096 at 50%: 1.17 -> 0.80), while weights that stay in
    cache lost 8 to 12% (3072x768 and 768x3072, and at 90% sparsity)."""

    VECTOR_EPILOGUE = False
    EXPLICIT_VECTORS = True
    PREFETCH_BYTES = 2048
    PREFETCH_NARROW_FROM = 8 << 20

    def partial_tile_from(self) -> int:
        """An 8-row tile costs about 3 rows at blocks of 4 and 1.5 to 2 from 8 up: with
        3 rows left a partial tile ran 0.91-1.04x as fast as single rows at block 4,
        1.03-1.20x at 8 and 16; with 4 left, 1.26-1.46x."""
        return 4 if self.key.block <= 4 else 3

    def build(self) -> llvm.FuncOp:
        tile = max(4, min(8, 128 // self.key.block))  # accumulators fit the vector registers
        return tiled(self, tile, self.tile_body)

    def tile_body(self, row_block: SSAValue, tile: SSAValue, size: int) -> None:
        b, key = self.b, self.key
        lanes, stored = vector(f32, key.block), vector(self.value_type, key.block)
        first = b.load(self.a2, row_block, i64)
        last = b.load(self.a2, b.add(row_block, b.const(1, i64)), i64)
        batch_rows = self.tile_rows(tile, size)
        x_rows = [b.element_ptr(self.x, b.mul(row, b.const(key.cols, i64)), f32) for row, _ in batch_rows]

        def kept_body(kept: SSAValue, accs) -> list[SSAValue]:
            col = self.column(kept)
            at = b.element_ptr(self.a0, b.mul(kept, b.const(key.block, i64)), self.value_type)
            weights = b.load_at(at, stored, alignment=2 if self.value_type == f16 else 4)
            if self.value_type == f16:
                weights = b.fpext(weights, lanes)
            return [b.fmuladd(weights, b.splat(b.load(x_row, col, f32), key.block), acc) for x_row, acc in zip(x_rows, accs)]

        zero = b.vector_const([0.0] * key.block, f32)
        if size == 1 and key.block < 16 and 16 % key.block == 0:
            accs = [self.grouped_sum(first, last, x_rows[0], zero, kept_body)]
        elif size == 1:
            accs = [self.interleaved_sum(first, last, 4, zero, kept_body, lambda kept: self.prefetch_ahead(kept, 4))]
        else:
            accs = b.loop(first, last, [zero] * size, kept_body)
        first_row = b.mul(row_block, b.const(key.block, i64))
        inside = None
        if key.rows % key.block:  # only the last row block has rows past N
            offsets = b.add(b.splat(first_row, key.block), b.vector_const(list(range(key.block)), i64))
            inside = b.icmp("slt", offsets, b.splat(b.const(key.rows, i64), key.block))
        for (batch_row, in_batch), acc in zip(batch_rows, accs):
            self.only_if(in_batch, lambda acc=acc, batch_row=batch_row: self.finish_lanes(acc, first_row, batch_row, inside))

    def grouped_sum(self, first: SSAValue, last: SSAValue, x_row: SSAValue, zero: SSAValue, kept_body) -> SSAValue:
        """One batch row's sum over kept blocks [first, last) for blocks narrower than 16
        lanes: 16 / B consecutive kept blocks per step, as one 16-lane multiply-add
        (`group_product`) into two interleaved accumulators; the blocks past the last
        whole pair of groups go one at a time (`kept_body`), and the B-lane parts of the
        16-lane sums are added at the end."""
        b, key = self.b, self.key
        group = 16 // key.block
        whole = b.add(first, b.round_down(b.sub(last, first), 2 * group))

        def pair_body(kept: SSAValue, accs) -> list[SSAValue]:
            self.prefetch_ahead(kept, 2 * group)
            return [self.group_product(b.add(kept, b.const(j * group, i64)), x_row, acc) for j, acc in enumerate(accs)]

        wide = b.loop(first, whole, [b.vector_const([0.0] * 16, f32)] * 2, pair_body, step=2 * group)
        total = b.fadd(*wide)
        (rest,) = b.loop(whole, last, [zero], kept_body)
        for part in range(group):
            rest = b.fadd(rest, b.lanes(total, part * key.block, key.block))
        return rest

    def group_product(self, kept: SSAValue, x_row: SSAValue, acc: SSAValue) -> SSAValue:
        """acc + the values of 16 / B kept blocks from `kept` on (one 16-lane load) times
        each block's input broadcast over its B lanes."""
        b, key = self.b, self.key
        at = b.element_ptr(self.a0, b.mul(kept, b.const(key.block, i64)), self.value_type)
        weights = b.load_at(at, vector(self.value_type, 16), alignment=2 if self.value_type == f16 else 4)
        if self.value_type == f16:
            weights = b.fpext(weights, vector(f32, 16))
        inputs = [b.load(x_row, column, f32) for column in self.columns(kept, 16 // key.block)]
        return b.fmuladd(weights, self.spread(inputs), acc)

    def spread(self, inputs: list[SSAValue]) -> SSAValue:
        """16 lanes holding each of `inputs` in B consecutive lanes. LLVM's lowering of
        the obvious form (B-lane broadcasts concatenated) measured slower on Zen 4
        (3072x768, ms at 50% / 75%): two inputs come out as two broadcasts and one insert
        when written as a lane select (blocks of 8: 0.082 / 0.042 -> 0.054 / 0.028); more
        inputs as a packed vector spread by one permute (blocks of 4: 0.077 / 0.042 ->
        0.074 / 0.040; 2: 0.142 / 0.081 -> 0.133 / 0.074), where the select form took
        0.102 / 0.053 at blocks of 4."""
        b, key = self.b, self.key
        if len(inputs) == 2:
            high = b.vector_const([lane >= key.block for lane in range(16)], i1)
            return b.select(high, b.splat(inputs[1], 16), b.splat(inputs[0], 16))
        packed = b.packed(inputs)
        return b.shuffle(packed, packed, tuple(j for j in range(len(inputs)) for _ in range(key.block)))

    def prefetch_ahead(self, kept: SSAValue, blocks: int) -> None:
        """Prefetch the values of `blocks` kept blocks PREFETCH_BYTES of values ahead of
        `kept`, and their columns, for blocks of 8 and more and for large weights (see
        the class docstring): once per round of blocks, as a prefetch per block took
        load slots the round's own loads needed (3072x768, block 16 at 75%: 0.023-0.025 ms
        with a prefetch per block, 0.021-0.022 with one per round)."""
        b, key = self.b, self.key
        if key.block < 8 and key.rows * key.cols * 2 <= self.PREFETCH_NARROW_FROM:
            return
        block_bytes = key.block * self.value_type.bitwidth // 8
        ahead = b.add(kept, b.const(self.PREFETCH_BYTES // block_bytes, i64))
        b.prefetch(b.element_ptr(self.a0, b.mul(ahead, b.const(key.block, i64)), self.value_type), -(-blocks * block_bytes // 64))
        b.prefetch(b.element_ptr(self.a1, ahead, IntegerType(key.block_column_bits)))

    def finish_lanes(self, acc: SSAValue, first_row: SSAValue, batch_row: SSAValue, inside: SSAValue | None) -> None:
        """`finish` for B consecutive outputs at once; `inside` masks rows past N."""
        b, key = self.b, self.key
        lanes = vector(f32, key.block)
        if key.epilogue.startswith("bias"):
            acc = b.fadd(acc, b.load_lanes(b.element_ptr(self.bias, first_row, f32), lanes, inside))
        acc = self.activation(acc)
        b.store_lanes(acc, b.element_ptr(self.y, b.add(b.mul(batch_row, b.const(key.rows, i64)), first_row), f32), inside)


class BatchedBlockKernel(BlockKernelBase, BatchedKernel):
    """The batched variant for blocks of 2 to 8 rows, on transposed activations
    (BatchedKernel), and of any size in convolutions (the implicit variant, below):
    each kept block's B values are broadcast, one at a time, over 16
    batch rows' inputs at the block's column, so every multiply-add fills 16 lanes
    where the tiled kernel's B-lane vectors fill only B (blocks of 4 at 32 batch rows:
    2.1x to 3.2x as fast). A row block takes the batch 32 lanes (two vectors) at a
    time, then 16 (`lane_widths`: 64 first in convolutions of blocks of up to 4, 16
    only for blocks of 16), with one accumulator per row and vector; with fewer than
    ACCUMULATORS of those, consecutive kept blocks rotate over several sets, so the
    multiply-adds do not wait on each other.

    Kept blocks go CHUNK at a time: their values are widened into a stack array first,
    16 at a time, so each broadcast is one load. Widened one at a time, each value took
    a conversion and a shuffle on the port the multiply-adds need (blocks of 4 at 32
    rows ran 1.12x to 1.15x as long). Float32 values (a weight left dense) are
    broadcast from the weight itself: copying them for every lane tile cost 3 to 8% of
    those layers' time (the first convolutions, 7x7/2 on 224 x 224 3.81 -> 3.54 ms).

    The implicit variant (KernelKey.window) reads a kept block's inputs in place from a
    convolution's phase planes, at its column's input offset (`offset_of`): the B rows
    of a block share each load of inputs, so a multiply-add needs a B-th of a load
    where the bitmask and n:m kernels need one."""

    CHUNK = 256
    ACCUMULATORS = 8

    @property
    def fuses_epilogue(self) -> bool:
        """A row block's sums are final when stored (there are no column panels)."""
        return self.cheap_epilogue

    @property
    def lane_widths(self) -> tuple[int, ...]:
        """The vectors of lanes a row block's tiles take, widest first
        (KernelKey.block_lane_vectors), halving down to one."""
        widest = self.key.block_lane_vectors
        return tuple(widest >> step for step in range(widest.bit_length()))

    def build(self) -> llvm.FuncOp:
        b = self.b
        if self.value_type != f32:
            self.weights = b.alloca(self.CHUNK * self.key.block + 16, f32)  # 16 slots of slack: widening writes whole vectors
        if self.key.window and self.key.window[0] > 1:
            self.offset_table()
        self.lane_chunks(self.chunk_pass)
        return self.ret()

    def chunk_pass(self, first_lane: SSAValue, last_lane: SSAValue) -> None:
        """The row blocks of the call's units (every row block where the units are lane
        chunks, KernelKey.splits_lanes) on lanes [first_lane, last_lane)."""
        b, key = self.b, self.key

        def row_block_body(row_block: SSAValue, _state) -> list[SSAValue]:
            if key.window:
                first_row = b.mul(row_block, b.const(key.block, i64))
                rows_end = b.smin(b.add(first_row, b.const(key.block, i64)), b.const(key.rows, i64))
                b.loop(first_row, rows_end, [], lambda row, _s: self.prefetch_outputs(row) or [])
            first = b.load(self.a2, row_block, i64)
            last = b.load(self.a2, b.add(row_block, b.const(1, i64)), i64)
            self.lane_tiles(first_lane, last_lane, lambda lane, vectors: self.block_lanes(row_block, lane, first, last, vectors), self.lane_widths)
            return []

        if key.splits_lanes:
            b.loop(b.const(0, i64), b.const(key.row_units, i64), [], row_block_body)
        else:
            b.loop(self.begin, self.end, [], row_block_body)

    def block_lanes(self, row_block: SSAValue, lane: SSAValue, first: SSAValue, last: SSAValue, vectors: int) -> None:
        """y[rows of `row_block`, lane:lane + 16 * vectors] = (or += where the key
        `accumulate`s) the row block's kept blocks [first, last) times their inputs,
        in a pass over them per slice of its rows (KernelKey.block_slice: a loop, so
        the code is one slice's; rows past N are not stored)."""
        b, key = self.b, self.key
        first_row = b.mul(row_block, b.const(key.block, i64))
        x_lanes = self.input_lanes(first_row, lane)

        def slice_body(in_block: SSAValue, _state) -> list[SSAValue]:
            totals = self.kept_sums(self.lines(x_lanes, key.read_shift), first, last, vectors, in_block)
            if key.read_shift:  # a framed 1x1 window's inputs, loaded from their lines (BatchedKernel.multiply)
                rows = [totals[r * vectors : (r + 1) * vectors] for r in range(key.block_slice)]
                totals = [total for row_sums in rows for total in self.moved_into_place([key.read_shift], [row_sums], vectors)]
            for r in range(key.block_slice):
                row = b.add(first_row, b.add(in_block, b.const(r, i64)))
                inside = b.icmp("slt", row, b.const(key.rows, i64)) if key.rows % key.block else None
                row_lanes = b.element_ptr(self.y, b.add(b.mul(row, self.batch), lane), f32)
                for v in range(vectors):
                    at = b.element_ptr(row_lanes, b.const(16 * v, i64), f32)
                    # (the bias of a row past N is not read either)
                    self.only_if(inside, lambda total=totals[r * vectors + v], at=at, row=row: self.store_output(self.accumulated(total, at), row, at))
            return []

        b.loop(b.const(0, i64), b.const(key.block, i64), [], slice_body, step=key.block_slice)

    def kept_sums(self, x_lanes: SSAValue, first: SSAValue, last: SSAValue, vectors: int, in_block: SSAValue) -> list[SSAValue]:
        """The sums of kept blocks [first, last) of the slice of their rows from row
        `in_block` of the block (KernelKey.block_slice rows), over the `vectors` x 16
        batch lanes at `x_lanes`: row-major, `vectors` per row."""
        b, key = self.b, self.key
        width = key.block_slice * vectors
        ways = max(1, self.ACCUMULATORS // width)

        def product(kept: SSAValue, chunk: SSAValue, accs: list[SSAValue]) -> list[SSAValue]:
            column = self.column(kept)
            inputs = b.element_ptr(x_lanes, b.zext(self.offset_of(column), i64) if key.window else b.mul(column, self.batch), f32)
            xs = [b.load_at(b.element_ptr(inputs, b.const(16 * v, i64), f32), F32x16, alignment=4) for v in range(vectors)]
            weights = [b.splat(self.block_value(kept, chunk, b.add(in_block, b.const(r, i64))), 16) for r in range(key.block_slice)]
            return [b.fmuladd(weights[r], xs[v], accs[r * vectors + v]) for r in range(key.block_slice) for v in range(vectors)]

        def chunk_body(chunk: SSAValue, accs) -> list[SSAValue]:
            end = b.smin(b.add(chunk, b.const(self.CHUNK, i64)), last)
            if self.value_type != f32:
                values = b.element_ptr(self.a0, b.mul(chunk, b.const(key.block, i64)), self.value_type)
                self.widen_values(values, b.mul(b.sub(end, chunk), b.const(key.block, i64)))
            if ways == 1:
                return b.loop(chunk, end, list(accs), lambda kept, inner: product(kept, chunk, list(inner)))

            def round_body(kept: SSAValue, inner) -> list[SSAValue]:
                sets = [list(inner[way * width : (way + 1) * width]) for way in range(ways)]
                return [acc for way, accs in enumerate(sets) for acc in product(b.add(kept, b.const(way, i64)), chunk, accs)]

            rounds = b.add(chunk, b.round_down(b.sub(end, chunk), ways))
            accs = b.loop(chunk, rounds, list(accs), round_body, step=ways)
            rest = b.loop(rounds, end, accs[:width], lambda kept, inner: product(kept, chunk, list(inner)))
            return [*rest, *accs[width:]]

        zero = b.vector_const([0.0] * 16, f32)
        accs = b.loop(first, last, [zero] * (width * ways), chunk_body, step=self.CHUNK)
        totals = accs[:width]
        for way in range(1, ways):
            totals = [b.fadd(total, acc) for total, acc in zip(totals, accs[way * width : (way + 1) * width])]
        return totals

    def block_value(self, kept: SSAValue, chunk: SSAValue, row: SSAValue) -> SSAValue:
        """Row `row` of kept block `kept`'s values, as float32: from the weight where its
        values are float32, else from the chunk's widened copy (`widen_values`)."""
        b, block = self.b, self.key.block
        if self.value_type == f32:
            return b.load(self.a0, b.add(b.mul(kept, b.const(block, i64)), row), f32)
        return b.load(self.weights, b.add(b.mul(b.sub(kept, chunk), b.const(block, i64)), row), f32)
