"""Sparse matrix kernels, generated per specialization key in xDSL's `llvm` dialect.

Every kernel computes, for batch rows b and output rows o in [begin, end),

    y[b, o] = epilogue(sum_k W[o, k] * x[b, k])      W in its (out, in) view, N x K

with N, K, the encoding parameters and the epilogue fixed at generation time, so LLVM
sees constant trip counts and strides. The signature is the same for all kernels:

    void kernel(float *x, float *y, void *a0, void *a1, void *a2, float *bias,
                i64 batch, i64 begin, i64 end)

bitmask   a0 = mask as 16-bit words, each row padded to whole 64-bit steps
          (N x KernelKey.mask_words); a1 = non-zero values in row-major order;
          a2 = i64 offset of each row's first value in each 256-column panel
          (N x panels + 1; entry row * panels starts the row). Vector form: 64 columns per step, the
          values expand-loaded into their lanes; scalar form: the set bits one by one.
          Chunk variants (one batch row, sparse weights): a0 = 20-byte chunk records
          (u32 base column | count << 24, then 16 u8 offsets from that column; up to
          16 non-zeros within the key's chunk_span columns); a1 = the same values;
          a2 = i64 (first chunk, first value) per row, then the totals ((N + 1) x 2).
nm        a0 = kept values, m - n per run of m along the row; a1 = kept positions,
          ceil(log2 m) bits each, least-significant first (with 2 bytes of slack);
          a2 (vector form only) = per row, one 32- or 64-bit word of 16 positions per
          whole step of 16 kept values. No mask: a fixed trip count of m - n per run.
block     (blocks of B output rows) a0 = kept blocks' values, B per block, grouped by row
          block; a1 = i32 column of each kept block; a2 = i64 start of each row block's
          blocks (ceil(N/B) + 1). Loops over kept blocks only; begin/end count row blocks.
dense     a0 = all N x K values row-major (weights whose mask would cost more bytes
          than their zeros save).
"""

from __future__ import annotations

from xdsl.backend.llvm.convert import convert_module
from xdsl.dialects import llvm
from xdsl.dialects.builtin import ModuleOp

from sparsec.kernels import AnyKey, AttentionKey, NormKey, PlaneKey, PoolKey, RotaryKey, TransposeKey
from sparsec.runtime.codegen.attention import AttentionKernel
from sparsec.runtime.codegen.base import Kernel, UnitKernel
from sparsec.runtime.codegen.bitmask import BatchedBitmaskKernel, BitmaskKernel, ChunkBitmaskKernel, VectorBitmaskKernel
from sparsec.runtime.codegen.block import BatchedBlockKernel, BlockKernel, VectorBlockKernel
from sparsec.runtime.codegen.dense import DenseKernel, ScalarDenseKernel
from sparsec.runtime.codegen.nm import BatchedNMKernel, NMKernel, VectorNMKernel
from sparsec.runtime.codegen.norm import LayerNormKernel, RMSNormKernel, SoftmaxKernel
from sparsec.runtime.codegen.planes import PlaneCopyKernel
from sparsec.runtime.codegen.pool import PoolKernel
from sparsec.runtime.codegen.rotary import RotaryKernel
from sparsec.runtime.codegen.transpose import TransposeKernel

_SCALAR = {"bitmask": BitmaskKernel, "nm": NMKernel, "block": BlockKernel, "dense": ScalarDenseKernel}
_BATCHED = {"bitmask": BatchedBitmaskKernel, "nm": BatchedNMKernel, "block": BatchedBlockKernel}


def kernel_function(key: AnyKey) -> llvm.FuncOp:
    """The `llvm.func` for one specialization key (a pure function of the key)."""
    return kernel_class(key)(key).build()  # pyright: ignore


def kernel_class(key: AnyKey) -> type[Kernel] | type[UnitKernel]:
    """The generator of the kernel for `key`.

    Bitmask and dense weights in float16 on a target with float16 conversions use the
    16-lane kernels, n:m weights on AVX-512 too (`KernelKey.nm_lanes`); scalar kernels
    cover the rest (float32 bitmask values, portable targets). The batched and chunk
    variants are the executor's choices for some batch sizes and weights (KernelKey).
    """
    if isinstance(key, NormKey):
        return {"layer": LayerNormKernel, "rms": RMSNormKernel, "softmax": SoftmaxKernel}[key.kind]
    if isinstance(key, PlaneKey):
        return PlaneCopyKernel
    if isinstance(key, TransposeKey):
        return TransposeKernel
    if isinstance(key, AttentionKey):
        return AttentionKernel
    if isinstance(key, RotaryKey):
        return RotaryKernel
    if isinstance(key, PoolKey):
        return PoolKernel
    if key.batched:
        return _BATCHED[key.kind]
    if key.chunk_span:
        return ChunkBitmaskKernel
    if key.kind == "bitmask" and key.values == "f16" and key.native_f16:
        return VectorBitmaskKernel
    if key.kind == "block" and (key.native_f16 or key.values == "f32"):
        return VectorBlockKernel
    if key.kind == "dense" and (key.native_f16 or key.values == "f32"):
        return DenseKernel
    if key.nm_lanes:
        return VectorNMKernel
    return _SCALAR[key.kind]


def explicit_vectors(keys: list[AnyKey]) -> bool:
    """Whether every kernel of `keys` is written in vectors (Kernel.EXPLICIT_VECTORS)."""
    return all(kernel_class(key).EXPLICIT_VECTORS for key in keys)


def kernel_llvm_ir(key: AnyKey) -> str:
    """LLVM IR text of one kernel, through xDSL's llvm-dialect translator."""
    import llvmlite.binding as llvm

    module = kernel_module([key])
    return str(convert_module(module, fallback_target_triple=llvm.get_process_triple()))


def kernel_module(keys: list[AnyKey]) -> ModuleOp:
    """One module holding a function for each distinct key."""
    unique = list(dict.fromkeys(keys))
    return ModuleOp([kernel_function(key) for key in unique])
