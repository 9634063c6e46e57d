"""The batched kernel structure (from 12 batch rows): work in proportion to the non-zeros,
on transposed activations. bitmask.py and nm.py say how a row's non-zeros are found."""

from __future__ import annotations

from xdsl.dialects import llvm
from xdsl.dialects.builtin import DenseArrayBase, VectorType, f16, f32, i32, i64
from xdsl.ir import SSAValue

from sparsec.runtime.codegen.base import F32x16, Kernel


class BatchedKernel(Kernel):
    """Kernels for larger batches, with the work proportional to the non-zeros: x is
    the transposed input (K x P, P a multiple of 16 holding the batch zero-padded) and y
    the transposed output (N x P, zeroed by the caller), so one weight multiplies 16
    batch rows' inputs at its column in one vector multiply-add. `batch` is P.

    Rows go in groups of ROWS; a group's weight is taken one column panel
    (KernelKey.panel_columns) at a time for all its rows, adding into y: the inputs a
    panel reads (256 x P floats) stay in L1 instead of streaming all K x P from L2 for
    every row. Bias and activation follow in one pass at the end.

    A weight row takes the batch 32 lanes (two vectors) at a time, then 16. Products go
    16 at a time: their 16 values load and widen as one vector, and each is broadcast
    from its lane; they rotate over WAYS sets of accumulators, so consecutive
    multiply-adds do not wait on each other. The loop over a row's products has a trip
    count known up front. Subclasses say how many products a row has, where its values
    start, and how to find the next product's column."""

    WAYS = 4
    CHUNK = 16
    ROWS = 128
    """Weight rows a group: a group's outputs (ROWS x P floats) and its weights stay in
    L2 while its panels go by."""
    VECTOR_EPILOGUE = False

    def build(self) -> llvm.FuncOp:
        b = self.b

        def group_body(first_row: SSAValue, _state) -> list[SSAValue]:
            last_row = b.emit(llvm.CallIntrinsicOp("llvm.smin.i64", [b.add(first_row, b.const(self.ROWS, i64)), self.end], [i64]))

            def panel_body(panel: SSAValue, _inner) -> list[SSAValue]:
                def row_body(row: SSAValue, _rows) -> list[SSAValue]:
                    pairs = b.round_down(self.batch, 32)
                    b.loop(b.const(0, i64), pairs, [], lambda lane, _s: self.row_tile(row, panel, lane, 2) or [], step=32)
                    b.loop(pairs, self.batch, [], lambda lane, _s: self.row_tile(row, panel, lane, 1) or [], step=16)
                    return []

                b.loop(first_row, last_row, [], row_body)
                return []

            b.loop(b.const(0, i64), b.const(self.key.panels, i64), [], panel_body)
            return []

        b.loop(self.begin, self.end, [], group_body, step=self.ROWS)
        if self.key.epilogue != "none":
            self.batch_epilogue()
        return self.ret()

    def products(self, row: SSAValue, panel: SSAValue) -> tuple[SSAValue, SSAValue, list[SSAValue]]:
        """The number of products of `row` in column panel `panel`, a pointer to their
        values (in product order) and the column search's state before the first."""
        raise NotImplementedError

    def next_product(
        self, row: SSAValue, index: SSAValue, state: list[SSAValue], lane: int | None
    ) -> tuple[SSAValue, SSAValue | None, list[SSAValue]]:
        """Product `index` of `row`: its column, whether it counts (None: always), and
        the state after it. `lane` is its place in the current chunk of 16 (None
        outside chunks)."""
        raise NotImplementedError

    def start_chunk(self, row: SSAValue, first: SSAValue) -> None:
        """Called before the products [first, first + 16) of a chunk (a subclass may
        load what they share)."""

    def row_tile(self, row: SSAValue, panel: SSAValue, lane: SSAValue, vectors: int) -> None:
        """Row `row`'s products in `panel` times batch lanes [lane, lane + 16 * vectors),
        added to y (which the caller zeroes)."""
        b, ways = self.b, self.WAYS
        count, values, start = self.products(row, panel)
        carried = len(start)
        zero = b.vector_const([0.0] * 16, f32)

        def multiply(index: SSAValue, weight: SSAValue, state: list[SSAValue], accs: list[SSAValue], lane_in_chunk: int | None):
            col, counts, state = self.next_product(row, index, state, lane_in_chunk)
            inputs = b.element_ptr(self.x, b.add(b.mul(col, self.batch), lane), f32)
            updated = []
            for v, acc in enumerate(accs):
                at = b.element_ptr(inputs, b.const(16 * v, i64), f32)
                product = b.emit(llvm.FMAOp(weight, b.emit(llvm.LoadOp(at, F32x16, alignment=4)), acc))
                updated.append(product if counts is None else b.select(counts, product, acc))
            return state, updated

        def chunk_body(first: SSAValue, state) -> list[SSAValue]:
            state, accs = list(state[:carried]), list(state[carried:])
            weights = self.chunk_values(values, first)
            self.start_chunk(row, first)
            for j in range(self.CHUNK):
                way = slice((j % ways) * vectors, (j % ways + 1) * vectors)
                index = b.add(first, b.const(j, i64))
                weight = b.emit(llvm.ShuffleVectorOp(weights, weights, DenseArrayBase.from_list(i32, [j] * 16), F32x16))
                state, accs[way] = multiply(index, weight, state, accs[way], j)
            return [*state, *accs]

        def one_body(index: SSAValue, state) -> list[SSAValue]:
            state, accs = list(state[:carried]), list(state[carried:])
            weight = b.splat(self.value(values, index), 16)
            state, accs[:vectors] = multiply(index, weight, state, accs[:vectors], None)
            return [*state, *accs]

        chunks = b.round_down(count, self.CHUNK)
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
            at = b.element_ptr(self.y, b.add(b.mul(row, self.batch), b.add(lane, b.const(16 * v, i64))), f32)
            b.emit(llvm.StoreOp(b.fadd(total, b.emit(llvm.LoadOp(at, F32x16, alignment=4))), at, alignment=4))

    def chunk_values(self, values: SSAValue, first: SSAValue) -> SSAValue:
        """Values [first, first + 16) as 16 float lanes."""
        b = self.b
        at = b.element_ptr(values, first, self.value_type)
        loaded = b.emit(llvm.LoadOp(at, VectorType(self.value_type, [16]), alignment=2 if self.value_type == f16 else 4))
        return b.emit(llvm.FPExtOp(loaded, F32x16)) if self.value_type == f16 else loaded

    def batch_epilogue(self) -> None:
        """Bias and activation on the finished outputs of rows [begin, end), 16 batch
        rows at a time."""
        b, key = self.b, self.key

        def row_body(row: SSAValue, _state) -> list[SSAValue]:
            def lanes_body(lane: SSAValue, _inner) -> list[SSAValue]:
                at = b.element_ptr(self.y, b.add(b.mul(row, self.batch), lane), f32)
                acc = b.emit(llvm.LoadOp(at, F32x16, alignment=4))
                if key.epilogue.startswith("bias"):
                    acc = b.fadd(acc, b.splat(b.load(self.bias, row, f32), 16))
                b.emit(llvm.StoreOp(self.activation(acc), at, alignment=4))
                return []

            b.loop(b.const(0, i64), self.batch, [], lanes_body, step=16)
            return []

        b.loop(self.begin, self.end, [], row_body)
