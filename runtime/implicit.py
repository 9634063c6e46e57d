"""Implicit convolutions: how a 1-D or 2-D convolution runs the implicit variant of
its batched kernel (KernelKey.window) on its input's planes in place, and the residual
Add it may take in (docs/kernels.md, "Convolutions"). The executor makes the calls."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Operation, SSAValue

from sparsec import reference
from sparsec.dialects.kernel_ops import SparseConvOp
from sparsec.dialects.nn import AddOp, ReluOp, SumOp
from sparsec.kernels import SHIFT_PITCHES, KernelKey, epilogue_activation, epilogue_name, padded_batch


@dataclass(frozen=True)
class ImplicitConv:
    """How a 1-D or 2-D convolution runs the implicit variant of its batched kernel
    (KernelKey.window). Each image is copied into a zeroed array of phase planes: for
    strides (sh, sw), channel c's padded input splits into sh x sw planes of Hq x Wq,
    phase (p, q) holding the padded rows p, p + sh, ... and columns q, q + sw, ...
    (one plane, the padded input itself, at stride 1); a zero plane follows for the
    padding products. Batch lane l is the output at row l // Wq, column l % Wq: every
    tap of every channel reads 16 consecutive lanes as one vector at a fixed offset,
    so there are no input windows to copy (im2col) and no transposes. The lanes of the
    columns past Wo in each row are computed and dropped."""

    key: KernelKey
    channels: int
    strides: tuple[int, int]
    phase: tuple[int, int]
    """Hq, Wq: a phase plane's rows and columns."""
    before: tuple[int, int]
    """The pads before the first row and column."""
    out: tuple[int, int]
    """Ho, Wo: the output's rows and columns (one row for a 1-D convolution)."""
    spatial: tuple[int, ...]
    """The result's spatial shape: (Ho, Wo), or (Wo,) for a 1-D convolution."""
    phases_read: tuple[tuple[int, int], ...]
    """The phases some tap reads (a 1x1 convolution with stride 2 reads one of four)."""
    read_offset: int = 0
    """Floats from the planes' start to the first lane's read: a 1x1 convolution
    framed in a padded sibling's planes (`framed`) reads its image past their pads."""

    @property
    def lanes(self) -> int:
        """Ho x Wq rounded up to 16: the batch of each image's call (KernelKey.lanes)."""
        return self.key.lanes

    @property
    def lane_layout(self) -> tuple[int, int, int, int]:
        """How its output lanes lie: lanes a channel, lanes a row (Wq), then the output's
        rows and columns (Executor._concat_lanes compares Concat buffers by it)."""
        return self.lanes, self.phase[1], self.out[0], self.out[1]

    @property
    def line_start(self) -> int:
        """The float of its planes that starts a cache line: the image's first (past the
        pads) at stride 1, so that a 1x1 convolution framed in them (`framed`) reads
        whole lines; the first where the strides split the planes, or where rows of a
        pitch of SHIFT_PITCHES let a kernel load its taps from lines
        (KernelKey.column_shifts; a 1x1 convolution framed in them then reads from its
        `read_shift` past each line)."""
        if self.strides != (1, 1) or self.phase[1] in SHIFT_PITCHES:
            return 0
        return self.before[0] * self.phase[1] + self.before[1]

    @property
    def planes(self) -> int:
        return self.channels * self.strides[0] * self.strides[1]

    @property
    def plane_floats(self) -> int:
        """Floats from one phase plane to the next (KernelKey.window[2])."""
        return self.key.window[2]

    @property
    def size(self) -> int:
        """Floats of the phase planes, then a zero plane and slack for the last lanes,
        which run up to 15 past the last output row."""
        return self.planes * self.plane_floats + max(self.lanes, self.plane_floats)

    def plane_views(self, array: np.ndarray) -> np.ndarray:
        """The phase planes (C, sh, sw, Hq, Wq) in `array` (of `size` floats), a view."""
        hq, wq = self.phase
        planes = array[: self.planes * self.plane_floats].reshape(self.channels, *self.strides, self.plane_floats)
        return planes[..., : hq * wq].reshape(self.channels, *self.strides, hq, wq)

    def reads_in_place(self, images: np.ndarray) -> bool:
        """Whether `images` (N, C, *spatial) are already this convolution's planes, one a
        channel: a 1x1 window at stride 1 without pads (its only plane the image itself,
        at the planes' row pitch) over float32 images whose channels lie a plane apart,
        each row `phase[1]` values after the one before, as an implicit call's output
        lanes are (back to back when its rows drop no lanes; `framed` convolutions read
        rows that do). The zero plane after the last channel is the caller's to vouch for."""
        alone = self.key.window[0] == 1 and self.strides == (1, 1) and self.before == (0, 0) and self.phase[0] == self.out[0]
        at_pitch = images.strides[-1] == 4 and (images.ndim == 3 or images.strides[-2] == 4 * self.phase[1])
        return alone and images.dtype == np.float32 and at_pitch and images.strides[1] == 4 * self.plane_floats

    def copies(self, planes: np.ndarray, shape: tuple[int, ...]) -> list[tuple[np.ndarray, tuple[slice, slice]]]:
        """For the phase planes `planes` (C, sh, sw, Hq, Wq) and images of `shape`
        (C, H, W): each phase read, the part of it an image fills, and the image's
        rows and columns that go there (every sh-th row from the first landing in it)."""
        (sh, sw), (top, left), (h, w) = self.strides, self.before, shape[1:]
        copies = []
        for p, q in self.phases_read:
            first_row, first_column = (p - top) % sh, (q - left) % sw
            rows, columns = range(first_row, h, sh), range(first_column, w, sw)
            at_row, at_column = (first_row + top - p) // sh, (first_column + left - q) // sw
            target = planes[:, p, q, at_row : at_row + len(rows), at_column : at_column + len(columns)]
            copies.append((target, (slice(first_row, None, sh), slice(first_column, None, sw))))
        return copies


