"""What the passes that fuse functions written out op by op (GELU, layer and RMS
normalization, SiLU, rotary embeddings) ask of the ops they match: constants, operand
order, axes; and the loop they share (`fuse_chains`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from xdsl.dialects.builtin import ModuleOp, TensorType, f32
from xdsl.ir import Operation, SSAValue
from xdsl.rewriter import InsertPoint, Rewriter

from sparsec.dialects import nn, nn_index
from sparsec.irfile import erase_unread_weights
from sparsec.weights import WeightStore

Chain = TypeVar("Chain")

MOVING_OPS = (nn.ReshapeOp, nn_index.DynamicReshapeOp, nn.TransposeOp, nn.FlattenOp, nn.SqueezeOp, nn.UnsqueezeOp)
"""Ops that only move the values of their first operand (the data; a dynamic reshape's
second is its shape): a scale or an elementwise activation commutes with each."""


def scalar_weight(value: SSAValue | None, weights: WeightStore) -> float | None:
    """The value of a one-element `nn.weight` (an exported constant: epsilon, sqrt 2),
    else None."""
    op = value.owner if value is not None else None
    if not isinstance(op, nn.WeightOp) or math.prod(op.tensor_type.get_shape()) != 1:
        return None
    return float(weights[op.weight_name.data].reshape(()))


def is_constant(value: SSAValue | None, expected: float, weights: WeightStore, rel_tol: float) -> bool:
    """Whether `value` is a one-element `nn.weight` within `rel_tol` of `expected`."""
    found = scalar_weight(value, weights)
    return found is not None and math.isclose(found, expected, rel_tol=rel_tol)


def other_operand(op: Operation, value: SSAValue) -> SSAValue | None:
    """The operand of the binary `op` that is not `value` (None if neither is)."""
    lhs, rhs = op.operands
    return rhs if lhs is value else lhs if rhs is value else None


def reduces_last_axis(op: Operation | None) -> bool:
    """Whether `op` is a ReduceMean over the last axis alone, keeping it."""
    if not isinstance(op, nn.ReduceMeanOp) or not op.keepdims.value.data:
        return False
    rank = len(op.input.type.get_shape())  # pyright: ignore
    return rank > 0 and op.reduced_axes(rank) == (rank - 1,)


def per_channel_weight(value: SSAValue | None, channels: int) -> bool:
    """Whether `value` is a weight with one value per channel of a last axis of `channels`."""
    return value is not None and isinstance(value.owner, nn.WeightOp) and value.owner.tensor_type.get_shape() == (channels,)


def epsilon_root(mean: SSAValue, weights: WeightStore) -> tuple[float, Operation, Operation] | None:
    """Where a mean's only reader adds a one-element weight epsilon (finite, from 0 on)
    and that sum's only reader is a Sqrt, as normalizations written out compute their
    spread: epsilon, the Add and the Sqrt."""
    shifted = mean.get_user_of_unique_use()
    epsilon = scalar_weight(other_operand(shifted, mean), weights) if isinstance(shifted, nn.AddOp) else None
    if epsilon is None or not (math.isfinite(epsilon) and epsilon >= 0):
        return None
    root = shifted.output.get_user_of_unique_use()  # pyright: ignore
    return (epsilon, shifted, root) if isinstance(root, nn.SqrtOp) else None  # pyright: ignore


def channel_operand(result: SSAValue, kind: type[Operation], channels: int) -> tuple[Operation, SSAValue] | None:
    """Where `result`'s only reader is a `kind` (Mul, Add) of it and a weight of one value
    per channel of a last axis of `channels` (a normalization's gamma or beta): that op
    and the weight."""
    user = result.get_user_of_unique_use()
    if isinstance(user, kind) and per_channel_weight(candidate := other_operand(user, result), channels):
        return user, candidate  # pyright: ignore
    return None


def ones_weight(weights: WeightStore, prefix: str, like: SSAValue, before: Operation) -> SSAValue:
    """A new weight of ones over the last axis of `like` (of its element type), inserted
    before `before`: the scale of a normalization written out without one."""
    channels = like.type.get_shape()[-1]  # pyright: ignore
    element_type = like.type.element_type  # pyright: ignore
    name = weights.unique_name(prefix)
    weights[name] = np.ones(channels, dtype=np.float32 if element_type == f32 else np.float16)
    op = nn.WeightOp(name, TensorType(element_type, [channels]))
    op.result.name_hint = name
    Rewriter.insert_op(op, InsertPoint.before(before))
    return op.result


def fuse_chains(
    module: ModuleOp,
    weights: WeightStore,
    heads: type[Operation] | tuple[type[Operation], ...],
    match: Callable[[Operation, WeightStore], Chain | None],
    fuse: Callable[[Chain, WeightStore], list[nn.WeightOp]],
) -> None:
    """For each op of type `heads` still in `module`, the chain `match` finds through it
    replaced by `fuse` (which returns the constants the chain read); then those that
    nothing reads any more leave the module and the weight store."""
    constants: list[nn.WeightOp] = []
    for head in [op for op in module.walk() if isinstance(op, heads)]:
        if head.parent is not None and (chain := match(head, weights)) is not None:
            constants += fuse(chain, weights)
    erase_unread_weights(module, weights, constants)
