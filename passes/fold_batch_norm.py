"""Fold inference-mode batch normalization into the convolution or Gemm before it.

    %y = nn.conv %x, %w, %b                       %y2 = nn.conv %x, %w_bn, %b_bn
    %z = nn.batch_norm %y, %s, %t, %mean, %var    (nn.batch_norm gone)

with, per output channel, inv = s / sqrt(var + epsilon), w_bn = w * inv and
b_bn = (b - mean) * inv + t (b = 0 without a bias). A batch normalization after each
convolution (ResNet's 53) then costs nothing at run time, and the folded bias and a
Relu after it fuse into the convolution's kernel (lower-kernels). A Gemm followed by
a normalization (BatchNorm1d after a Linear layer) folds the same way, its weight's
output columns scaled.

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
from xdsl.dialects.builtin import FloatAttr, TensorType, f32
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from sparsec.context import weight_store
from sparsec.dialects import nn
from sparsec.dialects.sparse import PatternAttr
from sparsec.irfile import drop_unread_weights
from sparsec.weights import WeightStore


def _weight(value: SSAValue | None) -> nn.WeightOp | None:
    owner = value.owner if value is not None else None
    return owner if isinstance(owner, nn.WeightOp) else None


Layer = nn.ConvOp | nn.GemmOp


def _weights_of(layer: Layer) -> tuple[SSAValue, SSAValue | None]:
    """The layer's weight and bias operands."""
    return (layer.w, layer.b) if isinstance(layer, nn.ConvOp) else (layer.b, layer.c)


def _foldable(norm: nn.BatchNormOp) -> Layer | None:
    """The convolution or Gemm (weight on the right) `norm` can be folded into, if any."""
    layer = norm.x.owner
    if not isinstance(layer, Layer) or not layer.output.has_one_use():
        return None
    weight, bias = _weights_of(layer)
    operands = [weight, norm.scale, norm.b, norm.mean, norm.var] + ([bias] if bias is not None else [])
    return layer if all(_weight(value) is not None for value in operands) else None


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


def _fold(layer: Layer, norm: nn.BatchNormOp, weights: WeightStore) -> None:
    """Replace layer and norm by one layer with the folded weight and bias.

    A Gemm computes alpha * A @ B' + beta * C with B' the (K, N) view of B, so its
    columns scale, and the folded bias beta * C * inv + shift - mean * inv takes beta
    = 1 (C may be any shape that broadcasts to the output's)."""
    weight, bias = _weights_of(layer)
    w_op = _weight(weight)
    assert w_op is not None
    inv = _array(norm.scale, weights) / np.sqrt(_array(norm.var, weights) + norm.epsilon.value.data)
    offset = _array(norm.b, weights) - _array(norm.mean, weights) * inv
    w = _array(weight, weights)
    b = _array(bias, weights) if bias is not None else 0.0
    properties = dict(layer.properties)
    if isinstance(layer, nn.ConvOp):
        folded_w, folded_b = w * inv.reshape(-1, *(1,) * (w.ndim - 1)), b * inv + offset
    else:
        folded_w = w * inv[:, None] if layer.trans_b.value.data else w * inv
        folded_b = layer.beta.value.data * b * inv + offset
        properties["beta"] = FloatAttr(1.0, f32)
    new_w = _new_weight(weights, w_op, "_bn", folded_w, w_op.sparsity)
    new_b = _new_weight(weights, w_op, "_bn_bias", np.asarray(folded_b), None)
    activation = layer.x if isinstance(layer, nn.ConvOp) else layer.a
    new = type(layer).build(operands=[[activation], [new_w.result], [new_b.result]], properties=properties, result_types=[norm.output.type])
    block = layer.parent_block()
    assert block is not None
    block.insert_ops_before([new_w, new_b, new], layer)
    new.location = layer.location
    new.output.name_hint = norm.output.name_hint
    norm.output.replace_all_uses_with(new.output)
    block.erase_op(norm)
    block.erase_op(layer)


def _drop_unused_weights(module: builtin.ModuleOp, weights: WeightStore, candidates: list[Operation]) -> None:
    """Erase the `nn.weight` ops of `candidates` left without uses, and their arrays
    when no other op reads them."""
    unused = [op for op in dict.fromkeys(candidates) if isinstance(op, nn.WeightOp) and op.result.first_use is None]
    for op in unused:
        op.detach()
        op.erase()
    drop_unread_weights(module, weights, [op.weight_name.data for op in unused])


@dataclass(frozen=True)
class FoldBatchNormPass(ModulePass):
    """Fold nn.batch_norm into the nn.conv or nn.gemm before it (weight and bias scaled per channel)."""

    name = "fold-batch-norm"

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        weights = weight_store(ctx)
        replaced: list[Operation] = []
        for norm in [o for o in op.walk() if isinstance(o, nn.BatchNormOp)]:
            layer = _foldable(norm)
            if layer is None:
                continue
            operands = [*_weights_of(layer), norm.scale, norm.b, norm.mean, norm.var]
            replaced += [value.owner for value in operands if value is not None]  # pyright: ignore
            _fold(layer, norm, weights)
        _drop_unused_weights(op, weights, replaced)
