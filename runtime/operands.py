"""Kernel operands: the arrays each generated kernel reads, prepared once per layer.

A bitmask weight stored in its (out, in) layout is used as it is (its values are a view
of the memory-mapped artifact); only the 16-bit-aligned mask words and the row offsets
are derived. A block weight whose stored blocks are the kernel's is reordered from its
encoding. Every other case is derived from the decoded weight in its (out, in)
view (a dense kernel reads the decoded weight itself; an unpacked weight is its own
decoded value); kernels.py in runtime/codegen documents each layout.
"""

from __future__ import annotations

import math
import mmap
from dataclasses import dataclass

import numpy as np

from sparsec.dialects import StoredWeightOp
from sparsec.dialects.sparse import PackedWeightOp
from sparsec.kernels import GATHER_SPAN, WINDOW_ALIGN, KernelKey
from sparsec.layers import dense_value
from sparsec.packing import Encoding, unpack_bits
from sparsec.weights import WeightStore


@dataclass(frozen=True)
class KernelOperands:
    """The three data arrays (a0, a1, a2) of one kernel call; unused ones are empty."""

    arrays: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def addresses(self) -> tuple[int, int, int]:
        return tuple(a.ctypes.data for a in self.arrays)  # pyright: ignore

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)


_EMPTY = np.zeros(0, np.uint8)


def _canonical(op: StoredWeightOp, weights: WeightStore, key: KernelKey, transposed: bool) -> np.ndarray:
    dense = dense_value(op, weights)
    dense = dense.T if transposed else dense
    return np.ascontiguousarray(dense.reshape(key.rows, key.cols))


def _row_words(nonzero: np.ndarray, words: int) -> np.ndarray:
    """Each row's mask bits packed into `words` little-endian 16-bit words (zero-padded)."""
    rows, cols = nonzero.shape
    padded = np.zeros((rows, words * 16), dtype=bool)
    padded[:, :cols] = nonzero
    return np.packbits(padded, axis=1, bitorder="little").view("<u2").reshape(rows, words)


