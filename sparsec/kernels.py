"""Kernel specialization keys: what a generated sparse kernel is specialized on.

The key is data on the IR (`sparse.matmul` / `sparse.conv` carry its symbol) and code
generation is a pure function of it, so layers with equal keys share one kernel. Passes
use the key to name kernels; the runtime generates and compiles them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from xdsl.dialects.builtin import f16

if TYPE_CHECKING:
    from sparsec.dialects import StoredWeightOp

KINDS = ("bitmask", "nm", "block", "dense")
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "swish")
EPILOGUES = ("none", "bias", *ACTIVATIONS, *(f"bias_{a}" for a in ACTIVATIONS))
"""What a kernel applies to each output: an optional bias, then an optional activation
(Relu, Gelu in its exact erf form or its tanh approximation, or Swish with alpha 1:
SiLU)."""
PANEL = 256
"""Columns per panel of the batched kernels (a multiple of the 64-column mask step)."""
WINDOW_SPAN = 64
WIDE_WINDOW_SPAN = 128
GATHER_SPAN = 256
"""Columns a chunk of the chunk variants may span (its offsets are bytes): 64 or 128
when the kernel picks the inputs from a window of four or eight vectors, 256 when it
gathers them."""
WINDOW_ALIGN = 16
"""The window variants' chunks start on a multiple of 16 columns (but the last of a row,
which ends at the row's end), so its four loads of 16 inputs each read one cache line
of a row that starts on one, as the executor's buffers do: on Zen 4, where loads bound
the kernel, 11008x4096 at 75% took 2.1 ms with windows anywhere, 1.7 with aligned
ones, though aligned windows hold fewer non-zeros."""
CHUNK_SPANS = {
    "default": ((0.16, GATHER_SPAN), (0.35, WINDOW_SPAN)),
    "zen": ((0.14, WIDE_WINDOW_SPAN), (0.38, WINDOW_SPAN)),
    "rapids": ((0.1, GATHER_SPAN), (0.16, WIDE_WINDOW_SPAN), (0.5, WINDOW_SPAN)),
}
"""By KernelKey.tuning, the chunk variant (its span) that one batch row of bitmask weights
runs up to each density (non-zeros per weight), sparsest first; denser weights run the
mask kernel. The mask kernel's work per column is fixed while the chunk variants' bytes
and work follow the non-zeros (3.25 bytes per non-zero in full chunks, more in the
windows' emptier ones at high sparsity): crossovers measured on 4096x4096, one thread
(docs/kernels.md). On AMD Zen 4 a gather takes ~15 cycles: the 64-column window
was the fastest from about 62% sparsity (the mask kernel with register-form expands
below it), the 128-column one from about 87%. On Intel Sapphire and Emerald Rapids the
mask kernel's expands and widening cost more: the 64-column window beat it from 50%
(4096x4096 at 50%: 1.24 to 1.48 ms against 1.60 to 1.69; 11008x4096, which streams
from memory, 4.2 against 4.0 at 50% and a tie at 55%), the 128-column one was the
fastest from about 85%, the gather from about 91%."""


TILE_INPUT_BYTES = 32 * 1024
"""Inputs of a batch that a column panel of the panelled variant may span: what stays
in L1 (48 KiB here) while the panel's weight rows go by."""
PANELS_MAX_ROWS = 12
"""The most batch rows the panelled variant runs (`panels_pay`)."""
BATCHED_FROM = {"bitmask": (36, 5, 13), "nm": (28, 6, 12)}
"""(rows per density, fewest, most) by kind: bitmask and n:m weights run the batched
kernels from ceil(rows per density x density) batch rows, kept within [fewest, most].
Their work follows the non-zeros, while a tiled kernel's decoded step is shared by a
tile of 4 rows, so the sparser the weight, the sooner the batched kernels win; the
n:m tiles cost more (a permute per row), so n:m switches sooner. Crossovers measured
on 4096x4096 and the MLP shapes, one thread: unstructured 13 rows at 50% density, 9
at 25%, 5 at 10%; n:m 2:4 12, 3:4 7 to 9, 7:8 6 (docs/kernels.md)."""
BLOCK_BATCHED_FROM = ((2, 4), (4, 9), (8, 12))
"""(widest block, batch rows from): blocks narrower than 16 lanes run their batched
kernel from a batch size that grows with the block, as the tiled kernel's B-lane
vectors fill more of 16 lanes; wider blocks have none. Crossovers measured on 4096x4096,
3072x768 and 768x3072 at 50% and 90%, one thread: blocks of 2 ran 1.4-1.7x as fast at
4 rows, blocks of 4 1.2-1.8x at 9 (the tiled kernel's second 8-row tile), blocks of 8
1.1-1.5x at 12 (docs/kernels.md)."""
BATCH_CHUNKS = {("bitmask", True): 64, ("nm", True): 32, ("block", True): 32, ("block", False): 32, ("dense", False): 8}
"""The most batch rows one kernel call takes, by kind and whether the kernel is the
batched variant: the executor runs larger batches as calls of that many rows and one
of the rest. One call on 128 or 256 rows streams inputs that no longer stay in cache:
a batched bitmask panel's outgrows L1, a batched block row block's (from every column)
L2, and the tiled block and dense kernels read every batch row's inputs (16 KiB each
at K = 4096) for each tile of weight rows. 4096x4096, one thread, 256 rows, ms in one
call / in chunks of 32 / of 64: batched block 4 at 50% 112 / 33 / 35, batched n:m 3:4
45 / 27 / 28, batched unstructured 90% 26 / 22 / 19, tiled block 16 at 90% 37 / 9.5 /
9.6; dense 633 in one call, 100 in chunks of 8, 136 of 16 (docs/performance-history.md). The
tiled bitmask and n:m kernels run only below the batched threshold."""
IMPLICIT_PANEL_BYTES = {"default": 24 * 1024, "zen": 24 * 1024, "rapids": 32 * 1024}
"""By KernelKey.tuning, the most inputs (bytes, for 64 lanes) one column panel of an
implicit n:m convolution reads (`implicit_panel_columns`): three quarters of AMD Zen
4's 32 KiB L1; on Intel Sapphire and Emerald Rapids, whose L1 holds 48 KiB,
TILE_INPUT_BYTES, so that a lane chunk holds one 64-lane tile at least. On Zen 4 a
1x1 convolution of 256 channels to 64 at 56 x 56 (nm 3:4, one thread) read 64 KiB a
panel and ran in 0.70 ms; in panels of 64 channels (16 KiB at 64 lanes, then 128
lanes a chunk) 0.56; budgets of 16 and 24 KiB ran ResNet50 in 58.6-58.9 and 56.9-57.0
ms, against 59.5-60.4 with 256 columns. On Emerald Rapids, against 24 KiB (n:m 3:4,
one thread, whole runs alternated in one process): 48 KiB ran SqueezeNet 1.032x to
1.040x (36 KiB 1.021x to 1.025x), ResNet50 1.021x to 1.044x, Inception v2 1.012x to
1.038x; 64 KiB 0.93x to 0.98x; a 512 -> 1000 1x1 at 13 x 13 alone 1.09x. But at 48
KiB a strided 3x3 window, which reads four phase planes a channel, kept 256 columns
whose inputs for 64 lanes exceed TILE_INPUT_BYTES (36 KiB for 128 -> 128 at stride 2
on 56 x 56), so its lane chunks had 32 lanes, a panel decoded for every two vectors;
at 32 KiB it takes 128 columns and 96 lanes a chunk, 1.21x as fast (256 -> 256 on 28
x 28: 1.20x; ResNet50 1.02x), and every other layer's panels are as at 48 KiB."""
LANE_PLANES_MAX_FLOATS = 16384
"""The most floats of input planes an n:m kernel with `lane_planes` keeps on the stack (64 KiB)."""
PLANE_TILES = {2: (4, 32), 4: (4, 15), 8: (2, 10)}
"""By m, for n:m weights with lane planes (`group_tiles`): the most batch rows a tile
takes, and the batch rows from which the batched kernel runs instead. Each pair of
weight row and batch row takes m - 1 blends and a multiply-add a step; a tile of 4
batch rows by 4 weight rows (16 accumulators, 4m planes, 4 log2(m) lane masks) runs
out of registers at m = 8, where tiles of 2 ran 1.3x as fast. Crossovers measured on
3072x768, 768x3072 and 4096x4096, one thread: 3:4 at 14 to 16 rows, 7:8 at 9 to 11;
1:2 ran faster in tiles at every batch up to 32 (1.0 against 1.3 ms at 32 on
3072x768), but from a whole chunk of 32 rows the batched kernel streams a weight
larger than the caches once a chunk, the tiles once every 4 rows (docs/kernels.md)."""
WINDOW_TILES = (4, 24)
"""The same for n:m weights whose step spans one 32-column window (2:4, 4:8, 8:16),
whose tiles permute each batch row's window: one permute and one multiply-add a pair
of weight row and batch row. 2:4 crossed over at 24 to 28 rows (3072x768 and
4096x4096)."""
ROW_GROUP = 128
"""Weight rows the batched bitmask and n:m kernels take through the weight's panels
together: a group's outputs (ROW_GROUP x lanes floats) and its weights stay in L2
while its panels go by (runtime/codegen/batched.py)."""
UNPACKED_BLOCK = 4
"""The rows a block of an unpacked float32 weight holds for the block kernel that reads
it (passes/lower_kernels.py lowers dense convolutions so): each input load feeds four
rows' multiply-adds, where the bitmask kernel's feeds one. Blocks of 4 take 64 lanes
a tile in convolutions (KernelKey.block_lane_vectors) and ran 3 to 5% faster than
blocks of 8, which take 32 (ResNet50's first convolution 2.55 -> 2.47 ms, 64 -> 64
3x3 at 56 x 56 2.36 -> 2.27, 512 -> 2048 1x1 at 7 x 7 1.34 -> 1.29)."""
WINDOW_MAX_COLUMNS = 1 << 14
"""The most weight columns (channels x taps) of a convolution that runs the implicit
variant: its kernel keeps each column's input offset in a table on the stack, 4 bytes a
column (64 KiB at most; ResNet50's widest, 3x3 x 512, takes 18 KiB)."""
SHIFT_PITCHES = (16, 32, 64)
"""The row pitches (lanes a row) at which an implicit bitmask or n:m convolution with a
window loads every tap's inputs from whole cache lines (`column_shifts`): multiples of
16 lanes whose rows a tile of 64 lanes holds whole."""
SHIFT_PITCH_SLACK = 1.15
"""How many times its own row of lanes a convolution's rows may grow to reach a pitch
of SHIFT_PITCHES (`shift_pitch`): 58 -> 64 at 56 x 56 with pads, but not 9 -> 16 at
7 x 7."""
DECODED_MAX_BYTES = 256 * 1024
"""The most bytes of decoded products (an offset and a weight each) an implicit variant
keeps on its stack for a whole call, every row's panels decoded once rather than once
a lane chunk (runtime/codegen/batched.py, `decodes_once`): as much as the n:m kernels'
lane planes of a tile of four batch rows take (LANE_PLANES_MAX_FLOATS), well within a
thread's stack of megabytes. 128 -> 128 3x3 at 28 x 28 (n:m 3:4), whose 400 KiB ran
1.05x as fast, keeps decoding once a chunk."""
SMALL_WEIGHT, SMALL_BATCHED_FROM = 1 << 16, 17
"""Weights of fewer than SMALL_WEIGHT values run batched from SMALL_BATCHED_FROM rows
at the earliest: the executor transposes a batched kernel's inputs and outputs in
numpy, about 6 us a call, more than a small weight's extra tiles cost (the digits MLP,
256x64 and 128x256 at nm 3:4: 41 us batched against 27.5 us tiled at 8 rows, 43 and
41 at 16, 51 and 67 at 32)."""


@dataclass(frozen=True)
class KernelKey:
    """Everything a kernel is specialized on; equal keys share one compiled kernel."""

    kind: str  # bitmask | nm | block | dense
    rows: int  # N, output channels
    cols: int  # K, input channels
    values: str = "f16"  # f16 | f32
    n: int = 0
    m: int = 0
    block: int = 0
    epilogue: str = "none"
    native_f16: bool = True
    """False for targets without half-precision conversion instructions (x86 without
    F16C): float16 values are widened with integer operations instead of a libcall."""
    batched: bool = False
    """The variant for larger batches on transposed activations (runtime/codegen/batched.py);
    only some weights have one (`has_batched_variant`)."""
    avx512: bool = False
    """True for targets with AVX-512 (F, BW): kernels may use its dynamic lane permutes,
    which portable LLVM IR cannot express; other targets get the portable kernels."""

    vbmi2: bool = False
    """True for targets with AVX-512 VBMI2, whose 16-bit expand (`vpexpandw`) the
    bitmask kernel runs in its register form (runtime/codegen/bitmask.py)."""

    tuning: str = "default"
    """The CPU family the choices between kernels are tuned for (jit.Target.tuning):
    "default", "zen" or "rapids" (`CHUNK_SPANS`)."""

    panelled: bool = False
    """The variant for a few batch rows of long weight rows: the columns in panels
    whose inputs for the whole batch fit L1 (runtime/codegen/base.py: `panelled`); the
    executor runs it where the batch's inputs would not fit (`panels_pay`)."""

    paired: bool = False
    """The variant for 4k + 2 batch rows of the kernels tiled in fours: the two rows
    past the whole 4-row tiles go as one 2-row tile (runtime/codegen/base.py:
    `_tile_rows`); the executor runs it where `pairs_pay`. A variant, since a third
    tile body in the plain kernels added 8 to 10 ms to their compile time, which only
    these batch sizes repay."""

    group_tiles: int = 0
    """Non-zero for the group-tile variants, for a few batch rows of 16-lane n:m weights
    (`group_tile_limits`): the batch rows a tile takes (2 or 4). The weight rows go in
    groups of four through a tile's inputs, so a group's decoded step (its values
    widened, its lane masks or permute indices) serves every batch row of the tile, and
    a tile's inputs for a step load once for the group (runtime/codegen/nm.py); the
    executor picks the tile with `group_tiles_for`. One tile size a kernel: a second
    body cost as much compile time as a whole plain kernel."""

    chunk_span: int = 0
    """Non-zero for the chunk variants, for one batch row of sparse bitmask weights on
    AVX-512: chunks of up to 16 non-zeros within `chunk_span` columns, their columns as
    byte offsets (runtime/codegen/bitmask.py); the executor picks the span with
    `chunk_span_for`."""

    window: tuple[int, ...] = ()
    """Non-empty for the implicit convolution variant of a batched kernel
    (`has_implicit_variant`): (taps, kernel width, plane, pitch, dilations dh
    and dw, strides sh and sw) of a convolution that reads its input in place from
    its phase planes (runtime/implicit.py, ImplicitConv), one batch lane per output
    position of a row of `pitch` lanes. Weight column k = c x taps + t, channel c at
    tap t (for `run_major` columns, k = (g x taps + t) x m + j, channel g x m + j),
    reads lane l at c x `channel_floats` + `tap_offsets`[t] + l
    (runtime/codegen/batched.py, `column_offsets`)."""

    run_major: bool = False
    """The weight's columns go run by run of m input channels, a run's m channels at
    each tap in turn, rather than channel by channel: an n:m weight of a convolution
    with a window, whose runs lie along the input channels (sparsec/packing.py packs
    them tap by tap; runtime/operands.py reorders them), so the n:m kernel finds its
    runs in consecutive columns, and its implicit variant reads one run's m channels
    through the window's taps before the next run's. Tap by tap, every tap swept all
    the channels' inputs (256 -> 256 3x3 at 14 x 14: 1.73 ms against 1.18 for the
    bitmask kernel)."""

    groups: int = 1
    """The groups of a grouped convolution's implicit variant: each weight row reads
    its group's input channels (their planes from the group's first channel's,
    runtime/codegen/batched.py `group_floats`), and one call takes every group's rows
    as its units, never lane chunks (`splits_lanes`)."""

    accumulate: bool = False
    """The implicit convolution variant that adds its products to what its outputs
    hold (the executor copies a residual there first) instead of storing them."""

    read_shift: int = 0
    """Floats past a cache line at which the first lane of an implicit 1x1 variant
    reads: a 1x1 convolution framed in a padded sibling's planes (runtime/implicit.py,
    `framed`) reads them from past the pads before each row (`column_shifts`)."""

    lanes: int = 0
    """The lanes of every call of an implicit variant (`window`): its image's output
    positions, rounded up to 16 (runtime/implicit.py, ImplicitConv.lanes), fixed by
    the convolution's shapes whatever the batch, as each image is a call; 0 for calls
    of any. The kernel then builds only the lane tiles its calls take
    (runtime/codegen/batched.py, `widths_used`): ResNet50's 1x1 convolutions at 56 x 56
    go 64 lanes at a time with none left over, so they need no 32- or 16-lane tile."""

    @property
    def symbol(self) -> str:
        shape = f"{self.rows}x{self.cols}"
        detail = {"bitmask": "bitmask", "nm": f"nm{self.n}_{self.m}", "block": f"block{self.block}", "dense": "dense"}[self.kind]
        suffix = "" if self.epilogue == "none" else f"_{self.epilogue}"
        portable = "" if self.native_f16 or self.values != "f16" else "_swf16"
        variant = "_batched" if self.batched else f"_chunks{self.chunk_span}" if self.chunk_span else "_panels" if self.panelled else f"_tiles{self.group_tiles}" if self.group_tiles else ""
        pairs = "_pairs" if self.paired else ""
        window = "_window" + "_".join(map(str, self.window)) if self.window else ""
        lanes = f"_lanes{self.lanes}" if self.lanes else ""
        accumulate = "_accumulate" if self.accumulate else ""
        groups = f"_groups{self.groups}" if self.groups > 1 else ""
        runs = "_runmajor" if self.run_major else ""
        shift = f"_shift{self.read_shift}" if self.read_shift else ""
        return f"spmm_{detail}_{self.values}_{shape}{runs}{suffix}{portable}{variant}{pairs}{window}{shift}{lanes}{groups}{accumulate}"

    @property
    def block_column_bits(self) -> int:
        """The width of a block weight's stored column per kept block: 16 bits when
        every column fits, so a kept block of 16 float16 values streams 34 bytes, not 36."""
        return 16 if self.cols <= 1 << 16 else 32

    @property
    def has_chunk_variants(self) -> bool:
        """Whether a chunk variant can run this kernel: bitmask weights with float16
        values on AVX-512, rows of at least one window, and columns that fit the
        record's 24-bit field."""
        applies = self.kind == "bitmask" and self.avx512 and self.native_f16 and self.values == "f16"
        return applies and WINDOW_SPAN <= self.cols <= 1 << 24

    @property
    def tiled_in_fours(self) -> bool:
        """Whether the kernel takes batch rows in tiles of 4: the 64-column-step kernels
        (vector bitmask and dense) and the 16-lane n:m kernel. They have the panelled
        and paired variants."""
        vector_bitmask = self.kind == "bitmask" and self.values == "f16" and self.native_f16
        vector_dense = self.kind == "dense" and (self.native_f16 or self.values == "f32")
        return vector_bitmask or vector_dense or self.nm_lanes

    @property
    def has_panel_variant(self) -> bool:
        """Whether the panelled variant exists: kernels tiled in fours, on rows of more
        than 512 columns (shorter rows' inputs fit TILE_INPUT_BYTES at every batch it
        runs)."""
        return self.tiled_in_fours and self.cols > 512

    def panels_pay(self, batch: int) -> bool:
        """Whether `batch` rows run the panelled variant: 2 to PANELS_MAX_ROWS rows
        whose inputs exceed TILE_INPUT_BYTES. (From 16 rows the panels get so narrow,
        256 columns, that the dense kernel lost 10 to 16% with them.)"""
        return 1 < batch <= PANELS_MAX_ROWS and batch * self.cols * 4 > TILE_INPUT_BYTES and self.has_panel_variant

    def pairs_pay(self, batch: int) -> bool:
        """Whether `batch` rows run the paired variant: 4k + 2 rows of a kernel tiled in
        fours. The plain kernels take the two rows left one at a time (n:m) or as a
        partial 4-row tile (bitmask, dense); one 2-row tile, which decodes the weights
        once for both, ran 1.14x to 1.55x as fast at 2 rows (docs/kernels.md)."""
        return self.tiled_in_fours and batch % 4 == 2

    @property
    def group_tile_limits(self) -> tuple[int, int] | None:
        """(most batch rows a tile takes, batch rows from which the batched kernel runs
        instead) of the group-tile variants: PLANE_TILES for weights with lane planes,
        WINDOW_TILES for one permute a step; None for weights without them (or of fewer
        rows than one group of four)."""
        if not self.nm_lanes or self.rows < 4:
            return None
        if self.lane_planes:
            return PLANE_TILES[self.m]
        return WINDOW_TILES if self.nm_span == 32 else None

    def group_tiles_for(self, batch: int) -> int:
        """The tile of the group-tile variant that `batch` rows run (0: none): from 2
        rows, the larger of 4 and 2 that `group_tile_limits` allows (2 for two rows)
        and, with lane planes, whose planes fit the stack's LANE_PLANES_MAX_FLOATS."""
        limits = self.group_tile_limits
        if batch < 2 or limits is None:
            return 0
        most = 2 if batch == 2 else limits[0]
        fitting = [tile for tile in (4, 2) if tile <= most and (not self.lane_planes or tile * self.cols <= LANE_PLANES_MAX_FLOATS)]
        return fitting[0] if fitting else 0

    @property
    def group_tile_sizes(self) -> list[int]:
        """The tiles of this weight's group-tile variants (`group_tiles_for`)."""
        return sorted({self.group_tiles_for(2), self.group_tiles_for(3)} - {0})

    def chunk_span_for(self, nonzeros: int) -> int:
        """The chunk variant a weight with `nonzeros` non-zeros runs one batch row through
        fastest (its span), or 0 for the mask kernel (CHUNK_SPANS; a window wider than
        the rows is passed over)."""
        if not self.has_chunk_variants:
            return 0
        density = nonzeros / (self.rows * self.cols)
        for most, span in CHUNK_SPANS[self.tuning]:
            if density <= most and (span <= self.cols or span == GATHER_SPAN):
                return span
        return 0

    def batched_from(self, nonzeros: int) -> int | None:
        """Batch rows from which a weight with `nonzeros` non-zeros (kept slots for
        n:m) runs its batched kernel (BATCHED_FROM, BLOCK_BATCHED_FROM, `group_tile_limits`,
        SMALL_WEIGHT), or None for weights without one."""
        if not self.has_batched_variant:
            return None
        if self.kind == "block":
            rows = next(rows for widest, rows in BLOCK_BATCHED_FROM if self.block <= widest)
        elif self.group_tile_sizes:
            rows = self.group_tile_limits[1]  # pyright: ignore
        else:
            per_density, fewest, most = BATCHED_FROM[self.kind]
            rows = min(most, max(fewest, math.ceil(per_density * nonzeros / max(1, self.rows * self.cols))))
        return max(rows, SMALL_BATCHED_FROM) if self.rows * self.cols < SMALL_WEIGHT else rows

    @property
    def batch_chunk(self) -> int | None:
        """The most batch rows one call of this kernel takes (BATCH_CHUNKS), or None."""
        return BATCH_CHUNKS.get((self.kind, self.batched))

    @cached_property
    def lane_chunk(self) -> int:
        """The lanes a batched kernel takes through the whole weight at a time: its
        BATCH_CHUNKS size; for a call on more lanes (an implicit convolution's image,
        `window`), whose inputs are read in place rather than transposed per chunk, as
        many as keep the inputs a panel reads within TILE_INPUT_BYTES (its channels'
        `tap_spans`), from 32 to 256, and at least a block kernel's widest lane tile.
        Kept once computed: generating an implicit kernel asks for it dozens of times,
        and it merges the taps' spans eight times over (2 ms of a 7x7 kernel's 30)."""
        chunk = BATCH_CHUNKS[(self.kind, True)]
        if not self.window:
            return chunk
        grain = self.window[3] if self.column_shifts else 32  # shifted sums move within whole rows
        fitting = [lanes for lanes in range(grain, 257, grain) if self.panel_input_bytes(self.panel_columns, lanes) <= TILE_INPUT_BYTES]
        return max([chunk, grain, *fitting, *([16 * self.block_lane_vectors] if self.kind == "block" else [])])

    @property
    def block_lane_vectors(self) -> int:
        """The widest lane tile of the batched block kernel, in vectors of 16 lanes: one
        accumulator a row of `block_slice` and vector, so two for blocks of up to 8 and
        one for 16 (32 registers); four for an implicit convolution's slices of up to 4
        rows, whose weights each lane tile reads again (ResNet50 at blocks of 4, 75%: 5
        to 18% off each convolution, 64 -> 64 3x3 at 56 x 56 0.87 -> 0.78 ms). Matrix
        products keep two: their inputs are transposed per chunk of 32 rows."""
        if self.window and self.block_slice <= 4:
            return 4
        return 2 if self.block_slice <= 8 else 1

    @property
    def block_slice(self) -> int:
        """The rows of a block one pass of the batched block kernel over a row block's
        kept blocks sums: the whole block, but 4 rows at a time of blocks wider than 8
        (and a multiple of 4) in a convolution, which then take 64 lanes a tile as blocks
        of 4 do, where a whole block of 16 had one accumulator a row for 16 lanes and a
        load of inputs for every 16 multiply-adds (ResNet50 at blocks of 16, 75%, one
        thread: 37.7 -> 34.5 ms; blocks of 8 ran as fast either way, with less code
        whole)."""
        return 4 if self.window and self.block > 8 and self.block % 4 == 0 else self.block

    def panel_input_bytes(self, columns: int, lanes: int) -> int:
        """The bytes of inputs an implicit kernel's panel of `columns` weight columns
        reads for `lanes` lanes: its channels' merged spans (`tap_spans`)."""
        channels = math.ceil(min(self.cols, columns) / self.window[0])
        return channels * sum(floats for _, floats in self.tap_spans(lanes)) * 4

    @property
    def has_batched_variant(self) -> bool:
        """Whether the batched variant exists: bitmask and n:m weights, and blocks of at
        most 8 (BLOCK_BATCHED_FROM): wider ones fill most of the tiled block kernel's
        16-lane vectors already, and 2B accumulators would not fit the registers."""
        return self.kind in BATCHED_FROM or (self.kind == "block" and self.block <= BLOCK_BATCHED_FROM[-1][0])

    @property
    def has_implicit_variant(self) -> bool:
        """Whether a convolution may run the implicit variant of the batched kernel
        (`window`), on at most WINDOW_MAX_COLUMNS columns, whose offsets it keeps in a
        table: where the batched kernel exists (`has_batched_variant`), and for blocks
        of any size. In a convolution's layout (rows x lanes) a block of 16 rows takes
        16 accumulators of one vector of lanes each; with the tiled kernel and im2col,
        ResNet50 at blocks of 16 ran slower than at blocks of 8 in place."""
        return (self.has_batched_variant or self.kind == "block") and self.cols <= WINDOW_MAX_COLUMNS

    @cached_property
    def window_taps(self) -> tuple[tuple[int, int, int, int], ...]:
        """Each tap of the implicit variant's window, in weight column order (tap row i,
        then tap column j): the phase row and column its inputs lie in (i dh % sh,
        j dw % sw), then its row and column within that phase (i dh // sh, j dw // sw)."""
        taps, width, _plane, _pitch, dh, dw, sh, sw = self.window
        return tuple((i * dh % sh, j * dw % sw, i * dh // sh, j * dw // sw) for i in range(taps // width) for j in range(width))

    @cached_property
    def tap_offsets(self) -> tuple[int, ...]:
        """Each tap's input offset (floats) from its channel's first phase plane."""
        _taps, _width, plane, pitch, _dh, _dw, _sh, sw = self.window
        return tuple((p * sw + q) * plane + row * pitch + column for p, q, row, column in self.window_taps)

    def loads_from_lines(self, width: int, dilation: int = 1, stride: int = 1) -> bool:
        """Whether the implicit variant of a convolution with a window `width` columns
        wide (at that column dilation and stride) may load its taps' inputs from whole
        cache lines (`column_shifts`): the batched kernels on AVX-512 whose products
        come from arrays of decoded products, the bitmask kernel (which sorts them by
        shift) and the n:m kernel, whose runs go through a wider window's taps in turn
        (`run_major`), so that it knows each product's tap column; at most three tap
        columns, each shift's sums taking a set of accumulators (and a round's products
        at most 16, the padding slots). A block kernel loads each input for several
        rows already (ResNet50 at blocks of 4 ran 1.03x with every load rounded to its
        line, wrong results and all): it shifts only a 1x1 window's loads, all by
        its `read_shift`, as every batched kernel does."""
        kept = self.m - self.n
        fits = width <= 3 and (width - 1) * dilation // stride < 16 and kept * width <= 16
        kinds = self.kind == "bitmask" or self.kind == "nm" and self.run_major or width == 1 and self.kind in ("nm", "block")
        return kinds and self.avx512 and fits

    def shift_pitch(self, width: int, dilation: int, stride: int, pitch: int) -> int:
        """The row pitch of the implicit variant's planes for a window `width` columns
        wide at that column dilation and stride on rows of `pitch` columns: the smallest
        of SHIFT_PITCHES at least `pitch` within SHIFT_PITCH_SLACK of it where the
        kernel `loads_from_lines`, else `pitch`. Strided windows keep theirs: one tap
        column in three is off its line there, and 128 -> 128 3x3 at 56 x 56, stride 2,
        ran 0.92x as fast with its rows of 29 lanes grown to 32."""
        if width < 2 or stride != 1 or not self.loads_from_lines(width, dilation, stride):
            return pitch
        return next((wide for wide in SHIFT_PITCHES if pitch <= wide <= pitch * SHIFT_PITCH_SLACK), pitch)

    @cached_property
    def column_shifts(self) -> tuple[int, ...]:
        """The column shifts (floats past a cache line) of the implicit variant's tap
        columns, where it loads their inputs from whole lines: a 3x3 window's taps lie
        one float apart, so most 16-lane loads of a tap's inputs spanned two lines
        (rounding their addresses down, with wrong results, made the product loops
        1.7x as fast). On rows of a pitch of SHIFT_PITCHES, whose planes start on a
        line, tap column j's inputs lie j x dilation / stride floats past one; the
        kernel sums each shift's products apart and moves the sums into place once a
        tile (runtime/codegen/batched.py: `shifted_multiply`, `sorted_multiply`). A 1x1
        window's one shift is its `read_shift`. Empty where the kernel loads at the
        taps."""
        if not self.window or self.window[3] not in SHIFT_PITCHES:
            return ()
        width, dw, sw = self.window[1], self.window[5], self.window[7]
        if not self.loads_from_lines(width, dw, sw):
            return ()
        if width == 1:
            return (self.read_shift,) if self.read_shift else ()
        return tuple(j * dw // sw for j in range(width))

    def tap_spans(self, lanes: int) -> list[tuple[int, int]]:
        """The (offset, floats) runs of a channel's phase planes that `lanes`
        consecutive lanes read through its taps (`tap_offsets`, from their lines where
        the kernel has `column_shifts`): overlapping reads (a 3x3 window's three taps
        of one row are one float apart, its rows one pitch) merge into one run."""
        spans: list[tuple[int, int]] = []
        offsets = {offset - offset % 16 for offset in self.tap_offsets} if self.column_shifts else set(self.tap_offsets)
        for offset in sorted(offsets):
            if spans and offset <= spans[-1][0] + spans[-1][1]:
                start, _floats = spans[-1]
                spans[-1] = (start, offset + lanes - start)
            else:
                spans.append((offset, lanes))
        return spans

    @property
    def channel_floats(self) -> int:
        """The floats of one channel's phase planes (sh x sw planes)."""
        return self.window[6] * self.window[7] * self.window[2]

    @property
    def position_bits(self) -> int:
        return math.ceil(math.log2(self.m)) if self.m > 1 else 0

    @property
    def mask_words(self) -> int:
        """16-bit mask words per row of a bitmask weight: rows are padded to whole
        64-bit steps, so a kernel can read four words at once."""
        return 4 * math.ceil(self.cols / 64)

    @property
    def panel_columns(self) -> int:
        """Columns per panel: batched kernels take the weight a panel at a time, so the
        inputs they read (panel x batch floats) stay in L1. Bitmask rows keep a value
        offset per panel; n:m panels hold whole runs (else there is one panel), and an
        implicit convolution's may be narrower (`implicit_panel_columns`)."""
        if self.kind == "bitmask":
            return PANEL
        if self.kind == "nm" and PANEL % self.m == 0:
            return self.implicit_panel_columns if self.window else PANEL
        return self.cols

    @property
    def implicit_panel_columns(self) -> int:
        """The widest of PANEL, PANEL / 2 and PANEL / 4 columns whose channels' inputs
        for 64 lanes (`tap_spans`) stay within IMPLICIT_PANEL_BYTES (for the key's
        tuning), of whole runs and, on the 16-lane layout, whole steps (else the
        narrowest of those). The lane chunk then grows to fill TILE_INPUT_BYTES
        (`lane_chunk`), from one 64-lane tile at least, as no budget exceeds that."""
        grain = self.nm_span if self.nm_lanes else self.m
        widths = [width for width in (PANEL, PANEL // 2, PANEL // 4) if width % grain == 0] or [PANEL]
        fitting = [width for width in widths if self.panel_input_bytes(width, 64) <= IMPLICIT_PANEL_BYTES[self.tuning]]
        return (fitting or widths[-1:])[0]

    @property
    def panels(self) -> int:
        return math.ceil(self.cols / self.panel_columns)

    @property
    def nm_lanes(self) -> bool:
        """Whether the n:m kernel maps runs onto 16-lane vectors: m and the kept values
        per run divide 16, float16 values, an AVX-512 target, and at least one whole step."""
        kept = self.m - self.n
        return (
            self.kind == "nm"
            and self.avx512
            and self.values == "f16"
            and 16 % self.m == 0
            and 16 % kept == 0
            and self.cols >= self.nm_span
        )

    @property
    def lane_planes(self) -> bool:
        """Whether one batch row's n:m steps pick each lane's input from m planes of the
        input by its position's bits (runtime/codegen/nm.py, VectorNMKernel.group_body)
        rather than by permutes: one kept value of 2, 4 or 8 (1:2, 3:4, 7:8) on the
        16-lane layout, whose planes hold K floats, on the stack. (With two kept values
        of 4 the planes hold each input twice: 2:4 ran 1.1x to 1.3x as long, its planes
        outgrowing L1.)"""
        return self.nm_lanes and self.m in (2, 4, 8) and self.m - self.n == 1 and self.cols <= LANE_PLANES_MAX_FLOATS

    @property
    def nm_span(self) -> int:
        """Columns one vector of 16 kept values covers."""
        return 16 * self.m // (self.m - self.n)

    @property
    def nm_word_bits(self) -> int:
        """Bits of the word holding one step's 16 positions: 32, or 64 for m > 4."""
        return 32 if 16 * self.position_bits <= 32 else 64

    @property
    def splits_lanes(self) -> bool:
        """Whether a call's units are its lane chunks rather than its rows: the implicit
        variant (`window`) of a weight of at most ROW_GROUP rows. Split by rows, every
        share reads all of an image's planes, and a share of so few rows has too little
        work to pay for that (a 1x1 convolution of 256 channels to 64 at 56 x 56 ran
        slower on two threads than on one); split by lanes, each reads its own. Weights
        of more rows ran 6 to 8% slower split by lanes (or by lane chunks of row groups).
        An image of one lane chunk (its phase plane no larger) splits by rows, or it
        would run on one thread: DenseNet121's 3x3 convolutions at 7 x 7."""
        return bool(self.window) and self.rows <= ROW_GROUP and self.groups == 1 and self.window[2] > self.lane_chunk

    def parallel_units(self, batch: int) -> int:
        """How many units a call on `batch` rows (lanes) has, the range [begin, end) of
        its kernel's last two arguments: rows, row blocks, or lane chunks
        (`splits_lanes`)."""
        if self.splits_lanes:
            return math.ceil(batch / self.lane_chunk)
        return self.row_units

    @property
    def row_units(self) -> int:
        """The weight's rows, or its row blocks for block kernels (the last may run past
        the last row)."""
        return math.ceil(self.rows / self.block) if self.kind == "block" else self.rows


NORM_KINDS = ("layer", "rms", "softmax")


@dataclass(frozen=True)
class NormKey:
    """A normalization over the last axis of `cols` float32 values per row: a layer
    normalization ("layer"), y = (x - mean) / sqrt(variance + epsilon) * scale + bias,
    an RMS normalization ("rms"), y = x / sqrt(mean(x^2) + epsilon) * scale, or a
    Softmax ("softmax"), y = e^(x - max) / sum e^(x - max). The runtime generates it
    for `nn.layer_norm`, `nn.rms_norm` and `nn.softmax` between kernels, where numpy runs with its
    code out of the caches (runtime/codegen/norm.py): a classifier's last Softmax of
    1000 values took 72 to 165 us in numpy, onnxruntime's 11 to 34. Epsilon is an
    operand, not part of the key."""

    cols: int
    kind: str = "layer"

    def __post_init__(self) -> None:
        if self.kind not in NORM_KINDS or self.cols < 1:
            raise ValueError(f"normalization '{self.kind}' of {self.cols} values a row: expected one of {', '.join(NORM_KINDS)}, at least one value")

    @property
    def symbol(self) -> str:
        return f"{self.kind if self.kind == 'softmax' else self.kind + '_norm'}_f32_{self.cols}"


PLANE_PROLOGUES = ("none", "affine", "affine_relu")


@dataclass(frozen=True)
class PlaneKey:
    """Copying images into an implicit convolution's planes (stride 1: one plane a
    channel, ImplicitConv), each channel's rows into the middle of its plane, through
    the put-off normalization of the convolution's input when it has one: x * scale +
    shift per channel ("affine"), then the Relu ("affine_relu") (runtime/codegen/
    planes.py). The geometry and the image's strides are operands, not part of the key."""

    prologue: str = "none"
    stride: int = 1
    """The image columns from one copied to the next: 2 for a phase plane of a
    convolution at column stride 2, which takes every other column."""

    def __post_init__(self) -> None:
        if self.prologue not in PLANE_PROLOGUES or self.stride not in (1, 2):
            raise ValueError(f"plane prologue '{self.prologue}' at column stride {self.stride}: expected one of {', '.join(PLANE_PROLOGUES)}, at stride 1 or 2")

    @property
    def symbol(self) -> str:
        return f"planes_f32_{self.prologue}" + ("_stride2" if self.stride == 2 else "")


PAD_VALUES = {"max": -3.4028234663852886e38, "avg": 0.0, "depthwise": 0.0}
"""The value a pool kernel's virtual pads hold, by kind: the lowest float32 (numpy's
finfo(float32).min) for max, as the reference and onnxruntime pad, else zero."""


POOL_KINDS = ("max", "avg", "depthwise")
POOL_MAX_TAPS = 64
"""The most window taps a pool kernel takes: its taps are unrolled (an 8x8 window;
larger ones run in numpy, but for a window over the whole image, `PoolKey.whole`)."""
POOL_WHOLE_MAX_COLUMNS = 128
"""The widest image a whole-image pool kernel takes: a row's vectors are unrolled."""


@dataclass(frozen=True)
class PoolKey:
    """A window kernel over images read in place, its pads virtual, at column stride 1
    or 2 (runtime/codegen/pool.py): 2-D max or average pooling ("max", "avg"), for
    `nn.max_pool` and `nn.average_pool` between kernels, where numpy took one pass over
    the outputs per window tap (Inception v2's pools: 10.6 of its 38.6 ms a run); or a
    depthwise 2-D convolution ("depthwise": one input channel per output channel, a
    pool whose taps are weighted by the plane's channel's weights, then its bias when
    `bias`), for `nn.conv` with a group per channel (ShuffleNet's: 8.9 of its 18.4 ms
    in numpy). Specialized to its `window` (rows, columns) and `dilation` (rows,
    columns), whose taps it unrolls; the images' geometry and the row stride are
    operands.

    A `whole` key pools each plane's whole image, its `window`, into one value
    (`nn.global_average_pool`, and max or average pools whose one window covers their
    unpadded image, as ResNet50's last 7x7 average pool does): rows in a loop, each
    row's vectors unrolled, their lanes reduced at the end. The windowed kernel computed
    16 outputs a vector for the one it stored, 49 masked loads a plane for a 7 x 7
    image (ResNet50's: 0.16 ms against onnxruntime's 0.04).

    A `flat` key (stride 1) also takes the images whose output rows are as wide as
    their input rows, both back to back (each row's pitch its width), as one run of
    Ho x Wo outputs, 16 at a time, each tap a load at a fixed offset from them under a
    lane mask of its own (`flat_masks`): a row of 7 outputs no longer fills a vector of
    16 alone."""

    kind: str
    stride: int
    window: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)
    bias: bool = False
    whole: bool = False
    flat: bool = False

    def __post_init__(self) -> None:
        if self.kind not in POOL_KINDS or self.stride not in (1, 2) or (self.bias and self.kind != "depthwise"):
            raise ValueError(f"pool kernel '{self.kind}' at column stride {self.stride}: expected {', '.join(POOL_KINDS)} (a bias only for depthwise), at stride 1 or 2")
        if self.whole:
            if self.kind == "depthwise" or self.stride != 1 or self.dilation != (1, 1) or min(self.window) < 1 or self.window[1] > POOL_WHOLE_MAX_COLUMNS:
                raise ValueError(f"whole-image pool kernel '{self.kind}' of {self.window} images: expected max or avg, stride and dilation 1, at most {POOL_WHOLE_MAX_COLUMNS} columns")
        elif min(self.window) < 1 or min(self.dilation) < 1 or math.prod(self.window) > POOL_MAX_TAPS:
            raise ValueError(f"pool kernel window {self.window} dilated {self.dilation}: expected at most {POOL_MAX_TAPS} taps, sizes and dilations >= 1")
        if self.flat and (self.whole or self.stride != 1):
            raise ValueError(f"flat pool kernel '{self.kind}' at column stride {self.stride}: expected a windowed kernel at stride 1")

    @property
    def symbol(self) -> str:
        rows, columns = self.window
        if self.whole:
            return f"pool_{self.kind}_whole_{rows}x{columns}_f32"
        dilated = "" if self.dilation == (1, 1) else "_dilated{}x{}".format(*self.dilation)
        return f"pool_{self.kind}_{rows}x{columns}{dilated}_f32_stride{self.stride}" + ("_bias" if self.bias else "") + ("_flat" if self.flat else "")

    @property
    def tap_columns(self) -> list[int]:
        """Each tap column's first input, in floats from the window's first."""
        return [j * self.dilation[1] for j in range(self.window[1])]

    @property
    def row_vectors(self) -> int:
        """The vectors that hold a tap row's inputs for 16 outputs (a whole image's row)."""
        if self.whole:
            return -(-self.window[1] // 16)
        return -(-(self.stride * 15 + (self.window[1] - 1) * self.dilation[1] + 1) // 16)

    @property
    def reads(self) -> list[int]:
        """The offsets (floats from 16 outputs' first input) of the vectors the kernel
        loads from each tap row: its tap columns' (average and depthwise at stride 1),
        else the row's whole vectors (max: it shifts lanes across the columns; stride 2:
        it picks even or odd lanes; a whole image's row)."""
        if self.kind == "max" or self.stride == 2 or self.whole:
            return [16 * k for k in range(self.row_vectors)]
        return self.tap_columns

    def lane_masks(self, columns: int, out_columns: int, left: int) -> list[int]:
        """For each vector of 16 outputs of a row of `out_columns`, then each of `reads`:
        the bits of the lanes whose inputs lie in a row of `columns` with `left` pads
        before it (the others read the pad value)."""
        masks = []
        for first in range(0, out_columns, 16):
            for offset in self.reads:
                start = first * self.stride - left + offset
                masks.append(sum(1 << lane for lane in range(16) if 0 <= start + lane < columns))
        return masks

    def flat_masks(self, image: tuple[int, int], out: tuple[int, int], before: tuple[int, int]) -> np.ndarray:
        """For each vector of 16 outputs of a flat run (Ho x Wo of `out`, a row after
        another), then each tap (rows first): the bits of the lanes whose output exists
        and whose tap's input lies in the image (`image`, its rows and columns, with
        `before` pads above and left of it), as uint16."""
        (rows, columns), (out_rows, out_columns), (top, left) = image, out, before
        positions = np.arange(-(-out_rows * out_columns // 16) * 16)
        row, column = np.divmod(positions, out_columns)
        exists = positions < out_rows * out_columns
        taps = [
            exists & (0 <= (r := row - top + i * self.dilation[0])) & (r < rows) & (0 <= (c := column - left + j * self.dilation[1])) & (c < columns)
            for i in range(self.window[0])
            for j in range(self.window[1])
        ]
        lanes = np.stack(taps).reshape(len(taps), -1, 16).transpose(1, 0, 2)  # (vectors, taps, lanes)
        return (lanes.astype(np.uint16) << np.arange(16, dtype=np.uint16)).sum(axis=2, dtype=np.uint16)


TRANSPOSE_COMBINES = ("add", "mul")
"""How an outward TransposeKey may combine its outputs with a second operand's."""


@dataclass(frozen=True)
class TransposeKey:
    """Moving a batched kernel's B batch rows between the caller's layout and the
    transposed one the kernel computes on (runtime/codegen/transpose.py), in blocks of
    16 x 16 transposed in registers, split over the worker threads by blocks of 16 of
    `count`:

    - inward: x (B rows of `pitch` floats) into its columns, (K + 1) x P:
      columns[k, b] = x[b, k] for k < `count` (K); lanes past B and row K untouched;
    - outward: the transposed outputs, `count` rows of P lanes, into output rows of
      `pitch` floats: out[b, r] = y[r, b] for r < `count`.

    B is the call's `batch` operand, P = padded_batch(B). numpy took these copies on
    the calling thread alone, a fifth of a batched layer's time at 128 rows on two
    threads.

    An outward copy may `combine` each output with the value at the same place of a0
    (rows of the same pitch): "add" or "mul", the elementwise Add or Mul that reads the
    layer's result taken into its copy (TRANSPOSE_COMBINES)."""

    count: int
    pitch: int
    inward: bool
    combine: str = ""

    def __post_init__(self) -> None:
        if self.count < 1 or self.pitch < self.count:
            raise ValueError(f"transposing {self.count} values of rows of {self.pitch}: expected 1 <= count <= pitch")
        if self.combine and (self.inward or self.combine not in TRANSPOSE_COMBINES):
            raise ValueError(f"transpose combining by {self.combine!r}: expected an outward copy and one of {', '.join(TRANSPOSE_COMBINES)}")

    @property
    def symbol(self) -> str:
        return f"transpose_{'in' if self.inward else 'out'}_f32_{self.count}_{self.pitch}" + (f"_{self.combine}" if self.combine else "")

    @property
    def units(self) -> int:
        """Blocks of 16 of `count`: what the threads split."""
        return -(-self.count // 16)


ATTENTION_UNIT_ROWS = 16
"""Query rows in a unit of the attention kernel's work (with a batch and a head): a
head's rows spread over the threads, and a causal mask's work with them, which grows
along the rows. 9 heads on two threads: as whole heads 5 against 4."""
ATTENTION_GEOMETRY = (
    "queries", "keys", "heads", "key_group", "value_group",
    "q_batch", "q_head", "q_row", "kt_batch", "kt_head", "kt_row", "v_batch", "v_head", "v_row",
    "mask_batch", "mask_head", "mask_row", "out_batch", "out_head", "out_row", "scale",
)  # fmt: skip
"""The int64 words of an attention kernel's geometry operand: S and T, the heads H,
the query heads per key head and per value head, each operand's batch, head and row
strides in floats (0 where it broadcasts), and the scale as a float32 in the low half
of the last word."""


@dataclass(frozen=True)
class AttentionKey:
    """softmax(scale * q @ kt + mask) @ v for queries of `depth` (D) values and values
    of `value_depth` (Dv), with an additive mask or not, NaN rows kept or zeroed
    (runtime/codegen/attention.py):
    units are (batch, head, ATTENTION_UNIT_ROWS query rows), each row against the T keys, the
    scores never written out. S, T, the heads, the scale and every stride are the
    geometry operand's (ATTENTION_GEOMETRY), not part of the key."""

    depth: int
    value_depth: int
    masked: bool
    nan_rows_to_zero: bool = False
    """Rows whose probabilities are NaN (l not above 0: every score -inf, or a NaN)
    give zeros (`nn.attention`'s attribute)."""

    def __post_init__(self) -> None:
        if self.depth < 1 or self.value_depth < 1:
            raise ValueError(f"attention over {self.depth} query and {self.value_depth} value values: expected at least one of each")

    @property
    def symbol(self) -> str:
        return f"attention_f32_{self.depth}_{self.value_depth}" + ("_masked" if self.masked else "") + ("_nan_to_zero" if self.nan_rows_to_zero else "")


ROTARY_GEOMETRY = (
    "heads", "rows",
    "x_batch", "x_head", "x_row", "cos_batch", "cos_head", "cos_row", "sin_batch", "sin_head", "sin_row",
)  # fmt: skip
"""The int64 words of a rotary kernel's geometry operand: x as (batch, heads, rows, D),
the heads and rows, and x's, cos's and sin's batch, head and row strides in floats (0
where one broadcasts); the output is contiguous."""


@dataclass(frozen=True)
class RotaryKey:
    """x cos + rotate_half(x) sin over rows of `width` (D, even) values
    (runtime/codegen/rotary.py; `nn.rotary_embedding`): units are (batch, head) pairs,
    each over its rows, cos and sin read at their strides (ROTARY_GEOMETRY)."""

    width: int

    def __post_init__(self) -> None:
        if self.width < 2 or self.width % 2:
            raise ValueError(f"a rotary embedding over {self.width} values: expected an even width")

    @property
    def symbol(self) -> str:
        return f"rotary_f32_{self.width}"


AnyKey = KernelKey | NormKey | PlaneKey | PoolKey | TransposeKey | AttentionKey | RotaryKey
"""A key of any kernel the runtime generates."""


def padded_batch(batch: int) -> int:
    """P, the batched kernels' batch: `batch` rounded up to a multiple of 16."""
    return -(-batch // 16) * 16


def epilogue_name(bias: bool, activation: str | None) -> str:
    """The epilogue that adds a bias (or not), then applies `activation` (or none)."""
    return "_".join((["bias"] if bias else []) + ([activation] if activation else [])) or "none"


def epilogue_activation(epilogue: str) -> str | None:
    """The activation an epilogue applies: one of ACTIVATIONS, or None."""
    activation = epilogue.removeprefix("bias").removeprefix("_")
    return activation if activation in ACTIVATIONS else None


def group_block(block: int, rows: int, groups: int) -> int:
    """The rows of a block kernel's row blocks for a weight stored in blocks of `block`
    rows, `rows` of them in `groups` groups: `block` itself, or where groups would split
    its blocks, the largest size that divides both a block and a group's rows (the
    stored blocks cut into smaller ones, their kept ones kept whole, so each row block
    lies in one group); 1 where none does. ShuffleNet's grouped 1x1 convolutions of 34
    rows a group ran the bitmask kernel at blocks of 16 (1.9 of its 3.6 ms a run)."""
    return block if groups == 1 else math.gcd(block, rows // groups)


def key_for(weight: StoredWeightOp, transposed: bool, kind: str, epilogue: str, groups: int = 1) -> KernelKey:
    """The key of a kernel of `kind` reading `weight` in its (out, in) view (an unpacked
    weight: its float32 values, in blocks of UNPACKED_BLOCK rows for the block kernel),
    for a convolution of `groups` groups (`group_block`).

    `transposed` says the weight is stored (in, out); Conv weights flatten to
    (out, in * kernel), or for the n:m kernel run by run of m input channels
    (`run_major`).
    """
    from sparsec.dialects.sparse import PackedWeightOp  # the dialects import this module

    shape = weight.tensor_type.get_shape()
    rows, cols = (shape[1], shape[0]) if transposed else (shape[0], math.prod(shape[1:]))
    if not isinstance(weight, PackedWeightOp):
        return KernelKey(kind, rows, cols, values="f32", block=group_block(UNPACKED_BLOCK, rows, groups) if kind == "block" else 0, epilogue=epilogue)
    encoding = weight.encoding
    return KernelKey(
        kind,
        rows,
        cols,
        values="f16" if encoding.values == f16 else "f32",
        n=encoding.n.data if kind == "nm" else 0,
        m=encoding.m.data if kind == "nm" else 0,
        block=group_block(encoding.block_size.data, rows, groups) if kind == "block" else 0,
        epilogue=epilogue,
        run_major=kind == "nm" and math.prod(shape[2:]) > 1,
    )
