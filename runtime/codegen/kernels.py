"""Sparse matrix kernels, generated per specialization key in xDSL's `llvm` dialect.

Every kernel computes, for batch rows b and output rows o in [begin, end),

    y[b, o] = epilogue(sum_k W[o, k] * x[b, k])      W in its (out, in) view, N x K

with N, K, the encoding parameters and the epilogue fixed at generation time, so LLVM
sees constant trip counts and strides. The signature is the same for all kernels:

    void kernel(float *x, float *y, void *a0, void *a1, void *a2, float *bias,
                i64 batch, i64 begin, i64 end)

bitmask   a0 = mask as 16-bit words, each row padded to whole 64-bit steps
          (N x KernelKey.mask_words); a1 = non-zero values in row-major order;
          a2 = i64 row start offsets (N + 1). Vector form: 64 columns per step, the
          values expand-loaded into their lanes; scalar form: the set bits one by one.
nm        a0 = kept values, m - n per run of m along the row; a1 = kept positions,
          ceil(log2 m) bits each, least-significant first (with 2 bytes of slack);
          a2 (vector form only) = per row, one 32- or 64-bit word of 16 positions per
          whole step of 16 kept values. No mask: a fixed trip count of m - n per run.
block     (blocks of B output rows) a0 = kept blocks' values, B per block, grouped by row
          block; a1 = i32 column of each kept block; a2 = i64 start of each row block's
          blocks (ceil(N/B) + 1). Loops over kept blocks only; begin/end count row blocks.
dense     a0 = all N x K values row-major (weights whose mask would cost more bytes
          than their zeros save).
"""

from __future__ import annotations

import math

from xdsl.backend.llvm.convert import convert_module
from xdsl.dialects import llvm
from xdsl.dialects.builtin import DenseArrayBase, DenseIntOrFPElementsAttr, IntegerType, ModuleOp, VectorType, f16, f32, i1, i8, i16, i32, i64
from xdsl.ir import SSAValue

from sparsec.kernels import KernelKey
from sparsec.runtime.codegen.builder import PTR, FunctionBuilder
from sparsec.runtime.codegen.elementwise import gelu

ARG_NAMES = ("x", "y", "a0", "a1", "a2", "bias", "batch", "begin", "end")
ARG_TYPES = (PTR, PTR, PTR, PTR, PTR, PTR, i64, i64, i64)


