"""End-to-end benchmark: a transformer MLP block compiled by sparsec against numpy and
onnxruntime on the dense model, in one run.

    python benchmarks/mlp_block.py [--width 768] [--hidden 3072] [--batch 1 8] [--threads 1]

The block is LayerNorm -> MatMul + bias -> Gelu -> MatMul + bias -> residual Add, with
random weights, saved as ONNX; each pattern goes through what `sparsec compile -o
X.spx` runs (`compiled`) into a .spx artifact, which `sparsec.load(...).run` executes
(kernels for the two layers, numpy for the rest). The timings are those of `sparsec
bench` on the artifact.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import sparsec
from sparsec.bench import Timing, bench

from layers import cpu_description  # benchmarks/layers.py, next to this script

PATTERNS = {
    "nm 3:4": "pattern=nm n=3 m=4",
    "nm 2:4": "pattern=nm n=2 m=4",
    "unstructured 75%": "pattern=unstructured sparsity=0.75",
    "block 16 75%": "pattern=block block-size=16 sparsity=0.75",
}


def mlp_block(width: int, hidden: int, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int, scale: float = 1.0) -> TensorProto:
        return numpy_helper.from_array((scale * rng.standard_normal(shape)).astype(np.float32), name)

    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln_scale", "ln_bias"], ["n"], axis=-1, epsilon=1e-5),
        helper.make_node("MatMul", ["n", "w_up"], ["u"]),
        helper.make_node("Add", ["u", "b_up"], ["ub"]),
        helper.make_node("Gelu", ["ub"], ["g"]),
        helper.make_node("MatMul", ["g", "w_down"], ["d"]),
        helper.make_node("Add", ["d", "b_down"], ["db"]),
        helper.make_node("Add", ["x", "db"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array(np.ones(width, np.float32), "ln_scale"),
        numpy_helper.from_array(np.zeros(width, np.float32), "ln_bias"),
        weight("w_up", width, hidden, scale=width**-0.5),
        weight("b_up", hidden, scale=0.1),
        weight("w_down", hidden, width, scale=hidden**-0.5),
        weight("b_down", width, scale=0.1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


TIMINGS_HEADER = "sparsec ms | numpy dense ms | ort dense ms | ort pruned ms | vs numpy | vs ort dense"


def compiled(dense: Path, options: str, threads: int) -> sparsec.Model:
    """`dense` pruned by prune-magnitude{options} and compiled as `sparsec compile -o
    X.spx` compiles it, loaded from the artifact (beside it) on `threads` threads."""
    artifact = dense.with_suffix(".spx")
    model = sparsec.load(dense)
    model.apply(f"prune-magnitude{{{options}}},fold-batch-norm,fuse-gelu,fold-scale,pack-bitmask,lower-kernels")
    model.save(artifact)
    return sparsec.load(artifact, threads=threads)


def timings_cells(timings: list[Timing]) -> str:
    """`bench`'s four timings as the cells of TIMINGS_HEADER."""
    ours, numpy_dense, ort_dense, ort_pruned = timings
    return (
        f"{ours.median_ms:.3f} | {numpy_dense.median_ms:.3f} | {ort_dense.median_ms:.3f} | {ort_pruned.median_ms:.3f} | "
        f"{numpy_dense.median_ms / ours.median_ms:.2f}x | {ort_dense.median_ms / ours.median_ms:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--hidden", type=int, default=3072)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0, help="time each engine at least this long")
    args = parser.parse_args()
    print(f"# {cpu_description()}; {args.threads} thread(s), MLP block {args.width}-{args.hidden}-{args.width}, sparsec {sparsec.__version__}")
    print(f"| pattern | batch | {TIMINGS_HEADER} |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        dense = Path(tmp) / "mlp_block.onnx"
        onnx.save(mlp_block(args.width, args.hidden), str(dense))
        for label, options in PATTERNS.items():
            model = compiled(dense, options, args.threads)
            for batch in args.batch:
                print(f"| {label} | {batch} | {timings_cells(bench(model, dense, batch, args.threads, 50, args.seconds))} |", flush=True)


if __name__ == "__main__":
    main()
