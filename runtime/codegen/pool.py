"""The pooling kernel (sparsec.kernels.PoolKey): 2-D max or average pooling, or a
depthwise convolution, of images read in place, 16 outputs of a row at a time. Same
signature as the matrix kernels, with

    x = the images' first value (or a put-off Concat part's),
    y = the outputs (Ho x Wo per plane),
    a0 = int64 geometry (GEOMETRY): the images' channel and row strides (floats), H
         and W, the pads before the first row and column, Ho, Wo, the row stride,
         the channels, the floats from one output plane to the next and from one
         image's to the next (Ho x Wo and channels x that, or lanes a 1x1
         convolution reads in place: a plane rounded up to whole 64-byte lines, and
         a zero plane after each image's), the images' image stride, the channel of
         x's first value (0, or a part's first), and the inner channels and inner
         stride of a channel grid (1 and 0 for plain images; a channel shuffle's
         transposed view (N, C / g, g, H, W) is read in place as g inner channels:
         channel c' = c - first at (c' // g) x channel stride + (c' % g) x inner
         stride), the floats from one output row to the next (Wo, or the row pitch
         of a Concat's lane buffer the pool writes into), the word where a flat
         run's masks start (0 for none); then the lane masks (PoolKey.lane_masks: an
         int64 word each, for each vector of a row's outputs, each of the vectors it
         reads from a tap row), and a flat key's run masks (PoolKey.flat_masks: 16
         bits each, for each vector of the run, each tap),
    a1 = the average's divisors, one float per output position (Ho x Wo; average), or
         the depthwise convolution's weights, kernel rows x columns per channel,
    a2 = a pad row: W floats of the pad value (PAD_VALUES: the lowest float for max,
         zero else),
    bias = the depthwise convolution's bias, one float per channel (with `bias`),
    [begin, end) = the planes to pool (image x channels + channel).

The pads are virtual: a tap row above or below the image reads the pad row, and each
load takes only the lanes whose columns lie in the image, the others being the pad
value (a masked load, which reads nothing there). The masks are the same for every
row and plane, so the caller computes them once a geometry. So no run copies its
images into padded planes, a copy that cost as much as the pooling.

The window's taps are unrolled (the key's window and dilation), and a depthwise
convolution's weights are splat once a plane. The column stride (1 or 2) is the key's:
at stride 2 a tap row's inputs are loaded once, as whole vectors, and each tap's are
picked from their even or odd lanes. A max pool takes the maximum down the window's
rows first, then across its columns (the maximum is exact in any order); average and
depthwise taps are reduced in the reference's order (rows first, a depthwise tap's
product rounded before it is added, as numpy's separate multiply and add round it), so
the results are the reference's exactly. A row's whole vectors of outputs are stored
as they are, its last partial one under a lane mask.

A flat key (PoolKey.flat) takes a plane's Ho x Wo outputs as one run, 16 at a time,
where the geometry holds its masks and the rows lie back to back (input and output
pitch the rows' width, Wo = W, row stride 1): tap (i, j) of outputs q to q + 15 is
the load at q + (i - top) x W + (j - left) under the tap's mask for them, which
leaves out the lanes whose input lies in a pad (or past the image's last row), so
a vector may span rows. Other images take the rows as above.

A whole-image key (PoolKey.whole: a global pool, or a pool whose one window is its
image) stores one output a plane: its rows' vectors are combined down the rows, then
their lanes in a tree, and an average divides the sum by a1's one count.
"""

from __future__ import annotations

from xdsl.dialects.builtin import IntegerType, f32, i1, i16, i32, i64
from xdsl.ir import SSAValue

from sparsec.kernels import PAD_VALUES, PoolKey
from sparsec.runtime.codegen.base import F32x16, UnitKernel
from sparsec.runtime.codegen.builder import vector

GEOMETRY = (
    "channel_stride", "pitch", "rows", "columns", "top", "left", "out_rows", "out_columns", "row_stride", "channels",
    "out_plane", "out_image", "image_stride", "first_channel", "inner_channels", "inner_stride", "out_pitch",
    "flat_masks",
)  # fmt: skip
"""The int64 words of a0, in order."""


