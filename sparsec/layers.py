"""Which weights belong to which layers, and their canonical (out, in, *kernel) view.

Patterns and axes are defined on the (out_channels, in_channels, *kernel) view of a
weight, whatever its ONNX layout:

    Gemm B, trans_b = 1   (N, K)          as stored
    Gemm B, trans_b = 0   (K, N)          transposed
    MatMul, weight right  (K, N)          transposed
    MatMul, weight left   (M, K)          as stored
    Conv W                (M, C/g, k...)  as stored

Pruning, packing, reports and `inspect` all find layers here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import ModuleOp, NameLoc, TensorType, f32
from xdsl.ir import Operation

from sparsec.dialects import StoredWeightOp, nn
from sparsec.dialects.kernel_ops import SparseConvOp, SparseMatMulOp
from sparsec.dialects.sparse import PackedWeightOp, PatternAttr
from sparsec.errors import PassFailure
from sparsec.weights import WeightStore

MAX_RANK = 5
"""Conv weights have rank 3 to 5; Gemm and MatMul weights rank 2."""

@dataclass(frozen=True)
class LayerWeight:
    """A weight in the weight position of Gemm, MatMul or Conv, with its canonical view."""

    op: StoredWeightOp
    consumer: Operation
    transposed: bool
    """True when the stored tensor is the transpose of the (out, in) view."""

    @property
    def name(self) -> str:
        return self.op.weight_name.data

    @property
    def layer(self) -> str:
        """The consumer's ONNX node name when known, else the weight's name."""
        location = self.consumer.location
        return location.desc.data if isinstance(location, NameLoc) else self.name

    @property
    def op_type(self) -> str:
        """The ONNX operator the layer computes (kernel ops included)."""
        if isinstance(self.consumer, SparseMatMulOp):
            return "MatMul" if self.transposed else "Gemm"
        return type(self.consumer).ONNX_OP  # pyright: ignore

    def canonical(self, array: np.ndarray) -> np.ndarray:
        return array.T if self.transposed else array

    def stored(self, canonical: np.ndarray) -> np.ndarray:
        return canonical.T if self.transposed else canonical

    def stored_axis(self, canonical_axis: int) -> int:
        """The stored tensor's axis for an axis of the canonical view."""
        return 1 - canonical_axis if self.transposed else canonical_axis


def dense_value(op: StoredWeightOp, weights: WeightStore) -> np.ndarray:
    """The weight as a dense tensor, decoding it if it is packed."""
    if isinstance(op, PackedWeightOp):
        return op.decode({role: weights[name] for role, name in op.stored_tensors().items()})
    return weights[op.weight_name.data]


def new_weight(weights: WeightStore, like: nn.WeightOp, suffix: str, array: np.ndarray, sparsity: PatternAttr | None) -> nn.WeightOp:
    """An `nn.weight` op for `array` (as float32), stored under a new name: `like`'s
    name and `suffix` (its SSA name the same from `like`'s, which is sanitized). What
    a pass that folds values into a weight puts in its place."""
    name = weights.unique_name(like.weight_name.data + suffix)
    weights[name] = array.astype(np.float32)
    op = nn.WeightOp(name, TensorType(f32, array.shape), sparsity)
    if like.result.name_hint is not None:
        op.result.name_hint = like.result.name_hint + suffix
    return op


def _weight_role(consumer: Operation, index: int, rank: int) -> bool | None:
    """None if this operand slot is not a layer weight, else whether it is transposed."""
    if isinstance(consumer, nn.GemmOp) and index == 1:
        return not consumer.trans_b.value.data
    if isinstance(consumer, nn.MatMulOp) and rank == 2:
        return index == 1
    if isinstance(consumer, nn.ConvOp | SparseConvOp) and index == 1 and 3 <= rank <= MAX_RANK:
        return False
    if isinstance(consumer, SparseMatMulOp) and index == 1:
        return bool(consumer.transposed.value.data)
    return None


def layer_weights(module: ModuleOp, include_packed: bool = False) -> Iterator[LayerWeight]:
    """Every weight that feeds a Gemm, MatMul or Conv as its weight operand.

    Packed weights are included only on request: pruning must not see them.
    """
    kinds = StoredWeightOp if include_packed else nn.WeightOp
    for op in module.walk():
        if not isinstance(op, kinds):
            continue
        rank = len(op.tensor_type.get_shape())
        roles = {
            (use.operation, role)
            for use in op.result.uses
            if (role := _weight_role(use.operation, use.index, rank)) is not None
        }
        if not roles:
            continue
        if len({role for _, role in roles}) > 1:
            raise PassFailure(
                f"weight '{op.weight_name.data}' is used both as (out, in) and as (in, out) "
                "by different layers; it cannot be given one pattern"
            )
        consumer, transposed = min(roles, key=lambda r: str(r[0].name))
        yield LayerWeight(op, consumer, transposed)
