"""Fuse attention written out, as exporters write it, into one nn.attention.

Every transformer layer's attention is, per batch and head, five ops over the scores
of S queries against T keys:

    %s = nn.matmul %q, %kt           q (B, H, S, D), kt (B, Hk, D, T): the keys transposed
    %c = nn.mul %s, %scale           or nn.div (a one-element constant; often folded
                                     into the query layer by fold-scale, then absent)
    %m = nn.add %c, %mask            the additive mask (absent without one)
    %p = nn.softmax %m {axis = -1}
    %y = nn.matmul %p, %v            v (B, Hv, T, Dv)

which become `%y = nn.attention %q, %kt, %v, %mask {scale = ...}`. PyTorch's
scaled_dot_product_attention (transformers' default, "sdpa") exports the Softmax's
NaN rows set to 0 before the second MatMul,

    %n = nn.is_nan %p
    %z = nn.where %n, %zero, %p       (a one-element constant 0)

which the op takes as `nan_rows_to_zero = 1`. The runtime runs it as one kernel a
head at a time (runtime/codegen/attention.py), where numpy ran the products and the
Add and a kernel the Softmax, the scores written out and read back four times, on
the calling thread alone (a 30-layer LLaMA at 128 tokens: about 1 ms a layer).

All operands are rank 4, the Softmax is over the last axis, the mask broadcasts to the
scores (rank 4 at most) and every value of the chain but q, kt, v and the mask has only
the reader the chain gives it; anything else is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, f32, i64
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import VerifyException

from sparsec.context import weight_store
from sparsec.dialects import nn, nn_index
from sparsec.irfile import replace_chain
from sparsec.matching import fuse_chains, other_operand, scalar_weight
from sparsec.weights import WeightStore


@dataclass(frozen=True)
class _Attention:
    """A matched chain: the nn.attention that stands for it (built, not yet inserted),
    its last op (the second MatMul) and the ops before it."""

    fused: nn.AttentionOp
    last: nn.MatMulOp
    before: tuple[Operation, ...]


def _scores(value: SSAValue, weights: WeightStore) -> tuple[nn.MatMulOp, float, tuple[Operation, ...]] | None:
    """The product q @ kt that `value` is, maybe times or over a one-element constant:
    the MatMul, the scale and the ops from the MatMul on."""
    op = value.owner
    if not value.has_one_use():
        return None
    scale, ops = 1.0, ()
    if isinstance(op, nn.MulOp | nn.DivOp):
        for product, constant in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
            factor = scalar_weight(constant, weights)
            if factor is not None and (isinstance(op, nn.MulOp) or product is op.lhs) and factor != 0.0:
                scale, ops, op = (factor if isinstance(op, nn.MulOp) else 1 / factor), (op,), product.owner
                if not product.has_one_use():
                    return None
                break
        else:
            return None
    if not isinstance(op, nn.MatMulOp) or any(len(operand.type.get_shape()) != 4 for operand in op.operands):  # pyright: ignore
        return None
    return op, scale, (op, *ops)


def _nan_rows_zeroed(value: SSAValue, weights: WeightStore) -> tuple[SSAValue, tuple[Operation, ...]] | None:
    """The probabilities `value` is Where(IsNaN(p), 0, p) of, as PyTorch's
    scaled_dot_product_attention exports it, and those two ops; None otherwise."""
    where = value.owner
    if not isinstance(where, nn_index.WhereOp) or not value.has_one_use() or scalar_weight(where.x, weights) != 0.0:
        return None
    is_nan = where.condition.owner
    probabilities = where.y
    if not isinstance(is_nan, nn_index.IsNaNOp) or is_nan.input is not probabilities or not where.condition.has_one_use():
        return None
    if len(list(probabilities.uses)) != 2 or where.output.type != probabilities.type:
        return None
    return probabilities, (is_nan, where)


def _match(last: nn.MatMulOp, weights: WeightStore) -> _Attention | None:
    """The attention chain ending in `last`, if it is one (the module docstring's form)."""
    probabilities, zeroing = last.a, ()
    if (zeroed := _nan_rows_zeroed(probabilities, weights)) is not None:
        probabilities, zeroing = zeroed
    elif not probabilities.has_one_use():
        return None
    softmax = probabilities.owner
    if not isinstance(softmax, nn.SoftmaxOp) or len(last.b.type.get_shape()) != 4:  # pyright: ignore
        return None
    if softmax.axis.value.data % 4 != 3 or len(softmax.input.type.get_shape()) != 4:  # pyright: ignore
        return None
    logits, mask, ops = softmax.input, None, (softmax,)
    if isinstance(add := logits.owner, nn.AddOp) and logits.has_one_use():
        for side in (add.lhs, add.rhs):
            if (found := _scores(side, weights)) is not None:
                logits, mask, ops = side, other_operand(add, side), (add, softmax)
                break
    found = _scores(logits, weights)
    if found is None:
        return None
    scores, scale, before = found
    properties: dict[str, Attribute] = {"scale": FloatAttr(scale, f32)}
    if zeroing:
        properties["nan_rows_to_zero"] = IntegerAttr(1, i64)
    fused = nn.AttentionOp.build(
        operands=[*scores.operands, last.b, [mask] if mask is not None else []],
        result_types=[last.output.type],
        properties=properties,
    )
    same_type = all(operand.type.element_type == last.output.type.element_type for operand in fused.operands)  # pyright: ignore
    try:
        fused.verify_()
    except VerifyException:
        same_type = False
    if not same_type:
        fused.erase()  # it reads q, kt, v and the mask: their uses go with it
        return None
    return _Attention(fused, last, (*before, *ops, *zeroing))


def _fuse(chain: _Attention, _weights: WeightStore) -> list[nn.WeightOp]:
    """Replace the chain by its nn.attention; the constants it read (the scale)."""
    return replace_chain(chain.before, chain.last, chain.fused)


@dataclass(frozen=True)
class FuseAttentionPass(ModulePass):
    """Fuse attention written out (softmax(q @ kt * scale + mask) @ v) into nn.attention."""

    name = "fuse-attention"

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        fuse_chains(op, weight_store(ctx), nn.MatMulOp, _match, _fuse)  # pyright: ignore
