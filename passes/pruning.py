"""What the pruning passes share: validated pruning options and the mask selection
for each pattern. Which weights are prunable, and their (out, in, *kernel) view, is
`sparsec.layers`.

Selection. Every function here takes non-negative importance scores in the
canonical view (|w| for magnitude pruning) and returns a boolean mask of the values
to keep. Ties are broken by position (the earlier value is pruned first), so the
result is deterministic and a tensor of equal values gets exactly the requested
count. Selection is linear-time: `np.partition` for unstructured and block, a
pairwise rank within each run for n:m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sparsec.dialects.sparse import PatternAttr, PatternKind
from sparsec.errors import PipelineError
from sparsec.layers import MAX_RANK

# --- options -----------------------------------------------------------------


@dataclass(frozen=True)
class PruneSpec:
    """Validated pruning options for one weight (pass options or a config entry)."""

    pattern: PatternKind
    sparsity: float
    block_size: int = 0
    n: int = 0
    m: int = 0
    axis: int = 0

    @staticmethod
    def from_options(
        who: str,
        pattern: str,
        sparsity: float | None,
        block_size: int | None,
        n: int | None,
        m: int | None,
        axis: int | None,
    ) -> PruneSpec:
        """Check options the way a pipeline parser should; messages name the option."""
        kinds = [k.value for k in PatternKind]
        if pattern not in kinds:
            raise PipelineError(f"{who}: option 'pattern' must be one of {', '.join(kinds)}, got '{pattern}'")
        kind = PatternKind(pattern)
        if axis is not None and not 0 <= axis < MAX_RANK:
            raise PipelineError(
                f"{who}: option 'axis' must be between 0 and {MAX_RANK - 1} "
                f"(0 = output channels, 1 = input channels, 2+ = kernel), got {axis}"
            )
        if kind is PatternKind.NM:
            for name, value in (("sparsity", sparsity), ("block-size", block_size)):
                if value is not None:
                    raise PipelineError(f"{who}: option '{name}' does not apply to pattern=nm (n:m fixes the sparsity at n/m)")
            if n is None or m is None:
                raise PipelineError(f"{who}: pattern=nm needs options 'n' and 'm' (n of every m values become zero)")
            if m < 1:
                raise PipelineError(f"{who}: option 'm' must be >= 1, got {m}")
            if not 0 <= n <= m:
                raise PipelineError(f"{who}: option 'n' must be between 0 and m = {m}, got {n}")
            return PruneSpec(kind, n / m, n=n, m=m, axis=1 if axis is None else axis)
        for name, value in (("n", n), ("m", m)):
            if value is not None:
                raise PipelineError(f"{who}: option '{name}' only applies to pattern=nm, not pattern={pattern}")
        if sparsity is None:
            raise PipelineError(f"{who}: pattern={pattern} needs option 'sparsity' (a fraction in [0, 1])")
        if not 0.0 <= sparsity <= 1.0:
            raise PipelineError(f"{who}: option 'sparsity' must be in [0, 1], got {sparsity}")
        if kind is PatternKind.BLOCK:
            if block_size is None or block_size < 2:
                raise PipelineError(f"{who}: pattern=block needs option 'block-size' >= 2, got {block_size}")
            return PruneSpec(kind, sparsity, block_size=block_size, axis=0 if axis is None else axis)
        if block_size is not None:
            raise PipelineError(f"{who}: option 'block-size' only applies to pattern=block")
        if axis is not None:
            raise PipelineError(f"{who}: option 'axis' does not apply to pattern=unstructured")
        return PruneSpec(kind, sparsity)

    def attribute(self) -> PatternAttr:
        match self.pattern:
            case PatternKind.UNSTRUCTURED:
                return PatternAttr.unstructured(self.sparsity)
            case PatternKind.BLOCK:
                return PatternAttr.block(self.block_size, self.axis, self.sparsity)
            case PatternKind.NM:
                return PatternAttr.nm(self.n, self.m, self.axis)


# --- selection ---------------------------------------------------------------


def lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Mask of the `count` lowest scores of a flat array, ties to the earlier position."""
    flat = scores.reshape(-1)
    chosen = np.zeros(flat.shape, dtype=bool)
    if count <= 0:
        return chosen
    if count >= flat.size:
        chosen[:] = True
        return chosen
    threshold = np.partition(flat, count - 1)[count - 1]
    below = flat < threshold
    chosen |= below
    ties = np.flatnonzero(flat == threshold)[: count - int(below.sum())]
    chosen[ties] = True
    return chosen


