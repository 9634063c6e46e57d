"""Fuse RMS normalization written out op by op, as exporters write it, into one
nn.rms_norm.

ONNX has had an RMSNormalization operator only since opset 23. PyTorch's export of
LLaMA's RMSNorm (Mistral's, Qwen's) at earlier opsets gives six or seven ops over the
last axis:

    %p = nn.pow %x, %two             (or nn.mul %x, %x)
    %m = nn.reduce_mean %p {axes = [-1]}
    %e = nn.add %m, %eps
    %s = nn.sqrt %e
    %r = nn.reciprocal %s            (or nn.div %one, %s)
    %n = nn.mul %x, %r               (either operand order)
    %y = nn.mul %gamma, %n           (optional, either operand order)

or `%n = nn.div %x, %s` for the last two before the scale; they become `%y =
nn.rms_norm %x, %gamma {epsilon = eps}`, which the executor runs as its RMS norm
kernel where seven numpy steps ran (a 30-layer LLaMA at 128 tokens: 61 norms, 21 ms
of numpy a run). `strip-identity` first removes the Casts to float32 that PyTorch
writes around it.

The constants are one-element `nn.weight`s (2 and 1 within MATCH_TOLERANCE; eps any
finite value from 0 on), gamma a weight of the normalized axis' size, and every op of
the chain but `x` has only the users the chain gives it; anything else is left as it
is, and so is the second half of a layer normalization (x centred by its mean:
`fuse-layer-norm` takes the whole). A chain without gamma gets a weight of ones. Constants the chain leaves without
users leave the module and the weight store.
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
    other_operand,
    reduces_last_axis,
)
from sparsec.weights import WeightStore

MATCH_TOLERANCE = 1e-6
"""Relative, for the exponent 2 and the numerator 1."""


@dataclass(frozen=True)
class _RMSNorm:
    """A matched chain: its input, epsilon, gamma (None where absent), its last op
    (whose result the norm replaces) and the ops before it, in order."""

    x: SSAValue
    epsilon: float
    gamma: SSAValue | None
    last: Operation
    before: tuple[Operation, ...]


def _squared(op: Operation | None, weights: WeightStore) -> SSAValue | None:
    """x where `op` computes x ** 2 (Pow by 2, or Mul of x by itself) for only one reader."""
    if isinstance(op, nn.PowOp) and is_constant(op.rhs, 2.0, weights, MATCH_TOLERANCE):
        x = op.lhs
    elif isinstance(op, nn.MulOp) and op.lhs is op.rhs:
        x = op.lhs
    else:
        return None
    return x if op.results[0].has_one_use() else None


def _normalized(root: nn.SqrtOp, x: SSAValue, weights: WeightStore) -> tuple[Operation, ...] | None:
    """The ops dividing x by `root` (its only reader on): x / root, or x times 1 / root
    (Reciprocal, or Div of 1), either order."""
    user = root.output.get_user_of_unique_use()
    if isinstance(user, nn.DivOp) and user.lhs is x and user.rhs is root.output:
        return (user,)
    inverts = isinstance(user, nn.ReciprocalOp) or (isinstance(user, nn.DivOp) and user.rhs is root.output and is_constant(user.lhs, 1.0, weights, MATCH_TOLERANCE))
    if not inverts:
        return None
    inverse = user.results[0]  # pyright: ignore
    scale = inverse.get_user_of_unique_use()
    if not isinstance(scale, nn.MulOp) or other_operand(scale, inverse) is not x:
        return None
    return (user, scale)  # pyright: ignore


def _centred(x: SSAValue) -> bool:
    """Whether `x` is a - mean(a) over the last axis: a layer normalization's deviations."""
    sub = x.owner
    return isinstance(sub, nn.SubOp) and isinstance(mean := sub.rhs.owner, nn.ReduceMeanOp) and mean.input is sub.lhs and reduces_last_axis(mean)


def _match(mean: nn.ReduceMeanOp, weights: WeightStore) -> _RMSNorm | None:
    """The RMS norm chain through its mean, if it is one (the module docstring's form)."""
    square = mean.input.owner
    x = _squared(square, weights)  # pyright: ignore
    if x is None or not reduces_last_axis(mean) or _centred(x):
        return None
    found = epsilon_root(mean.output, weights)
    normalizing = _normalized(found[2], x, weights) if found is not None else None  # pyright: ignore
    if normalizing is None:
        return None
    epsilon, shifted, root = found  # pyright: ignore
    chain: list[Operation] = [square, mean, shifted, root, *normalizing]  # pyright: ignore
    result, gamma = normalizing[-1].results[0], None
    if (scaled := channel_operand(result, nn.MulOp, x.type.get_shape()[-1])) is not None:  # pyright: ignore
        chain.append(scaled[0])
        result, gamma = scaled[0].results[0], scaled[1]
    if result.type != x.type:
        return None
    return _RMSNorm(x, epsilon, gamma, chain[-1], tuple(chain[:-1]))


def _fuse(norm: _RMSNorm, weights: WeightStore) -> list[nn.WeightOp]:
    """Replace the chain by one nn.rms_norm; the constants the chain read, now maybe unused."""
    gamma = norm.gamma if norm.gamma is not None else ones_weight(weights, "rms_norm_scale", norm.x, norm.before[0])
    fused = nn.RMSNormOp.build(
        operands=[norm.x, gamma],
        properties={"axis": nn._int(-1), "epsilon": nn._float(norm.epsilon)},
        result_types=[norm.x.type],
    )
    return replace_chain(norm.before, norm.last, fused)


@dataclass(frozen=True)
class FuseRMSNormPass(ModulePass):
    """Fuse RMS normalization written out (Pow, ReduceMean, Add, Sqrt, Reciprocal or Div,
    Mul, then Mul by gamma) into nn.rms_norm."""

    name = "fuse-rms-norm"

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        fuse_chains(op, weight_store(ctx), nn.ReduceMeanOp, _match, _fuse)  # pyright: ignore
