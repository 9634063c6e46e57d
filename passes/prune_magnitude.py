"""Magnitude pruning: zero the smallest weights of Gemm, MatMul and Conv layers.

    prune-magnitude{pattern=unstructured sparsity=0.75}
    prune-magnitude{pattern=block block-size=4 sparsity=0.5}          # along output channels
    prune-magnitude{pattern=nm n=3 m=4}                               # along input channels
    prune-magnitude{pattern=nm n=2 m=4 config="layers.json"}

The semantics match coremltools' OpMagnitudePrunerConfig (docs/passes.md has the
details and examples); each pruned weight gets a `#sparse.pattern` attribute that
later passes rely on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import builtin

from sparsec.layers import LayerWeight
from sparsec.passes.pruning import PatternPruningPass, PruneSpec, keep_mask


@dataclass(frozen=True)
class PruneMagnitudePass(PatternPruningPass):
    """Zero the lowest-magnitude weights of Gemm/MatMul/Conv layers: unstructured, block or n:m."""

    name = "prune-magnitude"

    def prune_layer(self, ctx: Context, module: builtin.ModuleOp, weight: LayerWeight, spec: PruneSpec, array: np.ndarray) -> np.ndarray:
        keep = weight.stored(keep_mask(np.abs(weight.canonical(array)), spec))
        return np.where(keep, array, np.zeros((), array.dtype))
