"""Fuse layer normalization written out op by op, as exporters write it, into one
nn.layer_norm.

ONNX has had a LayerNormalization operator only since opset 17. PyTorch's export of
`nn.LayerNorm` at earlier opsets (BERT's, 25 of them in BERT-base) gives nine ops over
the last axis:

    %m = nn.reduce_mean %x {axes = [-1]}
    %d = nn.sub %x, %m
    %p = nn.pow %d, %two
    %v = nn.reduce_mean %p {axes = [-1]}
    %e = nn.add %v, %eps
    %s = nn.sqrt %e
    %n = nn.div %d, %s
    %y = nn.mul %n, %gamma          (optional, either operand order)
    %z = nn.add %y, %beta           (optional, either operand order)

which become `%z = nn.layer_norm %x, %gamma, %beta {epsilon = eps}`; the executor runs
it as its layer norm kernel, where the nine ran in numpy, the means in float64.

The constants are one-element `nn.weight`s (2 within MATCH_TOLERANCE; eps any finite
value from 0 on), gamma and beta weights of the normalized axis' size, and every op of
the chain has only the users the chain gives it; anything else is left as it is. A
chain without gamma gets a weight of ones. Constants the chain leaves without users
leave the module and the weight store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from sparsec.context import weight_store
from sparsec.dialects import nn
from sparsec.irfile import erase_unread_weights, replace_chain
from sparsec.layers import scalar_weight
from sparsec.weights import WeightStore

MATCH_TOLERANCE = 1e-6
"""Relative, for the exponent 2."""


@dataclass(frozen=True)
class _LayerNorm:
    """A matched chain: its input, epsilon, gamma and beta (None where absent), its
    last op (whose result the layer norm replaces) and the ops before it, in order."""

    x: SSAValue
    epsilon: float
    gamma: SSAValue | None
    beta: SSAValue | None
    last: Operation
    before: tuple[Operation, ...]


def _other(op: Operation, value: SSAValue) -> SSAValue | None:
    """The operand of the binary `op` that is not `value` (None if neither is)."""
    lhs, rhs = op.operands
    return rhs if lhs is value else lhs if rhs is value else None


def _over_last_axis(mean: Operation) -> bool:
    """A ReduceMean over the last axis alone, keeping it."""
    if not isinstance(mean, nn.ReduceMeanOp) or not mean.keepdims.value.data:
        return False
    rank = len(mean.input.type.get_shape())  # pyright: ignore
    return rank > 0 and mean.reduced_axes(rank) == (rank - 1,)


def _per_channel(value: SSAValue | None, channels: int) -> bool:
    """A weight with one value per channel of the normalized axis."""
    return value is not None and isinstance(value.owner, nn.WeightOp) and value.owner.tensor_type.get_shape() == (channels,)


def _sole_user(value: SSAValue) -> Operation | None:
    return value.get_user_of_unique_use()


def _variance_chain(d: SSAValue, weights: WeightStore) -> tuple[float, SSAValue, tuple[Operation, ...]] | None:
    """From `d` = x - mean: epsilon, sqrt(mean(d ** 2) + eps) and the four ops computing it."""
    users = [use.operation for use in d.uses]
    power = next((u for u in users if isinstance(u, nn.PowOp) and u.lhs is d), None)
    if len(users) != 2 or power is None or not math.isclose(scalar_weight(power.rhs, weights) or 0.0, 2.0, rel_tol=MATCH_TOLERANCE):
        return None
    variance = _sole_user(power.output)
    if variance is None or not _over_last_axis(variance):
        return None
    shifted = _sole_user(variance.results[0])
    epsilon = scalar_weight(_other(shifted, variance.results[0]), weights) if isinstance(shifted, nn.AddOp) else None
    if epsilon is None or not (math.isfinite(epsilon) and epsilon >= 0):
        return None
    root = _sole_user(shifted.output)  # pyright: ignore
    if not isinstance(root, nn.SqrtOp):
        return None
    return epsilon, root.output, (power, variance, shifted, root)  # pyright: ignore


def _match(mean: nn.ReduceMeanOp, weights: WeightStore) -> _LayerNorm | None:
    """The layer norm chain from its first mean, if it is one (the module docstring's form)."""
    x = mean.input
    sub = _sole_user(mean.output)
    if not _over_last_axis(mean) or not isinstance(sub, nn.SubOp) or sub.lhs is not x or sub.rhs is not mean.output:
        return None
    found = _variance_chain(sub.output, weights)
    if found is None:
        return None
    epsilon, root, variance_ops = found
    divide = next((use.operation for use in sub.output.uses if isinstance(use.operation, nn.DivOp)), None)
    if divide is None or divide.lhs is not sub.output or divide.rhs is not root or not root.has_one_use():
        return None
    channels = x.type.get_shape()[-1]  # pyright: ignore
    chain: list[Operation] = [sub, *variance_ops, divide]
    result, gamma, beta = divide.output, None, None
    scale = _sole_user(result)
    if isinstance(scale, nn.MulOp) and _per_channel(candidate := _other(scale, result), channels):
        chain.append(scale)
        result, gamma = scale.output, candidate
    shift = _sole_user(result)
    if isinstance(shift, nn.AddOp) and _per_channel(candidate := _other(shift, result), channels):
        chain.append(shift)
        result, beta = shift.output, candidate
    if result.type != x.type:
        return None
    return _LayerNorm(x, epsilon, gamma, beta, chain[-1], (mean, *chain[:-1]))


def _ones(weights: WeightStore, like: SSAValue, before: Operation) -> SSAValue:
    """A weight of ones over the normalized axis, for a chain without gamma."""
    channels = like.type.get_shape()[-1]  # pyright: ignore
    element_type = like.type.element_type  # pyright: ignore
    name = weights.unique_name("layer_norm_scale")
    weights[name] = np.ones(channels, dtype=np.float32 if element_type == builtin.f32 else np.float16)
    op = nn.WeightOp(name, TensorType(element_type, [channels]))
    op.result.name_hint = name
    Rewriter.insert_op(op, InsertPoint.before(before))
    return op.result


def _fuse(norm: _LayerNorm, weights: WeightStore) -> list[nn.WeightOp]:
    """Replace the chain by one nn.layer_norm; the constants the chain read, now maybe unused."""
    gamma = norm.gamma if norm.gamma is not None else _ones(weights, norm.x, norm.before[0])
    fused = nn.LayerNormOp.build(
        operands=[[norm.x], [gamma], [norm.beta] if norm.beta is not None else []],
        properties={"axis": nn._int(-1), "epsilon": nn._float(norm.epsilon)},
        result_types=[norm.x.type],
    )
    return replace_chain(norm.before, norm.last, fused)


@dataclass(frozen=True)
class FuseLayerNormPass(ModulePass):
    """Fuse layer normalization written out (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt,
    Div, then Mul by gamma and Add of beta) into nn.layer_norm."""

    name = "fuse-layer-norm"

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        weights = weight_store(ctx)
        constants: list[nn.WeightOp] = []
        for mean in [o for o in op.walk() if isinstance(o, nn.ReduceMeanOp)]:
            if mean.parent is not None and (norm := _match(mean, weights)) is not None:
                constants += _fuse(norm, weights)
        erase_unread_weights(op, weights, constants)
