"""Fold inference-mode batch normalization into the convolution or Gemm before it.

    %y = nn.conv %x, %w, %b                       %y2 = nn.conv %x, %w_bn, %b_bn
    %z = nn.batch_norm %y, %s, %t, %mean, %var    (nn.batch_norm gone)

with, per output channel, inv = s / sqrt(var + epsilon), w_bn = w * inv and
b_bn = (b - mean) * inv + t (b = 0 without a bias). A batch normalization after each
convolution (ResNet's 53) then costs nothing at run time, and the folded bias and a
Relu after it fuse into the convolution's kernel (lower-kernels). A Gemm followed by
a normalization (BatchNorm1d after a Linear layer) folds the same way, its weight's
output columns scaled.

Exporters also write a normalization, or its scale and shift, as a Mul and an Add of
per-channel constants (DenseNet's light model: 121 of each). Those fold too: into the
convolution or Gemm before them (w * m, b * m for a Mul by m; b + a for an Add of a),
or into the normalization before them (its scale and shift times m; its shift plus
a), until no more fold. A per-channel constant is an `nn.weight`, possibly through
`nn.unsqueeze`, `nn.reshape` or `nn.squeeze`, whose type broadcasts along the output's
channel axis (axis 1) only: one value, or one per channel.

Scaling an output channel keeps its zeros where they are, so the pass may run after
pruning: the pattern the pruning pass recorded on the weight still holds, and the
weights were pruned as the model stored them (as coremltools prunes). It folds only
where the result folded into feeds nothing but the op folded and every operand
involved is an unpacked `nn.weight`; anything else is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.dialects.builtin import FloatAttr, f32
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from sparsec.context import weight_store
from sparsec.dialects import nn
from sparsec.irfile import drop_unread_weights
from sparsec.layers import new_weight
from sparsec.reference import batch_norm_affine
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


def _fold(layer: Layer, scale: np.ndarray | None, shift: np.ndarray | None, folded: Operation, suffix: str, weights: WeightStore) -> None:
    """Replace layer and the op `folded` after it, which scales (`scale`, None for 1)
    and shifts (`shift`, None for 0) each output channel, by one layer with the folded
    weight and bias.

    A Gemm computes alpha * A @ B' + beta * C with B' the (K, N) view of B, so its
    columns scale, and the folded bias beta * C * scale + shift takes beta = 1 (C may
    be any shape that broadcasts to the output's)."""
    weight, bias = _weights_of(layer)
    w_op = _weight(weight)
    assert w_op is not None
    w = _array(weight, weights)
    inv = np.ones(w.shape[0] if isinstance(layer, nn.ConvOp) or layer.trans_b.value.data else w.shape[1]) if scale is None else scale
    offset = np.zeros_like(inv) if shift is None else shift
    b = _array(bias, weights) if bias is not None else 0.0
    properties = dict(layer.properties)
    if isinstance(layer, nn.ConvOp):
        folded_w, folded_b = w * inv.reshape(-1, *(1,) * (w.ndim - 1)), b * inv + offset
    else:
        folded_w = w * inv[:, None] if layer.trans_b.value.data else w * inv
        folded_b = layer.beta.value.data * b * inv + offset
        properties["beta"] = FloatAttr(1.0, f32)
    new_w = w_op if scale is None else new_weight(weights, w_op, suffix, folded_w, w_op.sparsity)
    new_b = new_weight(weights, w_op, suffix + "_bias", np.asarray(folded_b), None) if bias is not None or shift is not None else None
    activation = layer.x if isinstance(layer, nn.ConvOp) else layer.a
    operands = [[activation], [new_w.result], [new_b.result] if new_b is not None else []]
    new = type(layer).build(operands=operands, properties=properties, result_types=[folded.results[0].type])
    _replace([layer, folded], new, [op for op in (new_w, new_b) if op is not None and op is not w_op])


def _fold_into_norm(norm: nn.BatchNormOp, scale: np.ndarray | None, shift: np.ndarray | None, folded: Operation, weights: WeightStore) -> None:
    """Replace norm and the op `folded` after it by one normalization whose scale and
    shift absorb `folded`'s (s * scale and t * scale + shift)."""
    s_op, t_op = _weight(norm.scale), _weight(norm.b)
    assert s_op is not None and t_op is not None
    s, t = _array(norm.scale, weights), _array(norm.b, weights)
    new_s = new_weight(weights, s_op, "_scaled", s * scale, None) if scale is not None else s_op
    new_t = new_weight(weights, t_op, "_shifted", t * (1.0 if scale is None else scale) + (0.0 if shift is None else shift), None)
    operands = [[norm.x], [new_s.result], [new_t.result], [norm.mean], [norm.var]]
    new = nn.BatchNormOp.build(operands=operands, properties=dict(norm.properties), result_types=[folded.results[0].type])
    _replace([norm, folded], new, [op for op in (new_s, new_t) if op is not s_op])


def _replace(old: list[Operation], new: Operation, new_weights: list[Operation]) -> None:
    """Insert `new_weights` and `new` before old[0]; `new` takes the last old op's
    result's uses and name, and the old ops go."""
    first, last = old[0], old[-1]
    block = first.parent_block()
    assert block is not None
    block.insert_ops_before([*new_weights, new], first)
    new.location = first.location
    new.results[0].name_hint = last.results[0].name_hint
    last.results[0].replace_all_uses_with(new.results[0])
    for op in reversed(old):
        block.erase_op(op)


_CONSTANT_VIEWS = (nn.UnsqueezeOp, nn.ReshapeOp, nn.SqueezeOp)
"""Ops that give a constant another shape without changing its values' order."""


def _channel_values(value: SSAValue, like: SSAValue, weights: WeightStore) -> np.ndarray | None:
    """The per-channel values of constant `value` when it broadcasts against `like`
    (N, C, ...) along the channel axis only (one value, or C); else None."""
    value_shape, shape = value.type.get_shape(), like.type.get_shape()  # pyright: ignore
    if len(value_shape) > len(shape) or len(shape) < 2 or shape[1] <= 0:
        return None
    aligned = (1,) * (len(shape) - len(value_shape)) + tuple(value_shape)
    if any(size != 1 for axis, size in enumerate(aligned) if axis != 1) or aligned[1] not in (1, shape[1]):
        return None
    source = value
    while isinstance(source.owner, _CONSTANT_VIEWS):
        source = source.owner.input
    if _weight(source) is None:
        return None
    return np.broadcast_to(_array(source, weights).reshape(-1), (shape[1],))


def _affine_fold(op: nn.MulOp | nn.AddOp, weights: WeightStore) -> bool:
    """Fold the Mul or Add `op` of a per-channel constant into the layer or the
    normalization whose only use it is; whether it did."""
    for before, constant in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
        owner = before.owner
        if not isinstance(owner, (nn.ConvOp, nn.GemmOp, nn.BatchNormOp)) or not before.has_one_use() or op.output.type != before.type:
            continue
        channel = _channel_values(constant, before, weights)
        if channel is None:
            continue
        scale, shift = (channel, None) if isinstance(op, nn.MulOp) else (None, channel)
        if isinstance(owner, nn.BatchNormOp):
            if _weight(owner.scale) is None or _weight(owner.b) is None:
                continue
            _fold_into_norm(owner, scale, shift, op, weights)
            return True
        if all(_weight(operand) is not None for operand in _weights_of(owner) if operand is not None):
            _fold(owner, scale, shift, op, "_scaled" if scale is not None else "_shifted", weights)
            return True
    return False


def _unused_constants(module: builtin.ModuleOp) -> list[Operation]:
    """The weights and weight views without uses, in program order."""
    return [o for o in module.walk() if isinstance(o, (nn.WeightOp, *_CONSTANT_VIEWS)) and o.results[0].first_use is None]


def _drop_unused_constants(module: builtin.ModuleOp, weights: WeightStore, unused_before: list[Operation]) -> None:
    """Erase the weights and views the folds left without uses (those the module had
    without uses before stay), views first, and the weights' arrays when no other op
    reads them."""
    kept = set(unused_before)
    while unused := [o for o in reversed(_unused_constants(module)) if o not in kept]:
        for o in unused:
            o.detach()
            o.erase()
        drop_unread_weights(module, weights, [o.weight_name.data for o in unused if isinstance(o, nn.WeightOp)])


@dataclass(frozen=True)
class FoldBatchNormPass(ModulePass):
    """Fold nn.batch_norm, and Mul and Add of per-channel constants, into the nn.conv or nn.gemm (or nn.batch_norm) before them."""

    name = "fold-batch-norm"

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        weights = weight_store(ctx)
        unused_before = _unused_constants(op)
        for norm in [o for o in op.walk() if isinstance(o, nn.BatchNormOp)]:
            layer = _foldable(norm)
            if layer is None:
                continue
            inv, offset = batch_norm_affine(norm, *(_array(value, weights) for value in (norm.scale, norm.b, norm.mean, norm.var)))
            _fold(layer, inv, offset, norm, "_bn", weights)
        while any(_affine_fold(o, weights) for o in op.walk() if isinstance(o, nn.MulOp | nn.AddOp)):
            pass
        _drop_unused_constants(op, weights, unused_before)
