"""What every generated kernel shares: the signature and argument names, the loops over
weight rows and batch rows, the store of each output and the epilogue (bias, then Relu
or Gelu). runtime/codegen/kernels.py documents the signature and each kind's operands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xdsl.dialects import llvm
from xdsl.dialects.builtin import f16, f32, i16, i32, i64
from xdsl.ir import SSAValue

from sparsec.kernels import TILE_INPUT_BYTES, AnyKey, KernelKey, epilogue_activation
from sparsec.runtime.codegen.builder import PTR, FunctionBuilder, vector
from sparsec.runtime.codegen.elementwise import gelu, swish, tanh_gelu

ARG_NAMES = ("x", "y", "a0", "a1", "a2", "bias", "batch", "begin", "end")
ARG_TYPES = (PTR, PTR, PTR, PTR, PTR, PTR, i64, i64, i64)
F32x16 = vector(f32, 16)


class Kernel:
    """Shared structure: the batch and row loops, the store and the epilogue.

    `finish` stores each output's sum as it is complete; `ret` then applies the epilogue
    (bias, activation) to the outputs of rows [begin, end), 16 at a time, so an
    activation like Gelu costs a few vector operations per 16 outputs instead of a
    scalar evaluation per row. Kernels that produce whole vectors of outputs apply it
    as they store them (`activation`) and skip that pass."""

    VECTOR_EPILOGUE = True
    """Whether `ret` applies the epilogue in a vector pass (False: the kernel did)."""
    EXPLICIT_VECTORS = False
    """Whether the kernel is written in vector operations, its loops rotated and their
    invariants computed outside them, so LLVM's short cleanup pipeline compiles it as
    well as O2 does in a fraction of the time (runtime/jit.py). Kernels written as
    scalar loops (for portable targets) need O2's loop vectorizer."""

    def __init__(self, key: KernelKey):
        self.key = key
        self.b = FunctionBuilder(key.symbol, ARG_TYPES, ARG_NAMES)
        self.x, self.y, self.a0, self.a1, self.a2, self.bias, self.batch, self.begin, self.end = self.b.args
        if key.lanes:  # an implicit variant's calls all take the same lanes
            self.batch = self.b.const(key.lanes, i64)
        self.value_type = f16 if key.values == "f16" else f32

    def partial_tile_from(self) -> int | None:
        """From how many batch rows left after the whole tiles they run as one partial
        tile rather than one at a time (`_tile_rows`); None: always one at a time."""
        return None

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
        first, last = self.output_rows()

        def batch_body(batch_row: SSAValue, _state) -> list[SSAValue]:
            outputs = b.element_ptr(self.y, b.mul(batch_row, b.const(key.rows, i64)), f32)

            def chunk_body(row: SSAValue, _inner) -> list[SSAValue]:
                inside = b.low_lanes(b.trunc(b.smin(b.sub(last, row), b.const(16, i64)), i32))
                at = b.element_ptr(outputs, row, f32)
                values = b.masked_load(at, inside, F32x16)
                if key.epilogue.startswith("bias"):
                    values = b.fadd(values, b.masked_load(b.element_ptr(self.bias, row, f32), inside, F32x16))
                b.store_lanes(self.activation(values), at, inside)
                return []

            b.loop(first, last, [], chunk_body, step=16)
            return []

        b.loop(b.const(0, i64), self.batch, [], batch_body)

    def output_rows(self) -> tuple[SSAValue, SSAValue]:
        """The output rows [first, last) of units [begin, end): rows, or row blocks of
        block kernels (the last may run past N)."""
        b, key = self.b, self.key
        if key.kind != "block":
            return self.begin, self.end
        first = b.mul(self.begin, b.const(key.block, i64))
        return first, b.smin(b.mul(self.end, b.const(key.block, i64)), b.const(key.rows, i64))

    def activation(self, acc: SSAValue) -> SSAValue:
        """The epilogue's activation on a scalar or vector of outputs."""
        activation = epilogue_activation(self.key.epilogue)
        if activation == "relu":
            return self.b.fmax(acc, self.b.like(0.0, acc))
        if activation == "swish":
            return swish(self.b, acc)
        if activation == "gelu_tanh":
            return tanh_gelu(self.b, acc)
        return gelu(self.b, acc) if activation == "gelu" else acc

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

    def finish_panel(self, acc: SSAValue, row: SSAValue, batch_row: SSAValue, panel: Panel | None) -> None:
        """`finish` for a whole row (`panel` None); for a column panel, y = acc on the
        first panel and y += acc on the others."""
        if panel is None:
            self.finish(acc, row, batch_row)
            return
        b, key = self.b, self.key
        at = b.add(b.mul(batch_row, b.const(key.rows, i64)), row)
        first = b.icmp("eq", panel.first, b.const(0, i64))
        earlier = b.select(first, b.const(0.0, f32), b.load(self.y, at, f32))
        b.store(b.fadd(earlier, acc), self.y, at)

    def finish_if(self, condition: SSAValue | None, acc: SSAValue, row: SSAValue, batch_row: SSAValue) -> None:
        """`finish` only where `condition` holds (rows past N, or past the batch; None: always)."""
        self.only_if(condition, lambda: self.finish(acc, row, batch_row))

    def only_if(self, condition: SSAValue | None, action: Callable[[], None]) -> None:
        """Emit `action`'s code to run only where `condition` holds (always for None); a
        constant condition emits it or nothing, with no branch."""
        b = self.b
        constant = None if condition is None else b.constant_value(condition)
        if condition is None or constant is not None:
            if constant != 0:
                action()
            return
        then_block, after = b.new_block(), b.new_block()
        b.cond_branch(condition, then_block, after)
        b.block = then_block
        action()
        b.branch(after)
        b.block = after

    def tile_rows(self, tile: SSAValue, size: int) -> list[tuple[SSAValue, SSAValue | None]]:
        """The batch rows of a tile of `size` rows from `tile` on, each with whether it
        is inside the batch (None: always). A last, partial tile (`_tile_rows`) reads
        the last batch row in place of those past it, and must not store them."""
        b = self.b
        if size == 1:
            return [(tile, None)]
        last = b.sub(self.batch, b.const(1, i64))
        rows = [(tile, None)]
        for j in range(1, size):
            batch_row = b.add(tile, b.const(j, i64))
            rows.append((b.smin(batch_row, last), b.icmp("slt", batch_row, self.batch)))
        return rows

    def interleaved_sum(self, start: SSAValue, stop: SSAValue, ways: int, zero: SSAValue, body, each_round: Callable[[SSAValue], None] | None = None) -> SSAValue:
        """The sum of body(i, [acc]) over i in [start, stop), spread over `ways`
        accumulators used in turn, so consecutive multiply-adds do not wait on each
        other; the iterations past the last whole round go to the first. `each_round`
        (its first index) runs at the start of each whole round."""
        b = self.b
        whole = b.add(start, b.round_down(b.sub(stop, start), ways))

        def round_body(index: SSAValue, accs) -> list[SSAValue]:
            if each_round is not None:
                each_round(index)
            return [body(b.add(index, b.const(j, i64)), [acc])[0] for j, acc in enumerate(accs)]

        accs = list(b.loop(start, whole, [zero] * ways, round_body, step=ways))
        (accs[0],) = b.loop(whole, stop, [accs[0]], body)
        total = accs[0]
        for acc in accs[1:]:
            total = b.fadd(total, acc)
        return total

    def x_at(self, batch_row: SSAValue, col: SSAValue) -> SSAValue:
        b = self.b
        return b.load(self.x, b.add(b.mul(batch_row, b.const(self.key.cols, i64)), col), f32)


