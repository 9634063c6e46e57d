"""Sparse matrix kernels, generated per specialization key in xDSL's `llvm` dialect.

Every kernel computes, for batch rows b and output rows o in [begin, end),

    y[b, o] = epilogue(sum_k W[o, k] * x[b, k])      W in its (out, in) view, N x K

with N, K, the encoding parameters and the epilogue fixed at generation time, so LLVM
sees constant trip counts and strides. The signature is the same for all kernels:

    void kernel(float *x, float *y, void *a0, void *a1, void *a2, float *bias,
                i64 batch, i64 begin, i64 end)

bitmask   a0 = mask as 16-bit words, each row padded to whole words (N x ceil(K/16));
          a1 = non-zero values in row-major order; a2 = i64 row start offsets (N + 1).
          Decodes one 16-bit group at a time and visits only its set bits (cttz).
nm        a0 = kept values, m - n per run of m along the row; a1 = kept positions,
          ceil(log2 m) bits each, least-significant first (with 2 bytes of slack).
          No mask: a fixed trip count of m - n per run.
block     (blocks of B output rows) a0 = kept blocks' values, B per block, grouped by row
          block; a1 = i32 column of each kept block; a2 = i64 start of each row block's
          blocks (ceil(N/B) + 1). Loops over kept blocks only; begin/end count row blocks.
"""

from __future__ import annotations

import math

from xdsl.backend.llvm.convert import convert_module
from xdsl.dialects import llvm
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp, VectorType, f16, f32, i1, i8, i16, i32, i64
from xdsl.ir import SSAValue

from sparsec.kernels import KernelKey
from sparsec.runtime.codegen.builder import PTR, FunctionBuilder

ARG_NAMES = ("x", "y", "a0", "a1", "a2", "bias", "batch", "begin", "end")
ARG_TYPES = (PTR, PTR, PTR, PTR, PTR, PTR, i64, i64, i64)


class _Kernel:
    """Shared structure: the batch and row loops, the epilogue and the store."""

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
        if key.epilogue in ("bias", "bias_relu"):
            acc = b.fadd(acc, b.load(self.bias, row, f32))
        if key.epilogue in ("relu", "bias_relu"):
            acc = b.fmax(acc, b.const(0.0, f32))
        b.store(acc, self.y, b.add(b.mul(batch_row, b.const(key.rows, i64)), row))

    def for_each_row(self, row_body) -> llvm.FuncOp:
        """for b in range(batch): for unit in range(begin, end): row_body(unit); then return."""
        b = self.b

        def batch_body(batch_row: SSAValue, _state) -> list[SSAValue]:
            self.batch_row = batch_row
            b.loop(self.begin, self.end, [], row_body)
            return []

        b.loop(b.const(0, i64), self.batch, [], batch_body)
        return b.ret()

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
                bits = b.zext(b.load(self.a0, b.add(b.mul(row, b.const(words, i64)), word), i16), i32)
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


