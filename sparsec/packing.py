"""Packed weight encodings: numpy encoders and decoders, bit-exact and self-describing.

Three encodings, all of a tensor in its stored (row-major) layout:

bitmask (Core ML's `constexpr_sparse_to_dense` layout)
    mask    uint8, one bit per element in row-major order, least-significant bit first
            (element i is bit i % 8 of byte i // 8)
    values  the non-zero elements in row-major order (float16 or float32)

nm (n of every m consecutive values along `axis` are zero)
    The tensor is viewed with `axis` last and cut into runs of m (a short tail run is
    padded with zeros). Each run keeps k = m - n slots:
    values     (runs, k) the kept values, in position order
    positions  the kept positions within the run, ceil(log2 m) bits each, packed
               least-significant bit first, in the same order as values

block (zeros come in whole blocks of B consecutive values along `axis`)
    The tensor is viewed with `axis` last and cut into blocks of B (the last one padded).
    blocks  uint8, one bit per block in order, least-significant bit first (1 = kept)
    values  the kept blocks, B values each (padding included), in block order

Bytes per weight at 75% sparsity with float16 values: bitmask 1/8 + 2/4 = 0.625;
nm 3:4 (2 + 2/8) / 4 = 0.5625; block 4 1/32 + 2/4 = 0.53125 (docs/formats.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

VALUE_DTYPES = {"fp16": np.dtype(np.float16), "fp32": np.dtype(np.float32)}


class Encoding(str, Enum):
    BITMASK = "bitmask"
    NM = "nm"
    BLOCK = "block"


@dataclass(frozen=True)
class Packed:
    """The arrays of one packed tensor, by role (mask, values, positions, blocks)."""

    encoding: Encoding
    arrays: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def pack_bits(bits: np.ndarray) -> np.ndarray:
    return np.packbits(bits.reshape(-1).astype(bool), bitorder="little")


def unpack_bits(packed: np.ndarray, count: int) -> np.ndarray:
    return np.unpackbits(packed, count=count, bitorder="little").astype(bool)


def position_bits(m: int) -> int:
    """Bits per kept position in an n:m run."""
    return math.ceil(math.log2(m)) if m > 1 else 0


# --- bitmask ---------------------------------------------------------------------------


def encode_bitmask(dense: np.ndarray, value_dtype: np.dtype) -> Packed:
    flat = dense.reshape(-1)
    nonzero = flat != 0
    return Packed(Encoding.BITMASK, {"mask": pack_bits(nonzero), "values": flat[nonzero].astype(value_dtype)})


def decode_bitmask(arrays: dict[str, np.ndarray], shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    size = math.prod(shape)
    bits = unpack_bits(arrays["mask"], size)
    dense = np.zeros(size, dtype=dtype)
    dense[bits] = arrays["values"].astype(dtype)
    return dense.reshape(shape)


# --- runs along an axis ------------------------------------------------------------------


def _runs(dense: np.ndarray, axis: int, length: int) -> np.ndarray:
    """(..., runs, length) view of `dense` with `axis` last, zero-padded."""
    moved = np.moveaxis(dense, axis, -1)
    size = moved.shape[-1]
    padded = math.ceil(size / length) * length
    if padded != size:
        moved = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, padded - size)])
    return moved.reshape(*moved.shape[:-1], padded // length, length)


def _from_runs(runs: np.ndarray, axis: int, shape: tuple[int, ...]) -> np.ndarray:
    size = shape[axis]
    flat = runs.reshape(*runs.shape[:-2], -1)[..., :size]
    return np.ascontiguousarray(np.moveaxis(flat, -1, axis))


def _moved_shape(shape: tuple[int, ...], axis: int, length: int) -> tuple[int, ...]:
    moved = [d for i, d in enumerate(shape) if i != axis]
    return (*moved, math.ceil(shape[axis] / length) if shape[axis] else 0, length)


# --- n:m ---------------------------------------------------------------------------------


def encode_nm(dense: np.ndarray, n: int, m: int, axis: int, value_dtype: np.dtype) -> Packed:
    """Raises ValueError if some run has fewer than n zeros."""
    runs = _runs(dense, axis, m).reshape(-1, m)
    kept = m - n
    nonzero = runs != 0
    # Loops over the m columns rather than reductions along rows of m, and a mask
    # rather than a sort: numpy is slow on many short rows, and a large model's
    # packing should be linear in its weights.
    counter = np.min_scalar_type(-m)  # signed, holds -m..m
    spare = np.full(len(runs), kept, counter)  # slots left for zeros, per run
    for column in nonzero.T:
        spare -= column
    if runs.size and int(spare.min()) < 0:
        raise ValueError(f"a run of {m} values has fewer than {n} zeros")
    # The kept slots: all non-zeros, then the earliest zeros, in position order.
    slots = np.empty_like(nonzero)
    zeros_seen = np.zeros(len(runs), counter)
    for position in range(m):
        zeros_seen += ~nonzero[:, position]
        slots[:, position] = nonzero[:, position] | (zeros_seen <= spare)
    flat = np.flatnonzero(slots)
    values = runs.reshape(-1)[flat].astype(value_dtype)
    positions = (flat % m).astype(np.min_scalar_type(m))
    bits = position_bits(m)
    planes = np.empty((len(positions), bits), bool)
    for bit in range(bits):
        planes[:, bit] = (positions >> bit) & 1
    return Packed(Encoding.NM, {"values": values, "positions": pack_bits(planes)})


def decode_nm(
    arrays: dict[str, np.ndarray], shape: tuple[int, ...], dtype: np.dtype, n: int, m: int, axis: int
) -> np.ndarray:
    moved = _moved_shape(shape, axis, m)
    run_count = math.prod(moved[:-1])
    kept = m - n
    bits = position_bits(m)
    planes = unpack_bits(arrays["positions"], run_count * kept * bits).reshape(run_count * kept, bits)
    positions = np.zeros(run_count * kept, np.intp)
    for bit in range(bits):
        positions |= planes[:, bit].astype(np.intp) << bit
    runs = np.zeros((run_count, m), dtype=dtype)
    np.put_along_axis(runs, positions.reshape(run_count, kept), arrays["values"].reshape(run_count, kept).astype(dtype), axis=1)
    return _from_runs(runs.reshape(moved), axis, shape)


# --- block -------------------------------------------------------------------------------


def encode_block(dense: np.ndarray, block_size: int, axis: int, value_dtype: np.dtype) -> Packed:
    blocks = _runs(dense, axis, block_size).reshape(-1, block_size)
    kept = (blocks != 0).any(axis=1)
    return Packed(Encoding.BLOCK, {"blocks": pack_bits(kept), "values": blocks[kept].astype(value_dtype).reshape(-1)})


def decode_block(
    arrays: dict[str, np.ndarray], shape: tuple[int, ...], dtype: np.dtype, block_size: int, axis: int
) -> np.ndarray:
    moved = _moved_shape(shape, axis, block_size)
    block_count = math.prod(moved[:-1])
    kept = unpack_bits(arrays["blocks"], block_count)
    blocks = np.zeros((block_count, block_size), dtype=dtype)
    blocks[kept] = arrays["values"].reshape(-1, block_size).astype(dtype)
    return _from_runs(blocks.reshape(moved), axis, shape)


# --- sizes -------------------------------------------------------------------------------


def bitmask_bytes(size: int, nonzeros: int, value_bytes: int = 2) -> int:
    return math.ceil(size / 8) + value_bytes * nonzeros


def nm_bytes(shape: tuple[int, ...], n: int, m: int, axis: int, value_bytes: int = 2) -> int:
    runs = math.prod(_moved_shape(shape, axis, m)[:-1])
    return runs * (m - n) * value_bytes + math.ceil(runs * (m - n) * position_bits(m) / 8)


def block_bytes(shape: tuple[int, ...], block_size: int, axis: int, kept_blocks: int, value_bytes: int = 2) -> int:
    blocks = math.prod(_moved_shape(shape, axis, block_size)[:-1])
    return math.ceil(blocks / 8) + kept_blocks * block_size * value_bytes
