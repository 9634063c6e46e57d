"""Fuse GELU written out with Erf, as exporters write it, into one nn.gelu.

ONNX has had a Gelu operator only since opset 20. PyTorch's export of `nn.GELU()`
at earlier opsets, and the GELU most model code spells out (BERT's, `0.5 * x *
(1 + erf(x / sqrt(2)))`), give five ops:

    %d = nn.div %x, %sqrt2          (or nn.mul by 1 / sqrt(2))
    %e = nn.erf %d
    %a = nn.add %e, %one
    %m = nn.mul %x, %a
    %y = nn.mul %m, %half           (or 0.5 * x times %a, or x times 0.5 * %a)

which become `%y = nn.gelu %x`. lower-kernels then fuses the Gelu, with the bias
before it, into the kernel of the MatMul or Gemm that computes `%x`, where the five
ops ran in numpy over the whole hidden layer, Erf in float64: a 768-3072-768 block
at n:m 3:4 took 28.6 ms a run on 64 rows (one thread) before, 4.2 ms after.

GELU's tanh approximation, as GPT-2 writes it (`0.5 * x * (1 + tanh(sqrt(2 / pi) *
(x + 0.044715 * x ** 3)))`), gives eight ops, the Tanh's argument in four:

    %p = nn.pow %x, %three
    %c = nn.mul %p, %k              (k = 0.044715)
    %s = nn.add %x, %c
    %t = nn.mul %s, %sqrt2pi        (sqrt(2 / pi))
    %e = nn.tanh %t

and the same three forms after it; they become `nn.gelu %x {approximate = "tanh"}`,
one numpy step where eight ran (lower-kernels fuses the exact form only).

Operands may come in either order. The constants are one-element `nn.weight`s within
MATCH_TOLERANCE of sqrt(2) (or its inverse), sqrt(2 / pi), 0.044715, 3, 1 and 0.5,
and every op of the chain but the last has one user; anything else is left as it is.
The constants the chain leaves without users leave the module and the weight store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from sparsec.context import weight_store
from sparsec.dialects import nn
from sparsec.irfile import replace_chain
from sparsec.matching import fuse_chains, is_constant, other_operand
from sparsec.weights import WeightStore

TANH_CUBIC = 0.044715
"""The cubic term's factor in GELU's tanh approximation."""

MATCH_TOLERANCE = 1e-5
"""Relative: exporters write sqrt(2) in float32 (1.4142135), model code sometimes to
five places (1.41421)."""


@dataclass(frozen=True)
class _Gelu:
    """A matched chain: its input, its last op (whose result the Gelu replaces) and
    the ops before the last, in order."""

    x: SSAValue
    last: nn.MulOp
    before: tuple[Operation, ...]
    approximate: str
    """The Gelu's form: "none" (erf) or "tanh"."""


def _is_constant(value: SSAValue | None, expected: float, weights: WeightStore) -> bool:
    return is_constant(value, expected, weights, MATCH_TOLERANCE)


def _scaled(op: Operation | None, factor: float, weights: WeightStore) -> SSAValue | None:
    """What the Mul `op`, read once, multiplies by the constant `factor` (either order)."""
    if not isinstance(op, nn.MulOp) or not op.output.has_one_use():
        return None
    for value, other in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
        if _is_constant(other, factor, weights):
            return value
    return None


def _erf_input(erf: nn.ErfOp, weights: WeightStore) -> tuple[SSAValue, tuple[Operation, ...]] | None:
    """x and the op scaling it where `erf` reads x / sqrt(2) (or x * (1 / sqrt(2)))."""
    scaled = erf.input.owner
    if isinstance(scaled, nn.DivOp) and scaled.output.has_one_use() and _is_constant(scaled.rhs, math.sqrt(2), weights):
        return scaled.lhs, (scaled,)
    x = _scaled(scaled, 1 / math.sqrt(2), weights)
    return (x, (scaled,)) if x is not None else None  # pyright: ignore


def _tanh_input(tanh: nn.TanhOp, weights: WeightStore) -> tuple[SSAValue, tuple[Operation, ...]] | None:
    """x and the four ops where `tanh` reads sqrt(2 / pi) * (x + 0.044715 * x ** 3)."""
    scaled = tanh.input.owner
    inner = _scaled(scaled, math.sqrt(2 / math.pi), weights)
    add = inner.owner if inner is not None else None
    if not isinstance(add, nn.AddOp) or not add.output.has_one_use():
        return None
    for x, cubic in ((add.lhs, add.rhs), (add.rhs, add.lhs)):
        cube = _scaled(cubic.owner, TANH_CUBIC, weights)
        power = cube.owner if cube is not None else None
        if isinstance(power, nn.PowOp) and power.lhs is x and power.output.has_one_use() and _is_constant(power.rhs, 3.0, weights):
            return x, (power, cubic.owner, add, scaled)  # pyright: ignore
    return None


def _match(head: nn.ErfOp | nn.TanhOp, weights: WeightStore) -> _Gelu | None:
    """The GELU chain through `head` (its Erf, or its Tanh), if it is one (the module
    docstring's forms)."""
    found = _erf_input(head, weights) if isinstance(head, nn.ErfOp) else _tanh_input(head, weights)
    add = head.output.get_user_of_unique_use()
    if found is None or not isinstance(add, nn.AddOp) or not _is_constant(other_operand(add, head.output), 1.0, weights):
        return None
    x, inner = found
    approximate = "none" if isinstance(head, nn.ErfOp) else "tanh"
    user = add.output.get_user_of_unique_use()
    if not isinstance(user, nn.MulOp):
        return None
    partner = other_operand(user, add.output)
    after = user.output.get_user_of_unique_use()
    if partner is x and isinstance(after, nn.MulOp) and _is_constant(other_operand(after, user.output), 0.5, weights):
        gelu = _Gelu(x, after, (*inner, head, add, user), approximate)  # (x * a) * 0.5
    elif _is_constant(partner, 0.5, weights) and isinstance(after, nn.MulOp) and other_operand(after, user.output) is x:
        gelu = _Gelu(x, after, (*inner, head, add, user), approximate)  # (a * 0.5) * x
    elif isinstance(half := partner.owner if partner is not None else None, nn.MulOp) and half.output.has_one_use() and _is_constant(other_operand(half, x), 0.5, weights):
        gelu = _Gelu(x, user, (*inner, head, add, half), approximate)  # (0.5 * x) * a
    else:
        return None
    return gelu if gelu.last.output.type == x.type else None


def _fuse(gelu: _Gelu, _weights: WeightStore) -> list[nn.WeightOp]:
    """Replace the chain by one nn.gelu; the constants the chain read, now maybe unused."""
    fused = nn.GeluOp.create(operands=[gelu.x], result_types=[gelu.x.type], properties={"approximate": StringAttr(gelu.approximate)})
    return replace_chain(gelu.before, gelu.last, fused)


@dataclass(frozen=True)
class FuseGeluPass(ModulePass):
    """Fuse GELU written out with Erf (x * 0.5 * (1 + erf(x / sqrt 2))), or with Tanh
    in its approximation, into nn.gelu."""

    name = "fuse-gelu"

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        fuse_chains(op, weight_store(ctx), (nn.ErfOp, nn.TanhOp), _match, _fuse)  # pyright: ignore
