"""`sparsec bench`: latency of a compiled model against dense baselines, in one run.

Rows: sparsec's JIT engine on the artifact; numpy dense float32 (sparsec's reference
interpreter, whose layers are numpy calls, on the dense original: the model the
artifact was compiled from, or `--dense`) and onnxruntime on the dense original; and
onnxruntime on the pruned model (the artifact's weights decoded to dense ONNX). numpy's
BLAS and onnxruntime get the same thread count as sparsec. Each engine runs the same
random inputs: a few warm-up runs, then timed runs until both `runs` runs and
`seconds` have passed; the table shows the median, the 90th percentile, and sparsec's
speed-up over each engine (its median over sparsec's).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from sparsec import reference
from sparsec.errors import SparsecError
from sparsec.model import Model, load

WARMUP = 3


@dataclass(frozen=True)
class Timing:
    engine: str
    median_ms: float
    p90_ms: float


def random_inputs(model: Model, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    function = reference.main_function(model.module)
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal([d if d >= 0 else batch for d in arg.type.get_shape()]).astype(np.float32)  # pyright: ignore
        for name, arg in zip(reference.input_names(function), function.args)
    }


def measure(engine: str, run: Callable[[], object], runs: int, seconds: float) -> Timing:
    for _ in range(WARMUP):
        run()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        if len(times) >= 100 * runs:
            break
    samples = np.array(times) * 1000
    return Timing(engine, float(np.median(samples)), float(np.percentile(samples, 90)))


def _onnxruntime_session(path: Path, threads: int):
    try:
        import onnxruntime as ort
    except ImportError:
        raise SparsecError("bench compares against onnxruntime: pip install onnxruntime") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def bench(model: Model, dense: Path | None, batch: int, threads: int, runs: int, seconds: float) -> list[Timing]:
    feeds = random_inputs(model, batch)
    executor = model.compiled()
    timings = [measure(f"sparsec jit ({threads} thread{'s' if threads > 1 else ''})", lambda: executor.run(feeds), runs, seconds)]
    if dense is not None:
        original = load(dense, engine="reference")
        with threadpool_limits(threads):
            timings.append(measure("numpy dense original", lambda: original.run(feeds), runs, seconds))
        session = _onnxruntime_session(dense, threads)
        timings.append(measure("onnxruntime, dense original", lambda: session.run(None, feeds), runs, seconds))
    with tempfile.TemporaryDirectory() as tmp:
        pruned = Path(tmp) / "pruned.onnx"
        model.save(pruned)
        session = _onnxruntime_session(pruned, threads)
        timings.append(measure("onnxruntime, pruned weights", lambda: session.run(None, feeds), runs, seconds))
    return timings


def format_timings(timings: list[Timing], batch: int) -> str:
    base = timings[0].median_ms
    width = max(len(t.engine) for t in timings)
    lines = [f"batch {batch}", f"{'engine'.ljust(width)}  median ms    p90 ms  sparsec speed-up"]
    for timing in timings:
        lines.append(
            f"{timing.engine.ljust(width)}  {timing.median_ms:9.3f}  {timing.p90_ms:8.3f}  {timing.median_ms / base:15.2f}x"
        )
    return "\n".join(lines) + "\n"
