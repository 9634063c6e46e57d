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

which the op takes as `nan_rows_to_zero = 1`. MPNet's export adds two terms to the
scores, its relative position bias and then the mask,

    %b = nn.add %c, %bias
    %m = nn.add %b, %mask

which become one mask, `%bias + %mask`: an Add of those two terms, built once for all
the layers that add the same ones (they are the encoder's, not a layer's).

The runtime runs the op as one kernel a head at a time (runtime/codegen/attention.py),
where numpy ran the products and the Add and a kernel the Softmax, the scores written
out and read back four times, on the calling thread alone (a 30-layer LLaMA at 128
tokens: about 1 ms a layer).

All operands are rank 4, the Softmax is over the last axis, the mask broadcasts to the
scores (rank 4 at most) and every value of the chain but q, kt, v and the mask has only
the reader the chain gives it; anything else is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, TensorType, f32, i64
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import VerifyException

from sparsec.context import weight_store
from sparsec.dialects import nn, nn_index, shapes
from sparsec.dialects.shapes import ShapeError
from sparsec.irfile import replace_chain
from sparsec.matching import fuse_chains, other_operand, scalar_weight
from sparsec.weights import WeightStore


MAX_ADDED_TERMS = 2
"""The most terms added to the scores that the chain takes in as one mask (MPNet's
two); more are left alone."""


@dataclass(frozen=True)
class _Attention:
    """A matched chain: the nn.attention that stands for it (built, not yet inserted),
    its last op (the second MatMul), the ops before it, and the Adds that sum the terms
    added to the scores into its mask (built, not yet inserted; none for one term)."""

    fused: nn.AttentionOp
    last: nn.MatMulOp
    before: tuple[Operation, ...]
    mask_sum: tuple[nn.AddOp, ...] = ()
    terms: tuple[SSAValue, ...] = ()


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


def _added_terms(value: SSAValue, weights: WeightStore, room: int = MAX_ADDED_TERMS) -> tuple[tuple[nn.MatMulOp, float, tuple[Operation, ...]], tuple[SSAValue, ...], tuple[nn.AddOp, ...]] | None:
    """The scores (`_scores`) that `value` is, with up to `room` terms added to them by
    Adds of one reader each: the scores' match, the terms in the order they are added
    and the Adds, the first first."""
    if (found := _scores(value, weights)) is not None:
        return found, (), ()
    add = value.owner
    if room == 0 or not isinstance(add, nn.AddOp) or not value.has_one_use():
        return None
    for side in (add.lhs, add.rhs):
        if (inner := _added_terms(side, weights, room - 1)) is not None:
            scores, terms, adds = inner
            return scores, (*terms, other_operand(add, side)), (*adds, add)  # pyright: ignore
    return None


def _summed(terms: tuple[SSAValue, ...]) -> tuple[SSAValue | None, tuple[nn.AddOp, ...]] | None:
    """One mask for the terms added to the scores: none, the one term, or the sum of
    several by Adds built here (not inserted); None where their shapes do not
    broadcast."""
    if not terms:
        return None, ()
    total, adds = terms[0], []
    for term in terms[1:]:
        try:
            shape = shapes.broadcast(total.type.get_shape(), term.type.get_shape())  # pyright: ignore
        except ShapeError:
            return None
        add = nn.AddOp.build(operands=[total, term], result_types=[TensorType(total.type.element_type, shape)])  # pyright: ignore
        add.output.name_hint = "attention_mask"
        adds.append(add)
        total = add.output
    return total, tuple(adds)


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
    found = _added_terms(softmax.input, weights)
    summed = None if found is None else _summed(found[1])
    if found is None or summed is None:
        return None
    (scores, scale, before), terms, adds = found
    (mask, mask_sum), ops = summed, (*adds, softmax)
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
        for built in (fused, *reversed(mask_sum)):
            built.erase()  # each reads values of the module: their uses go with it
        return None
    return _Attention(fused, last, (*before, *ops, *zeroing), mask_sum, terms)


def _fuse(chain: _Attention, sums: dict[tuple[SSAValue, ...], SSAValue]) -> list[nn.WeightOp]:
    """Replace the chain by its nn.attention, its mask's sum put before it or, where an
    earlier layer of the block summed the same terms, that sum read instead (`sums`,
    by terms); the constants the chain read (the scale)."""
    if chain.mask_sum:
        summed = sums.get(chain.terms)
        if summed is not None and summed.owner.parent is chain.last.parent:  # pyright: ignore
            chain.fused.operands = [*chain.fused.operands[:-1], summed]
            for add in reversed(chain.mask_sum):
                add.erase()
        else:
            for add in chain.mask_sum:
                chain.last.parent.insert_op_before(add, chain.last)  # pyright: ignore
            sums[chain.terms] = chain.mask_sum[-1].output
    return replace_chain(chain.before, chain.last, chain.fused)


@dataclass(frozen=True)
class FuseAttentionPass(ModulePass):
    """Fuse attention written out (softmax(q @ kt * scale + mask) @ v) into nn.attention."""

    name = "fuse-attention"

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        sums: dict[tuple[SSAValue, ...], SSAValue] = {}
        fuse_chains(op, weight_store(ctx), nn.MatMulOp, _match, lambda chain, _weights: _fuse(chain, sums))  # pyright: ignore
