"""Runs a compiled model: generated kernels for sparse layers, numpy for the rest.

On construction the executor derives each kernel op's specialization key and operands,
generates one LLVM module for the distinct keys and JIT-compiles it (or loads it from
the disk cache). Every other op runs through the reference interpreter's numpy code, so
both engines execute the same IR.

Kernel calls go through ctypes, which releases the GIL, so worker threads that wait
spinning in native code (runtime/workers.py) take shares of each layer's output rows
(or row blocks), `threads` shares in all with the calling thread's. Output
buffers of kernel ops are allocated once per input shape and reused. Three variants are
compiled on first use: batched kernels from KernelKey.batched_from batch rows, panelled
kernels for fewer batch rows of long weight rows (KernelKey.panels_pay), and the chunk
kernels for one batch row of sparse bitmask weights (KernelKey.chunk_span_for).
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType, f32
from xdsl.ir import Operation, SSAValue

from sparsec import reference
from sparsec.dialects.kernel_ops import SparseConvOp, SparseMatMulOp
from sparsec.dialects.literals import numpy_dtype
from sparsec.dialects.sparse import PackedWeightOp
from sparsec.errors import SparsecError
from sparsec.kernels import BATCHED_KINDS, KernelKey, NormKey, key_for
from sparsec.dialects import StoredWeightOp
from sparsec.dialects.nn import LayerNormOp
from sparsec.layers import dense_value
from sparsec.runtime.jit import CompiledKernels, Target, compile_kernels
from sparsec.runtime.memory import CACHE_LINE, on_cache_line
from sparsec.runtime.operands import KernelOperands, nonzero_count, prepare_operands
from sparsec.runtime.workers import Shares, WorkerPool, available_cpus
from sparsec.weights import WeightStore

KernelOp = SparseMatMulOp | SparseConvOp
_WORK_PER_THREAD = 1 << 20
"""Weight values visited per extra thread: smaller layers run on the calling thread,
where a hand-off would cost more than it saves."""


def kernel_key_of(op: KernelOp, target: Target | None = None) -> KernelKey:
    """The key a kernel op names, rebuilt from its weight and attributes, for `target`
    (whose features choose how float16 values are widened and which vector kernels
    apply), or as the IR names it when None."""
    weight = op.w.owner
    if not isinstance(weight, PackedWeightOp):
        raise SparsecError(f"'{op.name}' needs a packed weight (sparse.packed), got {weight.name}")  # pyright: ignore
    transposed = isinstance(op, SparseMatMulOp) and bool(op.transposed.value.data)
    key = key_for(weight, transposed, op.kind.data, op.epilogue.data)
    if key.symbol != op.kernel.data:
        raise SparsecError(f"'{op.name}' names kernel {op.kernel.data}, but its weight and attributes give {key.symbol}")
    if target is None:
        return key
    return dataclasses.replace(key, native_f16=target.native_f16, avx512=target.avx512)


def variant_keys(key: KernelKey, chunk_span: int) -> list[KernelKey]:
    """The variants of `key` the executor may also run: batched from a few batch rows
    (bitmask and n:m, KernelKey.batched_from), panelled for a few batch rows of long
    weight rows (KernelKey.panels_pay), and for one batch row the chunk variant of
    `chunk_span` (if not 0)."""
    batched = [dataclasses.replace(key, batched=True)] if key.kind in BATCHED_KINDS else []
    panelled = [dataclasses.replace(key, panelled=True)] if key.has_panel_variant else []
    return batched + panelled + ([dataclasses.replace(key, chunk_span=chunk_span)] if chunk_span else [])


def all_kernel_keys(module: ModuleOp, weights: WeightStore, target: Target) -> list[KernelKey | NormKey]:
    """Every kernel an executor of `module` may compile on `target`, variants included."""
    keys: list[KernelKey | NormKey] = []
    for op in module.walk():
        if isinstance(op, KernelOp):
            key = kernel_key_of(op, target)
            nonzeros = nonzero_count(op.w.owner, weights) if key.has_chunk_variants else 0  # pyright: ignore
            keys += [key, *variant_keys(key, key.chunk_span_for(nonzeros))]
        elif isinstance(op, LayerNormOp) and (key := norm_key_of(op)) is not None:
            keys.append(key)
    return list(dict.fromkeys(keys))


def norm_key_of(op: LayerNormOp) -> NormKey | None:
    """The kernel of a layer normalization of float32 rows over their last, static
    axis whose scale (and bias) are weights of that length or one value; else None
    (it runs in numpy)."""
    x_type = op.x.type
    if not isinstance(x_type, TensorType) or x_type.element_type != f32:
        return None
    shape = x_type.get_shape()
    cols = shape[-1] if shape else -1
    if cols <= 0 or op.axis.value.data % len(shape) != len(shape) - 1:
        return None
    for parameter in [op.scale] + ([op.b] if op.b is not None else []):
        if not isinstance(parameter.owner, StoredWeightOp) or math.prod(parameter.type.get_shape()) not in (1, cols):  # pyright: ignore
            return None
    return NormKey(cols)


def kernel_keys(module: ModuleOp, target: Target | None = None) -> list[KernelKey]:
    """The distinct kernels a module's kernel ops need (on `target`), in program order."""
    keys = [kernel_key_of(op, target) for op in module.walk() if isinstance(op, KernelOp)]
    return list(dict.fromkeys(keys))


