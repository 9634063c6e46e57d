"""SparseGPT: prune each layer and update its remaining weights to reconstruct its output.

    prune-sparsegpt{sparsity=0.75 calibration="calib.npz"}
    prune-sparsegpt{pattern=nm n=3 m=4 calibration="calib.npz" dampening=0.01 block-columns=128}

Layer-wise optimal brain surgeon (Frantar and Alistarh, 2023): with H = X^T X from the
layer's calibration inputs, columns are processed left to right in blocks; in each block
the values with the smallest w^2 / [H^-1]_jj^2 are pruned (per block for unstructured,
n of every m along the row for n:m), and each pruned column's error is spread over the
columns not yet processed through the Cholesky factor of H^-1. Layers are handled in
program order, so each one is calibrated on the outputs of the layers already pruned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import builtin

from sparsec.dialects.sparse import PatternKind
from sparsec.errors import PassFailure, PipelineError
from sparsec.layers import LayerWeight
from sparsec.passes.pruning import CalibratedPruningPass, PruneSpec, lowest


def hessian(batches) -> np.ndarray:
    total, rows = None, 0
    for x in batches:
        product = x.T @ x
        total = product if total is None else total + product
        rows += x.shape[0]
    assert total is not None
    return total / max(rows, 1)


def inverse_cholesky(h: np.ndarray, dampening: float) -> np.ndarray:
    """Upper Cholesky factor U of H^-1 (H^-1 = U^T U), after dampening the diagonal.

    Solved in float64 (H is ill-conditioned), returned in float32 like the weights.
    """
    h = h + dampening * np.mean(np.diag(h)) * np.eye(len(h))
    inverse = np.linalg.inv(h)
    del h
    inverse += inverse.T
    inverse /= 2
    return np.linalg.cholesky(inverse).T.astype(np.float32)


def _nm_prune(scores: np.ndarray, n: int, length: int, m: int) -> np.ndarray:
    """Per row, mark the n smallest of a run of `length` (a short tail counts padding as pruned)."""
    count = max(0, n - (m - length))
    mask = np.zeros(scores.shape, dtype=bool)
    if count:
        order = np.argsort(scores, axis=1, kind="stable")[:, :count]
        np.put_along_axis(mask, order, True, axis=1)
    return mask


def sparsegpt(weight: np.ndarray, h: np.ndarray, spec: PruneSpec, dampening: float, block_columns: int) -> np.ndarray:
    """Prune a (rows, columns) weight given the columns' Hessian; returns the new weight.

    Works in float32, as the reference implementation does; only H^-1 is float64.
    """
    w = np.array(weight, dtype=np.float32)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    u = inverse_cholesky(h, dampening)
    columns = w.shape[1]
    m = spec.m if spec.pattern is PatternKind.NM else 1
    step = max(m, block_columns // m * m)
    for start in range(0, columns, step):
        end = min(start + step, columns)
        block, u_block = w[:, start:end].copy(), u[start:end, start:end]
        errors = np.zeros_like(block)
        pruned = np.zeros(block.shape, dtype=bool)
        diag = np.diag(u_block)
        if spec.pattern is PatternKind.UNSTRUCTURED:
            scores = block**2 / diag**2
            pruned = lowest(scores, math.floor(spec.sparsity * scores.size)).reshape(scores.shape)
        for i in range(end - start):
            if spec.pattern is PatternKind.NM and i % m == 0:
                run = slice(i, min(i + m, end - start))
                scores = block[:, run] ** 2 / diag[run] ** 2
                pruned[:, run] = _nm_prune(scores, spec.n, run.stop - run.start, m)
            column = block[:, i]
            quantized = np.where(pruned[:, i], 0.0, column)
            error = (column - quantized) / u_block[i, i]
            block[:, i:] -= np.outer(error, u_block[i, i:])
            block[:, i] = quantized
            errors[:, i] = error
        w[:, start:end] = block
        w[:, end:] -= errors @ u[start:end, end:]
    return w


@dataclass(frozen=True)
class PruneSparseGPTPass(CalibratedPruningPass):
    """Prune with SparseGPT's layer-wise reconstruction from calibration data."""

    name = "prune-sparsegpt"
    PATTERNS = (PatternKind.UNSTRUCTURED, PatternKind.NM)

    dampening: float = 0.01
    """Added to H's diagonal, as a fraction of its mean."""
    block_columns: int = 128
    """Columns processed together (rounded down to a multiple of m)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.dampening > 0:
            raise PipelineError(f"{self.name}: option 'dampening' must be > 0, got {self.dampening}")
        if self.block_columns < 1:
            raise PipelineError(f"{self.name}: option 'block-columns' must be >= 1, got {self.block_columns}")

    def prune_layer(self, ctx: Context, module: builtin.ModuleOp, weight: LayerWeight, spec: PruneSpec, array: np.ndarray) -> np.ndarray:
        if spec.pattern is PatternKind.NM and spec.axis != 1:
            raise PassFailure(f"{self.name}: n:m runs must go along the input channels (axis 1), got axis {spec.axis}")
        canonical = weight.canonical(array)
        rows = canonical.shape[0]
        h = hessian(self.features(ctx, module, weight))
        channels, positions = canonical.shape[1], int(np.prod(canonical.shape[2:]))
        if positions == 1:
            pruned = sparsegpt(canonical, h, spec, self.dampening, self.block_columns)
            return weight.stored(pruned).astype(array.dtype)
        # Columns in (kernel position, channel) order put each n:m run of channels side by side.
        order = np.arange(channels * positions).reshape(channels, positions).T.reshape(-1)
        flat = canonical.reshape(rows, -1)[:, order]
        pruned = sparsegpt(flat, h[np.ix_(order, order)], spec, self.dampening, self.block_columns)
        restored = np.empty_like(pruned)
        restored[:, order] = pruned
        return weight.stored(restored.reshape(canonical.shape)).astype(array.dtype)