class UnitKernel:
    """The kernels that are no matrix product (layer normalization, plane copies,
    pooling): the same work for each unit of [begin, end) (a row, a channel, a plane),
    written in vectors with their loops rotated, so the short LLVM pipeline compiles
    them (Kernel.EXPLICIT_VECTORS)."""

    EXPLICIT_VECTORS = True

    def __init__(self, key: AnyKey):
        self.key = key
        self.b = FunctionBuilder(key.symbol, ARG_TYPES, ARG_NAMES)
        self.begin, self.end = self.b.args[-2:]

    def build(self) -> llvm.FuncOp:
        self.b.loop(self.begin, self.end, [], self.unit)
        return self.b.ret()

    def unit(self, unit: SSAValue, _state) -> list[SSAValue]:
        """The work for one unit."""
        raise NotImplementedError


@dataclass(frozen=True)
class Panel:
    """Columns [first, end) of the weight rows, as a panelled kernel takes them."""

    first: SSAValue
    end: SSAValue

    def last(self, b: FunctionBuilder, key: KernelKey) -> SSAValue:
        """Whether this is a row's last panel (the one that ends at column K)."""
        return b.icmp("eq", self.end, b.const(key.cols, i64))


def tiled(kernel: Kernel, tile: int, tile_body, first_row: SSAValue | None = None) -> llvm.FuncOp:
    """for row in [first_row (default begin), end): the batch in tiles of `tile` rows
    (the last maybe partial), or one row alone: tile_body(row, first batch row, rows).
    Weight rows outside, so each is read from memory once and from cache for the other
    tiles."""
    _tile_rows(kernel, tile, kernel.begin if first_row is None else first_row, kernel.end, tile_body)
    return kernel.ret()


