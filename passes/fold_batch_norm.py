"""Fold inference-mode batch normalization into the convolution before it.

    %y = nn.conv %x, %w, %b                       %y2 = nn.conv %x, %w_bn, %b_bn
    %z = nn.batch_norm %y, %s, %t, %mean, %var    (nn.batch_norm gone)

with, per output channel, inv = s / sqrt(var + epsilon), w_bn = w * inv and
b_bn = (b - mean) * inv + t (b = 0 without a bias). A batch normalization after each
convolution (ResNet's 53) then costs nothing at run time, and the folded bias and a
Relu after it fuse into the convolution's kernel (lower-kernels).

Scaling an output channel keeps its zeros where they are, so the pass may run after
pruning: the pattern the pruning pass recorded on the weight still holds, and the
weights were pruned as the model stored them (as coremltools prunes). It folds only
where the convolution's result feeds nothing but the normalization and every operand
involved is an unpacked `nn.weight`; anything else is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.dialects.builtin import TensorType, f32
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from sparsec.context import weight_store
from sparsec.dialects import nn
from sparsec.dialects.sparse import PatternAttr
from sparsec.weights import WeightStore


def _weight(value: SSAValue | None) -> nn.WeightOp | None:
    owner = value.owner if value is not None else None
    return owner if isinstance(owner, nn.WeightOp) else None


def _foldable(norm: nn.BatchNormOp) -> nn.ConvOp | None:
    """The convolution `norm` can be folded into, if any."""
    conv = norm.x.owner
    if not isinstance(conv, nn.ConvOp) or not conv.output.has_one_use():
        return None
    weights = [conv.w, norm.scale, norm.b, norm.mean, norm.var] + ([conv.b] if conv.b is not None else [])
    return conv if all(_weight(value) is not None for value in weights) else None


def _array(value: SSAValue, weights: WeightStore) -> np.ndarray:
    """The stored array of the `nn.weight` op that defines `value`, in float64."""
    op = _weight(value)
    assert op is not None
    return weights[op.weight_name.data].astype(np.float64)


def _new_weight(weights: WeightStore, like: nn.WeightOp, suffix: str, array: np.ndarray, sparsity: PatternAttr | None) -> nn.WeightOp:
    """An `nn.weight` op for `array` (as float32), stored under a new name: `like`'s
    name and `suffix` (its SSA name the same from `like`'s, which is sanitized)."""
    name = weights.unique_name(like.weight_name.data + suffix)
    weights[name] = array.astype(np.float32)
    op = nn.WeightOp(name, TensorType(f32, array.shape), sparsity)
    if like.result.name_hint is not None:
        op.result.name_hint = like.result.name_hint + suffix
    return op


def _fold(conv: nn.ConvOp, norm: nn.BatchNormOp, weights: WeightStore) -> None:
    """Replace conv and norm by one convolution with the folded weight and bias."""
    w_op = _weight(conv.w)
    assert w_op is not None
    inv = _array(norm.scale, weights) / np.sqrt(_array(norm.var, weights) + norm.epsilon.value.data)
    bias = _array(conv.b, weights) if conv.b is not None else 0.0
    w = _array(conv.w, weights)
    new_w = _new_weight(weights, w_op, "_bn", w * inv.reshape(-1, *(1,) * (w.ndim - 1)), w_op.sparsity)
    new_b = _new_weight(weights, w_op, "_bn_bias", (bias - _array(norm.mean, weights)) * inv + _array(norm.b, weights), None)
    new_conv = nn.ConvOp.build(operands=[[conv.x], [new_w.result], [new_b.result]], properties=dict(conv.properties), result_types=[norm.output.type])
    block = conv.parent_block()
    assert block is not None
    block.insert_ops_before([new_w, new_b, new_conv], conv)
    new_conv.location = conv.location
    new_conv.output.name_hint = norm.output.name_hint
    norm.output.replace_all_uses_with(new_conv.output)
    block.erase_op(norm)
    block.erase_op(conv)


def _drop_unused_weights(module: builtin.ModuleOp, weights: WeightStore, candidates: list[Operation]) -> None:
    """Erase the `nn.weight` ops of `candidates` left without uses, and their arrays
    when no other op reads them."""
    for op in candidates:
        if isinstance(op, nn.WeightOp) and op.result.first_use is None and op.parent is not None:
            op.detach()
            op.erase()
    still_read = {op.weight_name.data for op in module.walk() if isinstance(op, nn.WeightOp)}
    for op in candidates:
        if isinstance(op, nn.WeightOp) and op.weight_name.data not in still_read and op.weight_name.data in weights:
            weights.pop(op.weight_name.data)


@dataclass(frozen=True)
class FoldBatchNormPass(ModulePass):
    """Fold nn.batch_norm into the nn.conv before it (weight and bias scaled per channel)."""

    name = "fold-batch-norm"

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        weights = weight_store(ctx)
        replaced: list[Operation] = []
        for norm in [o for o in op.walk() if isinstance(o, nn.BatchNormOp)]:
            conv = _foldable(norm)
            if conv is None:
                continue
            operands = [conv.w, conv.b, norm.scale, norm.b, norm.mean, norm.var]
            replaced += [value.owner for value in operands if value is not None]  # pyright: ignore
            _fold(conv, norm, weights)
        _drop_unused_weights(op, weights, replaced)
