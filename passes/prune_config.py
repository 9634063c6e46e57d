"""Per-layer pruning configuration, in the manner of coremltools' OptimizationConfig.

A JSON or TOML file with up to three sections; each maps to pruning options (the
pass's option names, with `-` or `_`):

    {
      "global":  {"pattern": "nm", "n": 2, "m": 4},
      "op_type": {"Conv": {"pattern": "block", "block-size": 4, "sparsity": 0.5}},
      "op_name": {"fc3": null, "classifier.weight": {"exclude": true}}
    }

The most specific entry wins: op_name, then op_type, then global, then the pass's own
options. Layers that no entry names get the global (or pass) options; if those name
no pattern, such layers stay dense, as in coremltools without a global config. An entry that is `null` (JSON) or has `exclude = true` leaves the layer
dense. `op_name` keys match a layer's ONNX node name or its weight's name; `op_type`
keys match ONNX operator types (Gemm, MatMul, Conv), ignoring case.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsec.errors import PipelineError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SECTIONS = ("global", "op_type", "op_name")
Options = dict[str, Any]


@dataclass(frozen=True)
class LayerConfig:
    """Parsed configuration: option overrides, or None for an excluded layer."""

    global_options: Options = field(default_factory=dict)
    op_type: dict[str, Options | None] = field(default_factory=dict)
    op_name: dict[str, Options | None] = field(default_factory=dict)

    def entry_for(self, layer: str, weight: str, op_type: str) -> Options | None:
        """The merged op_type and op_name overrides for one layer ({} if none match);
        None when the config excludes the layer."""
        entry: Options = {}
        type_entry = next((v for k, v in self.op_type.items() if k.lower() == op_type.lower()), {})
        if type_entry is None:
            return None
        entry.update(type_entry)
        for key in (layer, weight):
            if key in self.op_name:
                name_entry = self.op_name[key]
                if name_entry is None:
                    return None
                entry.update(name_entry)
        return entry

    def options_for(self, base: Options, layer: str, weight: str, op_type: str) -> Options | None:
        """Full options for one layer (base, then global, then overrides), or None if excluded."""
        entry = self.entry_for(layer, weight, op_type)
        return None if entry is None else {**base, **self.global_options, **entry}


def _normalize(path: Path, where: str, entry: Any, allowed: set[str]) -> Options | None:
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise PipelineError(f"config '{path}': {where} must be a table of options or null, got {entry!r}")
    options = {key.replace("-", "_"): value for key, value in entry.items()}
    if options.pop("exclude", False) is True:
        return None
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise PipelineError(
            f"config '{path}': {where} has unknown option(s) {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(allowed | {'exclude'}))})"
        )
    return options


def load_layer_config(path_text: str, allowed: set[str]) -> LayerConfig:
    """Read and check a config file; `allowed` are the option names it may set."""
    path = Path(path_text)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise PipelineError(f"config '{path}': cannot read: {error.strerror}") from None
    try:
        data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise PipelineError(f"config '{path}': not valid {kind}: {error}") from None
    if not isinstance(data, dict) or set(data) - set(SECTIONS):
        raise PipelineError(f"config '{path}': top-level keys must be among {', '.join(SECTIONS)}")
    global_options = _normalize(path, "'global'", data.get("global", {}), allowed)
    if global_options is None:
        raise PipelineError(f"config '{path}': 'global' cannot exclude every layer; remove the pass instead")
    sections: dict[str, dict[str, Options | None]] = {}
    for section in ("op_type", "op_name"):
        entries = data.get(section, {})
        if not isinstance(entries, dict):
            raise PipelineError(f"config '{path}': '{section}' must map names to options")
        sections[section] = {
            key: _normalize(path, f"'{section}.{key}'", value, allowed) for key, value in entries.items()
        }
    return LayerConfig(global_options, sections["op_type"], sections["op_name"])
