"""`sparsec eval`: accuracy against sparsity for several pruning methods and patterns.

For every method and sweep point the dense model is pruned (calibrated methods read
`--calibration`), packed and lowered to kernels; the compiled model then runs the
evaluation data. Each row reports the achieved sparsity of the pruned layers, accuracy
(with labels: argmax of the first output), the relative output error against the dense
model, ||y - y_dense|| / ||y_dense|| over the first output, the packed size, and the
median single-sample latency of the JIT engine.

Sweep syntax: points separated by `;`, e.g. `unstructured:0.5,0.75,0.9;nm:2:4;nm:3:4;block:4:0.5`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sparsec import reference
from sparsec.bench import measure
from sparsec.errors import SparsecError
from sparsec.fileio import atomic_path
from sparsec.irfile import storing_ops
from sparsec.layers import dense_value, layer_weights
from sparsec.model import Model
from sparsec.tables import aligned

METHODS = ("magnitude", "wanda", "sparsegpt")
CALIBRATED = ("wanda", "sparsegpt")


@dataclass(frozen=True)
class SweepPoint:
    label: str
    options: str


@dataclass(frozen=True)
class Row:
    method: str
    pattern: str
    sparsity: float
    accuracy: float | None
    relative_error: float
    size_bytes: int
    latency_ms: float


def parse_sweep(text: str) -> list[SweepPoint]:
    points: list[SweepPoint] = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        kind, _, rest = item.partition(":")
        try:
            match kind:
                case "unstructured":
                    points += [SweepPoint(f"unstructured {float(s):g}", f"sparsity={float(s)!r}") for s in rest.split(",")]
                case "nm":
                    n, m = (int(v) for v in rest.split(":"))
                    points.append(SweepPoint(f"nm {n}:{m}", f"pattern=nm n={n} m={m}"))
                case "block":
                    size, _, sparsities = rest.partition(":")
                    points += [
                        SweepPoint(f"block {int(size)} {float(s):g}", f"pattern=block block-size={int(size)} sparsity={float(s)!r}")
                        for s in sparsities.split(",")
                    ]
                case _:
                    raise ValueError(kind)
        except ValueError:
            raise SparsecError(
                f"--sweep item '{item}': expected unstructured:S[,S...], nm:N:M or block:B:S[,S...]"
            ) from None
    if not points:
        raise SparsecError("--sweep names no points")
    return points


def _first_output(model: Model, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return next(iter(model.run(feeds).values()))


def _sparsity(model: Model) -> float:
    zeros = total = 0
    for weight in layer_weights(model.module, include_packed=True):
        if weight.op.sparsity is None:
            continue
        dense = dense_value(weight.op, model.weights)
        zeros, total = zeros + int(dense.size - np.count_nonzero(dense)), total + dense.size
    return zeros / total if total else 0.0


def _size(model: Model) -> int:
    return sum(model.weights[name].nbytes for op in storing_ops(model.module) for name in op.stored_tensors().values())


def _row(method: str, label: str, model: Model, feeds, labels, dense_out, single) -> Row:
    output = _first_output(model, feeds)
    accuracy = None if labels is None else float((output.argmax(axis=-1) == labels).mean())
    error = float(np.linalg.norm(output - dense_out) / max(np.linalg.norm(dense_out), 1e-30))
    executor = model.compiled()
    latency = measure({method: lambda: executor.run(single)}, runs=20, seconds=0.2)[0].median_ms
    return Row(method, label, _sparsity(model), accuracy, error, _size(model), latency)


def evaluate(
    dense: Model,
    data: dict[str, np.ndarray],
    labels: np.ndarray | None,
    sweep: list[SweepPoint],
    methods: list[str],
    calibration: Path | None,
    min_elements: int,
    threads: int,
) -> list[Row]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SparsecError(f"--methods: unknown method(s) {', '.join(unknown)} (allowed: {', '.join(METHODS)})")
    if calibration is None and any(m in CALIBRATED for m in methods):
        raise SparsecError("--methods wanda and sparsegpt need --calibration FILE.npz")
    names = reference.input_names(reference.main_function(dense.module))
    feeds = {name: data[name] for name in names}
    single = {name: array[:1] for name, array in feeds.items()}
    dense_out = _first_output(dense, feeds)
    baseline = dense.clone()
    baseline.engine, baseline.threads = "jit", threads
    baseline.apply("lower-kernels")
    rows = [_row("dense", "-", baseline, feeds, labels, dense_out, single)]
    for method in methods:
        for point in sweep:
            model = dense.clone()
            model.engine, model.threads = "jit", threads
            calibrated = f' calibration="{calibration}"' if method in CALIBRATED else ""
            model.apply(f"prune-{method}{{{point.options} min-elements={min_elements}{calibrated}}},pack-bitmask,lower-kernels")
            rows.append(_row(method, point.label, model, feeds, labels, dense_out, single))
    return rows


def load_data(path: Path, label_name: str | None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise SparsecError(f"--data '{path}': cannot read: {error}") from None
    labels = None
    if label_name is not None:
        if label_name not in arrays:
            raise SparsecError(f"--labels '{label_name}': not in '{path}' (it holds {', '.join(arrays)})")
        labels = arrays.pop(label_name)
    return {k: v.astype(np.float32) for k, v in arrays.items()}, labels


def format_rows(rows: list[Row], markdown: bool = False) -> str:
    headers = ["method", "pattern", "sparsity", "accuracy", "rel. error", "bytes", "latency ms"]
    cells = [
        [
            r.method,
            r.pattern,
            f"{r.sparsity:.1%}",
            "-" if r.accuracy is None else f"{r.accuracy:.2%}",
            f"{r.relative_error:.3f}",
            f"{r.size_bytes:,}",
            f"{r.latency_ms:.3f}",
        ]
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells]) + "\n"
    return "\n".join(aligned(headers, cells, right=range(2, len(headers)))) + "\n"


def rows_json(rows: list[Row]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    """Accuracy (or relative error without labels) against sparsity, one line per method and pattern kind."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SparsecError("--plot needs matplotlib: pip install 'sparsec[plot]'") from None
    use_accuracy = all(r.accuracy is not None for r in rows)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[Row]] = {}
    for row in rows[1:]:
        series.setdefault(f"{row.method}, {row.pattern.split()[0]}", []).append(row)
    for label, points in series.items():
        points.sort(key=lambda r: r.sparsity)
        values = [r.accuracy if use_accuracy else r.relative_error for r in points]
        axes.plot([100 * r.sparsity for r in points], values, marker="o", label=label)
    dense = rows[0]
    axes.axhline(dense.accuracy if use_accuracy else 0.0, color="gray", linestyle="--", label="dense")
    axes.set_xlabel("sparsity of pruned layers (%)")
    axes.set_ylabel("accuracy" if use_accuracy else "relative output error")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)
