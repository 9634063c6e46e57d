"""Remove ops that compute nothing at inference: Identity and Dropout."""

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from sparsec.dialects import nn


class ForwardIdentity(RewritePattern):
    """Replace an identity-like op by its input."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: nn.IdentityOp | nn.DropoutOp, rewriter: PatternRewriter) -> None:
        if op.input.type != op.output.type:
            return
        rewriter.replace(op, [], [op.input])


@dataclass(frozen=True)
class StripIdentityPass(ModulePass):
    """Remove nn.identity and nn.dropout (the identity at inference)."""

    name = "strip-identity"

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        PatternRewriteWalker(ForwardIdentity()).rewrite_module(op)
