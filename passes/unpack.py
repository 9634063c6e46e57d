"""Unpack packed weights back into dense `nn.weight` ops.

The dense tensor equals the pruned weight rounded to the packed value type; the
`#sparse.pattern` attribute stays, so the weight can be packed again.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from sparsec.context import weight_store
from sparsec.dialects import nn
from sparsec.dialects.sparse import PackedWeightOp
from sparsec.layers import dense_value


@dataclass(frozen=True)
class UnpackPass(ModulePass):
    """Decode every sparse.packed weight back into a dense nn.weight."""

    name = "unpack"

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        weights = weight_store(ctx)
        for packed in [p for p in op.walk() if isinstance(p, PackedWeightOp)]:
            name = packed.weight_name.data
            weights[name] = dense_value(packed, weights)
            for store_name in packed.stored_tensors().values():
                weights.pop(store_name)
            replacement = nn.WeightOp(name, packed.tensor_type, packed.sparsity)
            Rewriter.replace_op(packed, replacement)
            replacement.result.name_hint = packed.result.name_hint
