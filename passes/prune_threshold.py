"""Threshold pruning: zero every weight whose magnitude is at most `threshold`.

    prune-threshold{threshold=0.01 min-sparsity=0.5}

As in coremltools' OpThresholdPrunerConfig, a layer is pruned (and marked with an
unstructured `#sparse.pattern`) only when the zeros would reach `min-sparsity`;
otherwise it is left exactly as it was, since a barely sparse weight is cheaper dense.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.passes import ModulePass

from sparsec.context import weight_store
from sparsec.dialects.sparse import PatternAttr
from sparsec.errors import PipelineError
from sparsec.passes.prune_config import LayerConfig, load_layer_config
from sparsec.layers import layer_weights

_OPTIONS = {"threshold", "min_sparsity", "min_elements"}


@dataclass(frozen=True)
class PruneThresholdPass(ModulePass):
    """Zero weights with |w| <= threshold; keep a layer only if it reaches min-sparsity."""

    name = "prune-threshold"

    threshold: float = 1e-12
    """Values with magnitude at most this become zero (coremltools' default: 1e-12)."""
    min_sparsity: float = 0.5
    """A layer is pruned only if at least this fraction would be zero."""
    min_elements: int = 2048
    """Weights with at most this many elements stay dense."""
    config: str | None = None
    """JSON or TOML file with per-op-type and per-op-name settings."""

    def __post_init__(self) -> None:
        self._check(self.options)
        self.layer_config  # noqa: B018 - validates the file when the pipeline is parsed

    def _check(self, options: dict) -> None:
        if float(options["threshold"]) < 0:
            raise PipelineError(f"{self.name}: option 'threshold' must be >= 0, got {options['threshold']}")
        if not 0.0 <= float(options["min_sparsity"]) <= 1.0:
            raise PipelineError(f"{self.name}: option 'min-sparsity' must be in [0, 1], got {options['min_sparsity']}")
        if options["min_elements"] < 0:
            raise PipelineError(f"{self.name}: option 'min-elements' must be >= 0, got {options['min_elements']}")

    @property
    def options(self) -> dict:
        return {key: getattr(self, key) for key in _OPTIONS}

    @cached_property
    def layer_config(self) -> LayerConfig | None:
        if self.config is None:
            return None
        config = load_layer_config(self.config, _OPTIONS)
        for entry in [config.global_options, *config.op_type.values(), *config.op_name.values()]:
            if entry is not None:
                self._check({**self.options, **config.global_options, **entry})
        return config

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        weights = weight_store(ctx)
        for weight in layer_weights(op):
            options = self.options
            if self.layer_config is not None:
                options = self.layer_config.options_for(options, weight.layer, weight.name, weight.op_type)
                if options is None:
                    continue
            array = weights[weight.name]
            if array.size <= options["min_elements"]:
                continue
            pruned = np.abs(array) <= float(options["threshold"])
            achieved = float(pruned.mean())
            if achieved < float(options["min_sparsity"]):
                continue
            weights[weight.name] = np.where(pruned, np.zeros((), array.dtype), array)
            weight.op.sparsity = PatternAttr.unstructured(achieved)  # pyright: ignore