class _Kernel:
    """Shared structure: the batch and row loops, the store and the epilogue.

    `finish` stores each output's sum as it is complete; `ret` then applies the epilogue
    (bias, activation) to the outputs of rows [begin, end), 16 at a time, so an
    activation like Gelu costs a few vector operations per 16 outputs instead of a
    scalar evaluation per row. Kernels that produce whole vectors of outputs apply it
    as they store them (`activation`) and skip that pass."""

    VECTOR_EPILOGUE = True
    """Whether `ret` applies the epilogue in a vector pass (False: the kernel did)."""

    def __init__(self, key: KernelKey):
        self.key = key
        self.b = FunctionBuilder(key.symbol, ARG_TYPES, ARG_NAMES)
        self.x, self.y, self.a0, self.a1, self.a2, self.bias, self.batch, self.begin, self.end = self.b.args
        self.value_type = f16 if key.values == "f16" else f32

    def value(self, base: SSAValue, index: SSAValue) -> SSAValue:
        if self.value_type == f32:
            return self.b.load(base, index, f32)
        if self.key.native_f16:
            return self.b.fpext(self.b.load(base, index, f16))
        return self.b.half_bits_to_float(self.b.load(base, index, i16))

    def finish(self, acc: SSAValue, row: SSAValue, batch_row: SSAValue) -> None:
        b, key = self.b, self.key
        b.store(acc, self.y, b.add(b.mul(batch_row, b.const(key.rows, i64)), row))

    def ret(self) -> llvm.FuncOp:
        """The epilogue pass (when there is one), then return."""
        if self.VECTOR_EPILOGUE and self.key.epilogue != "none":
            self.epilogue_pass()
        return self.b.ret()

    def epilogue_pass(self) -> None:
        """Bias and activation on y[b, first:last] for every batch row, 16 outputs at a
        time under a lane mask; [first, last) are the output rows of units [begin, end)."""
        b, key = self.b, self.key
        unit = key.block if key.kind == "block" else 1
        first = b.mul(self.begin, b.const(unit, i64))
        last = b.emit(llvm.CallIntrinsicOp("llvm.smin.i64", [b.mul(self.end, b.const(unit, i64)), b.const(key.rows, i64)], [i64]))
        lanes = b.vector_const(list(range(16)), i64)
        zero = b.vector_const([0.0] * 16, f32)

        def batch_body(batch_row: SSAValue, _state) -> list[SSAValue]:
            outputs = b.element_ptr(self.y, b.mul(batch_row, b.const(key.rows, i64)), f32)

            def chunk_body(row: SSAValue, _inner) -> list[SSAValue]:
                inside = b.icmp("slt", b.add(b.splat(row, 16), lanes), b.splat(last, 16))
                at = b.element_ptr(outputs, row, f32)
                values = b.intrinsic("llvm.masked.load.v16f32.p0", [at, b.const(4, i32), inside, zero], _F32x16)
                if key.epilogue.startswith("bias"):
                    bias_at = b.element_ptr(self.bias, row, f32)
                    values = b.fadd(values, b.intrinsic("llvm.masked.load.v16f32.p0", [bias_at, b.const(4, i32), inside, zero], _F32x16))
                b.emit(llvm.MaskedStoreOp(self.activation(values), at, inside, alignment=4))
                return []

            b.loop(first, last, [], chunk_body, step=16)
            return []

        b.loop(b.const(0, i64), self.batch, [], batch_body)

    def activation(self, acc: SSAValue) -> SSAValue:
        """The epilogue's activation on a scalar or vector of outputs."""
        if self.key.epilogue.endswith("relu"):
            return self.b.fmax(acc, self.b.like(0.0, acc))
        if self.key.epilogue.endswith("gelu"):
            return gelu(self.b, acc)
        return acc

    def for_each_row(self, row_body) -> llvm.FuncOp:
        """for unit in range(begin, end): for b in range(batch): row_body(unit); then return.

        Units outside, batch rows inside: a unit's weights are read from memory once and
        then from cache for the other batch rows."""
        b = self.b

        def unit_body(unit: SSAValue, _state) -> list[SSAValue]:
            def batch_body(batch_row: SSAValue, _inner) -> list[SSAValue]:
                self.batch_row = batch_row
                return row_body(unit, ())

            b.loop(b.const(0, i64), self.batch, [], batch_body)
            return []

        b.loop(self.begin, self.end, [], unit_body)
        return self.ret()

    def finish_if(self, condition: SSAValue, acc: SSAValue, row: SSAValue, batch_row: SSAValue) -> None:
        """`finish` only where `condition` holds (rows past N, or past the batch)."""
        b = self.b
        then_block, after = b.new_block(), b.new_block()
        b.emit(llvm.CondBrOp(condition, then_block, [], after, []))
        b.block = then_block
        self.finish(acc, row, batch_row)
        b.emit(llvm.BrOp(after))
        b.block = after

    def x_at(self, batch_row: SSAValue, col: SSAValue) -> SSAValue:
        b = self.b
        return b.load(self.x, b.add(b.mul(batch_row, b.const(self.key.cols, i64)), col), f32)


class _BitmaskKernel(_Kernel):
    def build(self) -> llvm.FuncOp:
        b, key = self.b, self.key
        words = math.ceil(key.cols / 16)

        def row_body(row: SSAValue, _state) -> list[SSAValue]:
            start = b.load(self.a2, row, i64)

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


_F32x16 = VectorType(f32, [16])


def _tiled(kernel: _Kernel, tile: int, tile_body) -> llvm.FuncOp:
    """for row in [begin, end): the batch in tiles of `tile` rows, then the rows left
    one at a time: tile_body(row, first batch row, rows). Weight rows outside, so each
    is read from memory once and from cache for the other tiles."""
    b = kernel.b

    def row_body(row: SSAValue, _state) -> list[SSAValue]:
        whole = b.sub(kernel.batch, b.emit(llvm.URemOp(kernel.batch, b.const(tile, i64))))
        b.loop(b.const(0, i64), whole, [], lambda first, _s: tile_body(row, first, tile) or [], step=tile)
        b.loop(whole, kernel.batch, [], lambda first, _s: tile_body(row, first, 1) or [])
        return []

    b.loop(kernel.begin, kernel.end, [], row_body)
    return kernel.ret()


