"""Runs a compiled model: generated kernels for sparse layers, numpy for the rest.

On construction the executor derives each kernel op's specialization key and operands,
generates one LLVM module for the distinct keys and JIT-compiles it (or loads it from
the disk cache). Every other op runs through the reference interpreter's numpy code, so
both engines execute the same IR.

Kernel calls go through ctypes, which releases the GIL, so worker threads that wait
spinning in native code (runtime/workers.py) take shares of each layer's output rows
(or row blocks), `threads` shares in all with the calling thread's. Each kernel step
is resolved once per input shape into a call (`_Call`: kernel, arguments, shares and
a kept output buffer), and a kernel step that reads another's output takes it in
place, so a run's Python between kernels is a few lookups. Variants are compiled on
first use: batched kernels from KernelKey.batched_from batch rows, panelled kernels
for fewer batch rows of long weight rows (KernelKey.panels_pay), paired kernels for
4k + 2 batch rows (KernelKey.pairs_pay), group-tile kernels for a few batch rows of
16-lane n:m weights (KernelKey.group_tiles_for), and the chunk kernels for one batch
row of sparse bitmask weights (KernelKey.chunk_span_for). A batch larger than a kernel
takes in one call (KernelKey.batch_chunk), or past a group-tile kernel's whole tiles,
runs as calls on chunks of it, each with the variant its own rows pay for
(`batch_chunks`).
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from threadpoolctl import ThreadpoolController
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, NameLoc, TensorType, f32
from xdsl.ir import Operation, SSAValue

from sparsec import reference
from sparsec.dialects.kernel_ops import KernelOp, SparseConvOp, SparseMatMulOp
from sparsec.dialects.literals import numpy_dtype
from sparsec.dialects.sparse import PackedWeightOp
from sparsec.dialects.shapes import DYNAMIC
from sparsec.errors import ExecutionError, SparsecError
from sparsec.kernels import ATTENTION_GEOMETRY, ATTENTION_UNIT_ROWS, PAD_VALUES, POOL_MAX_TAPS, POOL_WHOLE_MAX_COLUMNS, ROTARY_GEOMETRY, AnyKey, AttentionKey, KernelKey, NormKey, PlaneKey, PoolKey, RotaryKey, TransposeKey, key_for, padded_batch
from sparsec.dialects import StoredWeightOp, nn_index
from sparsec.dialects.nn import (
    AddOp, AttentionOp, AveragePoolOp, BatchNormOp, ConcatOp, ConvOp, DivOp, GemmOp, GlobalAveragePoolOp, LayerNormOp, MatMulOp, MaxPoolOp, MulOp, ReluOp, ReshapeOp, RMSNormOp,
    RotaryEmbeddingOp, SoftmaxOp, SubOp, TransposeOp, UnsqueezeOp,
    ints_of,
)  # fmt: skip
from sparsec.layers import dense_value
from sparsec.runtime.implicit import ImplicitConv, PoolBands, accumulating, aligned_plane, framed, image_conv, implicit_conv, one_image, pool_bands, reads_input_in_place, residual_add
from sparsec.runtime.jit import CompiledKernels, Target, compile_kernels
from sparsec.runtime.liveness import StepUse, output_colors
from sparsec.runtime.memory import on_cache_line
from sparsec.runtime.operands import KernelOperands, nonzero_count, prepare_operands
from sparsec.runtime.workers import STEP_WORDS, Shares, WorkerPool, available_cpus
from sparsec.weights import WeightStore

SHARES_PER_THREAD = 4
"""The most shares a call is cut into per thread that takes part (runtime/workers.py)."""
SHARE_THREADS_WORK = 8
"""The threads' worth of work below which a call takes one share per thread, not
SHARES_PER_THREAD: each thread then reads the channels it wrote in the call before (a
kernel's rows, a plane copy's channels), where claiming eight shares in turn sent half
of them to the other core's cache. Larger calls keep their shares for a thread held
up."""
BLAS_OPS = (ConvOp, GemmOp, MatMulOp)
"""The ops numpy runs with BLAS (runtime steps for layers left dense)."""
BLAS_SOLO_FROM = 1 << 24
"""Input size times weight size from which a BLAS step runs on one BLAS thread next
to the worker pool (`Executor._evaluate`): a proxy for the multiply-adds, small enough
to catch SqueezeNet's first convolution (2^27.9: two threads took 34 ms a run with
it on two BLAS threads, 12 without), large enough to leave small models' calls alone
(the digits MLP's last layer: 2^17)."""
_VALUES_PER_THREAD = 1 << 14
"""Values a plane copy or a pool reads per extra thread. Small, for a copy's cost on
two threads is mostly taking back the lines of planes both threads read in the last
call, not its bytes: a 136-channel 28 x 28 image's copy, alone on the calling thread,
took 54 us in a two-thread run against 12 on one (1 << 16 left it alone). Medians of
whole runs on two threads, n:m 3:4, against 1 << 16: ShuffleNet 5.17 -> 5.12 ms
(blocks of 4: 4.58 -> 4.37), Inception v2 18.9 -> 18.1 (12.6 -> 11.9), DenseNet121
26.6 -> 26.3, ResNet50 30.2 -> 29.4, SqueezeNet 4.42 -> 4.34."""
_WORK_PER_THREAD = 1 << 20
"""Weight values visited per extra thread: smaller layers run on the calling thread,
where a hand-off would cost more than it saves."""
_ROW_WORK_PER_THREAD = 1 << 17
"""The same for a layer's call on one batch row, which reads each weight once: in a
model's run those weights come from memory, not the caches, and a second core's stream
pays well below what warm layers alone suggested (`_WORK_PER_THREAD` until session
14). A LLaMA of SmolLM2-135M's shape at one token on two threads ran 1.21x to 1.27x as
fast with 2^17 or 2^18 (its 576 x 1536 layers split, and at 2^17 its 576 x 576 ones),
1.02x with 2^19; its blocks of 16 1.32x, GPT-2 1.15x. A convolution's calls read each
weight once per lane, from the caches: ShuffleNet's two small ones, split, made its run
1.12x as long."""
SIDE_BY_SIDE_ALL_BELOW = 1 << 19
"""Weight values below which a batched call's chunks left over after those the threads
share evenly also run side by side (Executor._side_by_side): split across two threads,
such a chunk ran 0.95x to 1.2x as fast as on one (the inputs and outputs crossing
between the cores cost as much as the second core saves), 1.45x for 1536 x 576 and
1.85x for 4096 x 4096."""
TRANSPOSE_WORK_PER_VALUE = 16
"""A transposing copy's work per value, in weight values visited (`_WORK_PER_THREAD`):
about 0.4 ns a value (32 x 576 in 8.5 us), 16 times a matrix product kernel's per
weight value at one batch row."""
COMBINED_OPS: dict[type[Operation], str] = {AddOp: "add", MulOp: "mul"}
"""The elementwise ops a matrix product's outward copies can make (`_Combined`)."""
KEPT_UFUNCS: dict[type[Operation], np.ufunc] = {AddOp: np.add, SubOp: np.subtract, MulOp: np.multiply, DivOp: np.divide}
"""The float32 elementwise ops numpy runs into an output kept from run to run
(`Executor._into_kept`)."""
ROTARY_WORK_PER_VALUE = 16
"""A rotary embedding's work per value, in weight values visited (`_WORK_PER_THREAD`):
four loads, four products and two sums per pair of values, about a transposing
copy's per value (TRANSPOSE_WORK_PER_VALUE)."""
NORM_WORK_PER_VALUE = 32
"""A normalization's or Softmax's work per value, in weight values visited
(`_WORK_PER_THREAD`): its kernel takes about 0.8 ns a value, 30 times what a matrix
product kernel takes a weight value at one batch row (n:m 3:4 on 11008x4096, 1.2 ms)."""


def kernel_key_of(op: KernelOp, target: Target | None = None) -> KernelKey:
    """The key a kernel op names, rebuilt from its weight and attributes, for `target`
    (whose features choose how float16 values are widened and which vector kernels
    apply), or as the IR names it when None."""
    weight = op.w.owner
    if not isinstance(weight, StoredWeightOp):
        raise SparsecError(f"'{op.name}' needs a weight (sparse.packed or nn.weight), got {weight.name}")  # pyright: ignore
    transposed = isinstance(op, SparseMatMulOp) and bool(op.transposed.value.data)
    key = key_for(weight, transposed, op.kind.data, op.epilogue.data, op.group.value.data if isinstance(op, SparseConvOp) else 1)
    if key.symbol != op.kernel.data:
        raise SparsecError(f"'{op.name}' names kernel {op.kernel.data}, but its weight and attributes give {key.symbol}")
    if target is None:
        return key
    return dataclasses.replace(key, native_f16=target.native_f16, avx512=target.avx512, vbmi2=target.vbmi2, tuning=target.tuning)


def concat_chain_ends(function: Operation) -> dict[ConcatOp, ConcatOp]:
    """For each Concat whose result is the first operand of a Concat along the same axis
    (DenseNet's features, one layer's more at a time), the last Concat of that chain."""
    ends: dict[ConcatOp, ConcatOp] = {}
    concats = [op for op in function.walk() if isinstance(op, ConcatOp)]
    for op in reversed(concats):
        followers = [use.operation for use in op.output.uses if use.index == 0 and isinstance(use.operation, ConcatOp)]
        same_axis = [follower for follower in followers if follower.axis.value.data == op.axis.value.data]
        if len(same_axis) == 1:
            ends[op] = ends.get(same_axis[0], same_axis[0])  # pyright: ignore
    return ends


def variant_keys(key: KernelKey, chunk_span: int) -> list[KernelKey]:
    """The variants of `key` the executor may also run: batched from a few batch rows
    (bitmask, n:m and blocks of up to 8, KernelKey.batched_from), panelled for a few
    batch rows of long weight rows (KernelKey.panels_pay), paired (and panelled and
    paired) for 4k + 2 rows of kernels tiled in fours (KernelKey.pairs_pay), group
    tiles of each size for 16-lane n:m weights (KernelKey.group_tile_sizes), and for
    one batch row the chunk variant of `chunk_span` (if not 0)."""
    batched = [dataclasses.replace(key, batched=True)] if key.has_batched_variant else []
    panelled = [dataclasses.replace(key, panelled=True)] if key.has_panel_variant else []
    paired = [dataclasses.replace(tiled, paired=True) for tiled in [key, *panelled]] if key.tiled_in_fours else []
    group_tiles = [dataclasses.replace(key, group_tiles=tile) for tile in key.group_tile_sizes]
    return batched + panelled + paired + group_tiles + ([dataclasses.replace(key, chunk_span=chunk_span)] if chunk_span else [])


def batched_transposes(key: KernelKey) -> list[TransposeKey]:
    """The transposing copies a matrix product's batched call takes (Executor.
    _transposes): its rows into the transposed input, the transposed output into its
    rows."""
    return [TransposeKey(key.cols, key.cols, True), TransposeKey(key.rows, key.rows, False)]


def batch_chunks(variant: KernelKey, batch: int) -> list[slice]:
    """The batch rows of each call that `batch` rows of `variant` run as (none: one
    call): chunks of KernelKey.batch_chunk rows and one of the rest; or the whole tiles
    of a group-tile variant, then the rows past them, which run the variant that pays
    for them (one row: the plain kernel's row groups; two: the tiles of two)."""
    if variant.batch_chunk and batch > variant.batch_chunk:
        return [slice(first, min(batch, first + variant.batch_chunk)) for first in range(0, batch, variant.batch_chunk)]
    if variant.group_tiles and batch > variant.group_tiles and batch % variant.group_tiles:
        whole = batch - batch % variant.group_tiles
        return [slice(0, whole), slice(whole, batch)]
    return []


def variant_kind(key: KernelKey) -> tuple[bool, bool, bool, int, bool, bool]:
    """Which variant `key` is (all False: the plain kernel); the executor compiles the
    variants of one kind for all its layers at once."""
    return key.batched, key.panelled, key.paired, key.group_tiles, bool(key.chunk_span), bool(key.window)


def all_kernel_keys(module: ModuleOp, weights: WeightStore, target: Target) -> list[AnyKey]:
    """Every kernel an executor of `module` may compile on `target`, variants included:
    for each plain 1x1 convolution, its frames (implicit.framed) in the planes of every
    padded stride-1 convolution with its output's size, a superset of those the
    executor takes (Executor._frame_layouts); on AVX-512, the transposing copies of
    the matrix products' batched variants (`batched_transposes`)."""
    keys: list[AnyKey] = []
    plain_1x1: list[ImplicitConv] = []
    padded: dict[tuple[int, int], set[tuple[tuple[int, int], tuple[int, int]]]] = {}
    """The pads before and the planes of the padded stride-1 convolutions, by output size."""
    for op in module.walk():
        if isinstance(op, KernelOp):
            key = kernel_key_of(op, target)
            nonzeros = nonzero_count(op.w.owner, weights) if key.has_chunk_variants else 0  # pyright: ignore
            keys += [key, *variant_keys(key, key.chunk_span_for(nonzeros))]
            if isinstance(op, SparseMatMulOp) and key.has_batched_variant and target.avx512:
                keys += batched_transposes(key)
            if isinstance(op, SparseConvOp) and (conv := image_conv(op, key)) is not None:
                residual = residual_add(op, key)
                keys.append((conv if residual is None else accumulating(conv, residual.relu)).key)
                uses = [use.operation for use in op.results[0].uses]
                if len(uses) == 1 and isinstance(uses[0], MaxPoolOp | AveragePoolOp) and (bands := pool_bands(conv, uses[0])) is not None:
                    keys.append(bands.key)
                keys += [plane] if (plane := plane_key_of(op, conv)) is not None else []
                if conv.strides == (1, 1) and conv.before != (0, 0):
                    padded.setdefault(conv.out, set()).add((conv.before, conv.phase))
                elif residual is None and len(conv.spatial) == 2 and reads_input_in_place(op):
                    plain_1x1.append(conv)
        elif isinstance(op, NORM_OPS) and (key := norm_key_of(op)) is not None:
            keys.append(key)
        elif isinstance(op, POOL_OPS) and (key := pool_key_of(op)) is not None:
            keys.append(key)
    for conv in plain_1x1:
        for before, phase in padded.get(conv.out, ()):
            keys += [framed(conv, before, phase).key, framed(conv, (0, 0), (conv.out[0], phase[1])).key]
    return list(dict.fromkeys(keys))


def prologue_ops(op: SparseConvOp) -> tuple[BatchNormOp, ReluOp | None] | None:
    """The batch normalization, and the Relu after it, that convolution `op` alone
    reads (through the Relu, if any), with stored parameters: the ops its implicit
    call may apply as it copies each image into its planes (`_Prologue`)."""
    producer = op.x.owner
    relu = producer if isinstance(producer, ReluOp) else None
    norm = producer.input.owner if relu is not None else producer  # pyright: ignore
    if not isinstance(norm, BatchNormOp) or not op.x.has_one_use() or not norm.output.has_one_use():
        return None
    if not all(isinstance(value.owner, StoredWeightOp) for value in (norm.scale, norm.b, norm.mean, norm.var)):
        return None
    return norm, relu


MULTIPLY_ADDS_PER_FLOAT_SAVED = 16
"""The most multiply-adds a layout may add to a convolution's calls for each float of
memory traffic it saves (`_pays`): a frame (Executor._frame_layouts) the lanes past
its calls' output columns against the plane copies it saves, bands (Executor.
_pool_bands) the rows they compute twice against an output that no longer goes out
to memory and back. In SqueezeNet a plane copy took 0.65-0.9 ns a float, and its
convolutions 0.05 ns a multiply-add of a kept weight, dense float32 (16->64 1x1) or
n:m 3:4 (512->1000). All its fire modules' Concats are framed so, at 55 x 55, 27 x 27
and 13 x 13 (where a frame adds 18% lanes: those at 13 x 13 took 3% off its run); its
classifier's input would not be (4x as many multiply-adds as floats copied).
ResNet50's first convolution (7x7, 3 -> 64) in bands adds 9.2 and ran with its max
pool 1.32x as fast; Inception v2's 3x3 one of 64 -> 192 at 56 x 56 (n:m 3:4) would
add 18 to 25, and ran 0.93x as fast in bands of 0.5 MiB."""


def _pays(multiply_adds: int, floats_saved: int) -> bool:
    """Whether a layout that adds `multiply_adds` and saves moving `floats_saved`
    floats pays (MULTIPLY_ADDS_PER_FLOAT_SAVED)."""
    return multiply_adds <= MULTIPLY_ADDS_PER_FLOAT_SAVED * floats_saved


def _kept_per_lane(step: _Step) -> int:
    """The multiply-adds convolution step `step` makes per output lane: its kept
    weights' (at most as many as its operands' bytes hold values)."""
    layer = step.unit
    assert isinstance(layer, _Layer)
    key = layer.key
    return min(key.rows * key.cols, layer.operands.nbytes // (4 if key.values == "f32" else 2))


def _extra_multiply_adds(step: _Step, height: int, width: int, pitch: int) -> int:
    """The multiply-adds convolution step `step` adds on an image of `height` x `width`
    framed at row pitch `pitch` (implicit.framed), per extra lane (`_kept_per_lane`)."""
    return _kept_per_lane(step) * (padded_batch(height * pitch) - padded_batch(height * width))


def plane_key_of(op: SparseConvOp, conv: ImplicitConv) -> PlaneKey | None:
    """The kernel that copies the images of implicit convolution `conv` into its planes
    (through the normalization `op` may take in), or None for column strides other than
    1 and 2, whose phase planes numpy fills."""
    if conv.strides[1] not in (1, 2):
        return None
    ops = prologue_ops(op)
    return PlaneKey("none" if ops is None else "affine_relu" if ops[1] is not None else "affine", conv.strides[1])


POOL_OPS = (MaxPoolOp, AveragePoolOp, GlobalAveragePoolOp, ConvOp)
"""The ops a pool kernel may run (`pool_key_of`)."""


def pool_key_of(op: MaxPoolOp | AveragePoolOp | GlobalAveragePoolOp | ConvOp) -> PoolKey | None:
    """The kernel of a 2-D max or average pool, or of a depthwise 2-D convolution
    (`depthwise`), of float32 images at column stride 1 or 2 with a window of at most
    POOL_MAX_TAPS taps; of a 2-D global average pool, or a pool whose one window covers
    its unpadded image (a whole-image kernel, `_whole_image_key`); else None (it runs in
    numpy)."""
    x_type = op.operands[0].type
    if not isinstance(x_type, TensorType) or x_type.element_type != f32 or x_type.get_num_dims() != 4:
        return None
    if isinstance(op, GlobalAveragePoolOp):
        return _whole_image_key("avg", x_type.get_shape()[2:])
    strides = ints_of(op.strides) or (1, 1)
    dilation = ints_of(op.dilations) or (1, 1)
    if isinstance(op, ConvOp):
        if not depthwise(op):
            return None
        window = op.w.type.get_shape()[2:]  # pyright: ignore
    else:
        window = ints_of(op.kernel_shape)
    if len(window) != 2 or len(strides) != 2 or len(dilation) != 2:
        return None
    kind = "depthwise" if isinstance(op, ConvOp) else "max" if isinstance(op, MaxPoolOp) else "avg"
    if kind != "depthwise" and _one_window_on_image(op, x_type.get_shape(), tuple(window)):  # pyright: ignore
        return _whole_image_key(kind, x_type.get_shape()[2:])
    if strides[1] not in (1, 2) or math.prod(window) > POOL_MAX_TAPS:
        return None
    return PoolKey(kind, strides[1], tuple(window), tuple(dilation), bias=isinstance(op, ConvOp) and op.b is not None, flat=tuple(strides) == (1, 1))  # pyright: ignore


def _one_window_on_image(op: MaxPoolOp | AveragePoolOp, shape: Sequence[int], window: tuple[int, ...]) -> bool:
    """Whether pool `op`'s one window is its input's whole image, unpadded and undilated
    (its output one value a plane, whatever its strides)."""
    if min(shape[2:]) < 1 or tuple(shape[2:]) != window:
        return False
    _strides, dilations, pads = op.geometry(tuple(shape), window)
    return set(dilations) == {1} and not any(pads)


def _whole_image_key(kind: str, image: Sequence[int]) -> PoolKey | None:
    """The whole-image pool kernel for images of `image` (rows, columns) sizes, where
    they are known and it takes them."""
    rows, columns = image
    if min(rows, columns) < 1 or columns > POOL_WHOLE_MAX_COLUMNS:
        return None
    return PoolKey(kind, 1, (rows, columns), whole=True)


def depthwise(op: ConvOp) -> bool:
    """Whether `op` is a depthwise convolution the pool kernel runs: a group per input
    channel, one output channel each, float32 weights (and bias) that are weights,
    stored or packed (pruned: the kernel reads them decoded, as the reference does)."""
    w_type, group = op.w.type, op.group.value.data
    parameters = [op.w] if op.b is None else [op.w, op.b]
    if not all(isinstance(p.owner, StoredWeightOp | PackedWeightOp) and p.type.element_type == f32 for p in parameters):  # pyright: ignore
        return False
    return isinstance(w_type, TensorType) and w_type.get_num_dims() == 4 and w_type.get_shape()[:2] == (group, 1)


KEPT_SHAPE_SETS = 8
KEPT_BYTES = 1 << 30
"""An executor keeps what it makes for a set of input shapes (each step's output
arrays, scratch, calls, plans and shape functions' values) for the runs on those
shapes after it, a served model seeing a few sequence lengths over and over; at most
KEPT_SHAPE_SETS sets: when another set comes and that many sets are kept, or their
arrays take more than KEPT_BYTES, it drops them all first (`Executor._forget_kept`).
Without the bound a model run on a new sequence length each time (generation
without a key-value cache) kept another set per length: a LLaMA of 135M parameters,
240 MB a set at 200 tokens when every output had an array of its own, 4.5 GB after
16 lengths (12 MB a set since outputs share arrays, `Executor.colors`)."""

NORM_OPS = (LayerNormOp, RMSNormOp, SoftmaxOp)
"""The ops a normalization kernel may run (NormKey)."""


def _row_length(op: LayerNormOp | RMSNormOp | SoftmaxOp) -> int | None:
    """The length of the rows `op` normalizes when they are float32 values over its
    input's last axis (DYNAMIC when given at run time); else None."""
    x_type = op.operands[0].type
    if not isinstance(x_type, TensorType) or x_type.element_type != f32 or not x_type.get_shape():
        return None
    shape = x_type.get_shape()
    return shape[-1] if op.axis.value.data % len(shape) == len(shape) - 1 else None


def runs_rows_softmax(op: LayerNormOp | RMSNormOp | SoftmaxOp) -> bool:
    """Whether `op` is a Softmax of float32 rows over their last axis, whose length is
    given at run time (attention's scores over a sequence): the executor compiles its
    kernel for each row length it meets (`Executor._norm_kernel`)."""
    return isinstance(op, SoftmaxOp) and _row_length(op) == DYNAMIC


def norm_key_of(op: LayerNormOp | RMSNormOp | SoftmaxOp) -> NormKey | None:
    """The kernel of a layer or RMS normalization or Softmax of float32 rows over their
    last, static axis, a normalization's scale (and bias) weights of that length or one
    value; else None (it runs in numpy, or for a Softmax over an axis given at run time
    a kernel compiled when it runs, `runs_rows_softmax`)."""
    cols = _row_length(op)
    if cols is None or cols <= 0:
        return None
    if isinstance(op, SoftmaxOp):
        return NormKey(cols, "softmax")
    for parameter in _norm_parameters(op):
        if not isinstance(parameter.owner, StoredWeightOp) or math.prod(parameter.type.get_shape()) not in (1, cols):  # pyright: ignore
            return None
    return NormKey(cols, "rms" if isinstance(op, RMSNormOp) else "layer")


def _norm_parameters(op: LayerNormOp | RMSNormOp) -> list[SSAValue]:
    """A normalization's scale, and its bias where it has one."""
    return [op.scale] + ([op.b] if isinstance(op, LayerNormOp) and op.b is not None else [])


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


def _same_place(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether arrays `a` and `b` of one shape view the same memory the same way (a
    stride along an axis of one element does not matter, and numpy sets it freely)."""
    return a.ctypes.data == b.ctypes.data and a.shape == b.shape and all(n == 1 or sa == sb for n, sa, sb in zip(a.shape, a.strides, b.strides))


def _rows_of_floats(images: np.ndarray) -> bool:
    """Whether `images` (..., H, W) are float32 rows of consecutive values at
    non-negative strides, as the plane copy and pool kernels read and write them."""
    return images.dtype == np.float32 and images.strides[-1] == 4 and min(images.strides) >= 0


def _lane_view(lanes: np.ndarray, channels: int, rows: int, pitch: int, columns: int) -> np.ndarray:
    """Channels [0, channels) of output `lanes` (images, channels or more, lanes) as
    images of `rows` x `columns`, each row `pitch` lanes after the one before (a view
    that skips a row's dropped lanes)."""
    return lanes[:, :channels, : rows * pitch].reshape(len(lanes), channels, rows, pitch)[..., :columns]


def _plane_layout(conv: ImplicitConv, shape: tuple[int, ...]) -> tuple:
    """What phase planes of `conv` for images of `shape` share but for their channel
    count: each channel's planes lie alike, so one array serves convolutions of any
    number of channels (`Executor.plane_floats`)."""
    return ("planes", conv.strides, conv.phase, conv.before, shape[2:])


def _lane_result(lanes: np.ndarray, rows: int, conv: ImplicitConv) -> np.ndarray:
    """The result of implicit convolution `conv` (`rows` weight rows) in its output
    `lanes`: channels first, each row's dropped lanes skipped (a view)."""
    (ho, wo), wq = conv.out, conv.phase[1]
    return _lane_view(lanes, rows, ho, wq, wo).reshape(len(lanes), rows, *conv.spatial)


def _kept(arrays: dict, key: tuple, shape: tuple[int, ...], allocate=np.empty, line_at: int = 0) -> np.ndarray:
    """The float32 array `arrays` keeps under `key`, made by `allocate` on first use,
    starting on a cache line (as kernel inputs best do), or with its element `line_at`
    on one: allocated per call, such arrays cost their page faults on every call."""
    array = arrays.get(key)
    if array is None:
        array = arrays[key] = on_cache_line(allocate, shape, line_at=line_at)
    return array


@dataclass
class _Layer:
    key: KernelKey
    operands: KernelOperands
    bias: np.ndarray
    weight: StoredWeightOp
    transposed: bool
    arguments: tuple[int, int, int, int] = dataclasses.field(init=False)
    """The addresses of a0, a1, a2 and the bias, as every call passes them."""
    kernel: object = None
    """The compiled kernel (set once the module is compiled)."""
    chunk_span: int = dataclasses.field(init=False)
    """The chunk variant one batch row runs (KernelKey.chunk_span_for), or 0."""
    batched_from: int | None = dataclasses.field(init=False)
    """Batch rows from which the batched variant runs (KernelKey.batched_from), or None."""
    chunk_operands: KernelOperands | None = None
    """The chunk variant's operands, once laid out (on its first use)."""
    variant_calls: dict[KernelKey, tuple[object, tuple[int, int, int, int]]] = dataclasses.field(default_factory=dict)
    """Kernel and arguments of each variant this layer has run, by its key: resolved
    once, so a call costs one lookup."""

    def __post_init__(self) -> None:
        self.arguments = self._with_bias(self.operands)
        # a1 holds a bitmask weight's values, a0 an n:m weight's kept slots.
        self.chunk_span = self.key.chunk_span_for(self.operands.arrays[1].size)
        self.batched_from = self.key.batched_from(self.operands.arrays[1 if self.key.kind == "bitmask" else 0].size)

    def variant_for(self, batch: int) -> KernelKey:
        """The key of the kernel `batch` rows run: batched from `batched_from` rows, the
        chunk variant for one row, group tiles where the weight has them, else panelled
        and paired where they pay (the layer's own key where nothing does)."""
        key = self.key
        if self.batched_from is not None and batch >= self.batched_from:
            return dataclasses.replace(key, batched=True)
        if batch == 1 and self.chunk_span:
            return dataclasses.replace(key, chunk_span=self.chunk_span)
        if group_tiles := key.group_tiles_for(batch):
            return dataclasses.replace(key, group_tiles=group_tiles)
        return dataclasses.replace(key, panelled=key.panels_pay(batch), paired=key.pairs_pay(batch))

    def runs_implicit(self, lanes: int) -> bool:
        """Whether a convolution's call on `lanes` lanes runs the implicit variant (where
        it applies): where the batched variant pays (`variant_for`), and always for
        weights without one (blocks wider than 8), whose only batched form it is."""
        return self.batched_from is None or lanes >= self.batched_from

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
    """A layer normalization or Softmax run by a generated kernel (runtime/codegen/norm.py)."""

    key: NormKey | None
    """None for a Softmax over an axis given at run time (`runs_rows_softmax`)."""
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
class _NativeOp:
    """An op other than a layer that a generated kernel runs on operands read where
    they lie, at their strides: `nn.attention` (runtime/codegen/attention.py) and
    `nn.rotary_embedding` (runtime/codegen/rotary.py), each into an output kept from
    run to run. The geometry and the threads' shares are made per set of operand
    shapes and strides on first use; shapes the kernel does not take (another width
    than the IR's, heads that do not group) run in numpy."""

    key: AttentionKey | RotaryKey
    kernel: Any = None
    plans: dict[tuple, tuple[np.ndarray, Shares, tuple[int, ...]] | None] = dataclasses.field(default_factory=dict)
    """By the operands' shapes and strides: the geometry words, the shares of the
    (batch, head) units and the output shape; None for numpy."""
    last: _NativeCall | None = None
    """The call on the operand arrays of the last run that ran the kernel."""

    @property
    def runs_as(self) -> str:
        return "attention kernel" if isinstance(self.key, AttentionKey) else "rotary kernel"


@dataclass
class _NativeCall:
    """A native op's kernel call made ready for the operand arrays it was made for: a
    later run on the same arrays (the same objects: kept outputs, cached views, shape
    functions' values) costs identity tests, the copies of operands whose last axis is
    strided into arrays of the call's own, and the call. Resolving it per run (shapes
    and strides, the plan, the addresses) took most of a rotation's 20 us in a LLaMA's
    one-token run."""

    operands: list[np.ndarray]
    copies: list[tuple[np.ndarray, np.ndarray]]
    """(operand, the call's array it is copied into) per operand read from a copy."""
    arguments: tuple[int, ...]
    shares: Shares
    out: np.ndarray
    """The output, kept from run to run."""


def native_key_of(op: Operation) -> AttentionKey | RotaryKey | None:
    """The kernel of a float32 `nn.attention` whose query and value depths are static,
    or of a float32 `nn.rotary_embedding` of rank 4 at most; else None."""
    if isinstance(op, AttentionOp):
        q, v = (operand.type for operand in (op.q, op.v))
        depth, value_depth = q.get_shape()[-1], v.get_shape()[-1]  # pyright: ignore
        if q.element_type != f32 or DYNAMIC in (depth, value_depth):  # pyright: ignore
            return None
        return AttentionKey(depth, value_depth, op.mask is not None, bool(op.nan_rows_to_zero.value.data))
    if isinstance(op, RotaryEmbeddingOp):
        x = op.x.type
        if x.element_type != f32 or len(x.get_shape()) > 4:  # pyright: ignore
            return None
        return RotaryKey(x.get_shape()[-1])  # pyright: ignore
    return None


def _int64_words(values: np.ndarray) -> list[int]:
    """`values` (uint16) packed four to an int64 word, in memory order, the last word
    padded with zeros."""
    padded = np.zeros(-(-values.size // 4) * 4, np.uint16)
    padded[: values.size] = values.reshape(-1)
    return padded.view(np.int64).tolist()


def _strides(array: np.ndarray) -> list[int]:
    """An array's strides in floats, 0 along axes of one element (or broadcast)."""
    return [0 if size == 1 else stride // 4 for size, stride in zip(array.shape, array.strides)]


def _float_rows(operands: list[np.ndarray]) -> list[np.ndarray]:
    """The operands as float32 with their last axis contiguous, as the attention and
    rotary kernels read them: as they are where they already are, else copied into
    arrays on a cache line (numpy's start 16 bytes into one, and the attention kernel
    loads keys' rows 16 floats at a time: a LLaMA's attention steps took 1.2x as long)."""
    return [operand if operand.strides[-1] == 4 and operand.dtype == np.float32 else _copied_on_cache_line(operand) for operand in operands]


def _copied_on_cache_line(operand: np.ndarray) -> np.ndarray:
    """A float32 copy of `operand`, contiguous, whose first value starts a cache line."""
    copy = on_cache_line(np.empty, operand.shape)
    np.copyto(copy, operand, casting="unsafe")
    return copy


def rotary_geometry(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """The geometry words (ROTARY_GEOMETRY) of float32 operands of rank 4 whose last
    axes are contiguous, cos and sin broadcast to x."""
    words = {"heads": x.shape[1], "rows": x.shape[2]}
    for name, array in (("x", x), ("cos", np.broadcast_to(cos, x.shape)), ("sin", np.broadcast_to(sin, x.shape))):
        strides = _strides(array)
        words.update({f"{name}_batch": strides[0], f"{name}_head": strides[1], f"{name}_row": strides[2]})
    return np.array([words[name] for name in ROTARY_GEOMETRY], np.int64)


def attention_geometry(q: np.ndarray, kt: np.ndarray, v: np.ndarray, mask: np.ndarray | None, out: tuple[int, ...], scale: float) -> np.ndarray | None:
    """The geometry words (ATTENTION_GEOMETRY) of float32 operands whose last axes are
    contiguous, a stride of 0 where one broadcasts; None where heads do not group."""
    batch, heads, queries, _ = out
    if heads % kt.shape[1] or heads % v.shape[1]:
        return None
    if mask is not None:
        mask = np.broadcast_to(mask, (batch, heads, queries, kt.shape[3]))
    words = {"queries": queries, "keys": kt.shape[3], "heads": heads, "key_group": heads // kt.shape[1], "value_group": heads // v.shape[1]}
    for name, array in (("q", q), ("kt", kt), ("v", v), ("mask", mask)):
        if array is not None:
            strides = _strides(array)
            words.update({f"{name}_batch": strides[0], f"{name}_head": strides[1], f"{name}_row": strides[2]})
    words.update(out_row=out[3], out_head=out[2] * out[3], out_batch=out[1] * out[2] * out[3])  # contiguous
    geometry = np.array([words.get(name, 0) for name in ATTENTION_GEOMETRY], np.int64)  # no mask: its words 0
    geometry.view(np.float32)[2 * ATTENTION_GEOMETRY.index("scale")] = scale
    return geometry


@dataclass
class _Pool:
    """A max or average pool, or a depthwise convolution, run by a generated kernel
    (runtime/codegen/pool.py)."""

    key: PoolKey
    lanes: bool = False
    """Whether its outputs are laid out as lanes that its readers, 1x1 convolutions
    alone, read in place (`reads_input_in_place`): each plane rounded up to whole
    64-byte lines, a zero plane after each image's."""
    kernel: object = None
    """The compiled kernel (set once the module is compiled)."""


@dataclass
class _Call:
    """A kernel step made ready for one input shape on its first run with it: the
    kernel (the layer's, a variant, or a layer normalization's), its address and the
    arguments after x and y, the threads' shares and the kept output buffer. Later runs
    cost a lookup and one native call: Python between two kernel calls runs with its
    code out of the caches, where each numpy attribute or ctypes conversion costs
    microseconds (resolving all this per run took 30 us of a 0.22 ms layer call on
    two threads)."""

    kernel: Any
    address: int
    """The kernel's address, as the worker pool posts it."""
    arguments: tuple[int, ...]
    """a0, a1, a2, the bias and the rows the kernel runs on."""
    shares: Shares
    alone: bool
    """One share: the calling thread runs it without the pool."""
    output: np.ndarray
    """The output rows, 2-D: the step's kept buffer (for batched kernels, the rows are
    copied there from the transposed scratch output)."""
    output_address: int
    result: np.ndarray
    """The op's result: `output` in the result's shape (a view, made once)."""
    result_address: int | None
    """Where the next kernel steps read the result in place: `output_address`, or None
    for a result not laid out as rows (a convolution's)."""
    scratch: tuple[np.ndarray, np.ndarray] | None = None
    """A batched kernel's transposed input and output arrays (`transposed_inputs`)."""
    transposes: tuple[_Transpose | None, _Transpose | None] | None = None
    """A batched kernel's copies into its transposed input and out of its transposed
    output (`Executor._transposes`, None for a copy numpy makes), once its first run
    made them."""
    batch_chunks: list[tuple[slice, _Call]] = dataclasses.field(default_factory=list)
    """The calls a call on more batch rows than its kernel takes at once runs instead
    (KernelKey.batch_chunk), each on the batch rows of its slice; else empty."""
    group_calls: list[_Call] = dataclasses.field(default_factory=list)
    """A grouped convolution's call per group on its input windows, run instead
    (`Executor._grouped_call`; an implicit call takes every group's rows itself,
    KernelKey.groups); else empty."""
    weight_rows: slice = dataclasses.field(default_factory=lambda: slice(None))
    """The weight rows (output columns) this call computes: all, or a group's."""
    input: np.ndarray | None = None
    """Where inputs that are not a kernel's output are copied (`Executor._staged`), or
    an implicit convolution's padded input (ImplicitConv)."""
    input_address: int = 0
    read_offset: int = 0
    """Bytes from `input_address` to where the kernel reads (ImplicitConv.read_offset)."""
    residual: _Residual | None = None
    """The residual Add this implicit call takes in (`_Residual`), or None."""
    prologue: _Prologue | None = None
    """The normalization (and Relu) this implicit call applies as it copies, or None."""
    images_side_by_side: _ImagesSideBySide | None = None
    """How an implicit call runs images side by side on the threads: reading them in
    place (`Executor._images_side_by_side`), or a group at a time from its own and its
    twins' planes (`Executor._image_groups`)."""
    twins: list[_Call] = dataclasses.field(default_factory=list)
    """The same implicit call on other arrays of phase planes, one for each thread but
    the first, where a batch's images run a group at a time side by side
    (`Executor._image_groups`)."""
    zero_plane: np.ndarray | None = None
    """The part of an implicit convolution's phase planes past its channels' (its zero
    plane and slack) where the array serves convolutions of more channels, whose
    images may lie there: zeroed at each fill."""
    phase_copies: list[tuple[np.ndarray, tuple[slice, slice]]] = dataclasses.field(default_factory=list)
    """An implicit convolution's copies of each image into its phase planes
    (ImplicitConv.copies); empty for other calls."""
    plane_copies: list[tuple[_PlaneCopy, int, int, int]] = dataclasses.field(default_factory=list)
    """The kernel's calls that make those copies, a phase each (Executor._plane_copies),
    at column stride 1 or 2; empty where numpy makes them."""
    in_place: bool = False
    """An implicit call that reads its images in place as its planes (a 1x1
    convolution of another's output lanes, ImplicitConv.reads_in_place): no copies."""
    addend_in_place: np.ndarray | None = None
    """The residual addend (`_Residual`) whose output lanes this implicit call adds
    into, where the addend dies at the Add: no copy, while it is that array."""
    pool_geometry: np.ndarray | None = None
    """A pool's geometry words (pool.GEOMETRY), its images' strides set per run."""
    pool_parts: dict[tuple[int, int], _Call] = dataclasses.field(default_factory=dict)
    """A pool's call on the planes (first, count) of one image's put-off Concat part,
    with shares of its own (Executor._pool_part)."""
    operand_arrays: tuple[np.ndarray, ...] = ()
    """Arrays whose addresses `arguments` hold (kept alive with the call)."""
    read: tuple[np.ndarray, int] | None = None
    """The array the call last read and its address (`_address`); for a pool's, only
    when it read it whole, so its geometry words still describe it."""
    bands: _Bands | None = None
    """A pool's call that runs the convolution before it in bands (`Executor._run_bands`)."""
    side_by_side: _SideBySide | Literal[False] | None = None
    """How batch chunks run side by side on the threads (`Executor._side_by_side`);
    False where they run one after another; None until the first run decides."""
    combining: _Combining | Literal[False] | None = None
    """How its outward copies make its step's `_Combined` op; False where they do not
    (rows a kernel or numpy writes); None until a first run has made the copies."""


@dataclass
class _SideBySide:
    """A chunked call's steps as the threads run them, a chunk a share: each chunk's
    inward copy, kernel and outward copy, or a plain chunk's kernel (workers.STEP_WORDS
    words each; the input addresses set when the input moves)."""

    chunks: int
    """The leading chunks the table runs; the rest run one after another."""
    table: np.ndarray
    reading: np.ndarray
    """The entries that read the chunks' input rows (their first argument)."""
    starts: np.ndarray
    """Where each of those entries reads, in bytes from the input's start."""
    shares: Shares
    """A share per chunk: its range of table entries."""
    read: int = 0
    """The input address the table's inward copies read."""


@dataclass
class _ImagesSideBySide:
    """An implicit call's leading images as the threads run them, an image a share:
    a table of one step per image (workers.STEP_WORDS words), for `read`: the input
    address and the image count, or where the images are copied into planes
    (`Executor._image_groups`) the input address (0 where the caller fills them),
    strides and the count of groups; and there, where the threads can fill the planes,
    a table of each image's plane copies then its step, with its shares (`filling`)."""

    read: tuple
    table: np.ndarray
    shares: Shares
    filling: tuple[np.ndarray, Shares] | None = None


def _image_steps(call: _Call, read: tuple, inputs: list[int], shares: int, threads: int, fills: list[list[tuple[int, ...]]] | None = None) -> _ImagesSideBySide:
    """`call` on each of its output's leading images, the image i reading at address
    `inputs[i]`, as a step table whose first `shares` entries are a share each, for
    `threads` threads (all the images, or a group of them run at once: the caller
    then runs each group's part of the table); with `fills`, a second table (`filling`)
    whose image i's entries are the steps that fill its planes (`fills[i]`), then its
    call."""
    first, last = _span(call.shares)
    steps = [(call.address, at, call.output_address + image * call.output.strides[0], *call.arguments, first, last) for image, at in enumerate(inputs)]
    plan = _ImagesSideBySide(read, _step_table(steps), Shares([(entry, entry + 1) for entry in range(shares)], threads))
    if fills:
        per_image = len(fills[0]) + 1
        table = _step_table([entry for image, step in enumerate(steps) for entry in (*fills[image], step)])
        plan.filling = table, Shares([(share * per_image, (share + 1) * per_image) for share in range(shares)], threads)
    return plan


def _fill_steps(copies: list[tuple[_PlaneCopy, int, int]], x: np.ndarray, image: int) -> list[tuple[int, ...]]:
    """The steps (workers.STEP_WORDS words) of plane `copies` (each with the offset of
    its first input and its planes' address, `Executor._threads_fill`) that fill their
    planes with image `image` of x, every channel."""
    at = x.ctypes.data + image * x.strides[0]
    return [(copy.address, at + 4 * offset, planes, *copy.arguments, 0, x.shape[1]) for copy, offset, planes in copies]


def _step_table(steps: list[tuple[int, ...]]) -> np.ndarray:
    """The workers' step table of `steps` (workers.STEP_WORDS words each), on a cache line."""
    table = on_cache_line(np.zeros, (len(steps), STEP_WORDS), np.int64)
    table[:] = steps
    return table


def repeated_heads(value: SSAValue, transposed: bool) -> tuple[SSAValue, SSAValue, SSAValue, list[Operation]] | None:
    """Whether `value` is the exporters' repeat_kv of rank-4 heads x: Reshape(Expand(
    Unsqueeze(x, axis 2), shape5), shape4), for keys (`transposed`) then a Transpose of
    the last two axes, each op's result read only by the next. Then x, shape5, shape4
    and the Expand, Reshape (and Transpose); whether the shapes repeat each head is
    for the run to tell (`Executor._grouped_operand`)."""
    chain: list[Operation] = []
    op = value.owner
    if transposed:
        if not isinstance(op, TransposeOp) or op.permutation(4) != (0, 1, 3, 2):
            return None
        chain.append(op)
        op = op.input.owner
    if not isinstance(op, nn_index.DynamicReshapeOp) or not isinstance(expand := op.input.owner, nn_index.ExpandOp):
        return None
    unsqueeze = expand.input.owner
    if not isinstance(unsqueeze, UnsqueezeOp) or ints_of(unsqueeze.axes) != (2,) or unsqueeze.input.type.get_num_dims() != 4:  # pyright: ignore
        return None
    chain = [expand, op, *chain]
    if not all(link.results[0].has_one_use() for link in chain):
        return None
    return unsqueeze.input, expand.shape, op.shape, chain


def _row_writers(call: _Call, first: int = 0) -> Iterator[tuple[_Call, tuple[np.ndarray, int] | None, slice]]:
    """The calls that write `call`'s output rows, each with the table and row of its
    outward copy's entry (or its own, a plain chunk's) where it runs side by side, and
    the output rows it writes (`call`'s from row `first`)."""
    if not call.batch_chunks:
        yield call, None, slice(first, first + call.output.shape[0])
        return
    chunks, plan = call.batch_chunks, call.side_by_side
    if plan:
        row = 0
        for taken, chunk in chunks[: plan.chunks]:
            row += 1 if chunk.scratch is None else 3
            yield chunk, (plan.table, row - 1), slice(first + taken.start, first + taken.stop)
        chunks = chunks[plan.chunks :]
    for taken, chunk in chunks:
        yield from _row_writers(chunk, first + taken.start)


def _rows(taken: slice) -> int:
    return taken.stop - taken.start


def _span(shares: Shares) -> tuple[int, int]:
    """All the units of a call's shares, as one (first, last)."""
    return shares.bounds[0][0], shares.bounds[-1][1]


@dataclass
class _Bands:
    """A convolution and the pool after it, run band by band (implicit.PoolBands)."""

    conv: _Call
    """The band kernel's call: the convolution's phase planes in, one band's rows out."""
    parts: list[tuple[int, _Call, int]]
    """Each band's bytes from the planes' first lane to its own, the pool's call on its
    rows, and the bytes from the pool's outputs to its first output row."""


@dataclass
class _Transpose:
    """A transposing copy (runtime/codegen/transpose.py) of a batched call, with its
    shares of the blocks of 16: the call's rows into its transposed input, or its
    transposed output into its output rows. Writes at `target` and (the outward one)
    reads at `source`, addresses of kept arrays set once; the inward one reads the
    call's rows wherever a run has them."""

    key: TransposeKey
    kernel: Any
    address: int
    arguments: tuple[int, ...]
    """a0 (a combining copy's second operand, `_Combining`), a1, a2, the bias and B."""
    shares: Shares
    alone: bool
    source: int
    target: int


@dataclass
class _Known:
    """What runs on inputs of shapes seen before start from: the initial values with the
    shape functions' values they read in their slots (`Executor.shape_values`); they
    go through the steps left (`Executor.steps_left`): a LLaMA at one token through 910
    of its 1940 steps, in 57 us of loop rather than 139 (warm), copying one list rather
    than setting 1030 slots."""

    env: list


@dataclass
class _Kept:
    """What an executor makes for the sets of input shapes it meets and keeps for later
    runs on them: outputs, scratch, what it knows of arrays by address. Dropping it is
    making a new one (Executor._forget_kept), with the calls, views and plans the steps
    keep (`_Step.forget`)."""

    shapes: set[tuple] = dataclasses.field(default_factory=set)
    """The sets of input shapes run since it was made (KEPT_SHAPE_SETS)."""
    known: dict[tuple, _Known] = dataclasses.field(default_factory=dict)
    """The shape functions' values runs on each of those sets start from, from the
    first run on it on (Executor.shape_values)."""
    buffers: dict[tuple, np.ndarray] = dataclasses.field(default_factory=dict)
    """Steps' outputs by op and shape, or by color and shape where they share arrays
    (Executor.colors), kept from call to call (Executor._kept_output, _kept_lanes,
    _concat)."""
    scratch: dict[tuple, np.ndarray] = dataclasses.field(default_factory=dict)
    """The batched kernels' transposed inputs ("x") and outputs ("y") by shape, and
    the implicit convolutions' phase planes by layout, kept from call to call and
    shared by the layers (they run one after another)."""
    concat_outputs: dict[tuple[ConcatOp, tuple], tuple[np.ndarray, list[np.ndarray], list[np.ndarray | None]]] = dataclasses.field(default_factory=dict)
    """Each Concat's result, its operands' parts of it and the operands found in
    place there, by op and operand shapes (Executor._concat_output)."""
    concat_lanes: dict[tuple[ConcatOp, int], tuple[np.ndarray, tuple[int, int, int, int]]] = dataclasses.field(default_factory=dict)
    """Concats' lane buffers (Executor._concat_lanes) by Concat (a chain's last) and
    images, with their geometry: lanes a channel, lanes a row, rows and columns."""
    reshapes: dict[tuple[Operation, tuple[int, ...]], tuple[int, ...]] = dataclasses.field(default_factory=dict)
    """The shapes put-off reshapes give their sources, by op and source shape
    (Executor._regrouped)."""
    zero_planes: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    """The kept outputs (by address) of implicit calls and of pools laid out as lanes,
    (images, channels + 1, lanes), each image's channels followed by a zero plane:
    for a 1x1 convolution reading them in place, or a call adding into them. By
    address, so dropped with the arrays: a freed array's address is soon another's."""
    plane_images: dict[int, tuple] = dataclasses.field(default_factory=dict)
    """What each array of phase planes (by address) was last filled with
    (Executor._planes_hold)."""

    def bytes(self) -> int:
        """The bytes of its arrays: outputs (Concats' among them), scratch and Concats'
        lane buffers (the calls and plans made with them hold little else)."""
        arrays = [*self.buffers.values(), *self.scratch.values(), *(lanes for lanes, _ in self.concat_lanes.values())]
        return sum(array.nbytes for array in arrays)


@dataclass
class _GroupedHeads:
    """An attention operand made by repeating each key or value head (the exporters'
    repeat_kv: Unsqueeze at axis 2, Expand, Reshape, for keys a Transpose of the last
    two axes), whose put-off steps run only where the run's shapes say they are not
    such a repeat: the attention kernel takes grouped heads as they are."""

    operand: int
    """The slot of the attention's operand."""
    source: int
    """The slot of the heads before the repeat, (B, Hk, S, D)."""
    expanded: int
    """The slot of the Expand's shape."""
    reshaped: int
    """The slot of the Reshape's shape."""
    transposed: bool
    steps: tuple[_Step, ...]
    """The Expand's, the Reshape's (and the Transpose's) steps, put off."""
    last: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] | None = None
    """The last run's heads and shape arrays, and the operand read as groups (for keys
    a view with the axes swapped), None where they were no plain repeat: the shapes
    are shape functions' values, the same arrays from run to run, so a run on the same
    arrays checks nothing again."""


@dataclass
class _Combined:
    """An elementwise Add or Mul, the one reader of a matrix product's result, that the
    product's outward copies make as they copy (TransposeKey.combine): its kind and
    numpy's function for it, the slot of its other operand and its own result's slot."""

    combine: str
    ufunc: np.ufunc
    other: int
    absorbed: int


@dataclass(eq=False)
class _Combining:
    """How a call makes its step's `_Combined` op: its outward copy kernels combining,
    each reading the other operand at its own offset into it (in bytes, the same as
    into the call's output), the side-by-side ones through their table rows; numpy
    the rows no copy writes; and the address the copies read at now."""

    ufunc: np.ufunc
    copies: list[tuple[_Transpose, int]]
    rows: list[tuple[np.ndarray, int, int]]
    """(table, row, offset) per side-by-side outward copy."""
    by_numpy: list[slice]
    """The output rows no copy kernel writes, which numpy combines after the call."""
    address: int = 0
    makes: bool = False
    """Whether this run makes the op (its result shaped as the call's)."""
    operand: np.ndarray | None = None
    """The other operand as this run reads it, shaped as the call's output rows."""
    read: np.ndarray | None = None
    """The array the copies read in place, when they do (not a copy or the identity)."""

    def finish(self, output: np.ndarray) -> None:
        """The op on the rows numpy combines."""
        for rows in self.by_numpy:
            self.ufunc(output[rows], self.operand[rows], out=output[rows])  # pyright: ignore


@dataclass
class _PlaneCopy:
    """The plane copy kernel's call for an implicit convolution (runtime/codegen/
    planes.py), with its shares of the channels. Its geometry words are set per image:
    the image's strides can change from run to run (a channels-last view). In numpy,
    DenseNet121's copies and their normalizations took 16 ms of a 53 ms run on two
    threads: three passes over the planes, on one thread."""

    key: PlaneKey
    kernel: Any
    address: int
    geometry: np.ndarray
    """int64 words (planes.GEOMETRY), the first two (the image's strides) per image."""
    arguments: tuple[int, ...]
    shares: Shares
    alone: bool
    affine: tuple[np.ndarray, np.ndarray] | None
    """The prologue's scale and shift, one float32 per channel (kept alive here)."""
    parts: dict[tuple[int, int], _PlaneCopy] = dataclasses.field(default_factory=dict)
    """The same copy on the channels of a part of a put-off Concat, by (first channel,
    channels), with shares of its own (Executor._part_copy)."""
    written: tuple[int, int, int] | None = None
    """The per-image geometry words last written (the two strides, the first channel):
    mostly the same image layout run after run, and each write of numpy words costs
    about a microsecond."""

    def takes(self, image: np.ndarray) -> bool:
        """Whether the kernel can read `image` (C, H, W) in place: float32 rows of
        consecutive values, at non-negative channel and row strides."""
        return _rows_of_floats(image)

    def reads(self, channel_stride: int, row_stride: int, first: int) -> None:
        """Set the per-image geometry words: the image's channel and row strides (in
        floats) and its first channel, where they changed."""
        words = (channel_stride, row_stride, first)
        if self.written != words:
            self.geometry[:2] = words[:2]
            self.geometry[-1] = first
            self.written = words


@dataclass(frozen=True)
class _Residual:
    """A ResidualAdd by slots. The Add's other operand is copied into the call's output
    lanes, the kernel's accumulate variant adds its products to it and applies the
    Relu, and the Add's and the Relu's results are the call's result. ResNet50's
    sixteen Adds and Relus in numpy took about 11 ms of its run; the copies take 3.
    Where the addend dies at the Add and is another implicit call's output lanes, the
    call adds into those lanes instead, with no copy (`_Call.addend_in_place`)."""

    addend: int
    absorbed: tuple[int, ...]
    relu: bool
    dies: bool
    """Whether the addend is read by nothing after the convolution: its other readers
    are kernel steps before it, and it is not returned."""


@dataclass(frozen=True)
class _Prologue:
    """A batch normalization, and the Relu after it, that only a convolution reads:
    its steps are put off to the convolution's step, whose implicit call applies them
    while it copies each image into its planes (x * scale + shift per channel, then
    the Relu: the plane copy kernel at stride 1, else three in-place numpy passes over
    planes that stay in cache), in place of two numpy steps over the whole input.
    Other calls run the put-off steps first.
    DenseNet121's 62 normalizations after a Concat, and their Relus, took about 25 ms
    of its run in numpy."""

    source: int
    """The slot of the normalization's input."""
    steps: tuple[_Step, ...]
    """The put-off steps: the normalization, then the Relu if there is one."""
    scale: np.ndarray
    shift: np.ndarray
    """Per channel, shaped (C, 1, 1): inv = scale / sqrt(var + epsilon), shift - mean * inv."""
    relu: bool


@dataclass
class _Step:
    op: Operation
    inputs: list[int]
    """The slots of the values it reads (Executor.slots)."""
    result: int
    dtype: np.dtype | None
    """The result dtype of a numpy-evaluated op (None for ops run by kernels)."""
    unit: _Layer | _Norm | _Pool | None = None
    """What a kernel step runs (None for numpy-evaluated ops)."""
    run: Callable[..., None] | None = None
    """How a kernel step runs its call: Executor._run_rows, Executor._run_norm or
    Executor._run_conv."""
    calls: dict[tuple, _Call] = dataclasses.field(default_factory=dict)
    """A kernel step's calls by input shape, or by the input's and the residual
    addend's shapes where it has one (Executor._call_for)."""
    residual: _Residual | None = None
    """The residual Add an implicit call of this convolution takes in, if any."""
    prologue: _Prologue | None = None
    """The normalization (and Relu) put off to this convolution's step, if any."""
    deferred: bool = False
    """A numpy step put off to the convolution that reads its result (_Prologue), or
    to the pool that does (`regrouped`); a convolution the pool after it runs in bands
    (`band`)."""
    band: _Step | None = None
    """The convolution this pool step runs band by band with itself (implicit.PoolBands,
    Executor._run_bands), if any."""
    regrouped: _Step | None = None
    """The reshape put off to this pool step, its only reader (Executor._regrouped_of)."""
    concat: _Step | None = None
    """The Concat put off to this convolution or pool step, its one reader, which copies
    its parts into its planes (Executor._put_off_concats)."""
    frame: tuple[tuple[int, ...], tuple[int, int], tuple[int, int]] | None = None
    """A 1x1 convolution's frame (implicit.framed) on inputs of its spatial shape: the
    shape, the pads before and the planes' rows and columns (Executor._frame_layouts)."""
    in_place: bool = False
    """A numpy Relu that writes its result over its input's array, a Concat's result
    that only it reads (`Executor._relus_in_place`)."""
    views: dict[tuple[int, ...], Callable[[np.ndarray], np.ndarray]] | None = None
    """A numpy step whose result is a view of its input (reference.VIEW_OPS): the
    function giving it, by input shape (reference.view)."""
    last_view: tuple[np.ndarray, np.ndarray] | None = None
    """A view step's last input and the view it gave: the same array gets the same
    view object, so kernel calls that read it know it by identity (`_address`), and
    making a view costs a microsecond or two."""
    last_regrouped: tuple[np.ndarray, _Regrouped] | None = None
    """A put-off reshape's last source and its `_Regrouped`, kept for the same reason."""
    native: _NativeOp | None = None
    """The kernel that runs this numpy step's op instead, where it takes the operands
    (`_NativeOp`)."""
    combined: _Combined | None = None
    """The Add or Mul a matrix product's outward copies may make (`_Combined`)."""
    grouped: tuple[_GroupedHeads, ...] = ()
    """An attention's operands that repeat heads (`_GroupedHeads`)."""
    writes_over: bool = False
    """Whether its output array is one an earlier step's value had in the run
    (`Executor.colors`)."""

    def forget(self) -> None:
        """Drop the calls, views and plans made for the input shapes run so far, which
        hold kept arrays (Executor._forget_kept)."""
        self.calls.clear()
        self.last_view = self.last_regrouped = None
        for grouped in self.grouped:
            grouped.last = None
        if self.native is not None:
            self.native.plans.clear()
            self.native.last = None


TAKEN_IN = "(taken in)"
"""What runs a step another one takes in (`Executor.profile`)."""


@dataclass(frozen=True)
class StepTime:
    """One step of a profiled run (Executor.profile)."""

    name: str
    """The ONNX node's name (the op's location), else the op's."""
    op: str
    runs_as: str
    seconds: float
    """Per run, on average."""
    taken_in_by: str | None = None
    """The name of the step that takes this one in (whose time holds this one's):
    the convolution after a put-off normalization, the reader of a put-off Concat, the
    pool after a put-off reshape."""
    geometry: str = ""
    """What the step computes, briefly (`_geometry`)."""


@dataclass(frozen=True)
class Profile:
    steps: list[StepTime]
    """In the order the steps run."""
    seconds: float
    """A whole run's time, on average: the steps' and what surrounds them (taking the
    inputs, copying the outputs)."""


def _op_name(op: Operation) -> str:
    return op.location.desc.data if isinstance(op.location, NameLoc) else op.name


def _geometry(op: Operation) -> str:
    """What `op` computes, from the IR's shapes ("?" for a size given at run time): a
    convolution's channels, window, stride, groups and input image (`64->128 3x3/2 at
    56x56`), a matrix product's features (`768->3072`), a pool's window, stride and
    image; else its result's shape. A profile's steps are named by ONNX node, which
    says little of a layer (`n62`)."""
    def sizes(shape: Sequence[int]) -> str:
        return "x".join(str(size) if size >= 0 else "?" for size in shape)

    x = op.operands[0].type.get_shape() if op.operands and isinstance(op.operands[0].type, TensorType) else ()  # pyright: ignore
    if isinstance(op, (SparseConvOp, ConvOp, MaxPoolOp, AveragePoolOp)):
        window = tuple(op.w.type.get_shape()[2:]) if isinstance(op, (SparseConvOp, ConvOp)) else ints_of(op.kernel_shape)  # pyright: ignore
        stride = max(ints_of(op.strides) or (1,))
        where = f"{sizes(window)}{f'/{stride}' if stride > 1 else ''} at {sizes(x[2:])}"
        if isinstance(op, (MaxPoolOp, AveragePoolOp)):
            return where
        groups = op.group.value.data  # pyright: ignore
        return f"{sizes(x[1:2])}->{sizes(op.w.type.get_shape()[:1])} {where}{f' in {groups} groups' if groups > 1 else ''}"  # pyright: ignore
    if isinstance(op, SparseMatMulOp):
        return f"{sizes(x[-1:])}->{sizes(op.results[0].type.get_shape()[-1:])}"  # pyright: ignore
    return sizes(op.results[0].type.get_shape()) if op.results and isinstance(op.results[0].type, TensorType) else ""  # pyright: ignore


class _Regrouped:
    """A pool's input whose reshape was put off (`_Step.regrouped`): the reshape's
    source, with the shape the reshape would have given it, all that a pool's call
    needs of its input until it reads it (`images`)."""

    def __init__(self, source: np.ndarray, shape: tuple[int, ...]):
        self.source = source
        self.shape = shape
        self.dtype = source.dtype
        self.merges = source.ndim == 5 and len(shape) == 4 and source.shape[:1] == shape[:1] and source.shape[3:] == shape[2:]
        """Whether the reshape merges the source's two channel axes into C."""

    def images(self) -> np.ndarray:
        """The reshape's result as a pool reads it: the source as (N, C / g, g, H, W)
        when the reshape merges its two channel axes into C (a channel shuffle's, a
        channel grid the kernel reads in place), else reshaped (a view, or a copy)."""
        return self.source if self.merges else self.source.reshape(self.shape)


class _Concatenated:
    """A Concat's result put off to its readers (`_Step.concat`): its parts along the
    channels, and the shape the Concat would have given them, all that a convolution's
    or pool's call needs of its input until it copies each part into its planes."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.firsts = list(itertools.accumulate((part.shape[1] for part in parts[:-1]), initial=0))
        """Each part's first channel."""
        self.shape = (parts[0].shape[0], sum(part.shape[1] for part in parts), *parts[0].shape[2:])
        self.ndim = len(self.shape)
        self.dtype = parts[0].dtype


def _address(call: _Call, x: np.ndarray) -> int:
    """The address of x's first value, remembered by `call` with the array it last read:
    run after run that is mostly the same array (a kept output, a view step's kept
    view), and ndarray.ctypes.data costs over a microsecond."""
    read = call.read
    if read is None or read[0] is not x:
        read = call.read = (x, x.ctypes.data)
    return read[1]


def _channel_parts(x: np.ndarray | _Concatenated) -> list[tuple[int, np.ndarray]]:
    """x's arrays along the channels, each with its first channel: a put-off Concat's
    parts, or x itself."""
    return list(zip(x.firsts, x.parts)) if isinstance(x, _Concatenated) else [(0, x)]


_EXECUTORS: weakref.WeakSet[Executor] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child has only the thread that forked: a run another thread was in the
    middle of will never end there, so its executors start with their lock free."""
    for executor in _EXECUTORS:
        executor._running = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Executor:
    """A model compiled for this machine; `run` takes and returns arrays by name."""

    def __init__(self, module: ModuleOp, weights: WeightStore, threads: int | None = None, target: Target | None = None):
        self.module = module
        self.weights = weights
        self.function = reference.main_function(module)
        self.threads = max(1, threads or available_cpus())
        self.active_threads = self.threads
        """The threads calls are split across (`limit_threads`)."""
        self.target = target or Target.host()
        self.layers: dict[Operation, _Layer] = {}
        self.norms: dict[Operation, _Norm] = {}
        """Layer normalizations that run as generated kernels (the others run in numpy)."""
        self.pools: dict[Operation, _Pool] = {}
        """Max and average pools that run as generated kernels (the others run in numpy)."""
        self.natives: dict[Operation, _NativeOp] = {}
        """Attentions and rotary embeddings that run as generated kernels (the others
        run in numpy)."""
        self.constants: dict[SSAValue, np.ndarray] = {}
        """Weights that ops other than kernels read, decoded once here rather than per run."""
        self.steps: list[_Step] = []
        """The ops `run` executes, in order, with what it needs of each read up front."""
        self.slots: dict[SSAValue, int] = {argument: index for index, argument in enumerate(self.function.args)}
        """Each value's index in a run's list of arrays: xDSL values hash in Python, a
        cost on every read of a dictionary keyed by them."""
        for op in self.function.body.ops:
            if isinstance(op, KernelOp):
                self.layers[op] = layer = self._prepare(op)
                run = Executor._run_conv if isinstance(op, SparseConvOp) else Executor._run_rows
                residual = self._residual_of(op, layer.key) if isinstance(op, SparseConvOp) else None
                prologue = self._prologue_of(op) if isinstance(op, SparseConvOp) else None
                self.steps.append(_Step(op, self._slots(op.operands[:1]), self._slots(op.results)[0], None, layer, run, residual=residual, prologue=prologue))
            elif isinstance(op, StoredWeightOp):
                if any(not isinstance(use.operation, KernelOp) or use.index != 1 for use in op.result.uses):
                    self.constants[op.result] = dense_value(op, weights)
                    self._slots(op.results)
            elif isinstance(op, NORM_OPS) and (norm := self._prepare_norm(op)) is not None:
                self.norms[op] = norm
                self.steps.append(_Step(op, self._slots(op.operands[:1]), self._slots(op.results)[0], None, norm, Executor._run_norm))
            elif (native_key := native_key_of(op)) is not None:
                self.natives[op] = native = _NativeOp(native_key)
                dtype = numpy_dtype(op.results[0].type.element_type)  # pyright: ignore
                self.steps.append(_Step(op, self._slots(op.operands), self._slots(op.results)[0], dtype, native=native))
            elif isinstance(op, POOL_OPS) and (pool_key := pool_key_of(op)) is not None:
                readers = [use.operation for use in op.results[0].uses]
                lanes = bool(readers) and all(isinstance(reader, SparseConvOp) and reads_input_in_place(reader) for reader in readers)
                self.pools[op] = pool = _Pool(pool_key, lanes)
                self.steps.append(_Step(op, self._slots(op.operands[:1]), self._slots(op.results)[0], None, pool, Executor._run_pool, regrouped=self._regrouped_of(op)))
            elif not isinstance(op, func.ReturnOp):
                dtype = numpy_dtype(op.results[0].type.element_type)  # pyright: ignore
                views = {} if isinstance(op, reference.VIEW_OPS) else None
                self.steps.append(_Step(op, self._slots(op.operands), self._slots(op.results)[0], dtype, views=views))
        self.feeds = reference.FeedCheck.of(self.function)
        self.output_names = reference.output_names(self.function)
        self.returned = self._slots(self.function.body.block.last_op.operands)  # pyright: ignore
        self.initial: list[np.ndarray | None] = [None] * len(self.slots)
        """A run's arrays before it starts: the constants in their slots."""
        for value, array in self.constants.items():
            self.initial[self.slots[value]] = array
        self.variants: dict[str, object] = {}
        """Compiled kernels by symbol: those compiled up front (`_up_front_keys`), then
        variants (batched, chunk, implicit) and plane copy kernels compiled on first use."""
        self.compiled: list[CompiledKernels] = []
        """The engines of the compiled kernels: the functions live as long as they do."""
        self.concat_ends = concat_chain_ends(self.function)
        """The last Concat of each chain of Concats (`concat_chain_ends`), by member."""
        self.chained = set(self.concat_ends) | set(self.concat_ends.values())
        """Every Concat of a chain: its members view leading parts of one output."""
        self.framed_concats = self._frame_layouts()
        """Concats whose parts write their lanes at one row pitch (`_frame_layouts`)."""
        self._put_off_concats()
        self.concat_places = self._concat_places()
        """Convolutions and pools that write their output lanes into a Concat's lane
        buffer, by op: the Concat (its chain's last) and their first channel in it."""
        self.concat_layouts = self._concat_layouts()
        """Concats' lane buffer geometries where the IR's shapes fix them."""
        self._relus_in_place()
        self._group_attention_heads()
        self._combine_into_copies()
        self.kept = _Kept()
        """What runs make for the sets of input shapes met and keep for later runs on
        them (`_forget_kept` drops it)."""
        self.static_convs = {step.op: conv for step in self.steps if isinstance(step.op, SparseConvOp) and (conv := self._image_conv(step)) is not None}
        """The implicit form of each convolution that the IR's image shapes run
        implicit, whatever the batch, by op."""
        self.plane_floats = self._plane_floats()
        """The floats of the phase planes of each layout (`_plane_layout`) those
        convolutions read: the most any of them needs."""
        self.pool_bands = self._pool_bands()
        """The bands each pool runs the convolution before it in, by the pool's op."""
        banded = {step.band.op: self.pool_bands[step.op].key for step in self.steps if step.band is not None}
        self.implicit_keys = [banded.get(op, conv.key) for op, conv in self.static_convs.items()]
        """Their kernels, compiled up front with the others (another input shape compiles
        its own on first use)."""
        units = [*self.layers.values(), *self.norms.values(), *self.pools.values(), *self.natives.values()]
        if keys := self._up_front_keys():
            self._compile(keys)
        for unit in units:
            unit.kernel = self.variants.get(unit.key.symbol) if unit.key is not None else None
        self.pool = WorkerPool(self.threads - 1, spin=self.threads <= available_cpus()) if self.threads > 1 else None
        self._calls_blas = any(isinstance(step.op, BLAS_OPS) and step.dtype is not None for step in self.steps)  # numpy steps
        self.blas: ThreadpoolController | None = ThreadpoolController() if self.pool is None and self._calls_blas else None
        """Set, in a model with numpy steps that may call BLAS, once a call (a kernel's,
        a plane copy's or a pool's) takes the worker pool, and from the start on one
        thread: large BLAS calls then run on one BLAS thread (`_evaluate`). Until then
        BLAS keeps its threads: before its pools ran as kernels, ShuffleNet, whose only
        kernel runs alone, took 45 ms a run on two threads with the limit against 40 on
        one without. Now its pools take the pool, and without the limit two threads ran
        it in 27-28 ms against 24 on one; with it, 23-26. One thread is one thread for
        BLAS too: OpenBLAS took both cores for ResNet50's first convolution in a run on
        one (3.0 ms against 4.6), so one-thread figures were not one thread's."""
        self._running = threading.Lock()
        """Held through a run: runs share the kept buffers, so runs from several Python
        threads take turns."""
        self._epoch = 0
        """Bumped at each run and whenever a call writes over the array of a value made
        earlier in the run (`_Call.addend_in_place`): it tells what phase planes were
        filled from then from what they hold now (`_planes_hold`)."""
        self.shape_functions = self._shape_functions()
        """The result slots of the numpy steps whose values follow from the inputs'
        shapes alone (`_shape_functions`)."""
        made = set(self.shape_functions)
        self.steps_left = [(index, step) for index, step in enumerate(self.steps) if step.dtype is None or step.result not in made]
        """The steps runs on shapes met before go through (`_Known`), with their indices:
        all but those that make the shape functions' values, the same for every set of
        shapes."""
        read = {slot for _index, step in self.steps_left for slot in self._reads(step)}
        self.shape_values = [slot for slot in self.shape_functions if slot in read or slot in self.returned]
        """Those that runs on shapes met before read (`_Known`): what the other steps
        read, or returned; the rest only led to them. The LLaMA at 2048 tokens keeps
        156 of its 1,030 values, 5.0 MB a set of shapes against 11.9 (its causal mask
        passes through several arrays of 2048 x 2048)."""
        self.colors = self._output_colors()
        """The kept output array each step that may share one takes, by op: one array
        per color and shape (runtime/liveness.py)."""
        _EXECUTORS.add(self)

    def _output_colors(self) -> dict[Operation, int]:
        """The colors of the steps whose outputs may share arrays (`_shares_output`),
        by op, from where each step's value is needed (liveness.output_colors); marks
        the steps that write over an earlier value's array (`_Step.writes_over`)."""
        from_shapes = set(self.shape_functions)
        uses = []
        for step in self.steps:
            reads, aliases = self._reads(step), []
            if step.residual is not None:
                aliases += step.residual.absorbed
            if step.combined is not None:
                aliases.append(step.combined.absorbed)
            # A shape function's value is copied at the end of the first run on its
            # shapes (`_keep_shape_functions`): it keeps an array of its own.
            fresh = self._shares_output(step) and step.result not in from_shapes
            if not fresh:  # its result may be an operand's array, or a view of one
                aliases += self._may_return(step)
            uses.append(StepUse(step.result, tuple(reads), tuple(aliases), step.deferred, fresh, step.op.results[0].type))
        colors, reusing = output_colors(uses, self.returned)
        for index in reusing:
            self.steps[index].writes_over = True
        return {self.steps[index].op: color for index, color in colors.items()}

    def _may_return(self, step: _Step) -> list[int]:
        """The slots of the values whose arrays the result of `step`, which has no
        array of its own to share (`_shares_output`), may be or view: a numpy step's
        operands of its result's type; a convolution's or pool's output lies in its own
        lanes, a Concat's lanes or bands, or for a convolution that takes in a residual
        Add that dies there, in the addend's lanes."""
        if step.dtype is not None:
            return self._same_type_operands(step.op)
        residual = step.residual
        return [residual.addend] if residual is not None and residual.dies else []

    def _same_type_operands(self, op: Operation) -> list[int]:
        """The slots of `op`'s operands of its result's element type, the only ones its
        result may be a view of (a Shape's integers are no view of the floats it reads,
        which would otherwise be needed as long as the shape: to the run's end, as a
        shape function's value)."""
        result = getattr(op.results[0].type, "element_type", None)
        return [self.slots[value] for value in op.operands if result is None or getattr(value.type, "element_type", None) in (None, result)]

    def _shares_output(self, step: _Step) -> bool:
        """Whether `step`'s output is an array of its own, kept per shape, whatever runs
        it: a matrix product's or normalization's by their kernels, a convolution's or
        pool's lanes (`_kept_lanes`) or rows but where they lie in a Concat's lanes, in
        bands, or in a residual addend's lanes, an attention's or rotation's, a float32
        Add, Sub, Mul, Div, Where or Relu's (`_into_kept`). Other steps' results may be
        (views of) their operands' arrays."""
        if step.dtype is None:
            if isinstance(step.op, SparseConvOp):
                return step.op not in self.concat_places and not step.deferred and (step.residual is None or not step.residual.dies)
            if isinstance(step.unit, _Pool):
                return step.op not in self.concat_places
            return isinstance(step.unit, _Norm) or isinstance(step.op, SparseMatMulOp)
        if isinstance(step.op, ReluOp):
            return not step.in_place
        return step.native is not None or isinstance(step.op, AddOp | SubOp | MulOp | DivOp | nn_index.WhereOp)

    def _kept_output(self, op: Operation, shape: tuple[int, ...]) -> np.ndarray:
        """The kept output array of `op` for `shape`: its color's (`colors`) where it
        shares one, else its own."""
        color = self.colors.get(op)
        return _kept(self.kept.buffers, (op, shape) if color is None else ("color", color, shape), shape)

    def _kept_lanes(self, op: Operation, shape: tuple[int, int, int]) -> np.ndarray:
        """The kept output lanes of `op` for `shape` (images, channels + 1, lanes),
        zeroed: each image's last plane stays zero, for readers in place and calls
        adding into them (`_Kept.zero_planes`). Its color's where it shares one, with other
        lanes only, so that no other kind of output writes over a zero plane."""
        color = self.colors.get(op)
        lanes = _kept(self.kept.buffers, (op, shape) if color is None else ("color", color, "lanes", shape), shape, np.zeros)
        self.kept.zero_planes[lanes.ctypes.data] = lanes
        return lanes

    def _prepare(self, op: KernelOp) -> _Layer:
        key = kernel_key_of(op, self.target)
        weight = op.w.owner
        assert isinstance(weight, StoredWeightOp)
        transposed = isinstance(op, SparseMatMulOp) and bool(op.transposed.value.data)
        operands = prepare_operands(weight, self.weights, key, transposed)
        bias = np.zeros(0, np.float32)
        if op.b is not None:
            owner = op.b.owner
            if not isinstance(owner, StoredWeightOp):
                raise SparsecError(f"'{op.name}': the bias must be a weight")
            bias = np.ascontiguousarray(dense_value(owner, self.weights), dtype=np.float32).reshape(-1)
        return _Layer(key, operands, bias, weight, transposed)

    def _prepare_norm(self, op: LayerNormOp | RMSNormOp | SoftmaxOp) -> _Norm | None:
        """The kernel form of `op` (`norm_key_of`, `runs_rows_softmax`), with its
        weights decoded; or None."""
        key = norm_key_of(op)
        if key is None and not runs_rows_softmax(op):
            return None
        if isinstance(op, SoftmaxOp):  # no parameters
            nothing = np.zeros(1, np.float32)
            return _Norm(key, nothing, nothing, nothing)
        parameters = [self.constants[p] for p in _norm_parameters(op)]
        parameters += [np.zeros(1, np.float32)] * (2 - len(parameters))  # no bias: zeros
        scale, bias = (np.ascontiguousarray(np.broadcast_to(value.reshape(-1), (key.cols,)), np.float32) for value in parameters)
        return _Norm(key, scale, bias, np.array([op.epsilon.value.data], np.float32))

    def _residual_of(self, op: SparseConvOp, key: KernelKey) -> _Residual | None:
        """`residual_add` of `op`, by slots."""
        residual = residual_add(op, key)
        if residual is None:
            return None
        add = residual.absorbed[0].owner
        kernel_ops = self.layers.keys() | self.norms.keys() | self.pools.keys()
        readers = [use.operation for use in residual.addend.uses if use.operation is not add]
        dies = all(reader in kernel_ops and reader.is_before_in_block(op) for reader in readers)
        return _Residual(self.slots[residual.addend], tuple(self._slots(residual.absorbed)), residual.relu, dies)

    def _prologue_of(self, op: SparseConvOp) -> _Prologue | None:
        """The normalization (and Relu) before convolution `op` that only `op` reads,
        with constant parameters (`prologue_ops`), as a _Prologue whose steps are
        marked put off."""
        ops = prologue_ops(op)
        if ops is None:
            return None
        norm, relu = ops
        steps = tuple(step for step in self.steps if step.op in (norm, relu))
        if len(steps) != (2 if relu else 1):
            return None
        parameters = [self.constants[value].reshape(-1) for value in (norm.scale, norm.b, norm.mean, norm.var)]
        inv, shift = reference.batch_norm_affine(norm, *parameters)
        for step in steps:
            step.deferred = True
        return _Prologue(self.slots[norm.x], steps, inv.reshape(-1, 1, 1), shift.reshape(-1, 1, 1), relu is not None)

    def _put_off_concats(self) -> None:
        """Put each float32 Concat along the channels whose one reader is a convolution
        or pool step, reading it as its input, off to that reader: it copies its input
        into planes anyway, so it copies the parts there itself (`_Concatenated`; a call
        that cannot, such as an im2col convolution, makes the Concat's result first).
        SqueezeNet's Concats took 0.67 of its 5.6 ms a run. With several readers each
        would copy every part, a call each: Inception v2's Concats of four branches, each
        read by four convolutions or pools, saved their 0.71 ms a run and cost 0.71 in
        the readers' copies. Chains of Concats, which share one output, and returned
        results stay."""
        readers = {step.op: step for step in self.steps if isinstance(step.unit, _Pool) or (isinstance(step.op, SparseConvOp) and isinstance(step.unit, _Layer))}
        returned = set(self.returned)
        for step in self.steps:
            op = step.op
            if not isinstance(op, ConcatOp) or step.dtype != np.float32 or op in self.chained or op in self.framed_concats or step.result in returned:
                continue
            rank = op.output.type.get_num_dims()  # pyright: ignore
            uses = list(op.output.uses)
            if rank < 3 or op.axis.value.data % rank != 1 or len(uses) != 1 or uses[0].index != 0:
                continue
            taker = readers.get(uses[0].operation)
            if taker is not None and taker.prologue is None and taker.regrouped is None:
                step.deferred = True
                taker.concat = step

    def _frame_layouts(self) -> set[ConcatOp]:
        """Frame 1x1 convolutions (implicit.framed) so that the Concats of a 1x1
        convolution and its padded 3x3 sibling on one input, read by a 1x1 convolution
        (SqueezeNet's fire modules: the expands, then the next squeeze), copy nothing:
        the 1x1 part reads the sibling's planes, so its output lanes lie at the
        sibling's row pitch and both write the Concat's lane buffer; the reader reads
        that in place at the pitch, and a 1x1 convolution of its output does the same
        (the next module's 1x1 expand). Before, the Concat was put off to the reader,
        which copied both parts into its planes: 0.25-0.35 ms of SqueezeNet's 9 ms run
        for the first one. A frame costs each call it lays out the lanes past its
        output columns, so it is taken only where those cost less than the copies it
        saves (`_pays`). Returns the Concats so laid out: they are
        made, not put off."""
        steps = {step.op: step for step in self.steps}
        pitches: dict[SSAValue, int] = {}
        """Values laid out at a row pitch (their lanes a row): framed calls' outputs,
        framed Concats' results."""
        framed_concats: set[ConcatOp] = set()
        for step in self.steps:
            if self._frameable(step) and (pitch := pitches.get(step.op.x)) is not None:  # pyright: ignore
                channels, height, width = step.op.x.type.get_shape()[1:]  # pyright: ignore
                if _pays(_extra_multiply_adds(step, height, width, pitch), channels * height * width):
                    step.frame = ((height, width), (0, 0), (height, pitch))
                    pitches[step.op.results[0]] = pitch
            elif isinstance(step.op, ConcatOp) and (framing := self._concat_frames(step, steps)) is not None:
                pitch, frames = framing
                for part, frame in frames:
                    part.frame = frame
                framed_concats.add(step.op)
                pitches[step.op.results[0]] = pitch
        return framed_concats

    def _frameable(self, step: _Step) -> bool:
        """Whether `step` is a 2-D 1x1 convolution at stride 1 without pads, run
        implicit on the input shape the IR fixes, that reads nothing put off to it and
        takes in no residual Add: one that a frame (implicit.framed) may lay out."""
        op = step.op
        if not isinstance(op, SparseConvOp) or not reads_input_in_place(op) or op.x.type.get_num_dims() != 4:  # pyright: ignore
            return False
        plain = step.residual is None and step.prologue is None and step.concat is None and step.regrouped is None
        return plain and self._image_conv(step) is not None

    def _concat_frames(self, step: _Step, steps: dict[Operation, _Step]) -> tuple[int, list[tuple[_Step, tuple]]] | None:
        """The row pitch Concat `step` can be laid out at (`_frame_layouts`) and the
        frames of its 1x1 parts that lay them out so, or None. Its parts must be
        convolutions run implicit and used only here: at least one padded (a stride-1
        convolution with pads), the others 1x1 convolutions framed at its pitch already
        or reading a padded one's input. Its one reader must be a 1x1 convolution
        (`_frameable`), and the frames of the reader and the parts must cost less than
        the reader's copies of the parts."""
        op = step.op
        if step.dtype != np.float32 or op in self.chained or step.result in self.returned or op.output.type.get_num_dims() != 4 or op.axis.value.data % 4 != 1:  # pyright: ignore
            return None
        uses = list(op.output.uses)
        reader = steps.get(uses[0].operation) if len(uses) == 1 else None
        if reader is None or reader.op.operands[0] is not op.output or not self._frameable(reader) or len(set(op.operands)) != len(op.operands):
            return None
        parts = [steps.get(operand.owner) for operand in op.operands]  # pyright: ignore
        if any(part is None or not isinstance(part.op, SparseConvOp) or part.residual is not None or not part.op.results[0].has_one_use() for part in parts):
            return None
        convs = [(part, self._image_conv(part)) for part in parts]  # pyright: ignore
        padded = [(part, conv) for part, conv in convs if conv is not None and conv.before != (0, 0)]
        channels, height, width = op.output.type.get_shape()[1:]  # pyright: ignore
        if not padded or any(conv is None for _part, conv in convs):
            return None
        sibling = padded[0][1]
        if any(conv.strides != (1, 1) or (conv.phase, conv.before, conv.out) != (sibling.phase, sibling.before, (height, width)) for _part, conv in padded):
            return None
        frames = []
        for part, conv in convs:
            if conv.before != (0, 0):  # pyright: ignore
                continue
            siblings = [other for other, _conv in padded if other.op.x is part.op.x and other.prologue is None]  # pyright: ignore
            if part.frame is not None and part.frame[2] == (height, sibling.phase[1]):
                frames.append((part, part.frame))
            elif self._frameable(part) and siblings and framed(conv, sibling.before, sibling.phase).read_offset + sibling.lanes <= sibling.plane_floats:  # pyright: ignore
                frames.append((part, ((height, width), sibling.before, sibling.phase)))
            else:
                return None
        pitch = sibling.phase[1]
        extra = sum(_extra_multiply_adds(framed_step, height, width, pitch) for framed_step in [reader, *(part for part, _frame in frames if part.frame is None)])
        return (pitch, frames) if _pays(extra, channels * height * width) else None

    def _concat_places(self) -> dict[Operation, tuple[ConcatOp, int]]:
        """The convolutions and pools run as kernels whose one use is a float32 Concat
        of images along the channels that is made (not put off), with where their
        channels go in it: the Concat's, or its chain's last one's
        (`concat_chain_ends`). Such a convolution run implicit, or pool, writes its
        output lanes into the Concat's lane buffer (`_concat_lanes`), and the Concat
        copies nothing of it. DenseNet121's Concats copied each layer's 32 new channels
        out of its output lanes: 58 copies, 1.4 ms of a 25 ms run on one thread.

        A pool read by other ops too goes into a chain's buffer all the same (DenseNet's
        block inputs): nothing writes over a chain's output, while a Relu in place or a
        residual Add into its lanes may write over another Concat's."""
        places: dict[Operation, tuple[ConcatOp, int]] = {}
        for step in self.steps:
            op = step.op
            if not isinstance(op, ConcatOp) or step.dtype != np.float32 or step.deferred or op.output.type.get_num_dims() != 4 or op.axis.value.data % 4 != 1:  # pyright: ignore
                continue
            channels = [operand.type.get_shape()[1] for operand in op.operands]  # pyright: ignore
            if min(channels) < 1:
                continue
            end = self.concat_ends.get(op, op)
            for operand, first in zip(op.operands, itertools.accumulate(channels[:-1], initial=0)):
                alone = operand.has_one_use()
                shared_pool = operand.owner in self.pools and end in self.chained and list(op.operands).count(operand) == 1
                if (alone and (isinstance(operand.owner, SparseConvOp) or operand.owner in self.pools)) or shared_pool:
                    places[operand.owner] = (end, first)
        return places

    def _concat_layouts(self) -> dict[ConcatOp, tuple[int, int, int, int] | None]:
        """The geometry of the lane buffer (`_concat_lanes`) of each Concat that
        convolutions write into: that of the output lanes of the first of them that
        runs implicit on the images the IR's shapes give (any number of them), or None
        where those shapes do not fix it. A pool, which writes rows at any pitch, may
        run first and make the buffer (DenseNet's blocks start with one)."""
        layouts: dict[ConcatOp, tuple[int, int, int, int] | None] = {}
        for step in self.steps:
            if not isinstance(step.op, SparseConvOp) or step.op not in self.concat_places:
                continue
            end = self.concat_places[step.op][0]
            conv = self._image_conv(step)
            if layouts.get(end) is None:
                layouts[end] = None if conv is None else conv.lane_layout
        return layouts

    def _plane_floats(self) -> dict[tuple, int]:
        """`plane_floats`: one array of phase planes per layout, not per channel count
        too, sized for the most channels of the convolutions that fill them (not those
        that may read their input in place). DenseNet121's normalizations before its
        1x1 convolutions fill planes of one layout for each of the widths its Concats
        grow through: 73 arrays, 48 MB whatever the batch, against 16 and 10 MB by
        layout, and its run 1.2x as fast on one thread (33.1 -> 27.6 ms; two, 1.09x),
        the planes staying in the caches from one convolution to the next."""
        floats: dict[tuple, int] = {}
        prologues = {step.op for step in self.steps if step.prologue is not None}
        for op, conv in self.static_convs.items():
            if reads_input_in_place(op) and op not in prologues:  # it mostly does: planes of its own where not
                continue
            layout = _plane_layout(conv, one_image(op))  # pyright: ignore
            floats[layout] = max(floats.get(layout, 0), conv.size)
        return floats

    def _pool_bands(self) -> dict[Operation, PoolBands]:
        """The pools that run the convolution before them in bands (implicit.PoolBands),
        with their bands, by the pool's op: a 2-D max or average pool whose input only
        comes from an implicit convolution of the IR's shapes that writes its own lanes
        (no residual Add, Concat or frame) and that nothing else reads, where the rows
        the bands compute twice cost less than the memory traffic they save
        (`_pays`). The convolution's step is put off to the
        pool's (`_run_bands`)."""
        steps = {step.op: step for step in self.steps}
        bands: dict[Operation, PoolBands] = {}
        for step in self.steps:
            if not isinstance(step.unit, _Pool) or step.unit.key.whole or step.unit.key.kind == "depthwise" or step.regrouped or step.concat:
                continue
            source = step.op.operands[0]
            conv_step = steps.get(source.owner)  # pyright: ignore
            if conv_step is None or conv_step.op not in self.static_convs or len(list(source.uses)) != 1:
                continue
            if conv_step.residual or conv_step.frame or conv_step.concat or conv_step.op in self.concat_places:
                continue
            conv = self.static_convs[conv_step.op]
            plan = pool_bands(conv, step.op)
            if plan is None or not _pays(_kept_per_lane(conv_step) * plan.extra_lanes(conv), conv.key.rows * conv.lanes):
                continue
            bands[step.op] = plan
            step.band, step.run, conv_step.deferred = conv_step, Executor._run_bands, True
        return bands

    def _shape_functions(self) -> list[int]:
        """The result slots of the numpy steps whose values follow from the inputs'
        shapes (and the weights) alone: an exported transformer computes its reshape
        targets, position ids, rotary tables and causal mask from `nn.shape` on every
        run, hundreds of steps of a few microseconds (a 30-layer LLaMA: 1,300 of its
        3,000 steps). A Shape's value follows from its operand's shape, which follows
        from the inputs' shapes unless an op sized it by values that do not (a Slice to
        bounds read from the inputs' values, `ValueShapedOp`); any other op's from its
        operands'. Values a kernel step reads are left out (a kernel may add into its
        addend's array), and so are those of steps that put their work off or share
        an output (Concat chains)."""
        arguments = set(range(len(self.function.args)))
        shaped = {self.slots[value] for value in self.constants} | arguments
        """Slots whose shapes follow from the inputs' shapes."""
        valued = {self.slots[value] for value in self.constants}
        """Slots whose values do."""
        cached: list[int] = []
        kernel_read = {slot for step in self.steps if step.dtype is None for slot in self._reads(step)}
        for step in self.steps:
            op = step.op
            by_values = op.operands if isinstance(op, nn_index.RangeOp) else op.operands[1:] if isinstance(op, nn_index.ValueShapedOp) else ()
            slots = [self.slots.get(v, -1) for v in op.operands]  # -1: a weight only kernels read, no slot
            if all(s in shaped or s < 0 for s in slots) and all(self.slots[v] in valued for v in by_values):
                shaped.add(step.result)
            numpy = step.dtype is not None and not step.deferred and op not in self.chained
            if numpy and (isinstance(op, nn_index.ShapeOp) and step.inputs[0] in shaped or all(slot in valued for slot in step.inputs)):
                valued.add(step.result)
                if step.result not in kernel_read:
                    cached.append(step.result)
        return cached

    @staticmethod
    def _reads(step: _Step) -> list[int]:
        """The slots a step reads: its inputs, and a residual's addend (whose array a
        kernel may add into), a put-off prologue's source, Concat's parts or reshape's
        input, the other operand of the op a product's copies make, and the heads and
        shapes of an attention's repeated operands."""
        reads = list(step.inputs)
        reads += [step.residual.addend] if step.residual is not None else []
        reads += [step.prologue.source] if step.prologue is not None else []
        reads += [*step.concat.inputs] if step.concat is not None else []
        reads += [*step.regrouped.inputs] if step.regrouped is not None else []
        reads += [step.combined.other] if step.combined is not None else []
        for grouped in step.grouped:
            reads += [grouped.source, grouped.expanded, grouped.reshaped]
        return reads

    def _relus_in_place(self) -> None:
        """Mark the float32 Relus of a Concat's result that only they read to write
        over it (`_Step.in_place`): the Concat's output is the executor's own, and the
        Relu's result keeps its layout, lanes a 1x1 convolution reads in place or adds
        into (ShuffleNet's units that halve the image end in a Concat and a Relu). Not
        a chain's Concats: their members view leading parts of one output."""
        made = {step.op for step in self.steps if isinstance(step.op, ConcatOp) and step.dtype == np.float32 and not step.deferred and step.op not in self.chained}
        for step in self.steps:
            source = step.op.operands[0] if isinstance(step.op, ReluOp) else None
            step.in_place = step.dtype == np.float32 and source is not None and source.owner in made and source.has_one_use()

    def _combine_into_copies(self) -> None:
        """Mark each float32 matrix product whose result only an elementwise Add or Mul
        reads, its other operand made before the product, to have its outward copies
        make that op (`_Step.combined`): a LLaMA's residual Adds after the attention's
        and the MLP's output projections, and its MLP's gate Mul after the up
        projection, each a pass over a few hundred kilobytes that had left the caches."""
        made = {step.op: index for index, step in enumerate(self.steps)}
        for index, step in enumerate(self.steps):
            result = step.op.results[0]
            if not isinstance(step.op, SparseMatMulOp) or result.type.element_type != f32 or not result.has_one_use():  # pyright: ignore
                continue
            reader = result.get_user_of_unique_use()
            combine = COMBINED_OPS.get(type(reader))
            if combine is None or reader.results[0].type != result.type:  # pyright: ignore
                continue
            first, second = reader.operands  # pyright: ignore
            other = second if first is result else first
            maker = made.get(other.owner, -1)
            if other is not result and maker < index and (maker < 0 or not self.steps[maker].deferred):  # in its slot before the product
                step.combined = _Combined(combine, KEPT_UFUNCS[type(reader)], self.slots[other], self.slots[reader.results[0]])  # pyright: ignore

    def _group_attention_heads(self) -> None:
        """Put off the steps that repeat each key and value head of the attentions that
        run as kernels (`_GroupedHeads`): a LLaMA's 3 key heads made 9 by an Expand
        that copied them (61 Expands, 3.6 ms a run at 128 tokens)."""
        by_op = {step.op: step for step in self.steps}
        for step in self.steps:
            if not isinstance(step.op, AttentionOp) or step.native is None:
                continue
            grouped = []
            for operand, transposed in ((step.op.kt, True), (step.op.v, False)):
                found = repeated_heads(operand, transposed)
                if found is not None and all(op in by_op for op in found[3]):
                    source, expanded, reshaped, ops = found
                    steps = tuple(by_op[op] for op in ops)
                    for put_off in steps:
                        put_off.deferred = True
                    grouped.append(_GroupedHeads(self.slots[operand], self.slots[source], self.slots[expanded], self.slots[reshaped], transposed, steps))
            step.grouped = tuple(grouped)

    def _concat_lanes(self, op: Operation, images: int, geometry: tuple[int, int, int, int], pitched: bool = False) -> tuple[np.ndarray, int] | None:
        """The output lanes of convolution or pool `op` (on `images` images, its lanes
        of `geometry`: lanes a channel, lanes a row, rows and columns) in the lane
        buffer of the Concat it writes into (`concat_places`), and their lanes a row;
        or None. The buffer holds the Concat's channels laid out as its convolutions'
        output lanes (`concat_layouts`; else as the first one's call), then a zero plane,
        its images back to back (output lanes of their own, where the Concat is no
        chain's). A call of another geometry writes its own output, but one that writes
        its rows at any pitch (`pitched`: a pool's) only needs the same rows and
        columns."""
        end, first = self.concat_places[op]
        kept = self.kept.concat_lanes.get((end, images))
        if kept is None:
            layout = self.concat_layouts.get(end, geometry)
            if layout is None:  # the convolutions' layout is not known yet: theirs to make
                if pitched:
                    return None
                layout = geometry
            channels = end.output.type.get_shape()[1]  # pyright: ignore
            lanes = on_cache_line(np.zeros, (images, channels + 1, layout[0]))
            kept = self.kept.concat_lanes[(end, images)] = (lanes, layout)
            if end not in self.chained:
                self.kept.zero_planes[lanes.ctypes.data] = lanes
        buffer, held = kept
        if held != geometry and not (pitched and held[2:] == geometry[2:]):
            return None
        return buffer[:, first : first + op.results[0].type.get_shape()[1]], held[1]  # pyright: ignore

    def _regrouped(self, step: _Step, source: np.ndarray) -> _Regrouped:
        """Put-off reshape `step`'s result on `source`, its shape for that of `source`
        decoded from the IR once (ShuffleNet decoded its sixteen reshapes' shapes on
        every run: 0.1 ms)."""
        if step.last_regrouped is not None and step.last_regrouped[0] is source:
            return step.last_regrouped[1]
        shape = self.kept.reshapes.get((step.op, source.shape))
        if shape is None:
            shape = self.kept.reshapes[(step.op, source.shape)] = reference.reshaped(step.op, source.shape)  # pyright: ignore
        regrouped = _Regrouped(source, shape)
        step.last_regrouped = (source, regrouped)
        return regrouped

    def _regrouped_of(self, op: MaxPoolOp | AveragePoolOp | GlobalAveragePoolOp | ConvOp) -> _Step | None:
        """The numpy reshape step whose result only pool `op` reads, marked put off: the
        pool reads the reshape's source in place where it can (`_Regrouped`). A reshape
        of a strided view copies: ShuffleNet's channel shuffles (a transpose between two
        reshapes, each before a depthwise convolution) copied 16 arrays of up to 1.4 MB
        a run, 1.5 of its 9 ms (most of it page faults on freshly allocated arrays)."""
        producer = op.operands[0].owner
        if not isinstance(producer, ReshapeOp) or not producer.output.has_one_use():
            return None
        step = next((step for step in self.steps if step.op is producer), None)
        if step is None or step.dtype is None:
            return None
        step.deferred = True
        return step

    @staticmethod
    def _implicit_for(step: _Step, shape: tuple[int, ...], residual: bool = True) -> ImplicitConv | None:
        """The implicit form of convolution step `step` on inputs of `shape` where it
        applies and pays, with the accumulate variant when it takes in a residual Add
        (and `residual`)."""
        conv = implicit_conv(step.op, step.unit.key, shape)  # pyright: ignore
        if conv is not None and step.frame is not None and step.frame[0] == shape[2:]:
            conv = framed(conv, *step.frame[1:])
        if conv is None or not step.unit.runs_implicit(conv.lanes):  # pyright: ignore
            return None
        return conv if step.residual is None or not residual else accumulating(conv, step.residual.relu)

    @staticmethod
    def _image_conv(step: _Step) -> ImplicitConv | None:
        """The implicit form of convolution step `step` on one image (implicit.one_image)."""
        shape = one_image(step.op)  # pyright: ignore
        return Executor._implicit_for(step, shape) if shape is not None else None

    def _slots(self, values) -> list[int]:
        """The slots of `values`, new ones numbered on."""
        return [self.slots.setdefault(value, len(self.slots)) for value in values]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def limit_threads(self, threads: int) -> None:
        """Run the next calls on at most `threads` of the executor's threads (at least
        one). The scaling benchmark times one executor at each count: two executors of
        the same weights lay their operands out at different addresses, which alone
        moves a kernel by 1% to 10%."""
        self.active_threads = max(1, min(threads, self.threads))
        for step in self.steps:
            step.calls.clear()

    def _call_for(self, step: _Step, x: np.ndarray, addend: np.ndarray | None, shapes: tuple) -> _Call:
        """The call of kernel step `step` on inputs shaped as `x` (with its residual
        `addend`, if it has one), made and kept under `shapes` (`_Step.calls`)."""
        unit = step.unit
        if step.band is not None:
            call = self._banded_call(step, x)
        elif isinstance(unit, _Pool):
            call = self._pool_call(step, unit, x)
        elif isinstance(unit, _Norm):
            key, kernel = (unit.key, unit.kernel) if unit.key is not None else self._norm_kernel(step.op, x)
            output = self._output(step, x.size // key.cols, key.cols)
            shares = self._shares_for(len(output), x.size * NORM_WORK_PER_VALUE, _WORK_PER_THREAD)
            call = self._make_call(kernel, (*unit.arguments, len(output)), shares, output, output.reshape(x.shape))
        elif isinstance(step.op, SparseConvOp):
            assert isinstance(unit, _Layer)
            call = self._implicit_call(step, unit, x, addend)
            if call is not None:
                step.calls[shapes] = call
                return call
            windows = self._windows(step.op, self._materialized(step, x), unit.key)
            groups = step.op.group.value.data
            output = self._output(step, windows.size // (groups * unit.key.cols), unit.key.rows)
            spatial = windows.shape[1 : x.ndim - 1]
            result = np.moveaxis(output.reshape(x.shape[0], *spatial, unit.key.rows), -1, 1)
            call = self._layer_call(unit, output, result) if groups == 1 else self._grouped_call(unit, groups, output, result)
            call.result_address = None  # channels first: the next kernel step copies it into rows
        else:
            assert isinstance(unit, _Layer)
            output = self._output(step, x.size // unit.key.cols, unit.key.rows)
            call = self._layer_call(unit, output, output.reshape(*x.shape[:-1], unit.key.rows))
        step.calls[shapes] = call
        return call

    def _pool_call(self, step: _Step, pool: _Pool, x: np.ndarray) -> _Call:
        """The call of a pool on images shaped as `x`, which it reads in place, its pads
        virtual (runtime/codegen/pool.py): the geometry but for the images' strides, set
        per run (`_pool_images`); a row of the pad value; the average's divisors, per
        output position."""
        op = step.op
        if isinstance(op, ConvOp):
            weights = np.ascontiguousarray(dense_value(op.w.owner, self.weights), np.float32)  # pyright: ignore
            (kh, kw), (sh, _sw), (dh, dw), pads = weights.shape[2:], *op.geometry(x.shape, weights.shape[2:])
            extra = (0, 0)
        elif pool.key.whole:
            (kh, kw), sh, (dh, dw), pads, extra = x.shape[2:], 1, (1, 1), (0, 0, 0, 0), (0, 0)
        else:
            (kh, kw), (sh, _sw), (dh, dw), pads, extra = reference._pool_geometry(op, x)  # pyright: ignore
        images, channels, height, width = x.shape
        top, left, bottom, right = pads
        hp, wp = height + top + bottom + extra[0], width + left + right + extra[1]
        ho, wo = (hp - (kh - 1) * dh - 1) // sh + 1, (wp - (kw - 1) * dw - 1) // pool.key.stride + 1
        planes = images * channels
        pad_row = _kept(self.kept.scratch, ("pad row", pool.key.kind, width), (width,), lambda size, dtype: np.full(size, PAD_VALUES[pool.key.kind], dtype))
        output, pitch = None, wo
        if op in self.concat_places and (placed := self._concat_lanes(op, images, (aligned_plane(ho * wo), wo, ho, wo), pitched=True)) is not None:
            output, pitch = placed
        elif pool.lanes:
            output = self._kept_lanes(op, (images, channels + 1, aligned_plane(ho * wo)))
        if output is not None:  # lanes: (images, channels or more, lanes)
            plane, image_floats = output.strides[1] // 4, output.strides[0] // 4
            result = _lane_view(output, channels, ho, pitch, wo)
        else:
            plane, image_floats = ho * wo, channels * ho * wo
            output = self._kept_output(op, (planes * plane,))
            result = output.reshape(images, channels, ho, wo)
        lane_masks = pool.key.lane_masks(width, wo, left)
        # Rows narrower than a vector go flat (wider ones fill their vectors but the last,
        # and a max pool's rows share each load among the taps: 28 x 28 ran 1.1x slower).
        flat = pool.key.flat and wo == width == pitch and wo < 16  # and the images' rows back to back, per run
        flat_masks = _int64_words(pool.key.flat_masks((height, width), (ho, wo), (top, left))) if flat else []
        words = [0, 0, height, width, top, left, ho, wo, sh, channels, plane, image_floats, 0, 0, 1, 0, pitch]
        words.append(len(words) + 1 + len(lane_masks) if flat else 0)  # where the flat run's masks start
        geometry = np.array(words + lane_masks + flat_masks, np.int64)
        per_tap, bias = np.zeros(0, np.float32), np.zeros(0, np.float32)
        if pool.key.whole and pool.key.kind == "avg":  # the divisor
            per_tap = np.array([height * width], np.float32)
        elif pool.key.kind == "avg":  # the divisors
            per_tap = np.concatenate([reference.pool_counts(op, x).reshape(-1), np.ones(16)]).astype(np.float32)  # pyright: ignore
        elif isinstance(op, ConvOp):
            per_tap = weights.reshape(-1)  # pyright: ignore
            if op.b is not None:
                bias = np.ascontiguousarray(dense_value(op.b.owner, self.weights), np.float32).reshape(-1)  # pyright: ignore
        arguments = (geometry.ctypes.data, per_tap.ctypes.data, pad_row.ctypes.data, bias.ctypes.data, 0)
        shares = self._pool_shares(planes, ho * wo * kh * kw)
        call = self._make_call(pool.kernel, arguments, shares, output, result)
        call.pool_geometry = geometry
        call.operand_arrays = (geometry, per_tap, bias, pad_row)
        call.result_address = None
        return call

    def _run_pool(self, step: _Step, call: _Call, x: np.ndarray | _Regrouped | _Concatenated, x_address: int | None) -> None:
        """A pool's call on x, read in place: its images, a put-off reshape's result (a
        channel shuffle's grid), or each part of a put-off Concat."""
        taps = math.prod(step.unit.key.window)  # pyright: ignore
        for first, part in _channel_parts(x.images() if isinstance(x, _Regrouped) else x):  # pyright: ignore
            self._pool_images(call, first, part, taps)

    def _pool_shares(self, planes: int, work_per_plane: int) -> Shares:
        """The shares of a pool's call on `planes` planes, its work the outputs times
        the window's taps."""
        return self._shares_for(planes, planes * work_per_plane, _VALUES_PER_THREAD)

    def _pool_images(self, call: _Call, first: int, images: np.ndarray, taps: int) -> None:
        """Pool `images` (N, C, H, W), or a channel grid (N, C / g, g, H, W), channels
        [first, first + C) of the pool's input (all of them, or a Concat part's), at
        their strides: float32 rows of consecutive values at non-negative strides,
        else a contiguous copy. The same images as the call's last read whole need
        no new geometry words."""
        if call.read is not None and call.read[0] is images:
            self._execute(call, call.read[1], call.output_address)
            return
        if not _rows_of_floats(images):
            images = np.ascontiguousarray(images.reshape(*images.shape[:1], -1, *images.shape[-2:]), np.float32)
        inner, inner_stride = (images.shape[2], images.strides[2] // 4) if images.ndim == 5 else (1, 0)
        geometry = call.pool_geometry
        geometry[:2] = images.strides[1] // 4, images.strides[-2] // 4
        geometry[12:16] = images.strides[0] // 4, first, inner, inner_stride
        channels, all_channels = math.prod(images.shape[1:-2]), int(geometry[9])  # pyright: ignore
        if channels == all_channels:
            self._execute(call, _address(call, images), call.output_address)
            return
        call.read = None  # its parts write the geometry words
        for image in range(images.shape[0]):
            self._execute(self._pool_part(call, image * all_channels + first, channels, taps), images.ctypes.data, call.output_address)

    def _pool_part(self, call: _Call, first: int, planes: int, taps: int) -> _Call:
        """`call` on planes [first, first + planes), with shares of its own (kept)."""
        part = call.pool_parts.get((first, planes))
        if part is None:
            shares = self._pool_shares(planes, int(call.pool_geometry[6] * call.pool_geometry[7]) * taps)  # pyright: ignore  (Ho x Wo)
            shares = Shares([(first + begin, first + end) for begin, end in shares.bounds], shares.threads)
            part = call.pool_parts[(first, planes)] = dataclasses.replace(call, shares=shares, alone=shares.threads == 1, pool_parts={})
        return part

    def _implicit_call(self, step: _Step, layer: _Layer, x: np.ndarray, addend: np.ndarray | None) -> _Call | None:
        """The call of a convolution that runs its kernel's implicit variant on inputs
        shaped as `x` (ImplicitConv), or None when it does not apply or pay. Its result
        is a view of the output lanes: channels first, each row's dropped lanes skipped.
        The output lanes are its own, a Concat's (`_concat_lanes`), or those of the
        residual `addend` where that dies at the Add (`_addend_lanes`)."""
        conv = self._implicit_for(step, x.shape, residual=False)
        if conv is None:
            return None
        images, rows = x.shape[0], layer.key.rows
        residual = step.residual
        if residual is not None and addend is not None and addend.shape == (images, rows, *conv.out):
            conv = accumulating(conv, residual.relu)
        else:  # a type that leaves the batch to run time let the addend broadcast: the Add runs
            residual = None
        output = None
        if residual is None and step.op in self.concat_places:
            placed = self._concat_lanes(step.op, images, conv.lane_layout)
            output = None if placed is None else placed[0]
        elif residual is not None and residual.dies and addend is not None:
            output = self._addend_lanes(addend, rows, conv)
        adds_in_place = residual is not None and output is not None
        if output is None:
            output = self._kept_lanes(step.op, (images, rows + 1, conv.lanes))
        kernel, arguments = self._variant_call(layer, conv.key)
        call = self._make_call(kernel, (*arguments, conv.lanes), self._shares(conv.key, conv.lanes), output, _lane_result(output, rows, conv))
        call.result_address = None
        call.residual = residual
        call.addend_in_place = addend if adds_in_place else None
        if step.prologue is None and isinstance(x, np.ndarray) and conv.reads_in_place(x) and self._has_zero_plane(x):
            call.in_place = True
            return call
        self._read_from_planes(call, step, conv, x.shape)
        if self.pool is not None:
            for slot in range(1, min(images, self.active_threads)):
                call.twins.append(twin := dataclasses.replace(call, plane_copies=[], pool_parts={}, twins=[]))
                self._read_from_planes(twin, step, conv, x.shape, slot)
        return call

    def _read_from_planes(self, call: _Call, step: _Step, conv: ImplicitConv, shape: tuple[int, ...], slot: int = 0) -> None:
        """Have implicit call `call` of convolution step `step` read images of `shape`
        from phase planes, which each run fills (`_fill_planes`) through the step's
        prologue. Convolutions whose images fill the same parts of the same planes
        share them: each fills its part right before its call, and no call writes the
        pads. Other slots are other arrays of them, for twin calls (`_Call.twins`)."""
        layout = _plane_layout(conv, shape)
        call.input = self._phase_planes(conv, (*layout, slot), max(conv.size, self.plane_floats.get(layout, 0)))
        call.input_address = call.input.ctypes.data
        if call.input.size > conv.size:  # planes for more channels: others' images may lie in its zero plane
            call.zero_plane = call.input[conv.planes * conv.plane_floats : conv.size]
        call.read_offset = 4 * conv.read_offset
        call.phase_copies = conv.copies(conv.plane_views(call.input), (conv.channels, *((1,) * (4 - len(shape))), *shape[2:]))
        call.prologue = step.prologue
        if (key := plane_key_of(step.op, conv)) is not None:  # pyright: ignore
            call.plane_copies = self._plane_copies(key, conv, call.prologue, (math.prod(shape[2:]) // shape[-1], shape[-1]))

    def _banded_call(self, step: _Step, x: np.ndarray) -> _Call:
        """The call of pool step `step` that runs the convolution before it (`band`) in
        bands (implicit.PoolBands) on the convolution's inputs `x`: the pool's call on
        the convolution's whole output, whose `bands` hold the band kernel's call (its
        phase planes those of the convolution's own call, its output one band's rows)
        and, for each band, its first lane and the pool's call on the band's rows, with
        geometry words of its own (runtime/codegen/pool.py: the band's rows at the
        buffer's strides, its pad rows before the first, its pool rows)."""
        conv_step, plan = step.band, self.pool_bands[step.op]
        layer, conv = conv_step.unit, self.static_convs[conv_step.op]
        assert isinstance(layer, _Layer)
        channels, lanes, pitch = layer.key.rows, plan.key.lanes, conv.phase[1]
        band = _kept(self.kept.scratch, ("band", channels, lanes), (channels, lanes))  # shared by same-sized pairs, which run in turn
        kernel, arguments = self._variant_call(layer, plan.key)
        conv_call = self._make_call(kernel, (*arguments, lanes), self._shares(plan.key, lanes), band, band)
        self._read_from_planes(conv_call, conv_step, conv, x.shape)
        call = self._pool_call(step, step.unit, np.broadcast_to(np.float32(0), (x.shape[0], channels, *conv.out)))  # pyright: ignore
        top, stride, out_pitch, out_columns = (int(call.pool_geometry[index]) for index in (4, 8, 16, 7))  # pyright: ignore
        taps = math.prod(step.unit.key.window)  # pyright: ignore
        parts = []
        for first_row, first_out, out_rows in plan.bands:
            geometry = call.pool_geometry.copy()  # pyright: ignore
            words = {0: lanes, 1: pitch, 2: plan.conv_rows, 4: top + first_row - first_out * stride, 6: out_rows, 12: 0, 13: 0, 14: 1, 15: 0, 17: 0}  # a band's rows, not a flat run
            geometry[list(words)] = list(words.values())
            divisors = call.arguments[1] + 4 * first_out * out_columns  # an average's, from the band's first output
            shares = self._pool_shares(channels, out_rows * out_columns * taps)
            pool = dataclasses.replace(call, arguments=(geometry.ctypes.data, divisors, *call.arguments[2:]), shares=shares, alone=shares.threads == 1)
            pool.operand_arrays = (*call.operand_arrays, geometry)
            parts.append((4 * first_row * pitch, pool, 4 * first_out * out_pitch))
        call.bands = _Bands(conv_call, parts)
        return call

    def _phase_planes(self, conv: ImplicitConv, layout: tuple, floats: int) -> np.ndarray:
        """The zeroed phase planes of `layout` (`conv`'s, `_plane_layout`), `floats`
        long, kept and shared, with the float `conv.line_start` on a cache line: at
        stride 1 the image's first value (its planes' first row and column past the
        pads), so that a 1x1 convolution framed in them (implicit.framed) reads whole
        lines, and a padded one's taps are as often aligned either way (SqueezeNet
        1.01-1.03x; ResNet50 and Inception v2 unchanged); but the planes' first value
        where their rows are a multiple of 16 floats long, so that a window's taps lie
        their column shift past a line (KernelKey.column_shifts)."""
        return _kept(self.kept.scratch, (*layout, floats), (floats,), np.zeros, line_at=conv.line_start)

    def _addend_lanes(self, addend: np.ndarray, rows: int, conv: ImplicitConv) -> np.ndarray | None:
        """The output lanes (images, rows + 1, lanes) of another implicit call that
        `addend` is the result of, laid out as `conv`'s would be, or None."""
        lanes = self.kept.zero_planes.get(addend.ctypes.data)
        if lanes is None or lanes.shape != (addend.shape[0], rows + 1, conv.lanes) or not _same_place(_lane_result(lanes, rows, conv), addend):
            return None
        return lanes

    def _has_zero_plane(self, x: np.ndarray) -> bool:
        """Whether `x` is the result of output lanes followed by a zero plane."""
        lanes = self.kept.zero_planes.get(x.ctypes.data)
        return lanes is not None and lanes.shape[1] == x.shape[1] + 1

    def _plane_copies(self, key: PlaneKey, conv: ImplicitConv, prologue: _Prologue | None, image: tuple[int, int]) -> list[tuple[_PlaneCopy, int, int, int]]:
        """The plane copy kernel's calls that fill `conv`'s phase planes from images of
        `image` rows and columns, applying `prologue` if given: for each phase read, the
        call, the image row and column it starts at, and the image rows it steps a row.
        A phase (p, q) holds every sh-th row and sw-th column of the padded image from
        row p and column q, so its call steps sh image rows a row (sh times the row
        stride it is given) and sw columns a column (the key's stride); its planes lie
        sh x sw planes apart."""
        affine = None if prologue is None else tuple(np.ascontiguousarray(values.reshape(-1), np.float32) for values in (prologue.scale, prologue.shift))
        shares = self._shares_for(conv.channels, conv.channels * image[0] * image[1], _VALUES_PER_THREAD)
        (sh, sw), (top, left) = conv.strides, conv.before
        copies = []
        for p, q in conv.phases_read:
            first_row, first_column = (p - top) % sh, (q - left) % sw
            rows, columns = len(range(first_row, image[0], sh)), len(range(first_column, image[1], sw))
            if rows and columns:
                at = ((first_row + top - p) // sh, (first_column + left - q) // sw)
                copy = self._plane_copy_call(key, conv.phase, at, (rows, columns), shares, affine, sh * sw * conv.plane_floats)  # pyright: ignore
                copy.geometry[6] += (p * sw + q) * conv.plane_floats
                copies.append((copy, first_row, first_column, sh))
        return copies

    def _plane_copy_call(
        self, key: PlaneKey, plane: tuple[int, int], before: tuple[int, int], image: tuple[int, int], shares: Shares, affine: tuple[np.ndarray, np.ndarray] | None, plane_floats: int = 0
    ) -> _PlaneCopy:
        """The plane copy kernel's call (compiled on first use) for images of `image`
        rows and columns into the middle of planes of `plane` rows and columns, `before`
        rows and columns of pads before them, on `shares` of the channels; planes lie
        `plane_floats` apart (0: back to back)."""
        if key.symbol not in self.variants:
            self._compile([key])
        kernel = self.variants[key.symbol]
        (rows, pitch), (top, left) = plane, before
        geometry = np.array([0, 0, *image, plane_floats or rows * pitch, pitch, top * pitch + left, 0], np.int64)
        scale, shift = (0, 0) if affine is None else (affine[0].ctypes.data, affine[1].ctypes.data)
        address = ctypes.cast(kernel, ctypes.c_void_p).value or 0
        return _PlaneCopy(key, kernel, address, geometry, (geometry.ctypes.data, scale, shift, 0, 0), shares, shares.threads == 1, affine)

    def _output(self, step: _Step, rows: int, cols: int) -> np.ndarray:
        """The kept output buffer of `step` for `rows` rows of `cols` values."""
        return self._kept_output(step.op, (rows, cols))

    def _layer_call(self, layer: _Layer, output: np.ndarray, result: np.ndarray, chunk: int = 0) -> _Call:
        """The call of `layer` on as many batch rows as `output` has: its kernel, or
        the variant that pays (`_Layer.variant_for`)."""
        batch, key = len(output), layer.key
        variant = layer.variant_for(batch)
        kernel, arguments = self._variant_call(layer, variant)
        if chunks := batch_chunks(variant, batch):
            call = self._make_call(kernel, (*arguments, 0), Shares([(0, 0)]), output, result)  # runs only its chunks
            call.batch_chunks = [(rows, self._layer_call(layer, output[rows], output[rows], index)) for index, rows in enumerate(chunks)]
            return call
        if not variant.batched:
            return self._make_call(kernel, (*arguments, batch), self._shares(key, batch), output, result)
        padded = padded_batch(batch)
        x_shape, y_shape = (key.cols + 1, padded), (key.rows, padded)
        call = self._make_call(kernel, (*arguments, padded), self._shares(key, padded), output, result)
        # Chunks that run side by side on the threads each need scratch of their own.
        place = chunk if self.active_threads > 1 else 0
        call.scratch = (_kept(self.kept.scratch, ("x", place, *x_shape), x_shape, np.zeros), _kept(self.kept.scratch, ("y", place, *y_shape), y_shape))
        return call

    def _grouped_call(self, layer: _Layer, groups: int, output: np.ndarray, result: np.ndarray) -> _Call:
        """The call of a grouped convolution's kernel on input windows: one call per
        group (`group_calls`), each on that group's windows."""
        call = self._make_call(layer.kernel, (0, 0, 0, 0, 0), Shares([(0, 0)]), output, result)  # runs only its groups
        call.group_calls = [self._layer_call(layer, output, result) for _ in range(groups)]
        for group, group_call in enumerate(call.group_calls):
            self._restrict_to_group(group_call, layer.key, groups, group, len(output))
        return call

    def _restrict_to_group(self, call: _Call, key: KernelKey, groups: int, group: int, batch: int) -> None:
        """Make `call` compute group `group`'s weight rows only (`_restrict`)."""
        units, left = divmod(key.parallel_units(batch), groups)
        if left:
            raise SparsecError(f"'{key.symbol}': {groups} groups do not split its {key.parallel_units(batch)} row units evenly")
        rows_per_unit = key.block if key.kind == "block" else 1
        first = group * units
        self._restrict(call, first, units, slice(first * rows_per_unit, (first + units) * rows_per_unit), key.rows * key.cols * batch // groups)

    def _restrict(self, call: _Call, first: int, units: int, rows: slice, work: int) -> None:
        """Make `call` (and its batch chunks) run units [first, first + units) only: its
        shares, and the weight rows (output columns) a batched call copies back."""
        shares = self._shares_for(units, work, _WORK_PER_THREAD)
        call.shares = Shares([(first + lo, first + hi) for lo, hi in shares.bounds], shares.threads)
        call.alone = call.shares.threads == 1
        call.weight_rows = rows
        for taken, chunk in call.batch_chunks:
            self._restrict(chunk, first, units, rows, work * (taken.stop - taken.start) // max(1, len(call.output)))

    @staticmethod
    def _make_call(kernel, arguments: tuple[int, ...], shares: Shares, output: np.ndarray, result: np.ndarray) -> _Call:
        address = ctypes.cast(kernel, ctypes.c_void_p).value or 0
        output_address = output.ctypes.data
        return _Call(kernel, address, arguments, shares, shares.threads == 1, output, output_address, result, output_address)

    def _up_front_keys(self) -> list[AnyKey]:
        """The kernels compiled as the executor is made, in one pipelined batch
        (jit.compile_kernels): every normalization's and pool's; the implicit variants
        the IR's shapes call for, with the plane copy kernels that may fill their planes
        (a few small kernels: also those of 1x1 convolutions, which fill none where they
        read their input in place, as in ShuffleNet they do not all); and every
        layer's own kernel but those of the convolutions that run implicit on those
        shapes, which never call theirs (compiled on first use where another shape
        does). Inception v2 compiled 31 such kernels to no use: its first run from an
        empty cache took 3.8 s, 77 kernels, and takes 2.5 s, 46."""
        keys: list[AnyKey] = [unit.key for op, unit in self.layers.items() if op not in self.static_convs]
        keys += [unit.key for unit in (*self.norms.values(), *self.pools.values(), *self.natives.values()) if unit.key is not None]
        keys += self.implicit_keys
        keys += [plane for op, conv in self.static_convs.items() if (plane := plane_key_of(op, conv)) is not None]  # pyright: ignore
        return list(dict.fromkeys(keys))

    def _layer_kernel(self, layer: _Layer) -> object:
        """The layer's own kernel, compiled on first use if it was not up front."""
        if layer.kernel is None:
            self._compile([layer.key])
            layer.kernel = self.variants[layer.key.symbol]
        return layer.kernel

    def _variant_call(self, layer: _Layer, variant: KernelKey) -> tuple[object, tuple[int, int, int, int]]:
        """The kernel and arguments of `variant` of the layer's kernel (its own kernel
        when `variant` is its key)."""
        if variant == layer.key:
            return self._layer_kernel(layer), layer.arguments
        call = layer.variant_calls.get(variant)
        if call is None:
            call = layer.variant_calls[variant] = (self._variant_kernel(variant), layer.arguments_for(variant, self.weights))
        return call

    def _variant_kernel(self, variant: KernelKey):
        """A variant's kernel, compiled on first use, for every layer that has a
        variant of that kind at once."""
        if variant.symbol not in self.variants:
            keys = [key for layer in self.layers.values() for key in variant_keys(layer.key, layer.chunk_span)]
            alike = [key for key in [*keys, *self.implicit_keys] if variant_kind(key) == variant_kind(variant) and key.symbol not in self.variants]
            self._compile(list(dict.fromkeys([*alike, variant])))
        return self.variants[variant.symbol]

    def _norm_kernel(self, op: Operation, x: np.ndarray) -> tuple[NormKey, object]:
        """The key and kernel of a Softmax over an axis given at run time
        (`runs_rows_softmax`) on `x`, compiled on first use for its row length."""
        if x.shape[-1] == 0:
            raise ExecutionError(f"'{op.name}' cannot run on inputs of shapes {tuple(x.shape)}: a Softmax of rows of no values")
        key = NormKey(x.shape[-1], "softmax")
        if key.symbol not in self.variants:
            self._compile([key])
        return key, self.variants[key.symbol]

    def _compile(self, keys: list[AnyKey]) -> None:
        """Compile `keys` into `variants`; their engine is kept in `compiled`, as the
        functions live as long as it does."""
        compiled = compile_kernels(keys, self.target)
        self.compiled.append(compiled)
        self.variants.update(compiled.functions)

    def _shares(self, key: KernelKey, batch: int) -> Shares:
        """The shares of a call of `key`'s kernel on `batch` rows (`_shares_for`), its
        work counted in weight values visited."""
        return self._shares_for(key.parallel_units(batch), key.rows * key.cols * batch, _ROW_WORK_PER_THREAD if batch == 1 else _WORK_PER_THREAD)

    def _shares_for(self, units: int, work: int, per_thread: int) -> Shares:
        """The (first, last) units of the shares of a call of `units` units and `work`,
        and how many threads claim them: one per `per_thread` of work, at most one per
        unit. One share for work too small to pay for a hand-off, else one per thread
        for small calls and SHARES_PER_THREAD for others (SHARE_THREADS_WORK; claimed,
        so a thread held up leaves its shares to the others). The first call that takes
        the pool sets the BLAS limit (`blas`)."""
        threads = 1 if self.pool is None or units == 0 else min(self.active_threads, units, max(1, work // per_thread))
        if threads > 1 and self.blas is None and self._calls_blas:
            self.blas = ThreadpoolController()
        per_share = SHARES_PER_THREAD if work >= SHARE_THREADS_WORK * threads * per_thread else 1
        count = 1 if threads == 1 else min(units, threads * per_share)
        bounds = [units * share // count for share in range(count + 1)]
        return Shares([(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo] or [(0, units)], threads)

    def _execute(self, call: _Call | _PlaneCopy | _Transpose, x: int, y: int) -> None:
        """Run `call` on the inputs at address `x` into the outputs at `y`, split across
        the worker threads when the work pays."""
        if call.alone:
            call.kernel(x, y, *call.arguments, *call.shares.bounds[0])
        else:
            self.pool.run(call.kernel, (x, y, *call.arguments), call.shares, call.address)  # pyright: ignore

    def _run_rows(self, step: _Step, call: _Call, x: np.ndarray, x_address: int | None) -> None:
        """A matrix product's call on x, (..., K) rows; at `x_address` when they are a
        kernel's output (contiguous, on a cache line)."""
        self._run_call(call, x, x.shape[-1], x_address)

    def _run_norm(self, step: _Step, call: _Call, x: np.ndarray, x_address: int | None) -> None:
        """A layer normalization's or Softmax's call on x's rows, read where they are
        when they are float32 rows in one block. These kernels pass over each row a few
        times while it stays in L1, so copying x to a cache line first (`_staged`, which
        a matrix product's repeated reads of its inputs repay) cost as much as the
        kernel: a Softmax of attention's scores, 12 heads of 384 x 384, took 2.7 ms in
        its step, 1.3 in the kernel."""
        if x_address is None and x.dtype == np.float32 and x.flags.c_contiguous:
            x_address = _address(call, x)
        self._run_call(call, x, x.shape[-1], x_address)

    def _run_conv(self, step: _Step, call: _Call, x: np.ndarray, x_address: int | None) -> None:
        key = step.unit.key  # pyright: ignore
        if call.phase_copies or call.in_place:
            self._run_implicit(call, x)
            return
        x = self._materialized(step, x)
        if call.group_calls:  # each group's windows: its slice of the channel axis
            windows = np.split(self._windows(step.op, x, key), len(call.group_calls), axis=x.ndim - 1)  # pyright: ignore
            for group_call, group_windows in zip(call.group_calls, windows):
                self._run_call(group_call, group_windows, key.cols, None)
        else:
            self._run_call(call, self._windows(step.op, x, key), key.cols, None)

    def _run_implicit(self, call: _Call, x: np.ndarray | _Concatenated) -> None:
        """An implicit convolution's call on each image of x in turn, read in place or
        copied into the phase planes (whose pads stay zero), through its prologue if it
        has one; a put-off Concat's parts each into their channels' planes."""
        image_bytes = call.output.strides[0]
        if call.in_place:
            first = self._images_side_by_side(call, x)
        else:
            first = self._image_groups(call, x) if call.twins else 0
        for image in range(first, x.shape[0]):
            if call.in_place:
                self._execute(call, _address(call, x) + image * x.strides[0], call.output_address + image * image_bytes)  # pyright: ignore
                continue
            self._fill_image(call, x, image)
            self._execute(call, call.input_address + call.read_offset, call.output_address + image * image_bytes)

    def _fill_image(self, call: _Call, x: np.ndarray | _Concatenated, image: int) -> None:
        """Fill `call`'s phase planes with image `image` of x (each of a put-off
        Concat's parts into its channels' planes), unless they hold it already."""
        if not self._planes_hold(call, x, image):
            self._fill(call, x, image)

    def _fill(self, call: _Call, x: np.ndarray | _Concatenated, image: int) -> None:
        """Fill `call`'s phase planes with image `image` of x, on this thread."""
        for first, part in _channel_parts(x):
            self._fill_planes(call, first, part[image], _address(call, part) + image * part.strides[0])
        if call.zero_plane is not None:
            call.zero_plane.fill(0)

    def _image_groups(self, call: _Call, x: np.ndarray | _Concatenated) -> int:
        """Run implicit call `call` and its twins (`_Call.twins`, each with phase planes
        of its own) on x's images a group at a time, side by side on the threads: each
        fills its planes with an image of the group, then each runs its image; returns
        how many images ran."""
        readers = [call, *call.twins]
        group = len(readers)
        groups = x.shape[0] // group
        images = groups * group
        copies = self._threads_fill(readers, x)
        read = (0, (), groups) if copies is None else (_address(call, x), x.strides, groups)
        plan = call.images_side_by_side
        if plan is None or plan.read != read:
            planes = [reader.input_address + reader.read_offset for reader in readers]
            fills = None if copies is None else [_fill_steps(copies[image % group], x, image) for image in range(images)]
            plan = call.images_side_by_side = _image_steps(call, read, [planes[image % group] for image in range(images)], group, group, fills)
        for first_image in range(0, images, group):
            held = [self._planes_hold(reader, x, image) for image, reader in enumerate(readers, first_image)]
            if plan.filling is not None and not any(held):  # each thread fills its planes, then runs its image
                table, shares = plan.filling
                per_image = shares.bounds[0][1]
                self.pool.run_steps(table.ctypes.data + first_image * per_image * STEP_WORDS * 8, shares)  # pyright: ignore
                continue
            for image, (reader, holds) in enumerate(zip(readers, held), first_image):
                if not holds:  # a sibling of the same planes may have filled them (Inception's branches)
                    self._fill(reader, x, image)
            self.pool.run_steps(plan.table.ctypes.data + first_image * STEP_WORDS * 8, plan.shares)  # pyright: ignore
        return images

    def _threads_fill(self, readers: list[_Call], x: np.ndarray | _Concatenated) -> list[list[tuple[_PlaneCopy, int, int]]] | None:
        """Each reader's plane copies, with the offset of their first input in an image
        and the reader's planes, where the threads can fill those planes themselves, as
        steps before their images' calls (`_image_groups`), the copies' geometry words
        set for x's strides: x float32
        images whose rows the plane copy kernel reads in place, and no planes with a
        zero plane to clear. Else None: the caller fills them, on its thread. SqueezeNet
        at 8 images on two threads filled 13% of its run's time so."""
        if not isinstance(x, np.ndarray) or x.ndim != 4:
            return None
        if any(reader.zero_plane is not None or not reader.plane_copies or not reader.plane_copies[0][0].takes(x[0]) for reader in readers):
            return None
        every = []
        for reader in readers:
            copies = []
            for copy, first_row, first_column, row_step in reader.plane_copies:
                copy.reads(x.strides[1] // 4, x.strides[2] // 4 * row_step, 0)
                copies.append((copy, first_row * x.strides[2] // 4 + first_column, reader.input_address))
            every.append(copies)
        return every

    def _run_bands(self, step: _Step, call: _Call, x: np.ndarray, x_address: int | None) -> None:
        """A banded pool's call (`_banded_call`) on the convolution's inputs x: each
        image into the phase planes, then band by band the convolution's rows into the
        band buffer and the pool's outputs from them."""
        bands = call.bands
        assert bands is not None
        conv, image_bytes = bands.conv, 4 * int(call.pool_geometry[11])  # pyright: ignore
        for image in range(x.shape[0]):
            self._fill_image(conv, x, image)
            for lane_bytes, pool, row_bytes in bands.parts:
                self._execute(conv, conv.input_address + conv.read_offset + lane_bytes, conv.output_address)
                self._execute(pool, conv.output_address, call.output_address + image * image_bytes + row_bytes)

    def _images_side_by_side(self, call: _Call, x: np.ndarray) -> int:
        """Run implicit call `call`, which reads its images in place, on x's leading
        images that the threads share evenly, an image at a time on each thread (a
        table of steps, workers.STEP_WORDS, rebuilt when x moves); returns how many
        ran. Split across the threads image by image, each call waited for both, and
        each thread read half of the other's inputs: ResNet50 at 8 images on two
        threads ran 1.09x as fast side by side (164 -> 150 ms), SqueezeNet 1.05x."""
        threads = self.active_threads
        if self.pool is None or threads < 2 or x.shape[0] < threads:
            return 0
        images, start = x.shape[0] - x.shape[0] % threads, _address(call, x)
        plan = call.images_side_by_side
        if plan is None or plan.read != (start, images):
            plan = call.images_side_by_side = _image_steps(call, (start, images), [start + image * x.strides[0] for image in range(images)], images, threads)
        self.pool.run_steps(plan.table.ctypes.data, plan.shares)  # pyright: ignore
        return images

    def _planes_hold(self, call: _Call, x: np.ndarray | _Concatenated, image: int) -> bool:
        """Whether `call`'s phase planes already hold image `image` of x, through the
        same prologue, from this run: convolutions of the same geometry share planes
        (`_implicit_call`), and several of them often read one input (Inception's
        branches, each module's 1x1 convolutions). Records that they will otherwise.
        Within an epoch (`_epoch`) no value's array is freed or written again, so its
        address, strides and shape tell it."""
        filled = None if isinstance(x, _Concatenated) else (_address(call, x), x.strides, x.shape, image, id(call.prologue), self._epoch)
        held = filled is not None and self.kept.plane_images.get(call.input_address) == filled
        self.kept.plane_images[call.input_address] = filled
        return held

    def _fill_planes(self, call: _Call, first: int, planes: np.ndarray, address: int) -> None:
        """Copy the image channels `planes` (C, *spatial, its first value at `address`),
        channels [first, first + C) of the convolution's input, into `call`'s phase
        planes, through its prologue."""
        planes = planes.reshape(planes.shape[0], -1, planes.shape[-1])  # a 1-D image is one row
        prologue = call.prologue
        if call.plane_copies and call.plane_copies[0][0].takes(planes):
            for copy, first_row, first_column, row_step in call.plane_copies:
                self._copy_channels(copy, first, planes, address, call.input_address, row_step, first_row * planes.strides[1] // 4 + first_column)
            return
        channels = slice(first, first + len(planes))
        for target, (rows, columns) in call.phase_copies:
            if prologue is None:
                np.copyto(target[channels], planes[:, rows, columns], casting="unsafe")
                continue
            np.multiply(planes[:, rows, columns], prologue.scale[channels], out=target[channels])
            target[channels] += prologue.shift[channels]
            if prologue.relu:
                np.maximum(target[channels], 0.0, out=target[channels])

    def _copy_channels(self, copy: _PlaneCopy, first: int, image: np.ndarray, address: int, planes: int, row_step: int = 1, offset: int = 0) -> None:
        """Run plane copy `copy` on `image` (C, H, W, its first value at `address`),
        channels [first, first + C) of its reader's input, from `offset` floats into it
        and every `row_step`-th row (a phase of a strided convolution), into the planes
        at address `planes`."""
        copy.reads(image.strides[0] // 4, image.strides[1] // 4 * row_step, first)
        self._execute(self._part_copy(copy, first, len(image)), address + 4 * offset, planes)

    def _part_copy(self, copy: _PlaneCopy, first: int, channels: int) -> _PlaneCopy:
        """`copy` on channels [first, first + channels): itself on all of its channels,
        else the same kernel and geometry on shares of those channels (kept)."""
        if first == 0 and channels == copy.shares.bounds[-1][1]:
            return copy
        part = copy.parts.get((first, channels))
        if part is None:
            pixels = int(copy.geometry[2] * copy.geometry[3])
            shares = self._shares_for(channels, channels * pixels, _VALUES_PER_THREAD)
            shares = Shares([(first + begin, first + end) for begin, end in shares.bounds], shares.threads)
            part = copy.parts[(first, channels)] = dataclasses.replace(copy, shares=shares, alone=shares.threads == 1, parts={})
        return part

    def _materialized(self, step: _Step, x: np.ndarray | _Concatenated) -> np.ndarray:
        """`x` as an array: a put-off Concat's result made now (`_concat`), for a call
        that cannot copy its parts itself."""
        return self._concat(step.concat.op, x.parts) if isinstance(x, _Concatenated) else x  # pyright: ignore

    def _run_call(self, call: _Call, x: np.ndarray, cols: int, x_address: int | None) -> None:
        """`call` on the rows of `cols` values x holds, at `x_address` when they are a
        kernel's output: its batch chunks in turn (the inputs staged once for the
        chunks that read them in place), a batched kernel on the rows transposed, or
        the kernel on the rows."""
        if call.batch_chunks:
            if call.side_by_side is None:
                call.side_by_side = self._side_by_side(call, x.reshape(-1, cols)) or False
            chunks = call.batch_chunks
            if plan := call.side_by_side:
                if x_address is None and not (x.dtype == np.float32 and x.flags.c_contiguous):
                    x_address, x = self._staged(call, x), call.input
                self._run_side_by_side(plan, x.ctypes.data if x_address is None else x_address)
                chunks = chunks[plan.chunks :]
            if x_address is None and any(chunk.scratch is None for _, chunk in chunks):
                x_address, x = self._staged(call, x), call.input
            rows = x.reshape(-1, cols)
            for taken, chunk in chunks:
                self._run_call(chunk, rows[taken], cols, None if x_address is None else x_address + taken.start * cols * 4)
        elif call.scratch is not None:
            self._run_batched(call, x.reshape(-1, cols))
        else:
            self._execute(call, self._staged(call, x) if x_address is None else x_address, call.output_address)

    def _side_by_side(self, call: _Call, rows: np.ndarray) -> _SideBySide | None:
        """`call`'s leading whole batch chunks, as many as the threads share evenly, as
        a table of steps (workers.STEP_WORDS) that the threads run a chunk at a time,
        each on one thread: a batched chunk's inward copy, kernel and outward copy, or a
        plain chunk's kernel on its rows in place. Each thread then reads the inputs it
        copied and copies out what it wrote, where a chunk split across threads had
        each read the other's inputs and outputs from the other core's caches (576 x
        576 at n:m 3:4 and 128 rows ran 1.2x as fast on two threads as on one, 2.0x
        side by side). The chunks left over run one after another, each split across
        the threads. None where all run so: one thread, fewer whole chunks than
        threads, or a batched chunk whose copies numpy makes."""
        threads = self.active_threads
        if rows.shape[1] * call.output.shape[1] < SIDE_BY_SIDE_ALL_BELOW:
            chunks = call.batch_chunks
        else:
            whole = list(itertools.takewhile(lambda chunk: _rows(chunk[0]) == _rows(call.batch_chunks[0][0]), call.batch_chunks))
            chunks = whole[: len(whole) - len(whole) % threads]
        if self.pool is None or threads < 2 or len(chunks) < threads or any(chunk.batch_chunks for _, chunk in chunks):
            return None
        entries, reads, bounds = [], [], []
        for taken, chunk in chunks:
            start = taken.start * rows.shape[1] * 4
            first = len(entries)
            if chunk.scratch is None:
                reads.append((len(entries), start))
                entries.append((chunk.address, 0, chunk.output_address, *chunk.arguments, *_span(chunk.shares)))
            else:
                inward, outward = chunk.transposes or self._transposes(chunk, rows[taken])
                if inward is None or outward is None:
                    return None
                x_columns, y_columns = chunk.scratch
                reads.append((len(entries), start))
                entries += [
                    (inward.address, 0, inward.target, *inward.arguments, *_span(inward.shares)),
                    (chunk.address, x_columns.ctypes.data, y_columns.ctypes.data, *chunk.arguments, *_span(chunk.shares)),
                    (outward.address, outward.source, outward.target, *outward.arguments, *_span(outward.shares)),
                ]
            bounds.append((first, len(entries)))
        table = on_cache_line(np.zeros, (len(entries), STEP_WORDS), np.int64)
        table[:] = entries
        indices, starts = (np.array(column, np.int64) for column in zip(*reads))
        return _SideBySide(len(chunks), table, indices, starts, Shares(bounds, threads))

    def _run_side_by_side(self, plan: _SideBySide, x_address: int) -> None:
        """The chunks of `plan` side by side on the threads, on the rows at `x_address`."""
        if x_address != plan.read:
            plan.table[plan.reading, 1] = plan.starts + x_address
            plan.read = x_address
        self.pool.run_steps(plan.table.ctypes.data, plan.shares)  # pyright: ignore

    def _run_batched(self, call: _Call, rows: np.ndarray) -> None:
        """A batched kernel's call: `rows` (B x K) transposed into the scratch input,
        the scratch output's first B lanes transposed back into the call's output, by
        the transpose kernels on the worker threads where they run (`_transposes`),
        else by numpy."""
        x_columns, y_columns = call.scratch  # pyright: ignore
        inward, outward = call.transposes or self._transposes(call, rows)
        if inward is not None and rows.dtype == np.float32 and rows.flags.c_contiguous:
            self._execute(inward, rows.ctypes.data, inward.target)
        else:
            transposed_inputs(rows, x_columns)
        self._execute(call, x_columns.ctypes.data, y_columns.ctypes.data)
        if outward is not None:
            self._execute(outward, outward.source, outward.target)
        else:
            call.output[:, call.weight_rows] = y_columns[call.weight_rows, : rows.shape[0]].T

    def _transposes(self, call: _Call, rows: np.ndarray) -> tuple[_Transpose | None, _Transpose | None]:
        """The batched call's transposing copies (TransposeKey), compiled on first use,
        on AVX-512 targets (elsewhere their 16-lane masked loads and stores would be
        split or scalarized; numpy copies instead): the rows into the transposed input
        (its first K rows, P = its pitch), and the transposed output's rows of
        `weight_rows` into the output's columns, where the output is float32 rows."""
        x_columns, y_columns = call.scratch  # pyright: ignore
        batch, cols = rows.shape
        first, last, _ = call.weight_rows.indices(y_columns.shape[0])
        output = call.output
        if not self.target.avx512 or output.dtype != np.float32 or output.ndim != 2 or output.strides[1] != 4:
            call.transposes = (None, None)
            return call.transposes
        keys = [TransposeKey(cols, cols, True), TransposeKey(last - first, output.strides[0] // 4, False)]
        missing = [key for key in keys if key.symbol not in self.variants]
        if missing:
            self._compile(missing)  # pyright: ignore
        places = [(0, x_columns.ctypes.data), (y_columns.ctypes.data + first * y_columns.strides[0], output.ctypes.data + first * 4)]
        call.transposes = tuple(self._transpose(key, batch, source, target) for key, (source, target) in zip(keys, places))  # pyright: ignore
        return call.transposes  # pyright: ignore

    def _combining(self, call: _Call, combined: _Combined) -> _Combining | None:
        """After `call`'s first run has made its copies: the same outward copies
        combining (their kernels swapped for TransposeKey.combine ones), and numpy
        combining the rows a kernel or numpy writes itself (a plain call, a chunk of
        fewer rows than a batched kernel takes); None where the output rows are not
        contiguous."""
        if not (call.output.flags.c_contiguous and call.result.flags.c_contiguous):
            return None
        copies: list[_Transpose] = []
        rows: list[tuple[np.ndarray, int, _Transpose]] = []
        by_numpy: list[slice] = []
        for part, entry, written in _row_writers(call):
            outward = None if part.scratch is None or part.transposes is None else part.transposes[1]
            if outward is None:
                by_numpy.append(written)
            elif entry is None:
                copies.append(outward)
            else:
                rows.append((*entry, outward))
        outwards = [*copies, *(outward for _, _, outward in rows)]
        keys = {outward.key: dataclasses.replace(outward.key, combine=combined.combine) for outward in outwards}
        missing = [key for key in keys.values() if key.symbol not in self.variants]
        if missing:
            self._compile(missing)  # pyright: ignore
        for outward in outwards:
            outward.key = keys[outward.key]
            outward.kernel = self.variants[outward.key.symbol]
            outward.address = ctypes.cast(outward.kernel, ctypes.c_void_p).value or 0
        for table, row, outward in rows:
            table[row, 0] = outward.address
        base = call.output.ctypes.data
        return _Combining(
            combined.ufunc,
            [(outward, outward.target - base) for outward in copies],
            [(table, row, outward.target - base) for table, row, outward in rows],
            by_numpy,
        )

    def _set_combined_operand(self, combining: _Combining, call: _Call, combined: _Combined, other: np.ndarray) -> None:
        """Point the copies of `combining` at `other`, as float32 rows shaped as the
        call's result (broadcast and copied into a kept array where it is not); at
        zeros for an Add, ones for a Mul, and the op left to its own step, where the
        op's result is not shaped as the call's. The same array as last run's, read
        where it lies, costs one identity test (90 such steps in a LLaMA's one-token
        run)."""
        if other is combining.read:
            return
        shape = call.result.shape
        try:
            combining.makes = np.broadcast_shapes(other.shape, shape) == shape
        except ValueError:
            combining.makes = False
        combining.read = None
        if not combining.makes:
            other = _kept(self.kept.buffers, (combining, "identity"), shape, np.zeros if combined.combine == "add" else np.ones)
        elif other.shape != shape or other.dtype != np.float32 or not other.flags.c_contiguous:
            np.copyto(kept := _kept(self.kept.buffers, (combining, "operand"), shape), other)
            other = kept
        else:
            combining.read = other
        combining.operand = other.reshape(call.output.shape)
        address = other.ctypes.data
        if address == combining.address:
            return
        for outward, offset in combining.copies:
            outward.arguments = (address + offset, *outward.arguments[1:])
        for table, row, offset in combining.rows:
            table[row, 3] = address + offset
        combining.address = address

    def _transpose(self, key: TransposeKey, batch: int, source: int, target: int) -> _Transpose:
        kernel = self.variants[key.symbol]
        shares = self._shares_for(key.units, key.count * batch * TRANSPOSE_WORK_PER_VALUE, _WORK_PER_THREAD)
        address = ctypes.cast(kernel, ctypes.c_void_p).value or 0
        return _Transpose(key, kernel, address, (0, 0, 0, 0, batch), shares, shares.threads == 1, source, target)

    @staticmethod
    def _staged(call: _Call, x: np.ndarray) -> int:
        """The address of x copied, as float32 rows, into the call's input buffer, which
        starts on a cache line: the kernels load 16 inputs (64 bytes) at a time, and
        from an array starting 16 bytes into a line (numpy's usual) every such load
        spans two lines (n:m 3:4 on 4096x4096 took 1.2x as long at one batch row, 1.3x
        to 1.5x at four). One copy in C also costs less than numpy's conversions and
        address lookups, which run cache-cold between kernels."""
        if call.input is None:
            call.input = on_cache_line(np.empty, x.shape)
            call.input_address = call.input.ctypes.data
        np.copyto(call.input, x, casting="unsafe")
        return call.input_address

    @staticmethod
    def _windows(op: SparseConvOp, x: np.ndarray, key: KernelKey) -> np.ndarray:
        """The convolution's input windows, (N, *spatial, C, *kernel), or for `run_major`
        columns (N, *spatial, C / m, *kernel, m): one row of the kernel's columns per
        output position (a view of x, padded)."""
        kernel = tuple(op.w.type.get_shape()[2:])  # pyright: ignore
        strides, dilations, pads = op.geometry(x.shape, kernel)
        windows = reference._windows(reference._pad(x, pads, 0.0), kernel, strides, dilations)  # (N, C, *out, *k)
        if not key.run_major:
            return np.moveaxis(windows, 1, 1 + len(kernel))
        runs = windows.reshape(x.shape[0], -1, key.m, *windows.shape[2:])  # (N, C / m, m, *out, *k)
        return np.moveaxis(runs, (1, 2), (1 + len(kernel), -1))

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for inputs by name. Safe to call from several threads; their
        runs take turns. Its numpy steps give floating point's IEEE results without
        numpy's warnings, as the reference does (`reference.run`)."""
        with self._running, np.errstate(all="ignore"):
            return self._run(feeds)

    def profile(self, feeds: Mapping[str, np.ndarray], runs: int) -> Profile:
        """Where `runs` runs on `feeds` spend their time, step by step (after one
        untimed run): a step's time runs from its start to the next step's, so it holds
        the Python around its call, and the steps it takes in (put-off normalizations,
        reshapes and Concats, residual Adds) count as its own."""
        with self._running, np.errstate(all="ignore"):
            self._run(feeds)
            marks = [0.0] * (len(self.steps) + 1)
            spent = [0.0] * len(self.steps)
            wall = 0.0
            for _ in range(runs):
                start = time.perf_counter()
                self._run(feeds, marks)
                wall += time.perf_counter() - start
                for index in range(len(self.steps)):
                    spent[index] += marks[index + 1] - marks[index]
            takers = self._takers()
            rows = [
                StepTime(_op_name(step.op), step.op.name, self._runs_as(step), seconds / runs, takers.get(id(step)), _geometry(step.op))
                for step, seconds in zip(self.steps, spent)
            ]
            return Profile(rows, wall / runs)

    def generated_kernels(self) -> list[str]:
        """What generated kernels run the steps (`Profile`'s runs_as, numpy's steps and
        those taken in left out), in step order, each once."""
        kinds = (self._runs_as(step) for step in self.steps)
        return list(dict.fromkeys(kind for kind in kinds if kind not in ("numpy", TAKEN_IN)))

    def _takers(self) -> dict[int, str]:
        """The name of the step that takes each put-off step in, by the put-off step's id."""
        takers: dict[int, str] = {}
        for step in self.steps:
            taken = [*(step.prologue.steps if step.prologue else ()), *(s for s in (step.concat, step.regrouped, step.band) if s is not None)]
            takers.update((id(s), _op_name(step.op)) for s in taken)
        return takers

    @staticmethod
    def _runs_as(step: _Step) -> str:
        """What ran a step: its kernel (with the implicit variant where a call took it),
        numpy, or nothing (a step another one takes in)."""
        if step.deferred:
            return TAKEN_IN
        if step.native is not None and any(plan is not None for plan in step.native.plans.values()):
            return step.native.runs_as
        if step.dtype is not None:
            return "numpy"
        if isinstance(step.unit, _Layer):
            key = step.unit.key
            implicit = any(call.phase_copies or call.in_place for call in step.calls.values())
            kind = "dense float32 kernel" if key.values == "f32" else f"{key.kind} kernel"  # lower-kernels' unpacked weights
            return f"{kind}{', implicit' if implicit else ''}"
        if isinstance(step.unit, _Pool):
            kind = f"{step.unit.key.kind} pool kernel" if step.unit.key.kind != "depthwise" else "depthwise kernel"
            if step.band is not None:
                conv = step.band.unit.key  # pyright: ignore
                return f"{'dense float32' if conv.values == 'f32' else conv.kind} kernel and {kind} in bands"
            return kind
        kind = step.unit.key.kind if step.unit.key is not None else "softmax"  # pyright: ignore
        return {"layer": "layer norm kernel", "rms": "RMS norm kernel", "softmax": "softmax kernel"}[kind]

    def _evaluate(self, step: _Step, env: list) -> None:
        """A numpy step's result, into its slot of `env`: a view's by the function kept
        for its input shape, a float32 Concat's or Relu's into an output kept from run
        to run. Next to the worker pool, a large BLAS call runs on one BLAS thread:
        BLAS's threads spin after each call on the CPUs the workers wait on (ResNet50,
        its first convolution in numpy: 160 ms a run on two threads, 97 with this; 95 on
        one). Limiting costs 6.6 us, too much to pay on every run of a small model,
        whose small calls BLAS runs on one thread anyway."""
        if step.writes_over:
            self._epoch += 1
        for grouped in step.grouped:
            self._grouped_operand(grouped, env)
        operands = [env[v] for v in step.inputs]
        if step.views is not None and (viewed := step.views.get(operands[0].shape)) is not None:
            if step.last_view is None or step.last_view[0] is not operands[0]:
                step.last_view = (operands[0], viewed(operands[0]))
            env[step.result] = step.last_view[1]
            return
        if step.native is not None and (result := self._run_native(step.native, step.op, operands)) is not None:
            env[step.result] = result
            return
        if isinstance(step.op, ConcatOp) and all(operand.dtype == np.float32 for operand in operands):
            env[step.result] = self._concat(step.op, operands)
            return
        if isinstance(step.op, ReluOp) and operands[0].dtype == np.float32:  # a fresh array costs its page faults
            x = operands[0]
            env[step.result] = np.maximum(x, 0.0, out=x if step.in_place else self._kept_output(step.op, x.shape))
            return
        if (into_kept := self._into_kept(step.op, operands)) is not None:
            env[step.result] = into_kept
            return
        if self.blas is not None and isinstance(step.op, BLAS_OPS) and operands[0].size * operands[1].size >= BLAS_SOLO_FROM:
            with self.blas.limit(limits=1, user_api="blas"):
                result = reference.evaluate(step.op, operands)
        else:
            result = reference.evaluate(step.op, operands)
        env[step.result] = result.astype(step.dtype, copy=False)  # pyright: ignore
        if step.views is not None:  # its shapes checked by a first run
            step.views[operands[0].shape] = reference.view(step.op, operands[0].shape)

    def _grouped_operand(self, grouped: _GroupedHeads, env: list) -> None:
        """An attention operand that repeats heads, into its slot: the heads before the
        repeat (for keys, a view with the last two axes swapped) where the run's shapes
        make the put-off steps repeat each of them G times in place, else what those
        steps make."""
        source, expanded, reshaped = env[grouped.source], env[grouped.expanded], env[grouped.reshaped]
        last = grouped.last
        if last is None or last[0] is not source or last[1] is not expanded or last[2] is not reshaped:
            last = grouped.last = (source, expanded, reshaped, self._repeat_read_as_groups(grouped, source, expanded, reshaped))
        if last[3] is not None:
            env[grouped.operand] = last[3]
            return
        for step in grouped.steps:
            self._evaluate(step, env)

    @staticmethod
    def _repeat_read_as_groups(grouped: _GroupedHeads, source: np.ndarray, expanded: np.ndarray, reshaped: np.ndarray) -> np.ndarray | None:
        """The operand to read as groups where the Expand to `expanded` and Reshape to
        `reshaped` repeat each head of `source` G times in place, else None."""
        if source.ndim != 4:
            return None
        batch, heads, rows, depth = source.shape
        sizes = [int(size) for size in expanded]
        groups = sizes[2] if len(sizes) == 5 else 0
        if groups < 1 or sizes[:2] + sizes[3:] != [batch, heads, rows, depth] or [int(size) for size in reshaped] != [batch, heads * groups, rows, depth]:
            return None
        return source.transpose(0, 1, 3, 2) if grouped.transposed else source

    def _into_kept(self, op: Operation, operands: list[np.ndarray]) -> np.ndarray | None:
        """A float32 Add, Sub, Mul or Div, an Expand of float32 or a Where between
        float32 values, into an output kept from run to run (`KEPT_UFUNCS`); None for
        other ops and types. A fresh array of a few hundred kilobytes costs its page
        faults on every run: a LLaMA's residual Add at 128 tokens (128 x 576) took 74 us
        a run fresh, 20 into a kept output; its MLP's gate Mul (128 x 1536) 151 and 96.
        A kept output is also the same array from run to run, which the attention call
        that reads a Where's mask knows by identity (`_NativeCall`)."""
        x = operands[0]
        ufunc = KEPT_UFUNCS.get(type(op))
        if ufunc is not None and x.dtype == operands[1].dtype == np.float32:
            shape = np.broadcast_shapes(x.shape, operands[1].shape)
            return ufunc(x, operands[1], out=self._kept_output(op, shape))
        if isinstance(op, nn_index.ExpandOp) and x.dtype == np.float32:
            out = self._kept_output(op, np.broadcast_shapes(x.shape, tuple(int(size) for size in operands[1])))
            np.copyto(out, x)
            return out
        if isinstance(op, nn_index.WhereOp) and operands[1].dtype == operands[2].dtype == np.float32:
            out = self._kept_output(op, np.broadcast_shapes(*(operand.shape for operand in operands)))
            np.copyto(out, operands[2])
            np.copyto(out, operands[1], where=x)
            return out
        return None

    def _run_native(self, native: _NativeOp, op: Operation, operands: list[np.ndarray]) -> np.ndarray | None:
        """`op` by its kernel into its kept output, on the worker threads by its units
        where the work pays; None where numpy runs it (`_NativeOp`). The kernel takes
        the operands as x, a0, a1, a2 (the output as y, the geometry as the bias)."""
        call = native.last
        if call is None or len(call.operands) != len(operands) or any(old is not new for old, new in zip(call.operands, operands)):
            call = native.last = self._native_call(native, op, operands)
            if call is None:
                return None
        for operand, copy in call.copies:
            np.copyto(copy, operand, casting="unsafe")
        if call.shares.threads == 1:
            native.kernel(*call.arguments, *call.shares.bounds[0])  # pyright: ignore
        else:
            self.pool.run(native.kernel, call.arguments, call.shares)  # pyright: ignore
        return call.out

    def _native_call(self, native: _NativeOp, op: Operation, operands: list[np.ndarray]) -> _NativeCall | None:
        """The kernel call of `op` on these operand arrays (`_NativeCall`), or None where
        numpy runs it: float32 operands whose last axis is contiguous read where they
        are, others from arrays of the call's own that each run copies them into."""
        found = tuple((operand.shape, operand.strides) for operand in operands)
        plan = native.plans.get(found, False)
        if plan is False:
            make = self._attention_plan if isinstance(native.key, AttentionKey) else self._rotary_plan
            plan = native.plans[found] = make(native, op, _float_rows(operands))  # pyright: ignore
        if plan is None:  # before any copy: numpy reads them as they are
            return None
        geometry, shares, shape = plan
        read = _float_rows(operands)
        copies = [(operand, copy) for operand, copy in zip(operands, read) if copy is not operand]
        out = self._kept_output(op, shape)
        first, *others = (operand.ctypes.data for operand in read)
        arguments = (first, out.ctypes.data, *others, *[0] * (3 - len(others)), geometry.ctypes.data, 0)
        return _NativeCall(list(operands), copies, arguments, shares, out)

    def _rotary_plan(self, native: _NativeOp, op: RotaryEmbeddingOp, operands: list[np.ndarray]) -> tuple[np.ndarray, Shares, tuple[int, ...]] | None:
        """The geometry, shares and output shape of `op` on these operands (each as
        rank 4); None where x's width is not the kernel's or cos and sin do not
        broadcast to x."""
        x, cos, sin = (operand.reshape((1,) * (4 - operand.ndim) + operand.shape) for operand in operands)
        if x.shape[3] != native.key.width or np.broadcast_shapes(x.shape, cos.shape, sin.shape) != x.shape:  # pyright: ignore
            return None
        units = x.shape[0] * x.shape[1]
        shares = self._shares_for(units, x.size * ROTARY_WORK_PER_VALUE, _WORK_PER_THREAD)
        return rotary_geometry(x, cos, sin), shares, operands[0].shape

    def _attention_plan(self, attention: _NativeOp, op: AttentionOp, operands: list[np.ndarray]) -> tuple[np.ndarray, Shares, tuple[int, ...]] | None:
        """The geometry, shares and output shape of `op` on these operands, or None
        where numpy runs it (another depth than the kernel's, heads that do not group,
        shapes that do not chain). However small, the kernel costs less than numpy's
        dozen calls in a model's run, whose code and data left the caches between
        steps: a LLaMA at one token ran 4% to 7% faster with it than with numpy for
        attentions under 2^16 multiply-adds and rotations under 2^12 values (GPT-2 2% to
        5%), though numpy won warm alone (7.7 against 12.5 us)."""
        q, kt, v, *mask = operands
        if q.shape[3] != attention.key.depth or v.shape[3] != attention.key.value_depth or kt.shape[2] != q.shape[3] or v.shape[2] != kt.shape[3]:
            return None
        batches = {q.shape[0], kt.shape[0], v.shape[0]} - {1}
        if len(batches) > 1:
            return None
        shape = (max(batches, default=1), q.shape[1], q.shape[2], v.shape[3])
        units = shape[0] * shape[1] * -(-shape[2] // ATTENTION_UNIT_ROWS)
        work = shape[0] * shape[1] * shape[2] * kt.shape[3] * (q.shape[3] + v.shape[3])
        geometry = attention_geometry(q, kt, v, mask[0] if mask else None, shape, op.scale.value.data)
        return None if geometry is None else (geometry, self._shares_for(units, work, _WORK_PER_THREAD), shape)

    def _concat(self, op: ConcatOp, operands: list[np.ndarray]) -> np.ndarray:
        """`op` on float32 `operands`, into an output kept from run to run: a fresh
        array of megabytes costs its page faults on every run (SqueezeNet's eight
        Concats took 2.0 ms a run, 0.6 kept). A chain's Concats (`concat_chain_ends`)
        share the last one's output, each its leading part, laid out as its
        convolutions' output lanes where they write there (`_concat_lanes`). An operand
        already where it belongs (the chain's leading part, such a convolution's output)
        stays there, and only the others are copied (DenseNet121's 58 Concats copied
        each block's features again for every layer: 3.6 ms a run)."""
        shapes = tuple(operand.shape for operand in operands)
        made = self.kept.concat_outputs.get((op, shapes))
        if made is None:
            made = self.kept.concat_outputs[(op, shapes)] = self._concat_output(op, shapes)
        out, parts, placed = made
        for index, (operand, part) in enumerate(zip(operands, parts)):
            if operand is placed[index]:
                continue
            if _same_place(operand, part):  # the same array on every run: checked once
                placed[index] = operand
            else:
                np.copyto(part, operand)
        return out

    def _concat_output(self, op: ConcatOp, shapes: tuple[tuple[int, ...], ...]) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray | None]]:
        """Where Concat `op` makes its result from operands of `shapes`, each operand's
        part of it, and for each the operand array found there (none yet). The result
        is the leading part of its chain's lane buffer where its convolutions fill one
        for these images (`_concat_lanes`), else of its chain's kept output."""
        axis = op.axis.value.data % len(shapes[0])
        shape = list(shapes[0])
        shape[axis] = sum(operand[axis] for operand in shapes)
        end = self.concat_ends.get(op, op)
        lanes = self.kept.concat_lanes.get((end, shape[0]))
        if lanes is not None and axis == 1 and tuple(shape[2:]) == lanes[1][2:]:
            buffer, (_plane, pitch, rows, columns) = lanes
            out = _lane_view(buffer, shape[1], rows, pitch, columns)
        else:
            whole = list(shape)
            whole[axis] = max(shape[axis], end.output.type.get_shape()[axis])  # pyright: ignore
            out = _kept(self.kept.buffers, (end, tuple(whole)), tuple(whole))[(slice(None),) * axis + (slice(0, shape[axis]),)]
        bounds = list(itertools.accumulate((operand[axis] for operand in shapes), initial=0))
        parts = [out[(slice(None),) * axis + (slice(start, stop),)] for start, stop in zip(bounds[:-1], bounds[1:])]
        return out, parts, [None] * len(parts)

    def _run(self, feeds: Mapping[str, np.ndarray], marks: list[float] | None = None) -> dict[str, np.ndarray]:
        """A run; with `marks`, the time each step starts, and the last's end after them."""
        self._epoch += 1
        arguments = self.feeds(feeds)
        input_shapes = tuple(array.shape for array in arguments)
        if input_shapes not in self.kept.shapes:
            if len(self.kept.shapes) >= KEPT_SHAPE_SETS or self.kept_bytes() > KEPT_BYTES:
                self._forget_kept()
            self.kept.shapes.add(input_shapes)
        known = self.kept.known.get(input_shapes)
        env = (self.initial if known is None else known.env).copy()
        env[: len(arguments)] = arguments  # the arguments' slots come first
        addresses: list[int | None] = [None] * len(env)
        """The addresses of the kernel outputs that later kernel steps read in place."""
        for index, step in enumerate(self.steps) if known is None or marks is not None else self.steps_left:
            if marks is not None:
                marks[index] = time.perf_counter()
            if step.dtype is not None:
                if env[step.result] is None and not step.deferred:  # else a kernel call takes it in
                    self._evaluate(step, env)
                continue
            if step.deferred:  # a convolution its pool runs in bands
                continue
            if step.writes_over:
                self._epoch += 1
            prologue = step.prologue
            reader = step.band or step  # a banded pool reads the convolution's inputs
            x = env[reader.inputs[0] if reader.prologue is None else reader.prologue.source]
            if step.regrouped is not None:
                x = self._regrouped(step.regrouped, env[step.regrouped.inputs[0]])
            elif step.concat is not None:
                x = _Concatenated([env[v] for v in step.concat.inputs])
            addend = None if step.residual is None else env[step.residual.addend]
            shapes = x.shape if addend is None else (x.shape, addend.shape)
            call = step.calls.get(shapes) or self._call_for(step, x, addend, shapes)  # pyright: ignore
            if prologue is not None and call.prologue is None:  # not implicit: run the put-off steps
                for deferred in prologue.steps:
                    self._evaluate(deferred, env)
                x = env[step.inputs[0]]
            if call.residual is not None and addend is not call.addend_in_place:
                np.copyto(call.result, addend)
            combined = step.combined
            if combined is not None and call.combining:
                self._set_combined_operand(call.combining, call, combined, env[combined.other])
            step.run(self, step, call, x, addresses[step.inputs[0]])  # pyright: ignore
            if call.addend_in_place is not None:  # the addend's lanes hold the result now
                self._epoch += 1
            env[step.result] = call.result
            addresses[step.result] = call.result_address
            if combined is not None:
                if call.combining and call.combining.makes:
                    call.combining.finish(call.output)
                    env[combined.absorbed] = call.result
                    addresses[combined.absorbed] = call.result_address
                elif call.combining is None:
                    call.combining = self._combining(call, combined) or False
            if call.residual is not None:
                for absorbed in call.residual.absorbed:
                    env[absorbed] = call.result
        if marks is not None:
            marks[-1] = time.perf_counter()
        if known is None and self.shape_functions:
            self._keep_shape_functions(input_shapes, env)
        return {name: np.array(env[v], copy=True) for name, v in zip(self.output_names, self.returned)}

    def kept_bytes(self) -> int:
        """The bytes of the arrays kept from run to run (`_Kept.bytes`)."""
        return self.kept.bytes()

    def _forget_kept(self) -> None:
        """Drop everything made for the input shapes run so far: the kept arrays, shape
        functions' values and what is known of arrays by address (`_Kept`), and the
        calls, views and plans the steps made for them (`_Step.forget`). Runs on those
        shapes make theirs again, as a first run does; compiled kernels stay."""
        self.kept = _Kept()
        for step in self.steps:
            step.forget()

    def _keep_shape_functions(self, input_shapes: tuple, env: list) -> None:
        """Keep the values of `shape_values` for runs on inputs of `input_shapes`, as
        copies (their arrays may be kept outputs that later steps write again)."""
        known = self.initial.copy()
        for slot in self.shape_values:
            known[slot] = np.array(env[slot], copy=True)
        self.kept.known[input_shapes] = _Known(known)
