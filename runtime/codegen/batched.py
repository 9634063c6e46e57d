"""The batched kernel structure (from 16 batch rows): work in proportion to the non-zeros,
on transposed activations. bitmask.py and nm.py say how a row's non-zeros are found."""

from __future__ import annotations

from xdsl.dialects import llvm
from xdsl.dialects.builtin import DenseArrayBase, VectorType, f16, f32, i32, i64
from xdsl.ir import SSAValue

from sparsec.runtime.codegen.base import F32x16, Kernel


class BatchedKernel(Kernel):
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
                product = b.emit(llvm.FMAOp(weight, b.emit(llvm.LoadOp(at, F32x16, alignment=4)), acc))
                updated.append(product if counts is None else b.emit(llvm.SelectOp(counts, product, acc)))
            return state, updated

        def chunk_body(first: SSAValue, state) -> list[SSAValue]:
            state, accs = list(state[:carried]), list(state[carried:])
            weights = self.chunk_values(values, first)
            for j in range(self.CHUNK):
                way = slice((j % ways) * vectors, (j % ways + 1) * vectors)
                index = b.add(first, b.const(j, i64))
                weight = b.emit(llvm.ShuffleVectorOp(weights, weights, DenseArrayBase.from_list(i32, [j] * 16), F32x16))
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
        return b.emit(llvm.FPExtOp(loaded, F32x16)) if self.value_type == f16 else loaded

    def finish_batch(self, acc: SSAValue, row: SSAValue, lane: SSAValue) -> None:
        """The epilogue for 16 batch rows of output `row`, stored into the transposed y."""
        b, key = self.b, self.key
        if key.epilogue.startswith("bias"):
            acc = b.fadd(acc, b.splat(b.load(self.bias, row, f32), 16))
        acc = self.activation(acc)
        at = b.element_ptr(self.y, b.add(b.mul(row, self.batch), lane), f32)
        b.emit(llvm.StoreOp(acc, at, alignment=4))