class _ColumnStepKernel(_Kernel):
    """Kernels that take a weight row 64 columns per step, as four 16-lane float vectors
    that multiply the inputs into four accumulators per batch row (independent chains,
    so consecutive multiply-adds do not wait on each other).

    Each decoded step serves a tile of TILE batch rows, so weights are decoded once per
    tile; batch rows beyond the last whole tile go one at a time. Inputs are loaded
    whole in full steps; the last, partial step loads them under lane masks, so no byte
    past a row's inputs is read. Subclasses say how a step's weights are decoded and
    what integer state (such as a read position) runs along the row."""

    TILE = 4

    def build(self) -> llvm.FuncOp:
        return _tiled(self, self.TILE, self.tile_body)

    def row_state(self, row: SSAValue) -> list[SSAValue]:
        """Integer state carried along `row`, before its first step."""
        raise NotImplementedError

    def decode(self, row: SSAValue, step: SSAValue, state: list[SSAValue], partial: int) -> tuple[list[SSAValue], list[SSAValue], list[SSAValue]]:
        """The four weight vectors of `step`, the state after it, and (when `partial`
        columns remain in a last, partial step) four lane masks for the inputs."""
        raise NotImplementedError

    def tile_body(self, row: SSAValue, tile: SSAValue, size: int) -> None:
        """Weight row `row` times `size` consecutive batch rows from `tile` on."""
        b, key = self.b, self.key
        full_steps, partial = divmod(key.cols, 64)
        batch_rows = [b.add(tile, b.const(j, i64)) for j in range(size)]
        x_rows = [b.element_ptr(self.x, b.mul(batch_row, b.const(key.cols, i64)), f32) for batch_row in batch_rows]
        carried = self.row_state(row)
        zero = b.vector_const([0.0] * 16, f32)

        def step_body(step: SSAValue, state) -> list[SSAValue]:
            return self.step(row, step, x_rows, list(state), len(carried), 0)

        state = b.loop(b.const(0, i64), b.const(full_steps, i64), carried + [zero] * (4 * size), step_body)
        if partial:
            state = self.step(row, b.const(full_steps, i64), x_rows, list(state), len(carried), partial)
        accs = state[len(carried) :]
        for j, batch_row in enumerate(batch_rows):
            total = b.fadd(b.fadd(accs[4 * j], accs[4 * j + 1]), b.fadd(accs[4 * j + 2], accs[4 * j + 3]))
            self.finish(b.sum_lanes(total), row, batch_row)

    def step(self, row: SSAValue, step: SSAValue, x_rows: list[SSAValue], state: list[SSAValue], carried: int, partial: int) -> list[SSAValue]:
        """One 64-column step: decode the weights once, multiply every batch row."""
        b = self.b
        weights, carried_after, input_masks = self.decode(row, step, state[:carried], partial)
        accs = state[carried:]
        column = b.mul(step, b.const(64, i64))
        updated = []
        for j, x_row in enumerate(x_rows):
            for q, weight in enumerate(weights):
                at = b.element_ptr(x_row, b.add(column, b.const(16 * q, i64)), f32)
                if partial:
                    inputs = b.intrinsic("llvm.masked.load.v16f32.p0", [at, b.const(4, i32), input_masks[q], b.vector_const([0.0] * 16, f32)], _F32x16)
                else:
                    inputs = b.emit(llvm.LoadOp(at, _F32x16, alignment=4))
                updated.append(b.emit(llvm.FMAOp(weight, inputs, accs[4 * j + q])))
        return [*carried_after, *updated]


class _VectorBitmaskKernel(_ColumnStepKernel):
    """The bitmask kernel on 16 lanes. One 64-bit load takes a step's four mask words;
    each 32-bit half selects how many float16 values a 32-lane expand-load takes (as
    i16, which LLVM turns into a single VBMI2 `vpexpandw`; the same load on half is
    scalarized), widened to two 16-lane vectors. The second half starts where the
    popcount of the first ends, so the only loop-carried integer chain is one
    popcount-add per step. The partial step's inputs load under the mask words (zero
    past column K), and the expand-load never reads past the row's values."""

    def row_state(self, row: SSAValue) -> list[SSAValue]:
        b = self.b
        self.masks = b.element_ptr(self.a0, b.mul(row, b.const(self.key.mask_words, i64)), i16)
        return [b.load(self.a2, row, i64)]

    def decode(self, row: SSAValue, step: SSAValue, state: list[SSAValue], partial: int):
        b = self.b
        (position,) = state
        bits = b.emit(llvm.LoadOp(b.element_ptr(self.masks, b.mul(step, b.const(4, i64)), i16), i64, alignment=2))
        low = b.and_(bits, b.const(0xFFFFFFFF, i64))
        halves = [(position, low), (b.add(position, b.intrinsic("llvm.ctpop.i64", [low], i64)), b.lshr(bits, b.const(32, i64)))]
        weights = []
        for start, half in halves:
            lane_mask = b.bitcast(b.emit(llvm.TruncOp(half, i32)), VectorType(i1, [32]))
            packed = b.intrinsic(
                "llvm.masked.expandload.v32i16",
                [b.element_ptr(self.a1, start, i16), lane_mask, b.vector_const([0] * 32, i16)],
                VectorType(i16, [32]),
            )
            widened = b.emit(llvm.FPExtOp(b.bitcast(packed, VectorType(f16, [32])), VectorType(f32, [32])))
            weights += [b.lanes(widened, 0, 16), b.lanes(widened, 16, 16)]
        input_masks = [self.quarter_mask(bits, q) for q in range(4)] if partial else []
        return weights, [b.add(position, b.intrinsic("llvm.ctpop.i64", [bits], i64))], input_masks

    def quarter_mask(self, bits: SSAValue, quarter: int) -> SSAValue:
        """Mask word `quarter` of a 64-bit step as 16 lane flags."""
        b = self.b
        word = b.emit(llvm.TruncOp(b.lshr(bits, b.const(16 * quarter, i64)), i16))
        return b.bitcast(word, VectorType(i1, [16]))


