"""The compilation context: xDSL's `Context` plus the weight store.

xDSL hands every pass the `Context` and the module. Putting the weight store on the
context (as MLIR keeps resource blobs on its MLIRContext) means passes find weights
through the argument they already get, with no global state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin
from xdsl.dialects.func import Func

from sparsec.dialects import NN, Sparse
from sparsec.errors import PassFailure
from sparsec.weights import WeightStore


@dataclass
class SparsecContext(Context):
    """An xDSL context that also carries the module's weights."""

    weights: WeightStore = field(default_factory=WeightStore)

    def clone(self) -> SparsecContext:
        clone = SparsecContext(weights=self.weights.copy())
        clone.allow_unregistered = self.allow_unregistered
        clone._loaded_dialects = self._loaded_dialects.copy()
        clone._loaded_ops = self._loaded_ops.copy()
        clone._loaded_attrs = self._loaded_attrs.copy()
        clone._loaded_types = self._loaded_types.copy()
        clone._registered_dialects = self._registered_dialects.copy()
        return clone


def make_context(weights: WeightStore | None = None) -> SparsecContext:
    """A context with every dialect sparsec's IR uses loaded."""
    ctx = SparsecContext(weights=weights if weights is not None else WeightStore())
    for dialect in (Builtin, Func, NN, Sparse):
        ctx.load_dialect(dialect)
    return ctx


def weight_store(ctx: Context) -> WeightStore:
    """The weight store of `ctx`; passes that read weights call this."""
    if not isinstance(ctx, SparsecContext):
        raise PassFailure(
            "this pass needs the module's weights: run it through sparsec's pipeline "
            "(sparsec.pipeline or `sparsec opt`), which provides a SparsecContext"
        )
    return ctx.weights