def _tile_rows(kernel: Kernel, tile: int, first_row: SSAValue, last_row: SSAValue, tile_body) -> None:
    """for row in [first_row, last_row): the batch in tiles of `tile` rows, then the
    rows left: from Kernel.partial_tile_from() of them in one more, partial tile
    (Kernel.tile_rows), fewer one at a time, or in the paired variant
    (KernelKey.paired) from 3 of them in a partial tile, fewer two at a time, a last
    single row as a partial pair: tile_body(row, first batch row, rows).

    A tile decodes the row's weights again, with them in cache now, and costs about
    1.5x (block 16, dense) to 3x (block 4, n:m) as much as one row; rows left one at
    a time made 7 batch rows take 2.2x as long as 8 in the block kernels' 8-row
    tiles. A partial tile needs no code of its own, where each tile size does: the
    paired variant has no single-row body, so it compiles about as fast as the plain
    kernel."""
    b = kernel.b
    partial_from = kernel.partial_tile_from() or tile
    if kernel.key.paired:  # two rows left go as a pair
        partial_from = max(partial_from, 3)

    def row_body(row: SSAValue, _state) -> list[SSAValue]:
        whole = b.round_down(kernel.batch, tile)
        many_left = b.icmp("sge", b.sub(kernel.batch, whole), b.const(partial_from, i64))
        tiled_to = b.select(many_left, kernel.batch, whole)
        b.loop(b.const(0, i64), tiled_to, [], lambda first, _s: tile_body(row, first, tile) or [], step=tile)
        rest = 2 if kernel.key.paired else 1
        b.loop(tiled_to, kernel.batch, [], lambda first, _s: tile_body(row, first, rest) or [], step=rest)
        return []

    b.loop(first_row, last_row, [], row_body)


