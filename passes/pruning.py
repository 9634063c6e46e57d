"""What the pruning passes share: validated pruning options, the mask selection for
each pattern, and `PatternPruningPass`, the shape of a pass that prunes layers to a
pattern. Which weights are prunable, and their (out, in, *kernel) view, is
`sparsec.layers`.

Selection. Every function here takes non-negative importance scores in the
canonical view (|w| for magnitude pruning) and returns a boolean mask of the values
to keep. Ties are broken by position (the earlier value is pruned first), so the
result is deterministic and a tensor of equal values gets exactly the requested
count. Selection is linear-time: `np.partition` for unstructured and block, a
pairwise rank within each run for n:m.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np
from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from sparsec.dialects.sparse import PatternAttr, PatternKind
from sparsec.calibration import CalibrationData, layer_features
from sparsec.context import weight_store
from sparsec.errors import PassFailure, PipelineError
from sparsec.layers import MAX_RANK, LayerWeight, layer_weights
from sparsec.passes.prune_config import LayerConfig, load_layer_config

log = logging.getLogger("sparsec")

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
        return f"{what} {group} exceeds half of axis {spec.axis} ({channels} channel{'' if channels == 1 else 's'})"
    return None



# --- the pattern-pruning pass shape ------------------------------------------------------

_PATTERN_OPTIONS = {"sparsity", "pattern", "block_size", "n", "m", "axis", "min_elements"}


@dataclass(frozen=True)
class PatternPruningPass(ModulePass, ABC):
    """Options, per-layer configuration and the layer loop shared by the pruning passes
    that take a pattern (magnitude, Wanda, SparseGPT). A subclass says how one layer is
    pruned (`prune_layer`)."""

    sparsity: float | None = None
    """Fraction of values (unstructured) or blocks (block) to zero, in [0, 1]."""
    pattern: str = "unstructured"
    """unstructured | block | nm."""
    block_size: int | None = None
    """Values per block (>= 2), for pattern=block."""
    n: int | None = None
    """For pattern=nm: n of every m consecutive values become zero."""
    m: int | None = None
    axis: int | None = None
    """Axis of the (out, in, *kernel) view; default 0 for block, 1 for n:m."""
    min_elements: int = 2048
    """Weights with at most this many elements stay dense (coremltools' weight_threshold)."""
    config: str | None = None
    """JSON or TOML file with per-op-type and per-op-name settings."""

    PATTERNS: ClassVar[tuple[PatternKind, ...]] = tuple(PatternKind)
    """The patterns this pass can produce."""

    def __post_init__(self) -> None:
        self.base_spec  # noqa: B018 - validates every option when the pipeline is parsed
        self.layer_config  # noqa: B018

    @property
    def options(self) -> dict:
        return {key: getattr(self, key) for key in _PATTERN_OPTIONS}

    def _spec(self, options: dict) -> PruneSpec:
        if options["min_elements"] < 0:
            raise PipelineError(f"{self.name}: option 'min-elements' must be >= 0, got {options['min_elements']}")
        sparsity = options["sparsity"]
        spec = PruneSpec.from_options(
            self.name,
            options["pattern"],
            None if sparsity is None else float(sparsity),
            options["block_size"],
            options["n"],
            options["m"],
            options["axis"],
        )
        if spec.pattern not in self.PATTERNS:
            allowed = ", ".join(p.value for p in self.PATTERNS)
            raise PipelineError(f"{self.name}: option 'pattern' must be one of {allowed}, got '{spec.pattern.value}'")
        return spec

    def _base_options(self) -> dict:
        config = self.layer_config
        return {**self.options, **(config.global_options if config else {})}

    @cached_property
    def base_spec(self) -> PruneSpec | None:
        """The pattern for layers no config entry names; None if a config leaves them alone."""
        options = self._base_options()
        if self.config is not None and all(options[k] is None for k in ("sparsity", "n", "m")):
            return None
        return self._spec(options)

    @cached_property
    def layer_config(self) -> LayerConfig | None:
        if self.config is None:
            return None
        config = load_layer_config(self.config, _PATTERN_OPTIONS)
        base = {**self.options, **config.global_options}
        for entry in [*config.op_type.values(), *config.op_name.values()]:
            if entry is not None:
                self._spec({**base, **entry})
        return config

    def spec_for(self, weight: LayerWeight) -> tuple[PruneSpec, int] | None:
        """(pattern, min-elements) for this layer, or None to leave it dense."""
        base = self._base_options()
        if self.layer_config is None:
            return (self.base_spec, self.min_elements) if self.base_spec else None
        entry = self.layer_config.entry_for(weight.layer, weight.name, weight.op_type)
        if entry is None:
            return None
        if not entry:
            return (self.base_spec, base["min_elements"]) if self.base_spec else None
        options = {**base, **entry}
        return self._spec(options), options["min_elements"]

    @abstractmethod
    def prune_layer(self, ctx: Context, module: builtin.ModuleOp, weight: LayerWeight, spec: PruneSpec, array: np.ndarray) -> np.ndarray:
        """The pruned weight (stored layout) for one layer that should be pruned."""

    def layers(self, module: builtin.ModuleOp) -> list[LayerWeight]:
        """Layers in program order, so that a calibrated pass sees earlier layers pruned."""
        return sorted(layer_weights(module), key=lambda w: program_position(w.consumer))

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        weights = weight_store(ctx)
        left_dense: dict[str, list[str]] = {}  # layers by reason
        for weight in self.layers(op):
            chosen = self.spec_for(weight)
            if chosen is None:
                continue
            spec, min_elements = chosen
            array = weights[weight.name]
            if array.size <= min_elements:
                continue
            if spec.axis >= array.ndim:
                raise PassFailure(
                    f"{self.name}: weight '{weight.name}' of layer '{weight.layer}' has rank {array.ndim}; "
                    f"axis {spec.axis} does not exist (axes: 0 = output channels, 1 = input channels)"
                )
            reason = structured_skip_reason(spec, weight.canonical(array).shape)
            if reason is not None:
                left_dense.setdefault(reason, []).append(weight.layer)
                continue
            weights[weight.name] = self.prune_layer(ctx, op, weight, spec, array)
            weight.op.sparsity = spec.attribute()  # pyright: ignore
        for reason, layers in left_dense.items():
            log.warning(f"{self.name}: {_layers_named(layers)} left dense: {reason}")


@dataclass(frozen=True)
class CalibratedPruningPass(PatternPruningPass, ABC):
    """A pattern-pruning pass that reads layer inputs from calibration data."""

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

    def features(self, ctx: Context, module: builtin.ModuleOp, weight: LayerWeight) -> Iterator[np.ndarray]:
        """The layer's calibration inputs, batch by batch, with earlier layers as pruned so far."""
        return layer_features(module, weight_store(ctx), weight.consumer, self.calibration_data, self.batch_size)


def _layers_named(layers: list[str], shown: int = 3) -> str:
    """"layer 'a'", or "3 layers ('a', 'b', 'c')", or "16 layers ('a', 'b', 'c' and 13
    more)": one warning for the layers a network leaves dense for one reason (each of
    ShuffleNet's 16 depthwise convolutions had a line of its own)."""
    if len(layers) == 1:
        return f"layer '{layers[0]}'"
    names = ", ".join(f"'{layer}'" for layer in layers[:shown])
    more = f" and {len(layers) - shown} more" if len(layers) > shown else ""
    return f"{len(layers)} layers ({names}{more})"


def program_position(op: Operation) -> int:
    block = op.parent_block()
    return block.get_operation_index(op) if block is not None else 0
