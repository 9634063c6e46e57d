"""What is inside a compiled model: per-layer encoding, bytes and the kernel that runs
the layer, totals against dense.

Used by `sparsec inspect MODEL.spx [--json]`. Layers are the Gemm, MatMul and Conv
weights; other weights (biases, normalization parameters) are summed as one line. A
layer that lower-kernels left alone has no kernel ("-"; null in the JSON): the runtime
runs it in numpy, or a depthwise convolution as a weighted pool.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparsec.dialects.kernel_ops import KernelOp
from sparsec.dialects.sparse import PackedWeightOp
from sparsec.irfile import storing_ops
from sparsec.layers import dense_value, layer_weights
from sparsec.model import Model
from sparsec.tables import aligned


def _encoding_text(op) -> str:
    if not isinstance(op, PackedWeightOp):
        return f"dense {op.tensor_type.element_type}"
    return str(op.encoding).removeprefix("#sparse.encoding")


def _kernel_of(op) -> KernelOp | None:
    """The kernel op that computes with weight `op`, if lower-kernels made one."""
    users = (use.operation for result in op.results for use in result.uses)
    return next((user for user in users if isinstance(user, KernelOp)), None)


def _stored_bytes(op, model: Model) -> int:
    return sum(model.weights[name].nbytes for name in op.stored_tensors().values())


def describe(model: Model, path: str | Path) -> dict:
    """Per-layer rows and totals, as plain data (what --json prints)."""
    layers = []
    layer_ops = set()
    for weight in layer_weights(model.module, include_packed=True):
        layer_ops.add(weight.op)
        dense = dense_value(weight.op, model.weights)
        pattern = weight.op.sparsity
        kernel = _kernel_of(weight.op)
        layers.append(
            {
                "layer": weight.layer,
                "op": weight.op_type,
                "weight": weight.name,
                "shape": list(dense.shape),
                "pattern": "dense" if pattern is None else str(pattern).removeprefix("#sparse.pattern"),
                "sparsity": float(1.0 - np.count_nonzero(dense) / dense.size) if dense.size else 0.0,
                "encoding": _encoding_text(weight.op),
                "bytes": _stored_bytes(weight.op, model),
                "dense_fp32_bytes": 4 * dense.size,
                "kernel": None if kernel is None else kernel.kernel.data,
                "kernel_kind": None if kernel is None else kernel.kind.data,
            }
        )
    others = [op for op in storing_ops(model.module) if op not in layer_ops]
    other_elements = sum(int(np.prod(op.tensor_type.get_shape())) for op in others)
    stored = sum(row["bytes"] for row in layers) + sum(_stored_bytes(op, model) for op in others)
    elements = sum(int(np.prod(row["shape"])) for row in layers) + other_elements
    return {
        "file": str(path),
        "file_bytes": Path(path).stat().st_size if Path(path).is_file() else None,
        "layers": layers,
        "other_weights": {"count": len(others), "elements": other_elements, "bytes": sum(_stored_bytes(op, model) for op in others)},
        "total": {
            "stored_bytes": stored,
            "dense_fp32_bytes": 4 * elements,
            "dense_fp16_bytes": 2 * elements,
            "vs_fp32": stored / (4 * elements) if elements else 1.0,
            "vs_fp16": stored / (2 * elements) if elements else 1.0,
        },
    }


def format_description(info: dict) -> str:
    headers = ["layer", "op", "shape", "pattern", "sparsity", "encoding", "bytes", "kernel"]
    rows = [
        [r["layer"], r["op"], "x".join(map(str, r["shape"])), r["pattern"], f"{r['sparsity']:.1%}", r["encoding"], f"{r['bytes']:,}", r["kernel_kind"] or "-"]
        for r in info["layers"]
    ]
    total, other = info["total"], info["other_weights"]
    lines = [f"{info['file']}: {info['file_bytes']:,} bytes" if info["file_bytes"] else info["file"]]
    lines += aligned(headers, rows, right={4, 6})
    lines.append(f"other weights: {other['count']} tensors, {other['elements']:,} values, {other['bytes']:,} bytes")
    lines.append(
        f"total: {total['stored_bytes']:,} bytes = {total['vs_fp16']:.1%} of dense fp16 "
        f"({total['dense_fp16_bytes']:,}), {total['vs_fp32']:.1%} of dense fp32 ({total['dense_fp32_bytes']:,})"
    )
    return "\n".join(lines) + "\n"