def _runs(scores: np.ndarray, axis: int, length: int) -> tuple[np.ndarray, int]:
    """Scores with `axis` last, zero-padded to a multiple of `length`, as (..., runs, length)."""
    moved = np.moveaxis(scores, axis, -1)
    size = moved.shape[-1]
    padded_size = math.ceil(size / length) * length
    if padded_size != size:
        pad = [(0, 0)] * (moved.ndim - 1) + [(0, padded_size - size)]
        moved = np.pad(moved, pad)
    return moved.reshape(*moved.shape[:-1], padded_size // length, length), size


def _from_runs(keep_runs: np.ndarray, axis: int, size: int) -> np.ndarray:
    flat = keep_runs.reshape(*keep_runs.shape[:-2], -1)[..., :size]
    return np.moveaxis(flat, -1, axis)


def unstructured_keep(scores: np.ndarray, sparsity: float) -> np.ndarray:
    count = math.floor(sparsity * scores.size)
    return ~lowest(scores, count).reshape(scores.shape)


def block_keep(scores: np.ndarray, sparsity: float, block_size: int, axis: int) -> np.ndarray:
    runs, size = _runs(scores, axis, block_size)
    norms = np.einsum("...i,...i->...", runs, runs, dtype=np.float64)  # squared L2 ranks as L2
    pruned_blocks = lowest(norms, math.floor(sparsity * norms.size)).reshape(norms.shape)
    keep = np.broadcast_to(~pruned_blocks[..., None], runs.shape)
    return _from_runs(keep, axis, size)


_PAIRWISE_LIMIT = 16
"""Up to this m, in-run ranks come from m^2 vectorized comparisons instead of a sort."""


def _rank_in_runs(runs: np.ndarray) -> np.ndarray:
    """Rank of each value within its run: smaller first, ties to the earlier position."""
    m = runs.shape[-1]
    if m > _PAIRWISE_LIMIT:
        order = np.argsort(runs, axis=-1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(m), axis=-1)
        return ranks
    ranks = np.zeros(runs.shape, dtype=np.int8)
    for i in range(m):
        column = runs[..., i]
        for j in range(m):
            if j != i:
                ranks[..., i] += (runs[..., j] < column) if j > i else (runs[..., j] <= column)
    return ranks


def nm_keep(scores: np.ndarray, n: int, m: int, axis: int) -> np.ndarray:
    runs, size = _runs(scores, axis, m)
    keep = _rank_in_runs(runs) >= n
    return _from_runs(keep, axis, size)


def keep_mask(scores: np.ndarray, spec: PruneSpec) -> np.ndarray:
    """The values to keep, for scores in the canonical view."""
    match spec.pattern:
        case PatternKind.UNSTRUCTURED:
            return unstructured_keep(scores, spec.sparsity)
        case PatternKind.BLOCK:
            return block_keep(scores, spec.sparsity, spec.block_size, spec.axis)
        case PatternKind.NM:
            return nm_keep(scores, spec.n, spec.m, spec.axis)


def structured_skip_reason(spec: PruneSpec, shape: tuple[int, ...]) -> str | None:
    """Why Core ML would leave this weight dense, or None.

    coremltools skips block pruning when the block, and n:m when m, exceeds half the
    size of the pruned axis; sparsec does the same so that masks match.
    """
    if spec.axis >= len(shape):
        return None
    channels = shape[spec.axis]
    group = spec.block_size if spec.pattern is PatternKind.BLOCK else spec.m
    if spec.pattern is not PatternKind.UNSTRUCTURED and group > channels / 2:
        what = "block size" if spec.pattern is PatternKind.BLOCK else "m"
        return f"{what} {group} exceeds half of axis {spec.axis} ({channels} channels)"
    return None