class _VectorBitmaskKernel(_Kernel):
    """The bitmask kernel, 16 values per step: the set bits of a mask word select how many
    float16 values an expand-load takes (as i16, then widened), and the same mask loads
    the matching inputs; nothing past the row's values or inputs is touched. Each decoded
    word serves a tile of TILE batch rows, so the weights are decoded once per tile;
    batch rows beyond the last whole tile go one at a time."""

    TILE = 4

    def build(self) -> llvm.FuncOp:
        b, key = self.b, self.key
        words = math.ceil(key.cols / 16)
        lanes_i1, lanes_i16 = VectorType(i1, [16]), VectorType(i16, [16])
        lanes_f16, lanes_f32 = VectorType(f16, [16]), VectorType(f32, [16])

        def vector_zero(ty: VectorType, value: float) -> SSAValue:
            return b.emit(llvm.ConstantOp(DenseIntOrFPElementsAttr.from_list(ty, [value] * 16), ty))

        def tile_body(size: int):
            """The loop body for `size` consecutive batch rows, all of them present."""

            def body(tile: SSAValue, _state) -> list[SSAValue]:
                batch_rows = [b.add(tile, b.const(j, i64)) for j in range(size)]
                x_rows = [b.element_ptr(self.x, b.mul(row, b.const(key.cols, i64)), f32) for row in batch_rows]

                def row_body(row: SSAValue, _inner) -> list[SSAValue]:
                    start = b.load(self.a2, row, i64)
                    zero_i16, zero_f32 = vector_zero(lanes_i16, 0), vector_zero(lanes_f32, 0.0)

                    def word_body(word: SSAValue, state) -> list[SSAValue]:
                        position, *accs = state
                        bits = b.load(self.a0, b.add(b.mul(row, b.const(words, i64)), word), i16)
                        mask = b.emit(llvm.BitcastOp(bits, lanes_i1))
                        values_at = b.element_ptr(self.a1, position, i16)
                        packed = b.emit(
                            llvm.CallIntrinsicOp("llvm.masked.expandload.v16i16", [values_at, mask, zero_i16], [lanes_i16])
                        )
                        widened = b.emit(llvm.FPExtOp(b.emit(llvm.BitcastOp(packed, lanes_f16)), lanes_f32))
                        offset = b.mul(word, b.const(16, i64))
                        updated = []
                        for x_row, acc in zip(x_rows, accs):
                            inputs = b.emit(
                                llvm.CallIntrinsicOp(
                                    "llvm.masked.load.v16f32.p0",
                                    [b.element_ptr(x_row, offset, f32), b.const(4, i32), mask, zero_f32],
                                    [lanes_f32],
                                )
                            )
                            updated.append(b.emit(llvm.FMAOp(widened, inputs, acc)))
                        count = b.emit(llvm.CallIntrinsicOp("llvm.ctpop.i16", [bits], [i16]))
                        return [b.add(position, b.zext(count, i64)), *updated]

                    _, *accs = b.loop(b.const(0, i64), b.const(words, i64), [start] + [zero_f32] * size, word_body)
                    for batch_row, acc in zip(batch_rows, accs):
                        self.finish(b.emit(llvm.VectorReduceFAddOp(b.const(0.0, f32), acc)), row, batch_row)
                    return []

                b.loop(self.begin, self.end, [], row_body)
                return []

            return body

        # Whole tiles first, then the remaining rows one by one.
        whole = b.and_(self.batch, b.const(-self.TILE, i64))
        b.loop(b.const(0, i64), whole, [], tile_body(self.TILE), step=self.TILE)
        b.loop(whole, self.batch, [], tile_body(1))
        return b.ret()


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

    def build(self) -> llvm.FuncOp:
        b, key = self.b, self.key
        kept = key.m - key.n
        runs = math.ceil(key.cols / key.m)
        ragged = key.cols % key.m != 0

        def row_body(row: SSAValue, _state) -> list[SSAValue]:
            def run_body(run: SSAValue, state) -> list[SSAValue]:
                (acc,) = state
                first = b.mul(b.add(b.mul(row, b.const(runs, i64)), run), b.const(kept, i64))
                col_base = b.mul(run, b.const(key.m, i64))

                def slot_body(slot: SSAValue, inner) -> list[SSAValue]:
                    (total,) = inner
                    index = b.add(first, slot)
                    col = b.add(col_base, self.position(index))
                    if ragged:  # the last run's padding slots hold zeros past column K
                        inside = b.icmp("slt", col, b.const(key.cols, i64))
                        col = b.emit(llvm.SelectOp(inside, col, b.const(0, i64)))
                    product = b.fmuladd(self.value(self.a0, index), self.x_at(self.batch_row, col), total)
                    if ragged:
                        product = b.emit(llvm.SelectOp(inside, product, total))
                    return [product]

                return list(b.loop(b.const(0, i64), b.const(kept, i64), [acc], slot_body))

            (acc,) = b.loop(b.const(0, i64), b.const(runs, i64), [b.const(0.0, f32)], run_body)
            self.finish(acc, row, self.batch_row)
            return []

        return self.for_each_row(row_body)


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


_KERNELS = {"bitmask": _BitmaskKernel, "nm": _NMKernel, "block": _BlockKernel}


def kernel_function(key: KernelKey) -> llvm.FuncOp:
    """The `llvm.func` for one specialization key (a pure function of the key).

    Bitmask weights in float16 on a target with float16 conversions use the 16-lane
    kernel; the scalar bit-scanning kernel covers float32 values and portable targets.
    """
    if key.kind == "bitmask" and key.values == "f16" and key.native_f16:
        return _VectorBitmaskKernel(key).build()
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
