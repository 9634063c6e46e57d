"""End-to-end benchmark: a BERT-base encoder layer as PyTorch exports it, compiled by
sparsec, against numpy and onnxruntime on the dense model, in one run.

    python benchmarks/encoder.py [--sequence 32 128 384] [--threads 1] [--seconds 2]

The layer (hidden 768, 12 heads, MLP 3072, random weights) is what
`torch.onnx.export` writes at opset 17 for inputs of (batch, sequence, 768): MatMul
then Add for each Linear, the heads split by Reshape and Transpose, attention as
MatMul, Div, Softmax, MatMul, LayerNormalization after each residual Add, and GELU
written out as Div, Erf, Add, Mul, Mul (ONNX's Gelu came in opset 20). Each pattern
goes through what `sparsec compile -o X.spx` runs (`mlp_block.compiled`, fuse-gelu
included) into a .spx artifact; the timings are those of `sparsec bench --shape
x=1xSx768` on it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import sparsec
from sparsec.bench import bench

from layers import cpu_description  # benchmarks/layers.py, next to this script
from mlp_block import PATTERNS, TIMINGS_HEADER, compiled, timings_cells

WIDTH, HEADS, HIDDEN = 768, 12, 3072


def _linear(name: str, x: str, rng: np.random.Generator, rows: int, columns: int) -> tuple[list, list]:
    """MatMul then Add, as a Linear layer exports."""
    nodes = [helper.make_node("MatMul", [x, f"{name}.weight"], [f"{name}.mm"]), helper.make_node("Add", [f"{name}.mm", f"{name}.bias"], [name])]
    weights = [
        numpy_helper.from_array((rng.standard_normal((rows, columns)) / np.sqrt(rows)).astype(np.float32), f"{name}.weight"),
        numpy_helper.from_array((0.1 * rng.standard_normal(columns)).astype(np.float32), f"{name}.bias"),
    ]
    return nodes, weights


def encoder_layer(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, weights = [], []
    for name in ("query", "key", "value"):
        linear, params = _linear(name, "x", rng, WIDTH, WIDTH)
        # the key's heads transposed for q @ k^T: (batch, heads, head width, sequence)
        perm = [0, 2, 3, 1] if name == "key" else [0, 2, 1, 3]
        nodes += linear + [
            helper.make_node("Reshape", [name, "heads_shape"], [f"{name}.heads"]),
            helper.make_node("Transpose", [f"{name}.heads"], [f"{name}.t"], perm=perm),
        ]
        weights += params
    nodes += [
        helper.make_node("MatMul", ["query.t", "key.t"], ["scores"]),
        helper.make_node("Div", ["scores", "score_scale"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "value.t"], ["context"]),
        helper.make_node("Transpose", ["context"], ["context.t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["context.t", "model_shape"], ["merged"]),
    ]
    for name, x, rows, columns in (("output", "merged", WIDTH, WIDTH), ("up", "attended", WIDTH, HIDDEN), ("down", "gelu", HIDDEN, WIDTH)):
        linear, params = _linear(name, x, rng, rows, columns)
        nodes += linear
        weights += params
        if name == "output":
            nodes += [helper.make_node("Add", ["x", "output"], ["residual"]), helper.make_node("LayerNormalization", ["residual", "ln1.scale", "ln1.bias"], ["attended"], axis=-1)]
        if name == "up":
            nodes += [
                helper.make_node("Div", ["up", "sqrt2"], ["gelu.scaled"]),
                helper.make_node("Erf", ["gelu.scaled"], ["gelu.erf"]),
                helper.make_node("Add", ["gelu.erf", "one"], ["gelu.sum"]),
                helper.make_node("Mul", ["up", "gelu.sum"], ["gelu.product"]),
                helper.make_node("Mul", ["gelu.product", "half"], ["gelu"]),
            ]
    nodes += [helper.make_node("Add", ["attended", "down"], ["residual2"]), helper.make_node("LayerNormalization", ["residual2", "ln2.scale", "ln2.bias"], ["y"], axis=-1)]
    constants = {
        "heads_shape": np.array([0, -1, HEADS, WIDTH // HEADS], np.int64),
        "model_shape": np.array([0, -1, WIDTH], np.int64),
        "score_scale": np.array(np.sqrt(WIDTH // HEADS), np.float32),
        "sqrt2": np.array(np.sqrt(2), np.float32),
        "one": np.array(1, np.float32),
        "half": np.array(0.5, np.float32),
        **{f"ln{i}.scale": np.ones(WIDTH, np.float32) for i in (1, 2)},
        **{f"ln{i}.bias": np.zeros(WIDTH, np.float32) for i in (1, 2)},
    }
    weights += [numpy_helper.from_array(value, name) for name, value in constants.items()]
    for node in nodes:
        node.name = node.output[0]  # as exporters name them: profiles go by node
    graph = helper.make_graph(
        nodes,
        "encoder_layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", WIDTH])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", type=int, nargs="+", default=[32, 128, 384])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0, help="time each engine at least this long")
    args = parser.parse_args()
    print(f"# {cpu_description()}; {args.threads} thread(s), BERT-base encoder layer, batch 1, sparsec {sparsec.__version__}")
    print(f"| pattern | sequence | {TIMINGS_HEADER} |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        dense = Path(tmp) / "encoder.onnx"
        onnx.save(encoder_layer(), str(dense))
        for label, options in PATTERNS.items():
            model = compiled(dense, options, args.threads)
            for sequence in args.sequence:
                timings = bench(model, dense, 1, args.threads, 20, args.seconds, {"x": (1, sequence, WIDTH)})
                print(f"| {label} | {sequence} | {timings_cells(timings)} |", flush=True)


if __name__ == "__main__":
    main()
