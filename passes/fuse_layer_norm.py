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

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from sparsec.context import weight_store
from sparsec.dialects import nn
from sparsec.irfile import replace_chain
from sparsec.matching import (
    channel_operand,
    epsilon_root,
    fuse_chains,
    is_constant,
    ones_weight,
    reduces_last_axis,
)
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


def _sole_user(value: SSAValue) -> Operation | None:
    return value.get_user_of_unique_use()


def _variance_chain(d: SSAValue, weights: WeightStore) -> tuple[float, SSAValue, tuple[Operation, ...]] | None:
    """From `d` = x - mean: epsilon, sqrt(mean(d ** 2) + eps) and the four ops computing it."""
    users = [use.operation for use in d.uses]
    power = next((u for u in users if isinstance(u, nn.PowOp) and u.lhs is d), None)
    if len(users) != 2 or power is None or not is_constant(power.rhs, 2.0, weights, MATCH_TOLERANCE):
        return None
    variance = _sole_user(power.output)
    found = epsilon_root(variance.results[0], weights) if reduces_last_axis(variance) else None  # pyright: ignore
    if found is None:
        return None
    epsilon, shifted, root = found
    return epsilon, root.results[0], (power, variance, shifted, root)  # pyright: ignore


def _match(mean: nn.ReduceMeanOp, weights: WeightStore) -> _LayerNorm | None:
    """The layer norm chain from its first mean, if it is one (the module docstring's form)."""
    x = mean.input
    sub = _sole_user(mean.output)
    if not reduces_last_axis(mean) or not isinstance(sub, nn.SubOp) or sub.lhs is not x or sub.rhs is not mean.output:
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
    if (scaled := channel_operand(result, nn.MulOp, channels)) is not None:
        chain.append(scaled[0])
        result, gamma = scaled[0].results[0], scaled[1]
    if (shifted := channel_operand(result, nn.AddOp, channels)) is not None:
        chain.append(shifted[0])
        result, beta = shifted[0].results[0], shifted[1]
    if result.type != x.type:
        return None
    return _LayerNorm(x, epsilon, gamma, beta, chain[-1], (mean, *chain[:-1]))


def _fuse(norm: _LayerNorm, weights: WeightStore) -> list[nn.WeightOp]:
    """Replace the chain by one nn.layer_norm; the constants the chain read, now maybe unused."""
    gamma = norm.gamma if norm.gamma is not None else ones_weight(weights, "layer_norm_scale", norm.x, norm.before[0])
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
        fuse_chains(op, weight_store(ctx), nn.ReduceMeanOp, _match, _fuse)  # pyright: ignore
