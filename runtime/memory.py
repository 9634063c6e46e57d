"""Host arrays that start on a cache line.

numpy's large arrays start 16 bytes into a 64-byte line, so each 64-byte vector load a
kernel makes from them spans two lines (n:m 3:4 on 4096x4096 took 1.2x as long at one
batch row), and two threads' words that share a line pass it back and forth. The
executor's kernel buffers and the worker pool's slots are allocated here instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

CACHE_LINE = 64
"""Bytes of a cache line."""


def on_cache_line(allocate: Callable[..., np.ndarray], shape: tuple[int, ...], dtype: type = np.float32, line_at: int = 0) -> np.ndarray:
    """An array of `shape` and `dtype` from `allocate` (np.zeros or np.empty) whose
    element `line_at` (counted in the flat array; the first by default) starts a cache
    line."""
    size = math.prod(shape)
    itemsize = np.dtype(dtype).itemsize
    raw = allocate(size + CACHE_LINE // itemsize, dtype)
    skip = -(raw.ctypes.data + line_at * itemsize) % CACHE_LINE // itemsize
    return raw[skip : skip + size].reshape(shape)