class _DenseKernel(_ColumnStepKernel):
    """sparsec's dense float16 kernel, the baseline its sparse kernels must beat: a0 holds
    all N x K values row-major; a step loads 64 of them and widens them. The partial
    step loads weights and inputs under constant lane masks (columns below K)."""

    def row_state(self, row: SSAValue) -> list[SSAValue]:
        b = self.b
        self.values = b.element_ptr(self.a0, b.mul(row, b.const(self.key.cols, i64)), self.value_type)
        return []

    def decode(self, row: SSAValue, step: SSAValue, state: list[SSAValue], partial: int):
        b, half = self.b, self.value_type == f16
        stored = VectorType(self.value_type, [16])
        weights, masks = [], []
        for q in range(4):
            at = b.element_ptr(self.values, b.add(b.mul(step, b.const(64, i64)), b.const(16 * q, i64)), self.value_type)
            if partial:
                lanes = b.vector_const([int(16 * q + lane < partial) for lane in range(16)], i1)
                masks.append(lanes)
                zero = b.vector_const([0.0] * 16, self.value_type)
                width = "f16" if half else "f32"
                loaded = b.intrinsic(f"llvm.masked.load.v16{width}.p0", [at, b.const(2 if half else 4, i32), lanes, zero], stored)
            else:
                loaded = b.emit(llvm.LoadOp(at, stored, alignment=2 if half else 4))
            weights.append(b.emit(llvm.FPExtOp(loaded, _F32x16)) if half else loaded)
        return weights, [], masks


class _NMKernel(_Kernel):
    def position(self, index: SSAValue) -> SSAValue:
        """The kept position number `index`, decoded from the bit stream."""
        b, bits = self.b, self.key.position_bits
        if bits == 0:
            return b.const(0, i64)
        offset = b.mul(index, b.const(bits, i64))
        byte = b.lshr(offset, b.const(3, i64))
        word = b.emit(llvm.LoadOp(b.element_ptr(self.a1, byte, i8), i16, alignment=1))
        shifted = b.lshr(b.zext(word, i64), b.and_(offset, b.const(7, i64)))
        return b.and_(shifted, b.const((1 << bits) - 1, i64))

    @property
    def runs(self) -> int:
        return math.ceil(self.key.cols / self.key.m)

    def sum_runs(self, row: SSAValue, batch_row: SSAValue, first_run: int, acc: SSAValue) -> SSAValue:
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
                    col = b.emit(llvm.SelectOp(inside, col, b.const(0, i64)))
                product = b.fmuladd(self.value(self.a0, index), self.x_at(batch_row, col), total)
                if ragged:
                    product = b.emit(llvm.SelectOp(inside, product, total))
                return [product]

            return list(b.loop(b.const(0, i64), b.const(kept, i64), [acc], slot_body))

        (acc,) = b.loop(b.const(first_run, i64), b.const(self.runs, i64), [acc], run_body)
        return acc

    def build(self) -> llvm.FuncOp:
        def row_body(row: SSAValue, _state) -> list[SSAValue]:
            self.finish(self.sum_runs(row, self.batch_row, 0, self.b.const(0.0, f32)), row, self.batch_row)
            return []

        return self.for_each_row(row_body)