class PoolKernel(UnitKernel):
    """Units are planes."""

    def __init__(self, key: PoolKey):
        super().__init__(key)
        self.x, self.y, geometry, self.a1, self.pad_row, self.bias = self.b.args[:6]
        self.g = self.b.load_words(geometry, GEOMETRY)
        self.masks = self.b.element_ptr(geometry, self.b.const(len(GEOMETRY), i64), i64)
        self.offsets = key.tap_columns
        self.pad = self.b.vector_const([PAD_VALUES[key.kind]] * 16, f32)
        if key.flat:
            self.flat_run(geometry)

    def flat_run(self, geometry: SSAValue) -> None:
        """For a flat key, once a call: whether the planes go as flat runs (`self.flat`),
        each tap's input offset from its outputs' position (`self.flat_offsets`) and
        where the run masks start (`self.flat_masks`)."""
        b, g, key = self.b, self.g, self.key
        rows_back_to_back = [b.icmp("eq", g["pitch"], g["columns"]), b.icmp("eq", g["out_columns"], g["columns"]), b.icmp("eq", g["out_pitch"], g["columns"])]
        self.flat = b.all_of(b.icmp("ne", g["flat_masks"], b.const(0, i64)), b.icmp("eq", g["row_stride"], b.const(1, i64)), *rows_back_to_back)
        self.flat_offsets = [
            b.add(b.mul(b.sub(b.const(i * key.dilation[0], i64), g["top"]), g["columns"]), b.sub(b.const(j * key.dilation[1], i64), g["left"]))
            for i in range(key.window[0])
            for j in range(key.window[1])
        ]
        self.flat_masks = b.element_ptr(geometry, b.mul(g["flat_masks"], b.const(4, i64)), i16)

    def unit(self, plane: SSAValue, _state) -> list[SSAValue]:
        b, g, key = self.b, self.g, self.key
        rows, columns = key.window
        image, channel = b.udiv(plane, g["channels"]), b.urem(plane, g["channels"])
        part_channel = b.sub(channel, g["first_channel"])
        outer, inner = b.udiv(part_channel, g["inner_channels"]), b.urem(part_channel, g["inner_channels"])
        source = b.add(b.mul(image, g["image_stride"]), b.add(b.mul(outer, g["channel_stride"]), b.mul(inner, g["inner_stride"])))
        inputs = b.element_ptr(self.x, source, f32)
        outputs = b.element_ptr(self.y, b.add(b.mul(image, g["out_image"]), b.mul(channel, g["out_plane"])), f32)
        if key.whole:
            self.whole_image(inputs, outputs)
            return []
        weights = bias = None
        if key.kind == "depthwise":
            first = b.element_ptr(self.a1, b.mul(channel, b.const(rows * columns, i64)), f32)
            weights = [b.splat(b.load(first, b.const(tap, i64), f32), 16) for tap in range(rows * columns)]
            bias = b.splat(b.load(self.bias, channel, f32), 16) if key.bias else None

        out_rows = g["out_rows"]
        if key.flat:
            count = b.mul(g["out_rows"], g["out_columns"])
            vectors = b.select(self.flat, b.udiv(b.add(count, b.const(15, i64)), b.const(16, i64)), b.const(0, i64))
            b.loop(b.const(0, i64), vectors, [], lambda index, _: self.flat_vector(inputs, outputs, index, count, weights, bias) or [])
            out_rows = b.select(self.flat, b.const(0, i64), out_rows)
        whole = b.round_down(g["out_columns"], 16)
        tail = b.low_lanes(b.trunc(b.sub(g["out_columns"], whole), i32))

        def row(out_row: SSAValue, _rows) -> list[SSAValue]:
            top_row = b.sub(b.mul(out_row, g["row_stride"]), g["top"])
            tap_rows = [self.tap_row(inputs, b.add(top_row, b.const(i * key.dilation[0], i64))) for i in range(rows)]
            position = b.mul(out_row, g["out_columns"])
            out_position = b.mul(out_row, g["out_pitch"])

            def vector(column: SSAValue, lanes: SSAValue | None) -> list[SSAValue]:
                first = b.sub(b.mul(column, b.const(key.stride, i64)), g["left"])
                corners = [b.element_ptr(at, first, f32) for at in tap_rows]
                masks = self.lane_masks(column)
                total = self.maximum(corners, masks) if key.kind == "max" else self.total(corners, masks, weights)
                if key.kind == "avg":
                    total = b.fdiv(total, b.load_lanes(b.element_ptr(self.a1, b.add(position, column), f32), F32x16, lanes))
                if bias is not None:
                    total = b.fadd(total, bias)
                b.store_lanes(total, b.element_ptr(outputs, b.add(out_position, column), f32), lanes)
                return []

            b.loop(b.const(0, i64), whole, [], lambda column, _: vector(column, None), step=16)
            vector(whole, tail)  # the partial vector: no lanes when Wo is a multiple of 16
            return []

        b.loop(b.const(0, i64), out_rows, [], row)
        return []

    def flat_vector(self, inputs: SSAValue, outputs: SSAValue, index: SSAValue, count: SSAValue, weights: list[SSAValue] | None, bias: SSAValue | None) -> None:
        """Outputs 16 x `index` on of a flat run of `count`: each tap a load under its
        mask from the run masks, combined in the rows path's order."""
        b, key = self.b, self.key
        position = b.mul(index, b.const(16, i64))
        at = b.element_ptr(inputs, position, f32)
        masks = b.element_ptr(self.flat_masks, b.mul(index, b.const(len(self.flat_offsets), i64)), i16)
        taps = [
            b.masked_load(b.element_ptr(at, offset, f32), b.bitcast(b.load(masks, b.const(t, i64), i16), vector(i1, 16)), F32x16, self.pad)
            for t, offset in enumerate(self.flat_offsets)
        ]
        if key.kind == "max":
            total = taps[0]
            for values in taps[1:]:
                total = self._max(total, values)
        else:
            total = self.weighted_sum(taps, weights)
        if key.kind == "avg":
            total = b.fdiv(total, b.load_lanes(b.element_ptr(self.a1, position, f32), F32x16, None))
        if bias is not None:
            total = b.fadd(total, bias)
        lanes = b.low_lanes(b.trunc(b.smin(b.sub(count, position), b.const(16, i64)), i32))
        b.store_lanes(total, b.element_ptr(outputs, position, f32), lanes)

    def whole_image(self, inputs: SSAValue, outputs: SSAValue) -> None:
        """The plane's one output (PoolKey.whole): its image's maximum, or average, at
        `outputs`. Each row's vectors (masked to its columns) are taken into one
        accumulator each, down the rows; then the accumulators, then their lanes."""
        b, g = self.b, self.g
        combine = self._max if self.key.kind == "max" else b.fadd
        masks = self.lane_masks(b.const(0, i64))

        def row(image_row: SSAValue, accumulators) -> list[SSAValue]:
            values = self.loaded(b.element_ptr(inputs, b.mul(image_row, g["pitch"]), f32), masks)
            return [combine(acc, value) for acc, value in zip(accumulators, values)]

        accumulators = b.loop(b.const(0, i64), g["rows"], [self.pad] * self.key.row_vectors, row)
        total = accumulators[0]
        for acc in accumulators[1:]:
            total = combine(total, acc)
        result = b.reduce_lanes(total, combine)
        if self.key.kind == "avg":
            result = b.fdiv(result, b.load(self.a1, b.const(0, i64), f32))
        b.store(result, outputs, b.const(0, i64))

    def tap_row(self, inputs: SSAValue, row: SSAValue) -> SSAValue:
        """The start of image row `row` from `inputs`, or the pad row when `row` lies
        above or below the image (an unsigned compare takes both)."""
        b, g = self.b, self.g
        inside = b.icmp("ult", row, g["rows"])
        return b.select(inside, b.element_ptr(inputs, b.mul(row, g["pitch"]), f32), self.pad_row)

    def lane_masks(self, column: SSAValue) -> dict[int, SSAValue]:
        """The lane masks of the vectors read for the 16 outputs from `column`, by
        offset (PoolKey.reads), from the geometry's table."""
        b, reads = self.b, self.key.reads
        first = b.mul(b.udiv(column, b.const(16, i64)), b.const(len(reads), i64))
        words = [b.load(self.masks, b.add(first, b.const(index, i64)), i64) for index in range(len(reads))]
        return {offset: b.bitcast(b.trunc(word, IntegerType(16)), vector(i1, 16)) for offset, word in zip(reads, words)}

    def maximum(self, tap_rows: list[SSAValue], masks: dict[int, SSAValue]) -> SSAValue:
        """The maximum of the window taps of 16 outputs whose tap rows start at
        `tap_rows`: down the rows, vector by vector, then across the columns."""
        down = self.loaded(tap_rows[0], masks)
        for at in tap_rows[1:]:
            down = [self._max(most, values) for most, values in zip(down, self.loaded(at, masks))]
        taps = self.taps(down)
        total = taps[0]
        for values in taps[1:]:
            total = self._max(total, values)
        return total

    def total(self, tap_rows: list[SSAValue], masks: dict[int, SSAValue], weights: list[SSAValue] | None) -> SSAValue:
        """The sum, or (depthwise) the sum weighted by `weights`, of the window taps of
        16 outputs whose tap rows start at `tap_rows`, tap by tap, rows first, from the
        first tap as the reference sums (0 + x would turn a -0 sum into +0, and put
        one more add on the chain: ShuffleNet's depthwise steps 1.02x to 1.12x as long)."""
        return self.weighted_sum([values for at in tap_rows for values in self.row_taps(at, masks)], weights)

    def weighted_sum(self, taps: list[SSAValue], weights: list[SSAValue] | None) -> SSAValue:
        """The sum of `taps` (each weighted by its weight, with `weights`) in order, from
        the first as it is."""
        total = None
        for t, values in enumerate(taps):
            term = values if weights is None else self.b.fmul(values, weights[t])
            total = term if total is None else self.b.fadd(total, term)
        return total  # pyright: ignore

    def row_taps(self, at: SSAValue, masks: dict[int, SSAValue]) -> list[SSAValue]:
        """The inputs of 16 consecutive outputs' taps in the tap row at `at`, by column:
        a load each at stride 1, picked from the row's vectors at stride 2."""
        if self.key.stride == 1:
            return [self.load(at, offset, masks[offset]) for offset in self.offsets]
        return self.taps(self.loaded(at, masks))

    def loaded(self, at: SSAValue, masks: dict[int, SSAValue]) -> list[SSAValue]:
        """The vectors of a tap row's inputs, from `at`."""
        return [self.load(at, 16 * k, masks[16 * k]) for k in range(self.key.row_vectors)]

    def load(self, at: SSAValue, offset: int, mask: SSAValue) -> SSAValue:
        """The 16 inputs from `offset` floats past `at`, the pad value where `mask` is off."""
        b = self.b
        return b.masked_load(b.element_ptr(at, b.const(offset, i64), f32), mask, F32x16, self.pad)

    def taps(self, vectors: list[SSAValue]) -> list[SSAValue]:
        """Each tap column's inputs of 16 consecutive outputs, picked from `vectors`, a
        tap row's inputs laid end to end: every stride-th lane from the tap's offset
        (at stride 2, the even or odd lanes of each pair of vectors first)."""
        b, stride = self.b, self.key.stride
        if stride == 1:
            return [b.gather_lanes(vectors, range(offset, offset + 16)) for offset in self.offsets]
        pairs = [(vectors[k], vectors[min(k + 1, len(vectors) - 1)]) for k in range(0, len(vectors), 2)]
        phases = [[b.shuffle(low, high, tuple(range(phase, 32, 2))) for low, high in pairs] for phase in (0, 1)]
        return [b.gather_lanes(phases[offset % 2], range(offset // 2, offset // 2 + 16)) for offset in self.offsets]

    def _max(self, a: SSAValue, b: SSAValue) -> SSAValue:
        """The larger of `a` and `b`, NaN where either is (as np.maximum): a compare and
        select that x86 runs as one `vmaxps` (NaN where b is), then a's NaNs put back.
        LLVM's maximum intrinsic also orders -0 below +0, in six instructions a lane
        vector: the 3x3 max pools ran 1.5x as long."""
        larger = self.b.select(self.b.fcmp("ogt", a, b), a, b)
        return self.b.select(self.b.fcmp("uno", a, a), a, larger)
