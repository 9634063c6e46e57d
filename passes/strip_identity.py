"""Remove ops that compute nothing at inference: Identity, Dropout, a Cast to the
element type its input already has, and a Concat of one tensor.

Exporters write the last two freely: PyTorch casts a LLaMA's activations to float32
around every RMSNorm (a no-op for a float32 model: 191 Casts in a 30-layer one), and
its key-value cache concatenates the new keys to an empty past, which the trace keeps
as a Concat of one operand. At run time each would copy its tensor.
"""

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from sparsec.dialects import nn, nn_index


def _forwarded(op: Operation) -> SSAValue | None:
    """The operand `op` passes through unchanged, if it is an identity of one."""
    if isinstance(op, nn.IdentityOp | nn.DropoutOp | nn_index.CastOp) or (isinstance(op, nn.ConcatOp) and len(op.operands) == 1):
        return op.operands[0]
    return None


class ForwardIdentity(RewritePattern):
    """Replace an identity-like op by its input, where the types agree (a Cast that
    converts, or a Concat that refines a dimension's size, stays)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: nn.IdentityOp | nn.DropoutOp | nn_index.CastOp | nn.ConcatOp, rewriter: PatternRewriter) -> None:
        forwarded = _forwarded(op)
        if forwarded is None or forwarded.type != op.results[0].type:
            return
        rewriter.replace(op, [], [forwarded])


@dataclass(frozen=True)
class StripIdentityPass(ModulePass):
    """Remove nn.identity, nn.dropout (the identity at inference), nn.cast to the type
    its input has, and nn.concat of one operand."""

    name = "strip-identity"

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        PatternRewriteWalker(ForwardIdentity()).rewrite_module(op)
