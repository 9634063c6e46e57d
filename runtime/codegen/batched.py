"""The batched kernel structure (from 4 to 13 batch rows on, KernelKey.batched_from): work
in proportion to the non-zeros, on transposed activations. bitmask.py and nm.py say how
a panel's products are decoded; block.py has a batched kernel of its own, whose kept
blocks need no decoding."""

from __future__ import annotations

from xdsl.dialects import llvm
from xdsl.dialects.builtin import f16, f32, i16, i32, i64
from xdsl.ir import SSAValue

from sparsec.runtime.codegen.base import F32x16, Kernel
from sparsec.runtime.codegen.builder import vector


class BatchedKernel(Kernel):
    """Kernels for larger batches, with the work proportional to the non-zeros: x is
    the transposed input ((K + 1) x P, P a multiple of 16 holding the batch zero-padded,
    row K all zeros) and y the transposed output (N x P: the first panel stores, the
    others add, so y needs no zeroing), so one weight multiplies 16 batch rows' inputs
    at its column in one vector multiply-add. `batch` is P.

    Rows go in groups of ROWS; a group's weight is taken one column panel
    (KernelKey.panel_columns) at a time for all its rows, adding into y: the inputs a
    panel reads (panel x P floats) stay in L1 instead of streaming all K x P from L2 for
    every row. Bias and activation follow in one pass at the end.

    A row's products in a panel are first decoded into two small stack arrays, their
    columns and their values widened to float32 (`decode`, vectorized: a compress
    of column numbers per mask word, 16 values widened at a time); the batch then goes
    32 lanes (two vectors) at a time, then 16, through a plain loop over those arrays:
    per product, a column load, a broadcast value and one multiply-add per vector,
    rotating over WAYS sets of accumulators so consecutive multiply-adds do not wait on
    each other. The arrays are padded to whole rounds of WAYS with products that add
    nothing (weight 0 at the zero row K), so there is no remainder loop. Decoding once
    per panel row serves every lane tile, and the kernel is small enough to compile
    about as fast as the others."""

    WAYS = 4
    PREFETCH_ROWS = 4
    ROWS = 128
    """Weight rows a group: a group's outputs (ROWS x P floats) and its weights stay in
    L2 while its panels go by."""
    UNROLLED_LOOPS = True  # a batched n:m row's decode ran 0.72x as fast rolled up
    VECTOR_EPILOGUE = False
    EXPLICIT_VECTORS = True

    def build(self) -> llvm.FuncOp:
        b = self.b
        # 16 slots of slack: decoding writes whole vectors past the last product.
        self.columns = b.alloca(self.key.panel_columns + 16, i32)
        self.weights = b.alloca(self.key.panel_columns + 16, f32)

        def group_body(first_row: SSAValue, _state) -> list[SSAValue]:
            last_row = b.smin(b.add(first_row, b.const(self.ROWS, i64)), self.end)

            def panel_body(panel: SSAValue, _inner) -> list[SSAValue]:
                first_panel = b.icmp("eq", panel, b.const(0, i64))

                def row_body(row: SSAValue, _rows) -> list[SSAValue]:
                    count = self.pad(self.decode(row, panel))
                    pairs = b.round_down(self.batch, 32)
                    b.loop(b.const(0, i64), pairs, [], lambda lane, _s: self.multiply(row, lane, count, 2, first_panel) or [], step=32)
                    b.loop(pairs, self.batch, [], lambda lane, _s: self.multiply(row, lane, count, 1, first_panel) or [], step=16)
                    return []

                b.loop(first_row, last_row, [], row_body)
                return []

            b.loop(b.const(0, i64), b.const(self.key.panels, i64), [], panel_body)
            return []

        b.loop(self.begin, self.end, [], group_body, step=self.ROWS)
        if self.key.epilogue != "none":
            self.batch_epilogue()
        return self.ret()

    def decode(self, row: SSAValue, panel: SSAValue) -> SSAValue:
        """Write `row`'s products in column panel `panel` to `self.columns` (i32) and
        `self.weights` (f32), in order; return how many there are."""
        raise NotImplementedError

    def row_ahead(self, row: SSAValue) -> SSAValue:
        """The row PREFETCH_ROWS after `row` (the last row at most), whose weights in
        the same panel the decoders prefetch: a group visits its rows panel by panel,
        a stride the hardware prefetcher does not follow (20% of the time at 16 batch
        rows went to waiting for them)."""
        b = self.b
        ahead = b.add(row, b.const(self.PREFETCH_ROWS, i64))
        return b.smin(ahead, b.const(self.key.rows - 1, i64))

    def pad(self, count: SSAValue) -> SSAValue:
        """Fill the arrays after `count` products up to a whole number of rounds with
        products that add nothing (weight 0, column K: x's zero row; a zero weight alone
        could meet an infinite input); return the padded count."""
        b = self.b
        b.store_at(b.vector_const([self.key.cols] * 16, i32), b.element_ptr(self.columns, count, i32), alignment=4)
        b.store_at(b.vector_const([0.0] * 16, f32), b.element_ptr(self.weights, count, f32), alignment=4)
        return b.round_down(b.add(count, b.const(self.WAYS - 1, i64)), self.WAYS)

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

        b.loop(b.const(0, i64), count, [], chunk_body, step=16)

    def multiply(self, row: SSAValue, lane: SSAValue, count: SSAValue, vectors: int, first_panel: SSAValue) -> None:
        """y[row, lane:lane + 16 * vectors] = (on the first panel) or += (on the others)
        the decoded products (`count`, a whole number of rounds) times their inputs."""
        b, ways = self.b, self.WAYS
        x_lanes = b.element_ptr(self.x, lane, f32)

        def product(index: SSAValue, accs: list[SSAValue]) -> list[SSAValue]:
            column = b.zext(b.load(self.columns, index, i32), i64)
            weight = b.splat(b.load(self.weights, index, f32), 16)
            inputs = b.element_ptr(x_lanes, b.mul(column, self.batch), f32)
            return [
                b.fmuladd(weight, b.load_at(b.element_ptr(inputs, b.const(16 * v, i64), f32), F32x16, alignment=4), acc)
                for v, acc in enumerate(accs)
            ]

        def round_body(first: SSAValue, accs) -> list[SSAValue]:
            updated = []
            for way in range(ways):
                updated += product(b.add(first, b.const(way, i64)), list(accs[way * vectors : (way + 1) * vectors]))
            return updated

        zero = b.vector_const([0.0] * 16, f32)
        accs = b.loop(b.const(0, i64), count, [zero] * (ways * vectors), round_body, step=ways)
        for v in range(vectors):
            total = accs[v]
            for way in range(1, ways):
                total = b.fadd(total, accs[way * vectors + v])
            at = b.element_ptr(self.y, b.add(b.mul(row, self.batch), b.add(lane, b.const(16 * v, i64))), f32)
            earlier = b.select(first_panel, zero, b.load_at(at, F32x16, alignment=4))
            b.store_at(b.fadd(total, earlier), at, alignment=4)

    def batch_epilogue(self) -> None:
        """Bias and activation on the finished outputs of units [begin, end), 16 batch
        rows at a time."""
        b, key = self.b, self.key
        first, last = self.output_rows()

        def row_body(row: SSAValue, _state) -> list[SSAValue]:
            def lanes_body(lane: SSAValue, _inner) -> list[SSAValue]:
                at = b.element_ptr(self.y, b.add(b.mul(row, self.batch), lane), f32)
                acc = b.load_at(at, F32x16, alignment=4)
                if key.epilogue.startswith("bias"):
                    acc = b.fadd(acc, b.splat(b.load(self.bias, row, f32), 16))
                b.store_at(self.activation(acc), at, alignment=4)
                return []

            b.loop(b.const(0, i64), self.batch, [], lanes_body, step=16)
            return []

        b.loop(first, last, [], row_body)