def panelled(kernel: Kernel, tile: int, unit: int, tile_body) -> llvm.FuncOp:
    """`tiled` over column panels, for tile_body(row, first batch row, rows, panel),
    which adds the products of the panel's columns into y (storing on the first).

    The plain kernels (KernelKey.panelled off) take whole rows (panel None). The
    panelled variant sizes panels so the whole batch's inputs for one panel fit L1
    (TILE_INPUT_BYTES; multiples of 256 columns, where the bitmask operands keep value
    offsets, and of `unit`, the step) and takes every row of [begin, end) through each
    panel in turn, prefetching the next row's weights as it goes (rows visited panel
    by panel are a stride the hardware prefetcher does not follow). Without panels each
    weight row streams its batch's inputs from L2 again once they outgrow L1 (4 rows of
    4096 inputs are 64 KiB): the same weights ran twice as fast at 4 batch rows as
    16384 x 1024 as they did as 4096 x 4096. It is a variant, not the rule, because one
    batch row does not need it and the extra loop costs LLVM 10 ms more to compile."""
    b, key = kernel.b, kernel.key
    if not key.panelled:
        _tile_rows(kernel, tile, kernel.begin, kernel.end, lambda row, first, size: tile_body(row, first, size, None))
        return kernel.ret()
    cols = b.const(key.cols, i64)
    grain = max(256, unit)
    fitting = b.udiv(b.const(TILE_INPUT_BYTES // 4 // grain, i64), kernel.batch)
    span = b.mul(b.smax(fitting, b.const(1, i64)), b.const(grain, i64))
    panels = b.udiv(b.add(cols, b.sub(span, b.const(1, i64))), span)

    def panel_body(panel: SSAValue, _state) -> list[SSAValue]:
        first = b.mul(panel, span)
        columns = Panel(first, b.smin(b.add(first, span), cols))
        _tile_rows(kernel, tile, kernel.begin, kernel.end, lambda row, first_batch, size: tile_body(row, first_batch, size, columns))
        return []

    b.loop(b.const(0, i64), panels, [], panel_body)
    return kernel.ret()


class ColumnStepKernel(Kernel):
    """Kernels that take a weight row 64 columns per step, as four 16-lane float vectors
    that multiply the inputs into four accumulators per batch row (independent chains,
    so consecutive multiply-adds do not wait on each other).

    Each decoded step serves a tile of TILE batch rows, so weights are decoded once per
    tile; batch rows beyond the last whole tile go one at a time. Inputs are loaded
    whole in full steps; the last, partial step loads them under lane masks, so no byte
    past a row's inputs is read. Subclasses say how a step's weights are decoded and
    what integer state (such as a read position) runs along the row."""

    TILE = 4
    EXPLICIT_VECTORS = True

    def build(self) -> llvm.FuncOp:
        return panelled(self, self.TILE, 64, self.tile_body)

    def partial_tile_from(self) -> int:
        """A 4-row tile costs less than two rows one at a time (2 rows as a partial
        tile: dense 1.06-1.08x, bitmask 1.09-1.29x as fast, 4096x4096 and 768x3072)."""
        return 2

    def row_state(self, row: SSAValue, first_step: SSAValue) -> list[SSAValue]:
        """Integer state carried along `row`, before step `first_step` (the first of a
        column panel: a multiple of four steps)."""
        raise NotImplementedError

    def decode(self, row: SSAValue, step: SSAValue, state: list[SSAValue], partial: int) -> tuple[list[SSAValue], list[SSAValue], list[SSAValue]]:
        """The four weight vectors of `step`, the state after it, and (when `partial`
        columns remain in a last, partial step) four lane masks for the inputs."""
        raise NotImplementedError

    def tile_body(self, row: SSAValue, tile: SSAValue, size: int, panel: Panel | None) -> None:
        """Weight row `row` times `size` consecutive batch rows from `tile` on: all its
        columns, stored in y, or (`panel`) those of one column panel, added into y."""
        b, key = self.b, self.key
        full_steps, partial = divmod(key.cols, 64)
        batch_rows = self.tile_rows(tile, size)
        x_rows = [b.element_ptr(self.x, b.mul(batch_row, b.const(key.cols, i64)), f32) for batch_row, _ in batch_rows]
        if panel is None:
            first_step, last_step = b.const(0, i64), b.const(full_steps, i64)
        else:
            first_step, last_step = b.lshr(panel.first, b.const(6, i64)), b.lshr(panel.end, b.const(6, i64))
        carried = self.row_state(row, first_step)
        zero = b.vector_const([0.0] * 16, f32)

        def step_body(step: SSAValue, state) -> list[SSAValue]:
            return self.step(row, step, x_rows, list(state), len(carried), 0)

        state = b.loop(first_step, last_step, carried + [zero] * (4 * size), step_body)
        if partial and panel is None:
            state = self.step(row, b.const(full_steps, i64), x_rows, list(state), len(carried), partial)
        elif partial:  # in the last panel only: a loop of one trip there, none before
            ends = b.select(panel.last(b, key), b.const(full_steps + 1, i64), b.const(full_steps, i64))
            state = b.loop(b.const(full_steps, i64), ends, list(state), lambda step, st: self.step(row, step, x_rows, list(st), len(carried), partial))
        accs = state[len(carried) :]
        row_sums = [b.fadd(b.fadd(accs[4 * j], accs[4 * j + 1]), b.fadd(accs[4 * j + 2], accs[4 * j + 3])) for j in range(size)]
        for (batch_row, inside), total in zip(batch_rows, b.sum_lanes_each(row_sums)):
            self.only_if(inside, lambda total=total, batch_row=batch_row: self.finish_panel(total, row, batch_row, panel))

    def prefetch_next_row(self, step: SSAValue, state: list[SSAValue]) -> None:
        """Prefetch the next weight row's weights for `step` (panelled variant: a group
        visits its rows panel by panel, a stride the hardware prefetcher does not follow)."""
        raise NotImplementedError

    def step(self, row: SSAValue, step: SSAValue, x_rows: list[SSAValue], state: list[SSAValue], carried: int, partial: int) -> list[SSAValue]:
        """One 64-column step: decode the weights once, multiply every batch row."""
        b = self.b
        if self.key.panelled:
            self.prefetch_next_row(step, state[:carried])
        weights, carried_after, input_masks = self.decode(row, step, state[:carried], partial)
        accs = state[carried:]
        column = b.mul(step, b.const(64, i64))
        updated = []
        for j, x_row in enumerate(x_rows):
            for q, weight in enumerate(weights):
                at = b.element_ptr(x_row, b.add(column, b.const(16 * q, i64)), f32)
                inputs = b.load_lanes(at, F32x16, input_masks[q] if partial else None)
                updated.append(b.fmuladd(weight, inputs, accs[4 * j + q]))
        return [*carried_after, *updated]