def transposed_inputs(x: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
    """The batched kernels' input for the rows of `x` (B x K): x transposed, each row
    padded to P, a multiple of 16 (a vector of batch rows), then a row of zeros, which
    the kernels' padding products read (runtime/codegen/batched.py). Into `columns`
    when given (a (K + 1) x P array whose last row is zero): its lanes past B keep
    what they held, and as lanes never mix, only their own outputs, which are dropped,
    depend on it."""
    batch, cols = x.shape
    if columns is None:
        columns = on_cache_line(np.zeros, (cols + 1, padded_batch(batch)))
    columns[:cols, :batch] = x.T
    return columns


def padded_batch(batch: int) -> int:
    """P, the batched kernels' batch: `batch` rounded up to a multiple of 16."""
    return -(-batch // 16) * 16


def _kept(arrays: dict, key: tuple, shape: tuple[int, ...], allocate=np.empty) -> np.ndarray:
    """The float32 array `arrays` keeps under `key`, made by `allocate` on first use,
    starting on a cache line (as kernel inputs best do): allocated per call, such arrays
    cost their page faults on every call."""
    array = arrays.get(key)
    if array is None:
        array = arrays[key] = on_cache_line(allocate, shape)
    return array


@dataclass
class _Layer:
    key: KernelKey
    operands: KernelOperands
    bias: np.ndarray
    weight: PackedWeightOp
    transposed: bool
    arguments: tuple[int, int, int, int] = dataclasses.field(init=False)
    """The addresses of a0, a1, a2 and the bias, as every call passes them."""
    kernel: object = None
    """The compiled kernel (set once the module is compiled)."""
    chunk_span: int = dataclasses.field(init=False)
    """The chunk variant one batch row runs (KernelKey.chunk_span_for), or 0."""
    batched_from: int | None = dataclasses.field(init=False)
    """Batch rows from which the batched variant runs (KernelKey.batched_from), or None."""
    staging: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, np.float32))
    """Inputs copied to start on a cache line (Executor._input_address)."""
    shares: dict[int, Shares] = dataclasses.field(default_factory=dict)
    """Each thread's (first, last) units of a call, by batch rows (Executor._shares)."""
    chunk_operands: KernelOperands | None = None
    """The chunk variant's operands, once laid out (on its first use)."""
    variant_calls: dict[str, tuple[object, tuple[int, int, int, int]]] = dataclasses.field(default_factory=dict)
    """Kernel and arguments of each variant this layer has run, by kind ("batched",
    "panels", "chunks"): resolved once, so a call costs one lookup."""

    def __post_init__(self) -> None:
        self.arguments = self._with_bias(self.operands)
        # a1 holds a bitmask weight's values, a0 an n:m weight's kept slots.
        self.chunk_span = self.key.chunk_span_for(self.operands.arrays[1].size)
        self.batched_from = self.key.batched_from(self.operands.arrays[1 if self.key.kind == "bitmask" else 0].size)

    def _with_bias(self, operands: KernelOperands) -> tuple[int, int, int, int]:
        return (*operands.addresses, self.bias.ctypes.data if self.bias.size else 0)

    def arguments_for(self, variant: KernelKey, weights: WeightStore) -> tuple[int, int, int, int]:
        """The call arguments of `variant` of this layer's kernel (laying out the chunk
        variant's operands)."""
        if not variant.chunk_span:
            return self.arguments  # the batched kernels read the same operands
        self.chunk_operands = prepare_operands(self.weight, weights, variant, self.transposed)
        return self._with_bias(self.chunk_operands)


