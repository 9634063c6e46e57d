"""sparsec's passes, one a file. `ALL_PASSES` is what pipelines can name."""

from xdsl.passes import ModulePass

from sparsec.passes.strip_identity import StripIdentityPass

ALL_PASSES: tuple[type[ModulePass], ...] = (StripIdentityPass,)

__all__ = ["ALL_PASSES"]
