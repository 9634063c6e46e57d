"""Single-layer benchmark: sparsec's generated kernels against numpy dense float32
(OpenBLAS, same thread count) and onnxruntime, in one run.

    python benchmarks/layers.py [--quick] [--threads 1] [--markdown]

Each layer is a Gemm (transB) with random weights, pruned and packed by sparsec's own
passes; the kernel is called directly (no executor overhead). The table gives medians
in milliseconds, sparsec's speed-up over numpy, and the packed weight bytes streamed
per second.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from threadpoolctl import threadpool_limits

import sparsec
from sparsec.context import make_context
from sparsec.irfile import parse_module
from sparsec.model import Model
from sparsec.runtime.executor import Executor

SHAPES = [(4096, 4096), (11008, 4096), (3072, 768), (768, 3072)]
PATTERNS = {
    "dense fp16 (0%)": "pattern=unstructured sparsity=0.0",
    "unstructured 50%": "pattern=unstructured sparsity=0.5",
    "unstructured 75%": "pattern=unstructured sparsity=0.75",
    "unstructured 90%": "pattern=unstructured sparsity=0.9",
    "nm 2:4": "pattern=nm n=2 m=4",
    "nm 3:4": "pattern=nm n=3 m=4",
    "nm 7:8": "pattern=nm n=7 m=8",
    "block 4 75%": "pattern=block block-size=4 sparsity=0.75",
    "block 16 75%": "pattern=block block-size=16 sparsity=0.75",
}


def median_ms(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def layer_model(rows: int, cols: int, weight: np.ndarray) -> Model:
    text = (
        f'func.func @main(%x: tensor<?x{cols}xf32> {{sparsec.name = "x"}}) -> (tensor<?x{rows}xf32> {{sparsec.name = "y"}}) {{\n'
        f'  %w = nn.weight "w" : tensor<{rows}x{cols}xf32>\n'
        f"  %y = nn.gemm %x, %w {{trans_b = 1 : i64}} : (tensor<?x{cols}xf32>, tensor<{rows}x{cols}xf32>) -> tensor<?x{rows}xf32>\n"
        f"  func.return %y : tensor<?x{rows}xf32>\n}}\n"
    )
    ctx = make_context()
    module = parse_module(text, ctx)
    ctx.weights["w"] = weight
    return Model(module, ctx)


def onnxruntime_ms(weight: np.ndarray, x: np.ndarray, threads: int, repeats: int) -> float:
    rows, cols = weight.shape
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", cols])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", rows])],
        [numpy_helper.from_array(weight, "w")],
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "layer.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return median_ms(lambda: session.run(None, {"x": x}), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--quick", action="store_true", help="first shape and three patterns only")
    parser.add_argument("--only", metavar="TEXT", help="only layers and patterns whose label contains TEXT (e.g. 'nm', '11008')")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    shapes = SHAPES[:1] if args.quick else SHAPES
    patterns = {k: PATTERNS[k] for k in list(PATTERNS)[:3]} if args.quick else PATTERNS
    rng = np.random.default_rng(0)
    rows_out = []
    for rows, cols in shapes:
        weight = rng.standard_normal((rows, cols), dtype=np.float32)
        for batch in args.batch:
            x = rng.standard_normal((batch, cols), dtype=np.float32)
            repeats = 20 if rows * cols * batch < 2**26 else 7
            with threadpool_limits(args.threads):
                numpy_ms = median_ms(lambda: x @ weight.T, repeats)
            ort_ms = onnxruntime_ms(weight, x, args.threads, repeats)
            for label, options in patterns.items():
                if args.only and args.only not in f"{rows}x{cols} {label}":
                    continue
                model = layer_model(rows, cols, weight)
                model.apply(f"prune-magnitude{{{options} min-elements=0}},pack-bitmask,lower-kernels")
                executor = Executor(model.module, model.weights, threads=args.threads)
                layer = next(iter(executor.layers.values()))
                y = np.empty((batch, rows), np.float32)
                ms = median_ms(lambda: executor._call(layer, x, y), repeats)
                gbps = layer.operands.nbytes / (ms / 1000) / 1e9
                rows_out.append((f"{rows}x{cols}", batch, label, layer.key.kind, ms, numpy_ms, ort_ms, gbps))
                executor.close()
    header = ("layer", "batch", "pattern", "kernel", "sparsec ms", "numpy ms", "ort ms", "vs numpy", "vs ort", "GB/s")
    lines = [
        (shape, str(batch), label, kind, f"{ms:.3f}", f"{npm:.3f}", f"{ortm:.3f}", f"{npm / ms:.2f}x", f"{ortm / ms:.2f}x", f"{gbps:.1f}")
        for shape, batch, label, kind, ms, npm, ortm, gbps in rows_out
    ]
    print(f"# {platform.processor() or platform.machine()}, {args.threads} thread(s), sparsec {sparsec.__version__}")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for line in lines:
            print("| " + " | ".join(line) + " |")
        return
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for line in lines:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)))


if __name__ == "__main__":
    main()