@dataclass
class _Norm:
    """A layer normalization run by a generated kernel (runtime/codegen/norm.py)."""

    key: NormKey
    scale: np.ndarray
    bias: np.ndarray
    epsilon: np.ndarray
    kernel: object = None
    """The compiled kernel (set once the module is compiled)."""
    arguments: tuple[int, int, int, int] = dataclasses.field(init=False)
    """a0, a1, a2 and bias of every call (runtime/codegen/norm.py), taken once."""

    def __post_init__(self) -> None:
        self.arguments = (self.scale.ctypes.data, self.bias.ctypes.data, self.epsilon.ctypes.data, 0)


@dataclass
class _Step:
    op: Operation
    inputs: list[SSAValue]
    result: SSAValue
    dtype: np.dtype | None
    """The result dtype of a numpy-evaluated op (None for ops run by kernels)."""


class Executor:
    """A model compiled for this machine; `run` takes and returns arrays by name."""

    def __init__(self, module: ModuleOp, weights: WeightStore, threads: int | None = None, target: Target | None = None):
        self.module = module
        self.weights = weights
        self.function = reference.main_function(module)
        self.threads = max(1, threads or available_cpus())
        self.target = target or Target.host()
        self.layers: dict[Operation, _Layer] = {}
        self.norms: dict[Operation, _Norm] = {}
        """Layer normalizations that run as generated kernels (the others run in numpy)."""
        self.constants: dict[SSAValue, np.ndarray] = {}
        """Weights that ops other than kernels read, decoded once here rather than per run."""
        self.steps: list[_Step] = []
        """The ops `run` executes, in order, with what it needs of each read up front."""
        for op in self.function.body.ops:
            if isinstance(op, KernelOp):
                self.layers[op] = self._prepare(op)
                self.steps.append(_Step(op, list(op.operands[:1]), op.results[0], None))
            elif isinstance(op, StoredWeightOp):
                if any(not isinstance(use.operation, KernelOp) or use.index != 1 for use in op.result.uses):
                    self.constants[op.result] = dense_value(op, weights)
            elif isinstance(op, LayerNormOp) and (norm := self._prepare_norm(op)) is not None:
                self.norms[op] = norm
                self.steps.append(_Step(op, [op.x], op.results[0], None))
            elif not isinstance(op, func.ReturnOp):
                dtype = numpy_dtype(op.results[0].type.element_type)  # pyright: ignore
                self.steps.append(_Step(op, list(op.operands), op.results[0], dtype))
        self.feeds = reference.FeedCheck.of(self.function)
        self.arguments = list(self.function.args)
        self.output_names = reference.output_names(self.function)
        self.returned = list(self.function.body.block.last_op.operands)  # pyright: ignore
        keys = [layer.key for layer in self.layers.values()] + [norm.key for norm in self.norms.values()]
        self.kernels: CompiledKernels | None = compile_kernels(keys, self.target) if keys else None
        for unit in [*self.layers.values(), *self.norms.values()]:
            unit.kernel = self.kernels.functions[unit.key.symbol]  # pyright: ignore
        self.variants: dict[str, object] = {}
        """Compiled batched and chunk kernels by symbol (compiled on first use)."""
        self.compiled: list[CompiledKernels] = []
        self.pool = WorkerPool(self.threads - 1, spin=self.threads <= available_cpus()) if self.threads > 1 else None
        self.buffers: dict[tuple[Operation, int], np.ndarray] = {}
        """Ops' outputs, kept from call to call (`_buffer`)."""
        self.scratch: dict[tuple[str, int, int], np.ndarray] = {}
        """The batched kernels' transposed inputs ("x") and outputs ("y") by shape, kept
        from call to call and shared by the layers (they run one after another)."""

    def _prepare(self, op: KernelOp) -> _Layer:
        key = kernel_key_of(op, self.target)
        weight = op.w.owner
        assert isinstance(weight, PackedWeightOp)
        transposed = isinstance(op, SparseMatMulOp) and bool(op.transposed.value.data)
        operands = prepare_operands(weight, self.weights, key, transposed)
        bias = np.zeros(0, np.float32)
        if op.b is not None:
            owner = op.b.owner
            if not isinstance(owner, StoredWeightOp):
                raise SparsecError(f"'{op.name}': the bias must be a weight")
            bias = np.ascontiguousarray(dense_value(owner, self.weights), dtype=np.float32).reshape(-1)
        return _Layer(key, operands, bias, weight, transposed)

    def _prepare_norm(self, op: LayerNormOp) -> _Norm | None:
        """The kernel form of `op` (`norm_key_of`), with its weights decoded; or None."""
        key = norm_key_of(op)
        if key is None:
            return None
        parameters = [self.constants[op.scale], self.constants[op.b] if op.b is not None else np.zeros(1, np.float32)]
        scale, bias = (np.ascontiguousarray(np.broadcast_to(value.reshape(-1), (key.cols,)), np.float32) for value in parameters)
        return _Norm(key, scale, bias, np.array([op.epsilon.value.data], np.float32))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def _call(self, layer: _Layer, x: np.ndarray, y: np.ndarray) -> None:
        """y[b, :] = kernel(x[b, :]) for every row of the 2-D arrays x and y.

        Addresses are taken once a call: after a kernel has streamed its weights through
        the caches, every numpy attribute lookup here runs cold, at several times its
        usual cost (two threads on a 0.25 ms layer lost 10% to them)."""
        assert self.kernels is not None
        batch = x.shape[0]
        if layer.batched_from is None or batch < layer.batched_from:
            x_address = self._input_address(layer, x)
            if batch == 1 and layer.chunk_span:
                kernel, arguments = self._variant_call(layer, "chunks")
            elif layer.key.panels_pay(batch):
                kernel, arguments = self._variant_call(layer, "panels")
            else:
                kernel, arguments = layer.kernel, layer.arguments
            self._split(layer, kernel, arguments, x_address, y.ctypes.data, batch)
            return
        padded = padded_batch(batch)
        x_shape, y_shape = (layer.key.cols + 1, padded), (layer.key.rows, padded)
        x_columns = transposed_inputs(x, _kept(self.scratch, ("x", *x_shape), x_shape, np.zeros))
        y_columns = _kept(self.scratch, ("y", *y_shape), y_shape)
        self._split(layer, *self._variant_call(layer, "batched"), x_columns.ctypes.data, y_columns.ctypes.data, padded)
        y[...] = y_columns[:, :batch].T

    def _variant_call(self, layer: _Layer, kind: str) -> tuple[object, tuple[int, int, int, int]]:
        """The kernel and arguments of the layer's batched, panelled or chunk variant."""
        call = layer.variant_calls.get(kind)
        if call is None:
            change = {"batched": {"batched": True}, "panels": {"panelled": True}}.get(kind, {"chunk_span": layer.chunk_span})
            variant = dataclasses.replace(layer.key, **change)
            call = layer.variant_calls[kind] = (self._variant_kernel(variant), layer.arguments_for(variant, self.weights))
        return call

    def _variant_kernel(self, variant: KernelKey):
        """A variant's kernel (batched, panelled or chunk), compiled on first use, for every layer
        that has a variant of that kind at once."""
        if variant.symbol not in self.variants:
            keys = [key for layer in self.layers.values() for key in variant_keys(layer.key, layer.chunk_span)]
            kind = (variant.batched, variant.panelled, bool(variant.chunk_span))
            alike = [key for key in keys if (key.batched, key.panelled, bool(key.chunk_span)) == kind]
            compiled = compile_kernels(alike, self.target)
            self.compiled.append(compiled)  # the functions live as long as their engine
            self.variants.update(compiled.functions)
        return self.variants[variant.symbol]

    def _split(self, layer: _Layer, kernel, arguments: tuple[int, int, int, int], x: int, y: int, batch: int) -> None:
        """Run `kernel` (the layer's, or a variant) on the inputs at address `x` into
        the outputs at `y` over the layer's units, split across the worker threads when
        the work pays."""
        shares = layer.shares.get(batch)
        if shares is None:
            shares = layer.shares[batch] = self._shares(layer.key, batch)
        if len(shares) == 1:
            kernel(x, y, *arguments, batch, *shares.bounds[0])
        else:
            self.pool.run(kernel, (x, y, *arguments, batch), shares)  # pyright: ignore

    def _shares(self, key: KernelKey, batch: int) -> Shares:
        """The (first, last) units of each thread's share of a call of `key`'s kernel on
        `batch` rows: one share for work too small to pay for a hand-off."""
        units = key.parallel_units
        workers = min(self.threads, units, max(1, key.rows * key.cols * batch // _WORK_PER_THREAD))
        if self.pool is None or batch == 0:
            workers = 1
        bounds = [units * worker // workers for worker in range(workers + 1)]
        return Shares([(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo] or [(0, units)])

    def _buffer(self, op: Operation, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 array of `shape` for `op`'s outputs, kept for the next call."""
        size = math.prod(shape)
        return _kept(self.buffers, (op, size), (size,)).reshape(shape)

    def _input_address(self, layer: _Layer, x: np.ndarray) -> int:
        """The address of `x`, or of its copy starting on a cache line if it does not:
        the kernels load 16 inputs (64 bytes) at a time, and from an array starting 16
        bytes into a line (numpy's usual) every such load spans two lines: n:m 3:4 on
        4096x4096 took 1.2x as long at one batch row, 1.3x to 1.5x at four. (Block
        kernels read one input at a time and take `x` as it is.)"""
        address = x.ctypes.data
        if address % CACHE_LINE == 0 or layer.key.kind == "block":
            return address
        if layer.staging.nbytes < x.nbytes:
            layer.staging = on_cache_line(np.empty, (x.size,))
        staging = layer.staging.ctypes.data
        ctypes.memmove(staging, address, x.nbytes)  # one call: numpy's copy costs more here
        return staging

    def _matmul(self, op: SparseMatMulOp, x: np.ndarray) -> np.ndarray:
        layer = self.layers[op]
        rows = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=np.float32)
        y = self._buffer(op, (rows.shape[0], layer.key.rows))
        self._call(layer, rows, y)
        return y.reshape(*x.shape[:-1], layer.key.rows)

    def _layer_norm(self, op: Operation, x: np.ndarray) -> np.ndarray:
        norm = self.norms[op]
        rows = np.ascontiguousarray(x.reshape(-1, norm.key.cols), dtype=np.float32)
        y = self._buffer(op, rows.shape)
        norm.kernel(rows.ctypes.data, y.ctypes.data, *norm.arguments, rows.shape[0], 0, rows.shape[0])  # pyright: ignore
        return y.reshape(x.shape)

    def _conv(self, op: SparseConvOp, x: np.ndarray) -> np.ndarray:
        layer = self.layers[op]
        weight_shape = op.w.type.get_shape()  # pyright: ignore
        kernel = tuple(weight_shape[2:])
        strides, dilations, pads = op.geometry(x.shape, kernel)
        cols = reference._windows(reference._pad(x, pads, 0.0), kernel, strides, dilations)  # (N, C, *out, *k)
        n, spatial = x.shape[0], cols.shape[2 : 2 + len(kernel)]
        patches = np.ascontiguousarray(np.moveaxis(cols, 1, 1 + len(kernel)).reshape(-1, layer.key.cols), dtype=np.float32)
        y = self._buffer(op, (patches.shape[0], layer.key.rows))
        self._call(layer, patches, y)
        return np.moveaxis(y.reshape(n, *spatial, layer.key.rows), -1, 1)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for inputs by name."""
        env: dict[SSAValue, np.ndarray] = dict(zip(self.arguments, self.feeds(feeds)))
        env.update(self.constants)
        for step in self.steps:
            op = step.op
            if isinstance(op, SparseMatMulOp):
                env[step.result] = self._matmul(op, env[step.inputs[0]])
            elif isinstance(op, SparseConvOp):
                env[step.result] = self._conv(op, env[step.inputs[0]])
            elif step.dtype is None:  # a layer normalization kernel
                env[step.result] = self._layer_norm(op, env[step.inputs[0]])
            else:
                env[step.result] = reference.evaluate(op, [env[v] for v in step.inputs]).astype(step.dtype, copy=False)
        return {name: np.array(env[v], copy=True) for name, v in zip(self.output_names, self.returned)}
