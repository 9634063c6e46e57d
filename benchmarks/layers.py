"""Single-layer benchmark: sparsec's generated kernels against numpy dense float32
(OpenBLAS, same thread count), onnxruntime and sparsec's own dense float16 kernel, in
one run.

    python benchmarks/layers.py [--quick] [--only TEXT] [--threads 1] [--batch 1 32]
                                [--scaling] [--markdown]

Each layer is a Gemm (transB) with random weights, pruned and packed by sparsec's own
passes; the kernel is called through the executor's layer call (thread split, the chunk
variants at one batch row for sparse bitmask weights and, from 6 to 12 batch rows, the batched
kernels with their transposes) but without the rest of a model. The table gives medians
in milliseconds, sparsec's speed-up over numpy and its dense float16 kernel (both
timed in rounds alternated with each row's layer), onnxruntime, and the packed weight bytes
streamed per second, also as a share of the machine's streaming read bandwidth (one
thread) measured in the same run.
`--scaling` adds the speed-up of two threads over one on the 11008x4096 layer.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from threadpoolctl import threadpool_limits

import sparsec
from sparsec.context import make_context
from sparsec.kernels import KernelKey
from sparsec.irfile import parse_module
from sparsec.model import Model
from sparsec.runtime.executor import Executor
from sparsec.runtime.jit import Target

SHAPES = [(4096, 4096), (11008, 4096), (3072, 768), (768, 3072)]
DENSE = "dense fp16 (0%)"
PATTERNS = {
    DENSE: "pattern=unstructured sparsity=0.0",
    "unstructured 50%": "pattern=unstructured sparsity=0.5",
    "unstructured 75%": "pattern=unstructured sparsity=0.75",
    "unstructured 90%": "pattern=unstructured sparsity=0.9",
    "nm 2:4": "pattern=nm n=2 m=4",
    "nm 3:4": "pattern=nm n=3 m=4",
    "nm 7:8": "pattern=nm n=7 m=8",
    "block 4 50%": "pattern=block block-size=4 sparsity=0.5",
    "block 4 75%": "pattern=block block-size=4 sparsity=0.75",
    "block 4 90%": "pattern=block block-size=4 sparsity=0.9",
    "block 16 50%": "pattern=block block-size=16 sparsity=0.5",
    "block 16 75%": "pattern=block block-size=16 sparsity=0.75",
    "block 16 90%": "pattern=block block-size=16 sparsity=0.9",
}
SCALING_LAYER = (11008, 4096)
ROUNDS = 5
"""Alternated rounds of numpy and the layer per table row (`alternated`)."""


def median_ms(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def cpu_description() -> str:
    """The CPU's model name, LLVM's name for it and its vector features."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    target = Target.host()
    vector = [f.lstrip("+") for f in target.features.split(",") if f.startswith("+avx512") or f in ("+avx2", "+f16c", "+fma")]
    return f"{name}; LLVM CPU {target.cpu}; {' '.join(sorted(vector))}"


def stream_gbps(threads: int = 1, megabytes: int = 512) -> float:
    """Streaming read bandwidth of `threads` threads: numpy summing a large float32
    array, split evenly between them (numpy releases the GIL while it sums)."""
    data = np.ones(megabytes * 2**20 // 4, np.float32)
    parts = np.array_split(data, threads)

    def read_all() -> None:
        workers = [threading.Thread(target=part.sum) for part in parts[1:]]
        for worker in workers:
            worker.start()
        parts[0].sum()
        for worker in workers:
            worker.join()

    with threadpool_limits(1):
        ms = median_ms(read_all, 7)
    return data.nbytes / (ms / 1000) / 1e9


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


def sparse_layer(weight: np.ndarray, options: str, threads: int) -> Executor:
    rows, cols = weight.shape
    model = layer_model(rows, cols, weight)
    model.apply(f"prune-magnitude{{{options} min-elements=0}},pack-bitmask,lower-kernels")
    return Executor(model.module, model.weights, threads=threads)


def variant_label(key: KernelKey) -> str:
    """The kernel a call ran: its kind, then its variant (batched, panels, pairs, group tiles, chunks)."""
    variants = {"batched": key.batched, "panels": key.panelled, "pairs": key.paired, f"tiles of {key.group_tiles}": key.group_tiles, f"chunks{key.chunk_span}": key.chunk_span}
    return " ".join([key.kind, *(name for name, used in variants.items() if used)])


def layer_ms(executor: Executor, x: np.ndarray, repeats: int) -> float:
    """The layer's median ms as a kernel step inside a model runs it: its call resolved
    by a first run, its input where that run staged it (a step reading an earlier
    kernel's output takes it in place), for batched kernels transposed in every call."""
    executor.run({"x": x})
    step = executor.steps[0]
    call = step.calls[x.shape]
    address = call.input_address or None  # batched calls transpose their inputs instead
    return median_ms(lambda: step.run(executor, step, call, x, address), repeats)  # pyright: ignore


def alternated(numpy_run, executors: list[Executor], x: np.ndarray, repeats: int, threads: int) -> tuple[float, list[float]]:
    """numpy's and each layer's median ms, timed in ROUNDS alternated rounds: the
    host's load moves within seconds here, and a baseline timed once per shape let it
    tilt every later row's ratio."""
    numpy_times: list[float] = []
    layer_times: list[list[float]] = [[] for _ in executors]
    for _ in range(ROUNDS):
        with threadpool_limits(threads):
            numpy_times.append(median_ms(numpy_run, repeats))
        for times, executor in zip(layer_times, executors):
            times.append(layer_ms(executor, x, repeats))
    return float(np.median(numpy_times)), [float(np.median(times)) for times in layer_times]


@contextmanager
def threads_limited(executor: Executor, threads: int) -> Iterator[None]:
    """Run `executor` (made with more threads) on `threads` of them for a while."""
    executor.limit_threads(threads)
    try:
        yield
    finally:
        executor.limit_threads(executor.threads)


def print_table(header: tuple[str, ...], lines: list[tuple[str, ...]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for line in lines:
            print("| " + " | ".join(line) + " |")
        return
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for line in lines:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)))


