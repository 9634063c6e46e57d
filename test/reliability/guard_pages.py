"""Run every kernel variant (and the layer normalization, Softmax and attention
kernels, and the pool kernels' flat runs) on buffers that end at a PROT_NONE guard
page.

    python test/reliability/guard_pages.py

Each input, output and operand array is copied into an anonymous mapping so that its
last byte is the last byte before an inaccessible page: a kernel that reads or writes
one element too far crashes this process instead of passing silently. Prints one line
per case and exits 0 when all match the reference interpreter.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import mmap
import sys
import tempfile
from pathlib import Path

import numpy as np
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
sys.path.insert(0, str(Path(__file__).parents[1]))

from test_attention import float64_attention  # noqa: E402
from test_kernels import build  # noqa: E402
from test_norm_kernel import norm_model, softmax_model  # noqa: E402
from test_window_ops import pool_model  # noqa: E402

import sparsec  # noqa: E402
from sparsec import reference  # noqa: E402

from sparsec.kernels import ATTENTION_UNIT_ROWS, AttentionKey  # noqa: E402
from sparsec.runtime.executor import Executor, attention_geometry, transposed_inputs  # noqa: E402
from sparsec.runtime.jit import compile_kernels  # noqa: E402
from sparsec.runtime.operands import VALUE_SLACK_BYTES  # noqa: E402

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PROT_NONE = 0
_KEEP: list[object] = []


def guarded(array: np.ndarray, slack: int = 0) -> np.ndarray:
    """A copy of `array` whose last byte sits `slack` bytes before a guard page (the
    bytes a kernel may read past it by contract, as VALUE_SLACK_BYTES)."""
    array = np.ascontiguousarray(array)
    if array.nbytes + slack == 0:
        return array
    page = mmap.PAGESIZE
    pages = math.ceil((array.nbytes + slack) / page) + 1
    buffer = mmap.mmap(-1, pages * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    if LIBC.mprotect(base + (pages - 1) * page, page, PROT_NONE) != 0:
        raise OSError(ctypes.get_errno(), "mprotect failed")
    start = (pages - 1) * page - array.nbytes - slack
    view = np.frombuffer(buffer, dtype=array.dtype, count=array.size, offset=start).reshape(array.shape)
    view[...] = array
    _KEEP.append(buffer)
    return view


def run_case(rows: int, cols: int, pattern: str, bias: bool, activation: str, batch: int) -> bool:
    model = build(rows, cols, False, bias, activation, rows * 31 + cols)
    model.apply(f"prune-magnitude{{{pattern} min-elements=0}},pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=1)
    x = np.random.default_rng(batch).standard_normal((batch, cols)).astype(np.float32)
    expected = model.run({"x": x})["y"]
    if not executor.layers:
        return True  # left dense (pattern larger than the layer): no kernel to guard
    ((op, layer),) = executor.layers.items()
    variant = layer.variant_for(batch)  # the kernel the executor would run
    kernel, _ = executor._variant_call(layer, variant)  # lays out a chunk variant's operands
    arrays = (layer.chunk_operands if variant.chunk_span else layer.operands).arrays
    slack = [VALUE_SLACK_BYTES if layer.key.kind == "bitmask" and layer.key.vbmi2 and not variant.chunk_span and role == 1 else 0 for role in range(3)]
    operands = [guarded(a, extra) for a, extra in zip(arrays, slack)]
    bias_array = guarded(layer.bias)
    address = lambda a: a.ctypes.data  # noqa: E731
    if variant.batched:  # transposed activations, batch padded to 16
        x_columns = transposed_inputs(x)
        padded = x_columns.shape[1]
        x_guarded, y = guarded(x_columns), guarded(np.full((rows, padded), np.nan, np.float32))  # the first panel stores
        kernel(address(x_guarded), address(y), *(address(a) for a in operands), address(bias_array), padded, 0, layer.key.parallel_units(batch))
        y = y[:, :batch].T
    else:
        x_guarded, y = guarded(x), guarded(np.full((batch, rows), np.nan, np.float32))
        kernel(address(x_guarded), address(y), *(address(a) for a in operands), address(bias_array), batch, 0, layer.key.parallel_units(batch))
    return bool(np.allclose(y, expected, rtol=1e-4, atol=1e-4))


def run_norm_case(rows: int, cols: int) -> bool:
    """The layer normalization kernel on guarded rows, scale, bias, epsilon and outputs."""
    model = norm_model((rows, cols), -1, True, cols, 1e-5, cols)
    executor = Executor(model.module, model.weights, threads=1)
    ((op, norm),) = executor.norms.items()
    x = np.random.default_rng(rows).standard_normal((rows, cols)).astype(np.float32)
    expected = reference.run(model.module, model.weights, {"x": x})["y"]
    x_guarded, y = guarded(x), guarded(np.full((rows, cols), np.nan, np.float32))
    scale, bias, epsilon = guarded(norm.scale), guarded(norm.bias), guarded(norm.epsilon)
    norm.kernel(x_guarded.ctypes.data, y.ctypes.data, scale.ctypes.data, bias.ctypes.data, epsilon.ctypes.data, 0, rows, 0, rows)  # pyright: ignore
    return bool(np.allclose(y, expected, rtol=1e-4, atol=1e-4))


def run_softmax_case(rows: int, cols: int) -> bool:
    """The Softmax kernel on guarded rows and outputs (its parameters are not read)."""
    with tempfile.TemporaryDirectory() as tmp:
        model = softmax_model(Path(tmp) / "softmax.onnx", [rows, cols], -1)
    executor = Executor(model.module, model.weights, threads=1)
    ((op, softmax),) = executor.norms.items()
    x = np.random.default_rng(cols).standard_normal((rows, cols)).astype(np.float32)
    expected = reference.run(model.module, model.weights, {"x": x})["y"]
    x_guarded, y = guarded(x), guarded(np.full((rows, cols), np.nan, np.float32))
    softmax.kernel(x_guarded.ctypes.data, y.ctypes.data, 0, 0, 0, 0, rows, 0, rows)  # pyright: ignore
    return bool(np.allclose(y, expected, rtol=1e-5, atol=1e-7))


def run_attention_case(queries: int, keys: int, depth: int, value_depth: int) -> bool:
    """The attention kernel on guarded queries, keys (each row of kt ending at T, the
    last at the guard page), values, mask and outputs, 2 heads: the block past T and
    an odd last query row stay inside them."""
    rng = np.random.default_rng(queries * keys)
    heads = 2
    q, kt, v = (rng.standard_normal(shape).astype(np.float32) for shape in [(1, heads, queries, depth), (1, heads, depth, keys), (1, heads, keys, value_depth)])
    mask = rng.standard_normal((1, heads, queries, keys)).astype(np.float32)
    expected = float64_attention(q, kt, v, mask, 0.5)
    q, kt, v, mask = (guarded(a) for a in (q, kt, v, mask))
    out = guarded(np.full(expected.shape, np.nan, np.float32))
    key = AttentionKey(depth, value_depth, True)
    compiled = compile_kernels([key])  # its engine holds the code while the kernel runs
    geometry = guarded(attention_geometry(q, kt, v, mask, out.shape, 0.5))  # pyright: ignore
    units = heads * -(-queries // ATTENTION_UNIT_ROWS)
    compiled.functions[key.symbol](q.ctypes.data, out.ctypes.data, kt.ctypes.data, v.ctypes.data, mask.ctypes.data, geometry.ctypes.data, 0, 0, units)
    return bool(np.allclose(out, expected, rtol=2e-5, atol=2e-5))


def run_flat_pool_case(op: str, rows: int, columns: int) -> bool:
    """A 3x3 pool or depthwise convolution (pads of 1) on guarded images of narrow
    rows, which its kernel takes as flat runs: the last plane's taps below its last
    row stay inside it."""
    rng = np.random.default_rng(rows * columns)
    initializers = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")] if op == "Conv" else []
    attributes = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]} | ({"group": 4} if op == "Conv" else {})
    with tempfile.TemporaryDirectory() as tmp:
        pool_model(Path(tmp) / "pool.onnx", op, [1, 4, rows, columns], attributes, initializers, ("x", "w") if op == "Conv" else ("x",))
        model = sparsec.load(Path(tmp) / "pool.onnx")
    x = rng.standard_normal((1, 4, rows, columns)).astype(np.float32)
    expected = reference.run(model.module, model.weights, {"x": x})["y"]
    executor = Executor(model.module, model.weights, threads=1)
    return bool(executor.pools) and bool(np.array_equal(executor.run({"x": guarded(x)})["y"], expected))


PATTERNS = [
    "pattern=unstructured sparsity=0.0",
    "pattern=unstructured sparsity=0.7",  # batch 1: the chunk variants (window, gather)
    "pattern=unstructured sparsity=0.97",
    "pattern=unstructured sparsity=1.0",
    "pattern=nm n=2 m=4",
    "pattern=nm n=3 m=4",
    "pattern=nm n=7 m=8",
    "pattern=nm n=3 m=16",
    "pattern=block block-size=4 sparsity=0.5",
    "pattern=block block-size=8 sparsity=0.75",
]

if __name__ == "__main__":
    failures = 0
    cases = itertools.chain(
        itertools.product([1, 3, 17, 1000], [1, 17, 130, 1000], PATTERNS, [(False, "none"), (True, "relu"), (True, "gelu")], [1, 7, 17]),  # 7: tiles of 4, 2, 1
        # rows long enough for the panelled variant at a few batch rows (K not a whole
        # step); n:m pairs at 2 and 6 (panelled at 6)
        itertools.product([3, 17], [2000], PATTERNS, [(True, "relu")], [2, 6, 7]),
    )
    for rows, cols, pattern, (bias, activation), batch in cases:
        ok = run_case(rows, cols, pattern, bias, activation, batch)
        failures += not ok
        if not ok:
            print(f"MISMATCH rows={rows} cols={cols} {pattern} bias={bias} activation={activation} batch={batch}", flush=True)
    for rows, cols in itertools.product([1, 3], [1, 15, 16, 17, 33, 768, 1000]):
        ok = run_norm_case(rows, cols)
        failures += not ok
        if not ok:
            print(f"MISMATCH layer norm rows={rows} cols={cols}", flush=True)
    for rows, cols in itertools.product([1, 3], [1, 15, 16, 17, 33, 1000]):
        ok = run_softmax_case(rows, cols)
        failures += not ok
        if not ok:
            print(f"MISMATCH softmax rows={rows} cols={cols}", flush=True)
    for queries, keys, depth, value_depth in itertools.product([1, 3, 17], [1, 5, 16, 33], [16, 20], [16, 24]):
        ok = run_attention_case(queries, keys, depth, value_depth)
        failures += not ok
        if not ok:
            print(f"MISMATCH attention queries={queries} keys={keys} depth={depth} value_depth={value_depth}", flush=True)
    for op, rows, columns in itertools.product(["MaxPool", "AveragePool", "Conv"], [1, 2, 7], [1, 5, 15]):
        ok = run_flat_pool_case(op, rows, columns)
        failures += not ok
        if not ok:
            print(f"MISMATCH flat pool {op} rows={rows} columns={columns}", flush=True)
    print(f"guard pages: {failures} mismatches")
    sys.exit(1 if failures else 0)
