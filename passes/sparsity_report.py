"""Report per-layer sparsity and what bitmask packing will cost (the IR is unchanged).

    sparsity-report                      # table on stderr
    sparsity-report{format=json output="report.json"}

Columns: layer, op, shape, pattern, target and achieved sparsity, dense float16 bytes,
and predicted bitmask bytes (one mask bit per value plus float16 non-zeros):
ceil(N / 8) + 2 * nnz.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.passes import ModulePass

from sparsec.context import weight_store
from sparsec.errors import PipelineError
from sparsec.fileio import atomic_output
from sparsec.layers import dense_value, layer_weights
from sparsec.weights import WeightStore

_FORMATS = ("table", "json")


def bitmask_bytes(size: int, nonzeros: int) -> int:
    return math.ceil(size / 8) + 2 * nonzeros


def layer_rows(module: builtin.ModuleOp, weights: WeightStore) -> list[dict]:
    rows = []
    for weight in layer_weights(module, include_packed=True):
        array = dense_value(weight.op, weights)
        nonzeros = int(np.count_nonzero(array))
        pattern = weight.op.sparsity
        rows.append(
            {
                "layer": weight.layer,
                "op": weight.op_type,
                "weight": weight.name,
                "shape": list(array.shape),
                "pattern": "dense" if pattern is None else str(pattern).removeprefix("#sparse.pattern"),
                "target": None if pattern is None else pattern.target_sparsity,
                "achieved": 1.0 - nonzeros / array.size if array.size else 0.0,
                "dense_fp16_bytes": 2 * array.size,
                "bitmask_bytes": bitmask_bytes(array.size, nonzeros),
                "packed": pattern is not None,
            }
        )
    return rows


def totals(rows: list[dict]) -> dict:
    dense = sum(r["dense_fp16_bytes"] for r in rows)
    packed = sum(r["bitmask_bytes"] if r["packed"] else r["dense_fp16_bytes"] for r in rows)
    return {
        "layers": len(rows),
        "pruned_layers": sum(r["packed"] for r in rows),
        "dense_fp16_bytes": dense,
        "predicted_bytes": packed,
        "ratio": packed / dense if dense else 1.0,
    }


def format_table(rows: list[dict], summary: dict) -> str:
    headers = ["layer", "op", "shape", "pattern", "target", "achieved", "fp16 bytes", "bitmask bytes"]
    lines = [
        [
            r["layer"],
            r["op"],
            "x".join(map(str, r["shape"])),
            r["pattern"],
            "-" if r["target"] is None else f"{r['target']:.1%}",
            f"{r['achieved']:.1%}",
            f"{r['dense_fp16_bytes']:,}",
            f"{r['bitmask_bytes']:,}",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(headers)]
    numeric = {4, 5, 6, 7}

    def render(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [render(headers), render(["-" * w for w in widths])] + [render(line) for line in lines]
    out.append(
        f"total: {summary['layers']} layers, {summary['pruned_layers']} pruned; "
        f"dense fp16 {summary['dense_fp16_bytes']:,} bytes -> predicted {summary['predicted_bytes']:,} bytes "
        f"({summary['ratio']:.1%})"
    )
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class SparsityReportPass(ModulePass):
    """Print per-layer sparsity and predicted bitmask sizes; the IR is unchanged."""

    name = "sparsity-report"

    format: str = "table"
    """table | json."""
    output: str = "stderr"
    """stderr, stdout, or a file path (written atomically)."""

    def __post_init__(self) -> None:
        if self.format not in _FORMATS:
            raise PipelineError(f"{self.name}: option 'format' must be one of {', '.join(_FORMATS)}, got '{self.format}'")

    def render(self, module: builtin.ModuleOp, weights: WeightStore) -> str:
        rows = layer_rows(module, weights)
        summary = totals(rows)
        if self.format == "json":
            return json.dumps({"layers": rows, "total": summary}, indent=2) + "\n"
        return format_table(rows, summary)

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        text = self.render(op, weight_store(ctx))
        if self.output in ("stderr", "stdout"):
            getattr(sys, self.output).write(text)
            return
        with atomic_output(self.output) as stream:
            stream.write(text)
