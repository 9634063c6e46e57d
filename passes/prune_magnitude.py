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

import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.passes import ModulePass

from sparsec.context import weight_store
from sparsec.errors import PassFailure, PipelineError
from sparsec.passes.prune_config import LayerConfig, load_layer_config
from sparsec.layers import LayerWeight, layer_weights
from sparsec.passes.pruning import PruneSpec, keep_mask, structured_skip_reason

log = logging.getLogger("sparsec")

_PATTERN_OPTIONS = {"sparsity", "pattern", "block_size", "n", "m", "axis", "min_elements"}


@dataclass(frozen=True)
class PruneMagnitudePass(ModulePass):
    """Zero the lowest-magnitude weights of Gemm/MatMul/Conv layers: unstructured, block or n:m."""

    name = "prune-magnitude"

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
        return PruneSpec.from_options(
            self.name,
            options["pattern"],
            None if sparsity is None else float(sparsity),
            options["block_size"],
            options["n"],
            options["m"],
            options["axis"],
        )

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

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        weights = weight_store(ctx)
        for weight in layer_weights(op):
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
            canonical_shape = weight.canonical(array).shape
            reason = structured_skip_reason(spec, canonical_shape)
            if reason is not None:
                log.warning(f"{self.name}: layer '{weight.layer}' left dense: {reason}")
                continue
            keep = weight.stored(keep_mask(np.abs(weight.canonical(array)), spec))
            weights[weight.name] = np.where(keep, array, np.zeros((), array.dtype))
            weight.op.sparsity = spec.attribute()  # pyright: ignore