def implicit_conv(op: SparseConvOp, key: KernelKey, x_shape: tuple[int, ...]) -> ImplicitConv | None:
    """The implicit form of convolution `op` with kernel `key` on inputs of `x_shape`,
    or None where it does not apply: a 1-D or 2-D convolution whose kernel has an
    implicit variant (with groups, KernelKey.groups)."""
    kernel = tuple(op.w.type.get_shape()[2:])  # pyright: ignore
    if not key.has_implicit_variant or len(kernel) not in (1, 2) or len(x_shape) != 2 + len(kernel):
        return None
    strides, dilations, pads = op.geometry(x_shape, kernel)
    ones = (1,) * (2 - len(kernel))  # a 1-D convolution is a 2-D one of one row
    (kh, kw), (dh, dw), (sh, sw), (h, w) = ((ones + tuple(v)) for v in (kernel, dilations, strides, x_shape[2:]))
    (top, left), (bottom, right) = ((0,) * len(ones) + tuple(pads[: len(kernel)])), ((0,) * len(ones) + tuple(pads[len(kernel) :]))
    hp, wp = h + top + bottom, w + left + right
    ho, wo = (hp - (kh - 1) * dh - 1) // sh + 1, (wp - (kw - 1) * dw - 1) // sw + 1
    if ho < 1 or wo < 1:
        return None
    hq, wq = -(-hp // sh), key.shift_pitch(kw, dw, sw, -(-wp // sw))
    window = (kh * kw, kw, aligned_plane(hq * wq), wq, dh, dw, sh, sw)
    variant = dataclasses.replace(key, batched=True, window=window, groups=op.group.value.data, lanes=padded_batch(ho * wq))
    phases = tuple(sorted({(p, q) for p, q, _row, _column in variant.window_taps}))
    return ImplicitConv(variant, x_shape[1], (sh, sw), (hq, wq), (top, left), (ho, wo), (ho, wo)[len(ones) :], phases)


def framed(conv: ImplicitConv, before: tuple[int, int], phase: tuple[int, int]) -> ImplicitConv:
    """2-D 1x1 convolution `conv` (stride 1, no pads) on planes of `phase` rows and
    columns that hold its image `before` rows and columns in (from `read_shift` floats
    past a line where the planes' rows start on lines): its output lanes then lie
    as those of a stride-1 convolution with those pads on those planes, a row every
    phase[1] lanes, so both can write one Concat's lane buffer (Executor._frame_layouts).
    With pads it reads the planes a padded sibling of the same input fills (the same
    geometry, so shared), from past their pads; without, images at that row pitch in
    place. The lanes past each output row's columns are computed and dropped, as a
    padded convolution's are: more lanes than the plain 1x1 convolution's."""
    (hq, wq), (top, left), (ho, _wo) = phase, before, conv.out
    window = (1, 1, aligned_plane(hq * wq), wq, 1, 1, 1, 1)
    key = dataclasses.replace(conv.key, window=window, lanes=padded_batch(ho * wq))
    at = dataclasses.replace(conv, key=key, phase=phase, before=before, read_offset=top * wq + left)
    shift = (at.read_offset - at.line_start) % 16
    if shift and key.loads_from_lines(1):  # its rows start `shift` floats past a line (rows of SHIFT_PITCHES)
        at = dataclasses.replace(at, key=dataclasses.replace(key, read_shift=shift))
    return at


def reads_input_in_place(op: SparseConvOp) -> bool:
    """Whether `op` may read its input in place where that is laid out as its planes
    (ImplicitConv.reads_in_place): a 1-D or 2-D 1x1 window at stride 1 without pads,
    on inputs whose shape the IR fixes but for the batch."""
    shape, kernel = tuple(op.x.type.get_shape()), tuple(op.w.type.get_shape()[2:])  # pyright: ignore
    if min(shape[1:], default=0) < 1 or len(kernel) not in (1, 2) or set(kernel) != {1}:
        return False
    strides, _dilations, pads = op.geometry((1, *shape[1:]), kernel)
    return set(strides) == {1} and not any(pads)


def aligned_plane(floats: int) -> int:
    """A phase plane's `floats` rounded up to whole 64-byte lines, so that every channel's
    planes start on one and each tap at a multiple of 16 floats from a plane's start
    reads aligned vectors (a 1x1 convolution's only tap). 14 x 14 planes of 196 floats
    put three channels in four off the line: ResNet50's 1x1 convolutions at 14 x 14 and
    7 x 7 loaded each vector across two lines."""
    return -(-floats // 16) * 16


def one_image(op: SparseConvOp) -> tuple[int, ...] | None:
    """The shape of one image of convolution `op`'s input where the IR fixes it,
    whatever the batch: an implicit form (`implicit_conv`) is the same for every
    batch (its lanes are an image's, and calls run image by image)."""
    image = tuple(op.x.type.get_shape()[1:])  # pyright: ignore  (channels, then spatial)
    return (1, *image) if min(image, default=0) > 0 else None


def image_conv(op: SparseConvOp, key: KernelKey) -> ImplicitConv | None:
    """The implicit form of convolution `op` on one image (`one_image`), else None."""
    shape = one_image(op)
    return implicit_conv(op, key, shape) if shape is not None else None


@dataclass(frozen=True)
class ResidualAdd:
    """A residual Add (or Sum of two) that an implicit call of a convolution takes in,
    and the Relu after it when that is the Add's only use (`residual_add`)."""

    addend: SSAValue
    """The Add's other operand, made before the convolution."""
    absorbed: tuple[SSAValue, ...]
    """The Add's result, and the Relu's."""
    relu: bool


def residual_add(op: SparseConvOp, key: KernelKey) -> ResidualAdd | None:
    """The residual Add an implicit call of `op` may take in: `op`'s only use is an Add
    or Sum of two tensors of one type whose other operand is made before `op`, and
    `op` applies no activation itself. Where the type leaves dimensions (a batch) to
    run time, the two may still differ there, one broadcasting: a call takes the Add
    in only when the addend has its output's shape (Executor._implicit_call)."""
    uses = list(op.results[0].uses)
    if len(uses) != 1 or not isinstance(add := uses[0].operation, AddOp | SumOp) or epilogue_activation(key.epilogue):
        return None
    terms = list(add.operands)
    if len(terms) != 2 or terms[0].type != terms[1].type or terms[0] is terms[1] or not isinstance(terms[0].type, TensorType):
        return None
    other = terms[1] if terms[0] is op.results[0] else terms[0]
    if isinstance(other.owner, Operation) and not other.owner.is_before_in_block(op):
        return None
    add_uses = list(add.output.uses)
    relu = len(add_uses) == 1 and isinstance(add_uses[0].operation, ReluOp)
    return ResidualAdd(other, (add.output, add_uses[0].operation.results[0]) if relu else (add.output,), relu)


def accumulating(conv: ImplicitConv, relu: bool) -> ImplicitConv:
    """`conv` with the kernel that takes in a residual Add (ResidualAdd): it adds its
    products to the residual in its outputs, then applies the Relu if it takes that in
    too (`relu`)."""
    epilogue = epilogue_name(conv.key.epilogue.startswith("bias"), "relu") if relu else conv.key.epilogue
    return dataclasses.replace(conv, key=dataclasses.replace(conv.key, accumulate=True, epilogue=epilogue))


BAND_FROM_BYTES = 1 << 20
"""The output size (bytes) from which a convolution that only a pool reads runs in
bands (`pool_bands`): half of this machine's 2 MiB L2 per core; smaller outputs stay
in it whole."""
BAND_BYTES = 1 << 20
"""The most bytes of convolution outputs one band holds (`pool_bands`): they stay in
L2 with the phase planes the band reads and the pool outputs it writes. SqueezeNet at
n:m 3:4 (its first convolution's 3.2 MB of outputs in bands of 0.25 to 1.5 MB, each
alternated with the whole output in one process): 1.036x at 256 KiB, 1.043x to
1.046x at 512, 1.051x to 1.058x at 768 and 1024, 1.049x at 1536; 0.97x at 128."""


@dataclass(frozen=True)
class PoolBands:
    """How an implicit convolution whose output only a 2-D pool reads runs a band of
    its output rows at a time, the pool then taking the band's rows into its outputs
    (Executor._run_bands): each band's outputs are written and read in L2, where the
    whole output, written out to memory and read back by the pool, cost SqueezeNet's
    first convolution and max pool 1.7x their time alone (1.32 against 0.77 ms).

    Every band computes `conv_rows` rows into one buffer (the band kernel `key`: the
    convolution's with that many rows of lanes); `bands` lists each band's first
    convolution row and its first and number of pool rows. Bands overlap by the rows
    two pool rows' windows share, which are computed twice; the last band starts low
    enough to keep its rows in the image."""

    key: KernelKey
    conv_rows: int
    bands: tuple[tuple[int, int, int], ...]
    """(first convolution row, first pool row, pool rows) of each band."""

    def extra_lanes(self, conv: ImplicitConv) -> int:
        """The lanes the bands compute beyond the convolution's whole call's."""
        return len(self.bands) * self.key.lanes - conv.lanes


def pool_bands(conv: ImplicitConv, pool_op: Operation) -> PoolBands | None:
    """The bands (`PoolBands`) in which convolution `conv` runs with the 2-D max or
    average pool `pool_op` that alone reads its output, or None where its output fits
    in L2 (BAND_FROM_BYTES), its rows would make one band, or it reads its input in
    place (a 1x1 window at stride 1: no planes to band)."""
    if len(conv.spatial) != 2 or (conv.key.window[0] == 1 and conv.strides == (1, 1)) or conv.key.accumulate:
        return None
    channels, (ho, _wo), pitch = conv.key.rows, conv.out, conv.phase[1]
    if channels * conv.lanes * 4 < BAND_FROM_BYTES:
        return None
    (kh, _kw), (sh, _sw), (dh, _dw), (top, _left, bottom, _right), extra = reference._pool_geometry(pool_op, np.broadcast_to(np.float32(0), (1, channels, *conv.out)))
    pool_rows = (ho + top + bottom + extra[0] - (kh - 1) * dh - 1) // sh + 1

    def conv_rows(rows: int) -> int:
        return min(ho, (rows - 1) * sh + (kh - 1) * dh + 1)

    fitting = [rows for rows in range(1, pool_rows + 1) if channels * padded_batch(conv_rows(rows) * pitch) * 4 <= BAND_BYTES]
    count = -(-pool_rows // max(fitting, default=1))
    if count < 2:
        return None
    rows = -(-pool_rows // count)
    height = conv_rows(rows)
    bands = tuple((min(max(first * sh - top, 0), ho - height), first, min(rows, pool_rows - first)) for first in range(0, pool_rows, rows))
    return PoolBands(dataclasses.replace(conv.key, lanes=padded_batch(height * pitch)), height, bands)
