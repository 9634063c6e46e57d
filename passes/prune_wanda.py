"""Wanda: prune by |W_ij| * ||X_j||_2, the weight's magnitude times its input's norm.

    prune-wanda{sparsity=0.5 calibration="calib.npz"}
    prune-wanda{pattern=nm n=2 m=4 calibration="calib.npz"}

The input norms come from running the model on calibration data (sparsec.calibration),
layer by layer in program order. Unstructured Wanda compares scores within each output
row (each row loses floor(sparsity * in_features) values); n:m and block select on the
scores with the same runs and blocks as prune-magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import builtin

from sparsec.dialects.sparse import PatternKind
from sparsec.layers import LayerWeight
from sparsec.passes.pruning import CalibratedPruningPass, PruneSpec, keep_mask


def rowwise_keep(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Per output row, keep all but the floor(sparsity * row size) lowest scores (ties: earlier first)."""
    rows = scores.reshape(scores.shape[0], -1)
    count = math.floor(sparsity * rows.shape[1])
    order = np.argsort(rows, axis=1, kind="stable")[:, :count]
    keep = np.ones(rows.shape, dtype=bool)
    np.put_along_axis(keep, order, False, axis=1)
    return keep.reshape(scores.shape)


@dataclass(frozen=True)
class PruneWandaPass(CalibratedPruningPass):
    """Prune by |weight| x input-activation norm from calibration data (Wanda)."""

    name = "prune-wanda"


    def input_norms(self, ctx: Context, module: builtin.ModuleOp, weight: LayerWeight) -> np.ndarray:
        squares: np.ndarray | None = None
        for batch in self.features(ctx, module, weight):
            total = (batch * batch).sum(axis=0)
            squares = total if squares is None else squares + total
        assert squares is not None
        return np.sqrt(squares)

    def prune_layer(self, ctx: Context, module: builtin.ModuleOp, weight: LayerWeight, spec: PruneSpec, array: np.ndarray) -> np.ndarray:
        canonical = weight.canonical(array)
        norms = self.input_norms(ctx, module, weight)
        scores = (np.abs(canonical.reshape(canonical.shape[0], -1)) * norms).reshape(canonical.shape)
        keep = rowwise_keep(scores, spec.sparsity) if spec.pattern is PatternKind.UNSTRUCTURED else keep_mask(scores, spec)
        return np.where(weight.stored(keep), array, np.zeros((), array.dtype))
