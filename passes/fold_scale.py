"""Fold a product or quotient by one constant value into the weights of the layer
whose result it scales.

Attention scales its scores by 1 / sqrt(head width). BERT's export divides the product
of queries and keys by it, PyTorch's scaled_dot_product_attention multiplies the
queries; either way it is a pass over the scores or the queries at run time (in numpy:
1.3 ms of a BERT-base layer's 49 at 384 tokens). A scale commutes with the ops that
only move values (`matching.MOVING_OPS`: Reshape, to a fixed shape or one computed at
run time, Transpose, Flatten, Squeeze, Unsqueeze), a rotary embedding
(`nn.rotary_embedding`, on its x: LLaMA's queries) and a product of two activations, so
it moves back to the layer that computed the queries, into its weight and bias:

    %q = nn.matmul %x, %wq                %q = nn.matmul %x, %wq_scaled
    %qb = nn.add %q, %bq                  %qb = nn.add %q, %bq_scaled
    %qt = nn.transpose %qb ...            %qt = nn.transpose %qb ...
    %s = nn.matmul %qt, %kt               %y = nn.matmul %qt, %kt
    %y = nn.div %s, %c

The constant is a one-element `nn.weight`, finite and not zero; the layer a MatMul
with one unpacked float32 `nn.weight` operand, whose bias Add of an `nn.weight` (if
any) scales with it, or a Gemm, whose B and C scale. Every value on the way must have
no other reader, as each changes by the scale; anything else is left alone. Scaling a weight keeps its zeros, so the pass may run after pruning; the scaled
weights are new ones (`NAME_scaled`), and the old ones leave once nothing reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.dialects.builtin import f32
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from sparsec.context import weight_store
from sparsec.dialects import nn
from sparsec.irfile import erase_unread_weights
from sparsec.layers import new_weight
from sparsec.matching import MOVING_OPS
from sparsec.weights import WeightStore

def _weight(value: SSAValue | None) -> nn.WeightOp | None:
    owner = value.owner if value is not None else None
    return owner if isinstance(owner, nn.WeightOp) else None


def _factor(op: nn.MulOp | nn.DivOp, weights: WeightStore) -> tuple[SSAValue, float] | None:
    """The scaled value and the factor, where `op` multiplies or divides a value by a
    one-element constant that is neither zero nor infinite."""
    candidates = [(op.lhs, op.rhs)] if isinstance(op, nn.DivOp) else [(op.lhs, op.rhs), (op.rhs, op.lhs)]
    for value, constant in candidates:
        weight = _weight(constant)
        if weight is None or _weight(value) is not None or weight.tensor_type.get_num_dims() > value.type.get_num_dims():  # pyright: ignore
            continue
        array = weights[weight.weight_name.data]
        if array.size != 1 or not np.isfinite(array).all() or array.reshape(()) == 0:
            continue
        factor = float(array.reshape(()))
        return value, 1 / factor if isinstance(op, nn.DivOp) else factor
    return None


Site = tuple[Operation, int]
"""An op and the index of its weight operand to scale."""


def _sites(value: SSAValue) -> list[Site] | None:
    """The weight (and bias) operands to scale so that `value` comes out scaled, along
    a chain of single-reader values back to a layer; None if there is none."""
    op = value.owner
    if not value.has_one_use() or not isinstance(op, Operation):
        return None
    if isinstance(op, MOVING_OPS):
        return _sites(op.operands[0])
    if isinstance(op, nn.RotaryEmbeddingOp):  # linear in x: rotary(s x) = s rotary(x)
        return _sites(op.x)
    if isinstance(op, nn.GemmOp):
        if _weight(op.b) is None or (op.c is not None and _weight(op.c) is None):
            return None
        return [(op, 1), *([(op, 2)] if op.c is not None else [])]
    if isinstance(op, nn.MatMulOp):
        weights = [index for index, operand in enumerate(op.operands) if _weight(operand) is not None]
        if len(weights) == 1:
            return [(op, weights[0])]
        return (_sites(op.a) or _sites(op.b)) if not weights else None  # a product of activations
    if isinstance(op, nn.AddOp):  # a bias after a MatMul: both terms scale
        for bias in (1, 0):
            term = op.operands[1 - bias]
            if _weight(op.operands[bias]) is not None and _weight(term) is None and (layer := _sites(term)) is not None:
                return [*layer, (op, bias)]
    return None


def _fold(op: nn.MulOp | nn.DivOp, weights: WeightStore) -> list[nn.WeightOp]:
    """Fold `op` into the weights it scales, if it can; the weights it no longer reads
    (maybe read elsewhere): those it replaced and its constant."""
    found = _factor(op, weights)
    sites = _sites(found[0]) if found is not None else None
    if found is None or sites is None or found[0].type != op.output.type:
        return []
    if any(consumer.operands[index].type.element_type != f32 for consumer, index in sites):  # pyright: ignore
        return []  # new_weight stores float32
    value, factor = found
    left = [w for w in (_weight(operand) for operand in op.operands) if w is not None]
    for consumer, index in sites:
        old = _weight(consumer.operands[index])
        assert old is not None
        new = new_weight(weights, old, "_scaled", weights[old.weight_name.data] * factor, old.sparsity)
        Rewriter.insert_op(new, InsertPoint.after(old))
        consumer.operands[index] = new.result
        left.append(old)
    op.output.replace_all_uses_with(value)
    if op.output.name_hint is not None:
        value.name_hint = op.output.name_hint
    Rewriter.erase_op(op)
    return left


@dataclass(frozen=True)
class FoldScalePass(ModulePass):
    """Fold a Mul or Div by one constant value into the weights of the layer whose result it scales (through views and products of activations)."""

    name = "fold-scale"

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        weights = weight_store(ctx)
        left: list[nn.WeightOp] = []
        for scale in [o for o in op.walk() if isinstance(o, nn.MulOp | nn.DivOp)]:
            left += _fold(scale, weights)
        erase_unread_weights(op, weights, left)