def layer_table(args: argparse.Namespace, rng: np.random.Generator, stream: float) -> None:
    shapes = SHAPES[:1] if args.quick else SHAPES
    patterns = {k: PATTERNS[k] for k in list(PATTERNS)[:3]} if args.quick else PATTERNS
    lines = []
    for rows, cols in shapes:
        weight = rng.standard_normal((rows, cols), dtype=np.float32)
        for batch in args.batch:
            chosen = {label: options for label, options in patterns.items() if not args.only or args.only in f"{rows}x{cols} {label}"}
            if not chosen:
                continue
            x = rng.standard_normal((batch, cols), dtype=np.float32)
            repeats = 20 if rows * cols * batch < 2**26 else 7
            ort_ms = onnxruntime_ms(weight, x, args.threads, repeats)
            dense_executor = sparse_layer(weight, PATTERNS[DENSE], args.threads)
            for label, options in chosen.items():
                executor = dense_executor if label == DENSE else sparse_layer(weight, options, args.threads)
                layer = next(iter(executor.layers.values()))
                # The dense float16 kernel in the same rounds as each row's layer: timed
                # once per shape, a busy minute there tilted every row's "vs dense fp16".
                compared = [executor] if executor is dense_executor else [executor, dense_executor]
                numpy_ms, times = alternated(lambda: x @ weight.T, compared, x, repeats, args.threads)
                ms, dense_ms = times[0], times[-1]
                if executor is not dense_executor:
                    executor.close()
                chunks = batch == 1 and layer.chunk_span  # a chunk variant ran, on its own operands
                streamed = layer.chunk_operands if chunks else layer.operands
                gbps = streamed.nbytes / (ms / 1000) / 1e9  # pyright: ignore
                kind = variant_label(layer.variant_for(batch))
                lines.append(
                    (f"{rows}x{cols}", str(batch), label, kind, f"{ms:.3f}", f"{numpy_ms:.3f}", f"{ort_ms:.3f}",
                     f"{numpy_ms / ms:.2f}x", f"{ort_ms / ms:.2f}x", f"{dense_ms / ms:.2f}x", f"{gbps:.1f}", f"{gbps / stream:.0%}")
                )  # fmt: skip
            dense_executor.close()
    header = ("layer", "batch", "pattern", "kernel", "sparsec ms", "numpy ms", "ort ms", "vs numpy", "vs ort", "vs dense fp16", "GB/s", "of stream")
    print_table(header, lines, args.markdown)


def scaling_table(args: argparse.Namespace, rng: np.random.Generator, stream: float) -> None:
    """Two threads against one on SCALING_LAYER at batch 1, with the weight bytes each
    streams per second: a kernel that already streams near what two threads of the
    machine can read (printed first) cannot gain much from the second."""
    stream_two = stream_gbps(threads=2)
    print(f"# streaming read, two threads: {stream_two:.1f} GB/s ({stream_two / stream:.2f}x one thread)")
    rows, cols = SCALING_LAYER
    weight = rng.standard_normal((rows, cols), dtype=np.float32)
    x = rng.standard_normal((1, cols), dtype=np.float32)
    lines = []
    for label, options in PATTERNS.items():
        if args.only and args.only not in label:
            continue
        executor = sparse_layer(weight, options, 2)
        # One executor for both counts: two executors of the same weights lay out their
        # operands at different addresses, which alone moves a kernel by 1% to 10%.
        # Alternate the counts, so a change in the machine's load affects both alike.
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(7):
            for threads in (1, 2):
                with threads_limited(executor, threads):
                    times[threads].append(layer_ms(executor, x, 10))
        ms1, ms2 = float(np.median(times[1])), float(np.median(times[2]))
        layer = next(iter(executor.layers.values()))
        streamed = layer.chunk_operands if layer.chunk_span else layer.operands
        gbps1, gbps2 = (streamed.nbytes / (ms / 1000) / 1e9 for ms in (ms1, ms2))  # pyright: ignore
        lines.append((f"{rows}x{cols}", label, f"{ms1:.3f}", f"{ms2:.3f}", f"{ms1 / ms2:.2f}x", f"{gbps1:.1f}", f"{gbps2:.1f}"))
        executor.close()
    header = ("layer", "pattern", "1 thread ms", "2 threads ms", "speed-up", "GB/s 1 thread", "GB/s 2 threads")
    print_table(header, lines, args.markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--quick", action="store_true", help="first shape and three patterns only")
    parser.add_argument("--only", metavar="TEXT", help="only layers and patterns whose label contains TEXT (e.g. 'nm', '11008')")
    parser.add_argument("--scaling", action="store_true", help="only the two-thread scaling table")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    llvm.initialize_native_target()
    print(f"# {cpu_description()}")
    stream = stream_gbps()
    print(f"# sparsec {sparsec.__version__}, numpy {np.__version__}, onnxruntime {ort.__version__}; "
          f"streaming read, one thread: {stream:.1f} GB/s")  # fmt: skip
    rng = np.random.default_rng(0)
    if args.scaling:
        scaling_table(args, rng, stream)
    else:
        print(f"# {args.threads} thread(s)")
        layer_table(args, rng, stream)


if __name__ == "__main__":
    main()