def _nonzeros(op: StoredWeightOp, weights: WeightStore, key: KernelKey, transposed: bool, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Where the (out, in) view is non-zero, and those values in row-major order."""
    if isinstance(op, PackedWeightOp) and op.encoding.encoding is Encoding.BITMASK and not transposed:
        arrays = {role: weights[name] for role, name in op.stored_tensors().items()}
        nonzero = unpack_bits(arrays["mask"], key.rows * key.cols).reshape(key.rows, key.cols)
        return nonzero, np.ascontiguousarray(arrays["values"])
    dense = _canonical(op, weights, key, transposed)
    nonzero = dense != 0
    return nonzero, dense[nonzero].astype(dtype)


def _bitmask(op: StoredWeightOp, weights: WeightStore, key: KernelKey, transposed: bool, dtype: np.dtype) -> KernelOperands:
    nonzero, values = _nonzeros(op, weights, key, transposed, dtype)
    if key.chunk_span:
        return _chunk_operands(nonzero, values, key.chunk_span)
    if key.vbmi2:
        values = _with_slack(values, VALUE_SLACK_BYTES)
    return KernelOperands((_row_words(nonzero, key.mask_words), values, _panel_offsets(nonzero, key)))


VALUE_SLACK_BYTES = 32
"""Bytes past a bitmask weight's values that its VBMI2 kernel reads: each mask word's
16 values load whole from where the word's first value is, before the expand moves
the word's own into place (runtime/codegen/bitmask.py)."""


def _with_slack(array: np.ndarray, slack: int) -> np.ndarray:
    """`array` if the `slack` bytes past its end can be read: they lie within the memory
    it views (a tensor of a mapped artifact followed by another) or on the page of its
    last byte (memory is mapped in whole pages: so all but about one array in a hundred,
    for 32 bytes of 4 KiB pages). Else a copy of it followed by `slack` zero bytes."""
    end = array.ctypes.data + array.nbytes
    same_page = array.nbytes > 0 and (end - 1) // mmap.PAGESIZE == (end + slack - 1) // mmap.PAGESIZE
    if same_page or end + slack <= _buffer_end(array):
        return array
    padded = np.zeros(array.size + -(-slack // array.itemsize), array.dtype)
    padded[: array.size] = array
    return padded[: array.size]


def _buffer_end(array: np.ndarray) -> int:
    """The address past the memory `array` views: its own, or its base buffer's (0 when
    that buffer cannot be inspected, such as another library's tensor)."""
    root = array
    while isinstance(root.base, np.ndarray):
        root = root.base
    if root.base is None:
        return root.ctypes.data + root.nbytes
    try:
        whole = np.frombuffer(root.base, np.uint8)
    except (TypeError, ValueError):
        return 0
    return whole.ctypes.data + whole.nbytes


CHUNK_RECORD = np.dtype([("column_count", "<u4"), ("offsets", "u1", (16,))])
"""A chunk: its base column | its count << 24, then each non-zero's offset from that
column (20 bytes)."""
_CHUNK_BLOCK_ROWS = 256
"""Rows laid out at a time, which bounds the temporary per-non-zero index arrays."""


def _chunk_operands(nonzero: np.ndarray, values: np.ndarray, span: int) -> KernelOperands:
    """Chunk records, the values, and each row's (first chunk, first value)."""
    rows = nonzero.shape[0]
    align = 1 if span == GATHER_SPAN else WINDOW_ALIGN
    blocks = [_chunks(nonzero[first : first + _CHUNK_BLOCK_ROWS], span, align) for first in range(0, rows, _CHUNK_BLOCK_ROWS)]
    records = np.concatenate([records for records, _ in blocks]) if blocks else np.zeros(0, CHUNK_RECORD)
    table = np.zeros((nonzero.shape[0] + 1, 2), np.int64)
    np.cumsum(np.concatenate([chunks for _, chunks in blocks]), out=table[1:, 0])
    np.cumsum(nonzero.sum(axis=1), out=table[1:, 1])
    return KernelOperands((records, values, table.reshape(-1)))


def _chunks(nonzero: np.ndarray, span: int, align: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The rows' non-zeros cut greedily into chunks of up to 16 within the `span`
    columns from the chunk's base: the chunk records, and how many chunks each row has.
    A chunk's base column is its first non-zero's rounded down to a multiple of `align`
    (WINDOW_ALIGN for the window variants, whose loads from there then start on a cache
    line), moved back where needed so that base + span stays within the row (a window
    kernel loads all `span` inputs).

    Every non-zero's successor chunk start (16 on, or the first non-zero past the span
    of a chunk starting there) is found at once; the starts themselves follow by
    stepping all rows together."""
    rows, cols = nonzero.shape
    row, col = np.nonzero(nonzero)
    count = row.size
    index = np.arange(count)
    bases = np.minimum(col - col % align, max(cols - span, 0))
    keys = row * (cols + span) + col  # sorted; the next row's keys lie beyond any span
    successor = np.minimum(index + 16, np.searchsorted(keys, keys - col + bases + span))
    per_row = nonzero.sum(axis=1)
    stop = np.cumsum(per_row)
    current = stop - per_row
    starts = np.zeros(count, bool)
    while True:
        live = current < stop
        current, stop = current[live], stop[live]
        if not current.size:
            break
        starts[current] = True
        current = successor[current]
    first = np.flatnonzero(starts)
    chunk = np.cumsum(starts) - 1
    base = bases[first]
    records = np.zeros(first.size, CHUNK_RECORD)
    records["column_count"] = base | (np.diff(np.append(first, count)) << 24)
    records["offsets"][chunk, index - first[chunk]] = col - base[chunk]
    return records, np.bincount(row[first], minlength=rows)


def _panel_offsets(nonzero: np.ndarray, key: KernelKey) -> np.ndarray:
    """The offset of each row's first value in each column panel, row by row, then the
    total: N x panels + 1 entries (entry row * panels is the row's start)."""
    padded = np.zeros((key.rows, key.panels * key.panel_columns), dtype=bool)
    padded[:, : key.cols] = nonzero
    counts = padded.reshape(key.rows, key.panels, key.panel_columns).sum(axis=2).reshape(-1)
    offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def _nm(op: PackedWeightOp, weights: WeightStore, key: KernelKey) -> KernelOperands:
    arrays = {role: weights[name] for role, name in op.stored_tensors().items()}
    values, stream = arrays["values"], arrays["positions"]
    if key.run_major:
        values, stream = _runs_by_channel(values, stream, key, math.prod(op.tensor_type.get_shape()[2:]))
    # Two bytes of slack: a position is read as a 16-bit word that may end past the stream.
    positions = np.concatenate([stream, np.zeros(2, np.uint8)])
    steps = _nm_step_words(stream, key) if key.nm_lanes else _EMPTY
    return KernelOperands((np.ascontiguousarray(values), positions, steps))


def _runs_by_channel(values: np.ndarray, stream: np.ndarray, key: KernelKey, taps: int) -> tuple[np.ndarray, np.ndarray]:
    """An n:m convolution weight's values and position stream with each row's runs
    reordered from tap by tap (as packed: runs of channels within a tap) to run by run
    (a run's taps within it, KernelKey.run_major)."""
    kept, bits = key.m - key.n, key.position_bits
    runs = key.cols // (taps * key.m)
    by_channel = values.reshape(key.rows, taps, runs, kept).transpose(0, 2, 1, 3)
    planes = unpack_bits(stream, key.rows * taps * runs * kept * bits).reshape(key.rows, taps, runs, kept * bits)
    return np.ascontiguousarray(by_channel).reshape(-1), np.packbits(planes.transpose(0, 2, 1, 3), bitorder="little")


def _nm_step_words(stream: np.ndarray, key: KernelKey) -> np.ndarray:
    """The positions of each row's whole vector steps, one word of 16 positions per step
    (the stream runs on across rows, so a step's bits need not start on a byte); with
    `lane_planes`, then the same steps' lane masks: per step a 16-bit mask of each
    position bit, lane l at bit l, in a word as wide."""
    bits, kept = key.position_bits, key.m - key.n
    per_row = math.ceil(key.cols / key.m) * kept
    steps = key.cols // key.nm_span
    flat = unpack_bits(stream, key.rows * per_row * bits).reshape(key.rows, per_row * bits)
    positions = flat[:, : steps * 16 * bits].reshape(key.rows, steps, 16, bits)  # lane l's bit b
    step_bits = np.zeros((key.rows, steps, key.nm_word_bits), dtype=np.uint8)
    step_bits[:, :, : 16 * bits] = positions.reshape(key.rows, steps, 16 * bits)
    dtype = np.dtype("<u4" if key.nm_word_bits == 32 else "<u8")
    words = np.packbits(step_bits, axis=2, bitorder="little").view(dtype).reshape(-1)
    if not key.lane_planes:
        return words
    mask_bits = np.zeros((key.rows, steps, key.nm_word_bits), dtype=np.uint8)
    mask_bits[:, :, : 16 * bits] = positions.transpose(0, 1, 3, 2).reshape(key.rows, steps, 16 * bits)
    masks = np.packbits(mask_bits, axis=2, bitorder="little").view(dtype).reshape(-1)
    return np.concatenate([words, masks])


def _block(op: StoredWeightOp, weights: WeightStore, key: KernelKey, transposed: bool, dtype: np.dtype) -> KernelOperands:
    stored = _stored_blocks(op, weights, key, transposed, dtype)
    if stored is not None:
        return stored
    dense = _canonical(op, weights, key, transposed)
    size, row_blocks = key.block, key.row_units
    padded = np.zeros((row_blocks * size, key.cols), dtype=dense.dtype)
    padded[: key.rows] = dense
    blocks = padded.reshape(row_blocks, size, key.cols)  # (row block, row in block, column)
    kept = (blocks != 0).any(axis=1)  # (row block, column)
    row_block, column = np.nonzero(kept)
    values = blocks[row_block, :, column].astype(dtype)  # (kept, size)
    offsets = np.zeros(row_blocks + 1, dtype=np.int64)
    np.cumsum(kept.sum(axis=1), out=offsets[1:])
    return KernelOperands((np.ascontiguousarray(values.reshape(-1)), column.astype(np.uint16 if key.block_column_bits == 16 else np.int32), offsets))


def _stored_blocks(op: StoredWeightOp, weights: WeightStore, key: KernelKey, transposed: bool, dtype: np.dtype) -> KernelOperands | None:
    """The block kernel's operands straight from a block encoding whose blocks are the
    kernel's (their size, along the (out, in) view's rows), else None. The encoding
    keeps blocks column by column (the other axes in stored order, which are the
    view's columns), the kernel row block by row block, so this reorders the stored
    blocks without decoding the weight: ResNet50's 54 block weights took 0.25 s
    through their dense values (a float32 copy of each layer at a time)."""
    if not isinstance(op, PackedWeightOp) or op.encoding.encoding is not Encoding.BLOCK or op.encoding.block_size.data != key.block:
        return None
    row_axis = 1 if transposed else 0  # the stored axis that is the view's rows
    if op.encoding.axis.data != row_axis or (transposed and len(op.tensor_type.get_shape()) != 2):
        return None
    arrays = {role: weights[name] for role, name in op.stored_tensors().items()}
    kept = unpack_bits(arrays["blocks"], key.cols * key.row_units).reshape(key.cols, key.row_units)
    column, row_block = np.nonzero(kept)  # in stored order: by column, then row block
    # By row block, then column: a stable sort of 16-bit keys is a radix sort in numpy
    # (ResNet50's 1.6 million kept blocks took 57 ms as 64-bit keys).
    order = np.argsort(row_block.astype(np.uint16) if key.row_units <= 1 << 16 else row_block, kind="stable")
    values = arrays["values"].reshape(-1, key.block)[order].astype(dtype)
    offsets = np.zeros(key.row_units + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_block, minlength=key.row_units), out=offsets[1:])
    columns = column[order].astype(np.uint16 if key.block_column_bits == 16 else np.int32)
    return KernelOperands((np.ascontiguousarray(values.reshape(-1)), columns, offsets))


def _dense(op: StoredWeightOp, weights: WeightStore, key: KernelKey, transposed: bool, dtype: np.dtype) -> KernelOperands:
    return KernelOperands((_canonical(op, weights, key, transposed).astype(dtype), _EMPTY, _EMPTY))


def nonzero_count(op: StoredWeightOp, weights: WeightStore) -> int:
    """How many non-zeros a weight holds (a bitmask weight's stored value count)."""
    if isinstance(op, PackedWeightOp) and op.encoding.encoding is Encoding.BITMASK:
        return weights[op.stored_tensors()["values"]].size
    return int(np.count_nonzero(dense_value(op, weights)))


def prepare_operands(op: StoredWeightOp, weights: WeightStore, key: KernelKey, transposed: bool) -> KernelOperands:
    dtype = np.dtype(np.float16 if key.values == "f16" else np.float32)
    match key.kind:
        case "bitmask":
            return _bitmask(op, weights, key, transposed, dtype)
        case "nm":
            assert isinstance(op, PackedWeightOp)
            return _nm(op, weights, key)
        case "dense":
            return _dense(op, weights, key, transposed, dtype)
        case _:
            return _block(op, weights, key, transposed, dtype)

