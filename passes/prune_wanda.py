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
from functools import cached_property

import numpy as np
from xdsl.context import Context
from xdsl.dialects import builtin

from sparsec.calibration import CalibrationData, layer_features
from sparsec.context import weight_store
from sparsec.dialects.sparse import PatternKind
from sparsec.errors import PipelineError
from sparsec.layers import LayerWeight
from sparsec.passes.pruning import PatternPruningPass, PruneSpec, keep_mask


def rowwise_keep(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Per output row, keep all but the floor(sparsity * row size) lowest scores (ties: earlier first)."""
    rows = scores.reshape(scores.shape[0], -1)
    count = math.floor(sparsity * rows.shape[1])
    order = np.argsort(rows, axis=1, kind="stable")[:, :count]
    keep = np.ones(rows.shape, dtype=bool)
    np.put_along_axis(keep, order, False, axis=1)
    return keep.reshape(scores.shape)


@dataclass(frozen=True)
class PruneWandaPass(PatternPruningPass):
    """Prune by |weight| x input-activation norm from calibration data (Wanda)."""

    name = "prune-wanda"

    calibration: str | None = None
    """.npz of model inputs keyed by graph input name."""
    batch_size: int = 32
    """Calibration samples per forward run."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.calibration_data  # noqa: B018 - read and check the file when the pipeline is parsed

    @cached_property
    def calibration_data(self) -> CalibrationData:
        if self.calibration is None:
            raise PipelineError(f"{self.name}: needs option 'calibration' (an .npz of model inputs)")
        if self.batch_size < 1:
            raise PipelineError(f"{self.name}: option 'batch-size' must be >= 1, got {self.batch_size}")
        return CalibrationData.load(self.calibration)

    def input_norms(self, ctx: Context, module: builtin.ModuleOp, weight: LayerWeight) -> np.ndarray:
        squares: np.ndarray | None = None
        for batch in layer_features(module, weight_store(ctx), weight.consumer, self.calibration_data, self.batch_size):
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
