"""End-to-end benchmark: convolutional networks compiled by sparsec against onnxruntime
on the dense model, in one run.

    python benchmarks/cnns.py [--models resnet50 squeezenet] [--patterns nm:3:4 block:4]
                              [--sparsity 0.75] [--threads 1 2] [--batch 1 8] [--open-batch]
                              [--seconds 2] [--by-kind] [--cold] [--markdown]

The networks are the real architectures the onnx wheel ships (onnx/backend/test/data/
light), their ConstantOfShape weights replaced by random ones (test/models.py,
`randomized`), at batch 1 as they fix it, or with `--open-batch` with their batch axis
left to run time as PyTorch exports it (test/models.py, `open_batch`), at each
`--batch`. Each pattern is compiled as `sparsec compile --pattern ...
-o model.spx` compiles it (pruning by magnitude, batch normalizations folded, packing,
kernel lowering); `--sparsity` applies to unstructured and block patterns. The timings
are those of `sparsec bench` on the artifact: medians of sparsec's engine, and of numpy
(sparsec's reference interpreter) and onnxruntime on the dense model, each on the same
number of threads. `--by-kind` adds a second table from `sparsec bench --profile`: each
run's time by what ran its steps (each kernel kind, numpy) beside onnxruntime's time
for the same layers, which says where sparsec gains or loses against it. `--cold` adds
the seconds from loading each artifact to its first result with an empty kernel cache
(every kernel it runs compiled then), what a first run on a new machine pays.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import sparsec
from sparsec.bench import bench, by_runs_as, profile, random_inputs
from sparsec.cli import build_parser, compile_passes

from layers import cpu_description, print_table  # benchmarks/layers.py, next to this script

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
from models import LIGHT, open_batch, randomized  # noqa: E402  (the test models' module)

MODELS = ["resnet50", "densenet121", "inception_v2", "squeezenet", "shufflenet"]


def compiled(dense: Path, pattern: str, sparsity: float, artifact: Path) -> Path:
    """`dense` compiled to `artifact` as `sparsec compile --pattern` compiles it."""
    options = ["--pattern", pattern] + (["--sparsity", str(sparsity)] if not pattern.startswith("nm") else [])
    args = build_parser().parse_args(["compile", str(dense), "-o", str(artifact), *options])
    model = sparsec.load(dense)
    model.apply(compile_passes(args, ".spx"))
    model.save(artifact)
    return artifact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--patterns", nargs="+", default=["nm:3:4", "block:4", "block:8"])
    parser.add_argument("--sparsity", type=float, default=0.75)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes (more than 1 with --open-batch)")
    parser.add_argument("--open-batch", action="store_true", help="leave each network's batch axis to run time")
    parser.add_argument("--seconds", type=float, default=2.0, help="time each engine at least this long")
    parser.add_argument("--by-kind", action="store_true", help="also time each run by what ran its steps, against onnxruntime")
    parser.add_argument("--cold", action="store_true", help="also time each artifact's first run from an empty kernel cache")
    parser.add_argument("--markdown", action="store_true", help="print the table in Markdown")
    options = parser.parse_args()
    if max(options.batch) > 1 and not options.open_batch:
        parser.error("--batch above 1 needs --open-batch (the networks fix a batch of 1)")
    header = ("model", "pattern", "threads", "batch", "sparsec ms", "numpy dense ms", "ort dense ms", "vs numpy", "vs ort dense") + (("cold first run s",) if options.cold else ())
    kinds_header = ("model", "pattern", "threads", "batch", "ran by", "share", "sparsec ms", "ort dense ms", "vs ort dense")
    lines, kinds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in options.models:
            dense = randomized(LIGHT / f"light_{name}.onnx", Path(tmp) / f"{name}.onnx")
            if options.open_batch:
                dense = open_batch(dense, dense)
            for pattern in options.patterns:
                artifact = compiled(dense, pattern, options.sparsity, Path(tmp) / f"{name}.spx")
                for threads, batch in itertools.product(options.threads, options.batch):
                    ours, numpy_dense, ort_dense, _ort_pruned = bench(sparsec.load(artifact, threads=threads), dense, batch, threads, 20, options.seconds)
                    times = [f"{timing.median_ms:.2f}" for timing in (ours, numpy_dense, ort_dense)]
                    ratios = [f"{baseline.median_ms / ours.median_ms:.2f}x" for baseline in (numpy_dense, ort_dense)]
                    cold = (f"{cold_first_run(artifact, threads, batch):.2f}",) if options.cold else ()
                    labels = (name, pattern, str(threads), str(batch))
                    lines.append((*labels, *times, *ratios, *cold))
                    print("  ".join(lines[-1]), file=sys.stderr, flush=True)  # progress: a network takes a minute or two
                    if options.by_kind:
                        kinds += kind_lines(sparsec.load(artifact, threads=threads), dense, threads, batch, labels)
    axis = "batch axis left to run time" if options.open_batch else "batch fixed at 1"
    print(f"# {cpu_description()}; {axis}, {options.sparsity:.0%} sparsity for unstructured and block patterns; sparsec {sparsec.__version__}")
    print_table(header, lines, options.markdown)
    if kinds:
        print()
        print_table(kinds_header, kinds, options.markdown)


def cold_first_run(artifact: Path, threads: int, batch: int) -> float:
    """Seconds from loading `artifact` to its first result on `threads` threads at
    `batch`, every kernel compiled then: the kernel cache is an empty directory of its
    own."""
    with tempfile.TemporaryDirectory() as cache, mock.patch.dict(os.environ, {"SPARSEC_CACHE_DIR": cache}):
        start = time.perf_counter()
        model = sparsec.load(artifact, threads=threads)
        model.run(random_inputs(model, batch))
        return time.perf_counter() - start


def kind_lines(model: sparsec.Model, dense: Path, threads: int, batch: int, labels: tuple[str, ...]) -> list[tuple[str, ...]]:
    """`model`'s run by what ran its steps, beside onnxruntime's time for the same
    layers of `dense` (`sparsec bench --profile`, 21 runs each in turns)."""
    result, baseline = profile(model, batch, 21, dense, threads)
    lines = []
    for kind in by_runs_as(result, batch, baseline):
        ort = kind["ort_ms"]
        speedup = "" if kind["speedup_vs_ort"] is None else f"{kind['speedup_vs_ort']:.2f}x"
        lines.append((*labels, str(kind["runs_as"]), f"{kind['share']:.1%}", f"{kind['ms']:.2f}", "" if ort is None else f"{ort:.2f}", speedup))
    return lines


if __name__ == "__main__":
    main()