class _VectorNMKernel(_NMKernel):
    """The n:m kernel on 16 lanes, for m and kept-per-run dividing 16 on AVX-512.

    One step takes 16 consecutive kept values (contiguous float16, no mask) and their 16
    positions (one word of a2, see operands.py), which span `nm_span` columns. Lane l
    needs the input at column base_l + position_l, where base_l is its run's start; the
    span is read as 32-column chunks, and an AVX-512 two-source permute (vpermi2ps)
    picks each lane's input from its chunk, so the step is one multiply-add of 16
    useful products. Each step is decoded once for a tile of TILE batch rows. Runs past
    the last whole step go through the scalar code."""

    TILE = 4

    def build(self) -> llvm.FuncOp:
        return _tiled(self, self.TILE, self.tile_body)

    def tile_body(self, row: SSAValue, tile: SSAValue, size: int) -> None:
        """Weight row `row` times `size` consecutive batch rows from `tile` on."""
        b, key = self.b, self.key
        steps = key.cols // key.nm_span
        tail_run = steps * key.nm_span // key.m
        batch_rows = [b.add(tile, b.const(j, i64)) for j in range(size)]
        x_rows = [b.element_ptr(self.x, b.mul(batch_row, b.const(key.cols, i64)), f32) for batch_row in batch_rows]
        values = b.element_ptr(self.a0, b.mul(row, b.const(self.runs * (key.m - key.n), i64)), i16)
        words = b.element_ptr(self.a2, b.mul(row, b.const(steps, i64)), IntegerType(key.nm_word_bits))

        def step_body(step: SSAValue, accs) -> list[SSAValue]:
            return self.step(values, words, step, x_rows, accs)

        zero = b.vector_const([0.0] * 16, f32)
        if size == 1:  # two interleaved accumulators, so consecutive steps do not wait on each other
            pairs = steps - steps % 2

            def pair_body(step: SSAValue, accs) -> list[SSAValue]:
                return [step_body(b.add(step, b.const(j, i64)), [acc])[0] for j, acc in enumerate(accs)]

            even, odd = b.loop(b.const(0, i64), b.const(pairs, i64), [zero, zero], pair_body, step=2)
            (even,) = b.loop(b.const(pairs, i64), b.const(steps, i64), [even], step_body)
            accs = [b.fadd(even, odd)]
        else:
            accs = b.loop(b.const(0, i64), b.const(steps, i64), [zero] * size, step_body)
        for batch_row, acc in zip(batch_rows, accs):
            total = b.sum_lanes(acc)
            if tail_run < self.runs:
                total = self.sum_runs(row, batch_row, tail_run, total)
            self.finish(total, row, batch_row)

    def lane_columns(self, word: SSAValue) -> SSAValue:
        """Each lane's column within its 32-column chunk, from the step's position word."""
        b, key = self.b, self.key
        kept, bits = key.m - key.n, key.position_bits
        wide = IntegerType(key.nm_word_bits)
        shifted = b.lshr(b.splat(word, 16), b.vector_const([bits * lane for lane in range(16)], wide))
        if key.nm_word_bits != 32:
            shifted = b.emit(llvm.TruncOp(shifted, VectorType(i32, [16])))
        positions = b.and_(shifted, b.vector_const([key.m - 1] * 16, i32))
        return b.add(positions, b.vector_const([(lane // kept) * key.m % 32 for lane in range(16)], i32))

    def step(self, values: SSAValue, words: SSAValue, step: SSAValue, x_rows: list[SSAValue], accs) -> list[SSAValue]:
        b, key = self.b, self.key
        kept = key.m - key.n
        word = b.load(words, step, IntegerType(key.nm_word_bits))
        columns = self.lane_columns(word)
        half = b.emit(llvm.LoadOp(b.element_ptr(values, b.mul(step, b.const(16, i64)), i16), VectorType(f16, [16]), alignment=2))
        weights = b.emit(llvm.FPExtOp(half, _F32x16))
        chunk_of_lane = [(lane // kept) * key.m // 32 for lane in range(16)]
        span_start = b.mul(step, b.const(key.nm_span, i64))
        updated = []
        for x_row, acc in zip(x_rows, accs):
            inputs = None
            for chunk in range(key.nm_span // 32):
                at = b.element_ptr(x_row, b.add(span_start, b.const(32 * chunk, i64)), f32)
                low = b.emit(llvm.LoadOp(at, _F32x16, alignment=4))
                high = b.emit(llvm.LoadOp(b.element_ptr(at, b.const(16, i64), f32), _F32x16, alignment=4))
                picked = b.intrinsic("llvm.x86.avx512.vpermi2var.ps.512", [low, columns, high], _F32x16)
                if inputs is None:
                    inputs = picked
                else:
                    in_chunk = b.vector_const([int(c == chunk) for c in chunk_of_lane], i1)
                    inputs = b.emit(llvm.SelectOp(in_chunk, picked, inputs))
            updated.append(b.emit(llvm.FMAOp(weights, inputs, acc)))
        return updated


class _BlockKernel(_Kernel):
    def build(self) -> llvm.FuncOp:
        b, key = self.b, self.key
        size = key.block

        def row_block_body(row_block: SSAValue, _state) -> list[SSAValue]:
            first = b.load(self.a2, row_block, i64)
            last = b.load(self.a2, b.add(row_block, b.const(1, i64)), i64)

            def kept_body(kept: SSAValue, accs) -> list[SSAValue]:
                col = b.emit(llvm.SExtOp(b.load(self.a1, kept, i32), i64))
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


class _VectorBlockKernel(_Kernel):
    """The block kernel with a block's B rows as vector lanes: each kept block's values
    load and widen once per tile of batch rows and multiply every row's input at the
    block's column (one broadcast each) into that row's B-lane accumulator. A tile's
    accumulators are the tile's outputs for the row block: contiguous in y, stored as
    vectors (under a lane mask in a last row block that runs past N)."""

    VECTOR_EPILOGUE = False

    def build(self) -> llvm.FuncOp:
        tile = max(4, min(8, 128 // self.key.block))  # accumulators fit the vector registers
        return _tiled(self, tile, self.tile_body)

    def tile_body(self, row_block: SSAValue, tile: SSAValue, size: int) -> None:
        b, key = self.b, self.key
        lanes, stored = VectorType(f32, [key.block]), VectorType(self.value_type, [key.block])
        first = b.load(self.a2, row_block, i64)
        last = b.load(self.a2, b.add(row_block, b.const(1, i64)), i64)
        batch_rows = [b.add(tile, b.const(j, i64)) for j in range(size)]

        def kept_body(kept: SSAValue, accs) -> list[SSAValue]:
            col = b.emit(llvm.SExtOp(b.load(self.a1, kept, i32), i64))
            at = b.element_ptr(self.a0, b.mul(kept, b.const(key.block, i64)), self.value_type)
            weights = b.emit(llvm.LoadOp(at, stored, alignment=2 if self.value_type == f16 else 4))
            if self.value_type == f16:
                weights = b.emit(llvm.FPExtOp(weights, lanes))
            return [b.emit(llvm.FMAOp(weights, b.splat(self.x_at(row, col), key.block), acc)) for row, acc in zip(batch_rows, accs)]

        zero = b.vector_const([0.0] * key.block, f32)
        if size == 1:
            accs = [self.single_row_sum(first, last, kept_body)]
        else:
            accs = b.loop(first, last, [zero] * size, kept_body)
        first_row = b.mul(row_block, b.const(key.block, i64))
        inside = None
        if key.rows % key.block:  # only the last row block has rows past N
            offsets = b.add(b.splat(first_row, key.block), b.vector_const(list(range(key.block)), i64))
            inside = b.icmp("slt", offsets, b.splat(b.const(key.rows, i64), key.block))
        for batch_row, acc in zip(batch_rows, accs):
            self.finish_lanes(acc, first_row, batch_row, inside)

    def single_row_sum(self, first: SSAValue, last: SSAValue, kept_body) -> SSAValue:
        """One batch row's sum over kept blocks [first, last) in four interleaved
        accumulators, so consecutive multiply-adds do not wait on each other."""
        b, key = self.b, self.key
        zero = b.vector_const([0.0] * key.block, f32)
        count = b.sub(last, first)
        whole = b.add(first, b.sub(count, b.emit(llvm.URemOp(count, b.const(4, i64)))))

        def four_body(kept: SSAValue, accs) -> list[SSAValue]:
            return [kept_body(b.add(kept, b.const(j, i64)), [acc])[0] for j, acc in enumerate(accs)]

        accs = b.loop(first, whole, [zero] * 4, four_body, step=4)
        (rest,) = b.loop(whole, last, [accs[0]], kept_body)
        return b.fadd(b.fadd(rest, accs[1]), b.fadd(accs[2], accs[3]))

    def finish_lanes(self, acc: SSAValue, first_row: SSAValue, batch_row: SSAValue, inside: SSAValue | None) -> None:
        """`finish` for B consecutive outputs at once; `inside` masks rows past N."""
        b, key = self.b, self.key
        lanes = VectorType(f32, [key.block])
        zero = b.vector_const([0.0] * key.block, f32)
        if key.epilogue.startswith("bias"):
            at = b.element_ptr(self.bias, first_row, f32)
            if inside is None:
                bias = b.emit(llvm.LoadOp(at, lanes, alignment=4))
            else:
                bias = b.intrinsic(f"llvm.masked.load.v{key.block}f32.p0", [at, b.const(4, i32), inside, zero], lanes)
            acc = b.fadd(acc, bias)
        acc = self.activation(acc)
        at = b.element_ptr(self.y, b.add(b.mul(batch_row, b.const(key.rows, i64)), first_row), f32)
        if inside is None:
            b.emit(llvm.StoreOp(acc, at, alignment=4))
        else:
            b.emit(llvm.MaskedStoreOp(acc, at, inside, alignment=4))


class _BatchedKernel(_Kernel):
    """Kernels for larger batches, with the work proportional to the non-zeros: x is
    the transposed input (K x P, P a multiple of 16 holding the batch zero-padded) and y
    the transposed output (N x P), so one weight multiplies 16 batch rows' inputs at its
    column in one vector multiply-add. `batch` is P.

    A weight row takes the batch 32 lanes (two vectors) at a time, then 16. Products go
    16 at a time: their 16 values load and widen as one vector, and each is broadcast
    from its lane; they rotate over WAYS sets of accumulators, so consecutive
    multiply-adds do not wait on each other. The loop over a row's products has a trip
    count known up front. Subclasses say how many products a row has, where its values
    start, and how to find the next product's column."""

    WAYS = 4
    CHUNK = 16
    VECTOR_EPILOGUE = False

    def build(self) -> llvm.FuncOp:
        b = self.b

        def row_body(row: SSAValue, _state) -> list[SSAValue]:
            pairs = b.sub(self.batch, b.emit(llvm.URemOp(self.batch, b.const(32, i64))))
            b.loop(b.const(0, i64), pairs, [], lambda lane, _s: self.row_tile(row, lane, 2) or [], step=32)
            b.loop(pairs, self.batch, [], lambda lane, _s: self.row_tile(row, lane, 1) or [], step=16)
            return []

        b.loop(self.begin, self.end, [], row_body)
        return self.ret()

    def products(self, row: SSAValue) -> tuple[SSAValue, SSAValue, list[SSAValue]]:
        """The number of products in `row`, a pointer to their values (in product
        order) and the column search's state before the first."""
        raise NotImplementedError

    def next_product(self, row: SSAValue, index: SSAValue, state: list[SSAValue]) -> tuple[SSAValue, SSAValue | None, list[SSAValue]]:
        """Product `index` of `row`: its column, whether it counts (None: always), and
        the state after it."""
        raise NotImplementedError

    def row_tile(self, row: SSAValue, lane: SSAValue, vectors: int) -> None:
        b, ways = self.b, self.WAYS
        count, values, start = self.products(row)
        carried = len(start)
        zero = b.vector_const([0.0] * 16, f32)

        def multiply(index: SSAValue, weight: SSAValue, state: list[SSAValue], accs: list[SSAValue]):
            col, counts, state = self.next_product(row, index, state)
            inputs = b.element_ptr(self.x, b.add(b.mul(col, self.batch), lane), f32)
            updated = []
            for v, acc in enumerate(accs):
                at = b.element_ptr(inputs, b.const(16 * v, i64), f32)
                product = b.emit(llvm.FMAOp(weight, b.emit(llvm.LoadOp(at, _F32x16, alignment=4)), acc))
                updated.append(product if counts is None else b.emit(llvm.SelectOp(counts, product, acc)))
            return state, updated

        def chunk_body(first: SSAValue, state) -> list[SSAValue]:
            state, accs = list(state[:carried]), list(state[carried:])
            weights = self.chunk_values(values, first)
            for j in range(self.CHUNK):
                way = slice((j % ways) * vectors, (j % ways + 1) * vectors)
                index = b.add(first, b.const(j, i64))
                weight = b.emit(llvm.ShuffleVectorOp(weights, weights, DenseArrayBase.from_list(i32, [j] * 16), _F32x16))
                state, accs[way] = multiply(index, weight, state, accs[way])
            return [*state, *accs]

        def one_body(index: SSAValue, state) -> list[SSAValue]:
            state, accs = list(state[:carried]), list(state[carried:])
            weight = b.splat(self.value(values, index), 16)
            state, accs[:vectors] = multiply(index, weight, state, accs[:vectors])
            return [*state, *accs]

        chunks = b.sub(count, b.emit(llvm.URemOp(count, b.const(self.CHUNK, i64))))
        state = [*start] + [zero] * (ways * vectors)
        if self.key.native_f16 or self.value_type == f32:
            state = b.loop(b.const(0, i64), chunks, state, chunk_body, step=self.CHUNK)
            state = b.loop(chunks, count, list(state), one_body)
        else:  # no vector float16 conversion on this target: one value at a time
            state = b.loop(b.const(0, i64), count, state, one_body)
        accs = state[carried:]
        for v in range(vectors):
            total = accs[v]
            for way in range(1, ways):
                total = b.fadd(total, accs[way * vectors + v])
            self.finish_batch(total, row, b.add(lane, b.const(16 * v, i64)))

    def chunk_values(self, values: SSAValue, first: SSAValue) -> SSAValue:
        """Values [first, first + 16) as 16 float lanes."""
        b = self.b
        at = b.element_ptr(values, first, self.value_type)
        loaded = b.emit(llvm.LoadOp(at, VectorType(self.value_type, [16]), alignment=2 if self.value_type == f16 else 4))
        return b.emit(llvm.FPExtOp(loaded, _F32x16)) if self.value_type == f16 else loaded

    def finish_batch(self, acc: SSAValue, row: SSAValue, lane: SSAValue) -> None:
        """The epilogue for 16 batch rows of output `row`, stored into the transposed y."""
        b, key = self.b, self.key
        if key.epilogue.startswith("bias"):
            acc = b.fadd(acc, b.splat(b.load(self.bias, row, f32), 16))
        acc = self.activation(acc)
        at = b.element_ptr(self.y, b.add(b.mul(row, self.batch), lane), f32)
        b.emit(llvm.StoreOp(acc, at, alignment=4))


class _BatchedBitmaskKernel(_BatchedKernel):
    """Batched bitmask: a row's products are its set bits, found 64 columns at a time
    (count trailing zeros, clear the lowest bit, load the next 64-bit word when empty)."""

    def products(self, row: SSAValue):
        b, key = self.b, self.key
        start = b.load(self.a2, row, i64)
        self.masks = b.element_ptr(self.a0, b.mul(row, b.const(key.mask_words, i64)), i16)
        first_word = b.emit(llvm.LoadOp(self.masks, i64, alignment=2))
        count = b.sub(b.load(self.a2, b.add(row, b.const(1, i64)), i64), start)
        return count, b.element_ptr(self.a1, start, self.value_type), [b.const(0, i64), first_word]

    def next_product(self, row: SSAValue, index: SSAValue, state: list[SSAValue]):
        b = self.b
        word_index, word = state

        def next_word(values) -> list[SSAValue]:
            following = b.add(values[0], b.const(1, i64))
            at = b.element_ptr(self.masks, b.mul(following, b.const(4, i64)), i16)
            return [following, b.emit(llvm.LoadOp(at, i64, alignment=2))]

        word_index, word = b.while_([word_index, word], lambda v: b.icmp("eq", v[1], b.const(0, i64)), next_word)
        col = b.add(b.mul(word_index, b.const(64, i64)), b.cttz(word))
        return col, None, [word_index, b.and_(word, b.sub(word, b.const(1, i64)))]


class _BatchedNMKernel(_BatchedKernel, _NMKernel):
    """Batched n:m: a row's products are its runs' kept slots, in order; padding slots
    of a ragged last run do not count."""

    def products(self, row: SSAValue):
        b, key = self.b, self.key
        per_row = self.runs * (key.m - key.n)
        self.first = b.mul(row, b.const(per_row, i64))
        return b.const(per_row, i64), b.element_ptr(self.a0, self.first, self.value_type), []

    def next_product(self, row: SSAValue, index: SSAValue, state: list[SSAValue]):
        b, key = self.b, self.key
        kept = key.m - key.n
        slot = b.add(self.first, index)
        col = b.add(b.mul(b.emit(llvm.UDivOp(index, b.const(kept, i64))), b.const(key.m, i64)), self.position(slot))
        counts = None
        if key.cols % key.m:  # the last run's padding slots lie past column K
            counts = b.icmp("slt", col, b.const(key.cols, i64))
            col = b.emit(llvm.SelectOp(counts, col, b.const(0, i64)))
        return col, counts, state


class _ScalarDenseKernel(_Kernel):
    """The dense kernel for portable targets: one multiply-add per weight."""

    def build(self) -> llvm.FuncOp:
        b, key = self.b, self.key

        def row_body(row: SSAValue, _state) -> list[SSAValue]:
            first = b.mul(row, b.const(key.cols, i64))

            def column_body(col: SSAValue, state) -> list[SSAValue]:
                (acc,) = state
                return [b.fmuladd(self.value(self.a0, b.add(first, col)), self.x_at(self.batch_row, col), acc)]

            (acc,) = b.loop(b.const(0, i64), b.const(key.cols, i64), [b.const(0.0, f32)], column_body)
            self.finish(acc, row, self.batch_row)
            return []

        return self.for_each_row(row_body)


_KERNELS = {"bitmask": _BitmaskKernel, "nm": _NMKernel, "block": _BlockKernel, "dense": _ScalarDenseKernel}


def kernel_function(key: KernelKey) -> llvm.FuncOp:
    """The `llvm.func` for one specialization key (a pure function of the key).

    Bitmask and dense weights in float16 on a target with float16 conversions use the
    16-lane kernels, n:m weights on AVX-512 too (`KernelKey.nm_lanes`); scalar kernels
    cover the rest (float32 bitmask values, portable targets).
    """
    if key.batched:
        return {"bitmask": _BatchedBitmaskKernel, "nm": _BatchedNMKernel}[key.kind](key).build()
    if key.kind == "bitmask" and key.values == "f16" and key.native_f16:
        return _VectorBitmaskKernel(key).build()
    if key.kind == "block" and (key.native_f16 or key.values == "f32"):
        return _VectorBlockKernel(key).build()
    if key.kind == "dense" and (key.native_f16 or key.values == "f32"):
        return _DenseKernel(key).build()
    if key.nm_lanes:
        return _VectorNMKernel(key).build()
    return _KERNELS[key.kind](key).build()


def kernel_llvm_ir(key: KernelKey) -> str:
    """LLVM IR text of one kernel, through xDSL's llvm-dialect translator."""
    import llvmlite.binding as llvm

    module = kernel_module([key])
    return str(convert_module(module, fallback_target_triple=llvm.get_process_triple()))


def kernel_module(keys: list[KernelKey]) -> ModuleOp:
    """One module holding a function for each distinct key."""
    unique = list(dict.fromkeys(keys))
    return ModuleOp([kernel_function(key) for key in unique])
