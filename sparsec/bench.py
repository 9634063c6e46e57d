"""`sparsec bench`: latency of a compiled model against dense baselines, in one run.

Rows: sparsec's JIT engine on the artifact; numpy dense float32 (sparsec's reference
interpreter, whose layers are numpy calls, on the dense original: the model the
artifact was compiled from, or `--dense`) and onnxruntime on the dense original; and
onnxruntime on the pruned model (the artifact's weights decoded to dense ONNX). numpy's
BLAS and onnxruntime get the same thread count as sparsec. Each engine runs the same
random inputs; the table shows the median, the 90th percentile, and sparsec's speed-up
over each engine (its median over sparsec's).

The engines are timed in turns, round after round (`measure`), not one after another:
on a shared machine the load of the neighbours can change the speed of every engine by
2x within minutes, and an engine timed alone in a slow minute would move the ratios
by as much; in turns of a tenth of a second, each engine sees the same minutes. All
engines are loaded at once for it, so the run holds the model's weights once per engine.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits

from sparsec import reference
from sparsec.dialects.kernel_ops import KernelOp
from sparsec.dialects.literals import numpy_dtype
from sparsec.errors import SparsecError
from sparsec.layers import layer_weights
from sparsec.model import Model, load
from sparsec.tables import aligned

if TYPE_CHECKING:
    from sparsec.ort_profile import Baseline
    from sparsec.runtime.executor import Profile, StepTime

WARMUP = 3
"""Untimed runs of each engine before the first round: first-run work (buffers,
onnxruntime's memory arena) out of the timings."""
TURN_SECONDS = 0.1
TURN_RUNS = 3
"""An engine's turn in a round: timed runs for at least TURN_SECONDS and TURN_RUNS
runs, after one untimed run (the engine before has just evicted this one's weights
from the caches and may still be spinning its threads down: sparsec's workers spin for
2 ms, onnxruntime's longer), which costs a slow engine a quarter of its turn at most."""


@dataclass(frozen=True)
class Timing:
    engine: str
    median_ms: float
    p90_ms: float


def input_shapes(model: Model) -> dict[str, tuple[int, ...]]:
    """The model's input shapes by name, a negative size for a dimension given at run time."""
    function = reference.main_function(model.module)
    return {name: tuple(arg.type.get_shape()) for name, arg in zip(reference.input_names(function), function.args)}  # pyright: ignore


def fixed_batch(model: Model) -> int | None:
    """The batch the model's inputs fix (the first one's leading dimension), or None
    when a dimension is given at run time: the batch is then the bench's to choose."""
    shapes = list(input_shapes(model).values())
    if not shapes or any(size < 0 for shape in shapes for size in shape):
        return None
    return shapes[0][0] if shapes[0] else 1


def check_compiled(model: Model, path: str | Path) -> str | None:
    """An error for a model with nothing of sparsec's to time: an uncompiled model, or
    an artifact whose weights were all left dense and whose engine runs no step as a
    generated kernel (its "sparsec jit" row would time numpy alone). For an artifact
    whose weights were all left dense but whose pools or normalizations run as
    generated kernels, a note that says what its sparsec row times; else None."""
    if any(isinstance(op, KernelOp) for op in model.module.walk()):
        return None
    if Path(path).suffix != ".spx":
        raise SparsecError(f"'{path}' is not compiled: bench times a compiled model; make one with `sparsec compile {path} --pattern nm:2:4 -o model.spx`")
    why = "every weight was left dense: see `sparsec inspect`, and compile's --min-elements" if any(layer_weights(model.module)) else "it has no layer with weights"
    kernels = model.compiled().generated_kernels()
    if not kernels:
        raise SparsecError(f"'{path}' runs no step as a generated kernel ({why}); there is nothing of sparsec's to time")
    return f"'{path}' has no sparse layer ({why}); its sparsec row times its {', '.join(kernels)} and numpy"


InputShapes = dict[str, tuple[int | None, ...]]
"""Input shapes given by `--shape`, by input name: None where each batch goes (`?`)."""


def parse_shape(text: str) -> tuple[str, tuple[int | None, ...]]:
    """`NAME=DIMS` (`x=1x128x768`, `?` for the batch) as the name and the sizes."""
    name, equals, dims = text.partition("=")
    sizes = dims.split("x")
    if not equals or not name or not all(size == "?" or (size.isdigit() and int(size) > 0) for size in sizes):
        raise ValueError(f"{text!r} is not NAME=DIMS, such as x=1x128x768 (sizes of 1 or more, ? for the batch)")
    return name, tuple(None if size == "?" else int(size) for size in sizes)


def parse_dim(text: str) -> tuple[str, int]:
    """`NAME=SIZE` (`sequence=128`) as the name and the size."""
    name, equals, size = text.partition("=")
    if not equals or not name or not size.isdigit() or int(size) < 1:
        raise ValueError(f"{text!r} is not NAME=SIZE, such as sequence=128 (a size of 1 or more)")
    return name, int(size)


def named_shapes(model: Model, dense: Path | None, dims: dict[str, int]) -> InputShapes:
    """`--dim`: the shapes of the inputs that have a dimension of one of these names in
    the dense original (`sequence=128` for a transformer exported with dynamic axes
    batch and sequence), `?` for their other run-time dimensions."""
    from sparsec.frontend.onnx import model_skeleton  # imports onnx: only what reads ONNX pays for it

    given = " ".join(f"--dim {name}={size}" for name, size in dims.items())
    if dense is None:
        raise SparsecError(f"{given}: dimension names come from the dense original; give it with --dense ORIGINAL.onnx")
    inputs = input_shapes(model)
    shapes: InputShapes = {}
    named: set[str] = set()
    for value in model_skeleton(dense).graph.input:
        if value.name not in inputs:
            continue
        names = [d.dim_param for d in value.type.tensor_type.shape.dim]
        named.update(n for n in names if n)
        if any(n in dims for n in names) and len(names) == len(inputs[value.name]):
            shapes[value.name] = tuple(
                fixed if fixed >= 0 else dims.get(n) for n, fixed in zip(names, inputs[value.name], strict=True)
            )
    if missing := [name for name in dims if name not in named]:
        raise SparsecError(f"{given}: no input of '{dense}' has a dimension named {', '.join(missing)} (named: {', '.join(sorted(named)) or 'none'})")
    return shapes


def _shown(sizes: tuple[int | None, ...]) -> str:
    return "x".join("?" if size is None or size < 0 else str(size) for size in sizes)


def check_shapes(model: Model, shapes: InputShapes, batches: list[int]) -> None:
    """An error for a `--shape` the model's inputs cannot take (an unknown input, another
    rank, or a size other than one the model fixes), or for several `batches` that no
    input dimension takes, so that every one would time the same inputs."""
    inputs = input_shapes(model)
    for name, sizes in shapes.items():
        given = f"--shape {name}={_shown(sizes)}"
        if name not in inputs:
            raise SparsecError(f"{given}: the model has no input '{name}' (inputs: {', '.join(inputs)})")
        shape = inputs[name]
        if len(sizes) != len(shape):
            raise SparsecError(f"{given}: input '{name}' has {len(shape)} dimensions ({_shown(shape)})")
        for axis, (size, fixed) in enumerate(zip(sizes, shape)):
            if fixed >= 0 and size != fixed:
                raise SparsecError(f"{given}: dimension {axis} of input '{name}' is fixed at {fixed} ({_shown(shape)})")
    if shapes and len({tuple(feed_shapes(model, batch, shapes).items()) for batch in batches}) < len(batches):
        given = " ".join(f"--shape {name}={_shown(sizes)}" for name, sizes in shapes.items())
        raise SparsecError(f"--batch {' '.join(map(str, batches))} with {given}: no input dimension takes the batch, so every batch would time the same inputs; write ? where the batch goes")


def feed_shapes(model: Model, batch: int, shapes: InputShapes | None = None) -> dict[str, tuple[int, ...]]:
    """Each input's shape at `batch`: its `--shape`, `batch` for each `?`; else the
    model's, `batch` for each dimension given at run time."""
    shapes = shapes or {}
    return {
        name: tuple(batch if size is None or size < 0 else size for size in shapes.get(name, shape))
        for name, shape in input_shapes(model).items()
    }


def check_batch(model: Model, batch: int) -> None:
    """An error for a batch the model's fixed input shapes do not have."""
    fixed = fixed_batch(model)
    if fixed is not None and batch != fixed:
        shapes = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in input_shapes(model).items())
        raise SparsecError(f"batch {batch}: the model's inputs have fixed shapes ({shapes}); its batch is {fixed}")


def random_inputs(model: Model, batch: int, seed: int = 0, shapes: InputShapes | None = None) -> dict[str, np.ndarray]:
    """Inputs of `feed_shapes`: standard normal for float inputs; zeros for integer and
    bool ones (token ids, masks), as 0 is a valid index into any embedding table."""
    check_batch(model, batch)
    rng = np.random.default_rng(seed)
    function = reference.main_function(model.module)
    dtypes = [numpy_dtype(arg.type.element_type) for arg in function.args]  # pyright: ignore
    return {
        name: rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating) else np.zeros(shape, dtype)
        for (name, shape), dtype in zip(feed_shapes(model, batch, shapes).items(), dtypes, strict=True)
    }


def measure(engines: dict[str, Callable[[], object]], runs: int, seconds: float) -> list[Timing]:
    """Each engine's timing, in the order of `engines`: the engines take turns
    (`TURN_SECONDS` and `TURN_RUNS`, less when `seconds` and `runs` ask for less),
    round after round, until every engine has at least `runs` timed runs adding up
    to `seconds`. An engine stops at 100 times `runs` timed runs: a tiny model would
    otherwise run tens of thousands of times to fill `seconds`."""
    for run in engines.values():
        for _ in range(WARMUP):
            run()
    most = 100 * runs
    samples: dict[str, list[float]] = {engine: [] for engine in engines}

    def done(engine: str) -> bool:
        times = samples[engine]
        return len(times) >= most or (len(times) >= runs and sum(times) >= seconds)

    while not all(done(engine) for engine in engines):
        for engine, run in engines.items():
            if len(samples[engine]) < most:
                samples[engine] += _turn(run, min(TURN_SECONDS, seconds), min(TURN_RUNS, runs), most - len(samples[engine]))
    return [_timing(engine, times) for engine, times in samples.items()]


def _turn(run: Callable[[], object], seconds: float, runs: int, most: int) -> list[float]:
    """The times of one turn's runs: one untimed, then timed ones until `seconds` have
    passed and `runs` were timed (at most `most`)."""
    run()
    times: list[float] = []
    spent = 0.0
    while len(times) < most and (len(times) < runs or spent < seconds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return times


def _timing(engine: str, times: list[float]) -> Timing:
    samples = np.array(times) * 1000
    return Timing(engine, float(np.median(samples)), float(np.percentile(samples, 90)))


def _onnxruntime_session(path: Path, threads: int, profile_prefix: str | None = None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise SparsecError("bench compares against onnxruntime: pip install onnxruntime") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def bench(model: Model, dense: Path | None, batch: int, threads: int, runs: int, seconds: float, shapes: InputShapes | None = None) -> list[Timing]:
    feeds = random_inputs(model, batch, shapes=shapes)
    executor = model.compiled()
    engines: dict[str, Callable[[], object]] = {f"sparsec jit ({threads} thread{'s' if threads > 1 else ''})": lambda: executor.run(feeds)}
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(threads):
        if dense is not None:
            original = load(dense, engine="reference")
            dense_session = _onnxruntime_session(dense, threads)
            engines["numpy dense original"] = lambda: original.run(feeds)
            engines["onnxruntime, dense original"] = lambda: dense_session.run(None, feeds)
        pruned = Path(tmp) / "pruned.onnx"
        model.save(pruned)
        pruned_session = _onnxruntime_session(pruned, threads)
        engines["onnxruntime, pruned weights"] = lambda: pruned_session.run(None, feeds)
        return measure(engines, runs, seconds)


def format_timings(timings: list[Timing], batch: int, inputs: dict[str, tuple[int, ...]]) -> str:
    """The table of `timings`, under the batch and the input shapes it ran."""
    base = timings[0].median_ms
    width = max(len(t.engine) for t in timings)
    shapes = ", ".join(f"{name} {_shown(shape)}" for name, shape in inputs.items())
    lines = [f"batch {batch}: {shapes}", f"{'engine'.ljust(width)}  median ms    p90 ms  sparsec speed-up"]
    for timing in timings:
        lines.append(
            f"{timing.engine.ljust(width)}  {timing.median_ms:9.3f}  {timing.p90_ms:8.3f}  {timing.median_ms / base:15.2f}x"
        )
    return "\n".join(lines) + "\n"


def timing_rows(timings: list[Timing], batch: int, inputs: dict[str, tuple[int, ...]]) -> list[dict[str, object]]:
    """`format_timings`' table as rows for JSON (`sparsec bench --json`)."""
    base = timings[0].median_ms
    shapes = {name: list(shape) for name, shape in inputs.items()}
    return [
        {"batch": batch, "inputs": shapes, "engine": t.engine, "median_ms": t.median_ms, "p90_ms": t.p90_ms, "sparsec_speedup": t.median_ms / base}
        for t in timings
    ]


def profile(model: Model, batch: int, runs: int, dense: Path | None = None, threads: int = 1, shapes: InputShapes | None = None) -> tuple[Profile, Baseline | None]:
    """Where sparsec's engine spends a run of `model` at `batch`, step by step
    (Executor.profile), over `runs` runs; with `dense`, onnxruntime's profile of the
    dense original on `threads` threads beside it, the two taking turns as in
    `measure`, so that both see the same minutes of a shared machine."""
    feeds = random_inputs(model, batch, shapes=shapes)
    executor = model.compiled()
    if dense is None:
        return executor.profile(feeds, runs), None
    from sparsec.frontend.onnx import model_skeleton  # imports onnx: only what reads ONNX pays for it
    from sparsec.ort_profile import beside_steps, run_profile

    with tempfile.TemporaryDirectory() as tmp:
        session = _onnxruntime_session(dense, threads, profile_prefix=str(Path(tmp) / "onnxruntime"))
        run_ort = lambda: session.run(None, feeds)  # noqa: E731
        for _ in range(WARMUP):
            run_ort()
        counted = [False] * WARMUP  # a flag per onnxruntime run: whether its profile counts
        turns: list[tuple[Profile, int]] = []
        for turn in [min(TURN_RUNS, runs - done) for done in range(0, runs, TURN_RUNS)]:
            turns.append((executor.profile(feeds, turn), turn))
            counted += [False] + [True] * len(_turn(run_ort, 0.0, turn, turn))  # as a turn of `measure`
        events = json.loads(Path(session.end_profiling()).read_text())
    result = _merged(turns)
    steps = {step.name: step.taken_in_by or step.name for step in result.steps}
    return result, beside_steps(run_profile(events, counted), model_skeleton(dense).graph, steps)


def _merged(turns: list[tuple[Profile, int]]) -> Profile:
    """One profile of several profiles' runs (of the same steps; each with its number
    of runs), as if they had been made at once."""
    runs = sum(count for _, count in turns)
    first = turns[0][0]
    steps = [
        dataclasses.replace(step, seconds=sum(turn.steps[index].seconds * count for turn, count in turns) / runs)
        for index, step in enumerate(first.steps)
    ]
    return dataclasses.replace(first, steps=steps, seconds=sum(turn.seconds * count for turn, count in turns) / runs)


def profile_rows(result: Profile, batch: int, top: int, baseline: Baseline | None = None) -> list[dict[str, object]]:
    """The `top` slowest steps (then one row for the rest, and one for the time outside
    the steps), for JSON and the table: layer, op, what it computes, what ran it, ms a
    run and share of the run; with a `baseline`, onnxruntime's ms for the same layers and sparsec's
    speed-up over it, and a last row for onnxruntime's nodes that grew from no step."""
    steps = sorted(result.steps, key=lambda step: step.seconds, reverse=True)
    groups = [(step.name, step.op, step.geometry, step.runs_as, [step]) for step in steps[:top]]
    if len(steps) > top:
        more = len(steps) - top
        groups.append((f"({more} more step{'s' if more > 1 else ''})", "", "", "", steps[top:]))
    rows = [
        _row(batch, layer, op, geometry, runs_as, sum(step.seconds for step in group), result) | _beside(baseline, group)
        for layer, op, geometry, runs_as, group in groups
    ]
    outside = _row(batch, "(outside the steps)", "", "", "", result.seconds - sum(step.seconds for step in steps), result)
    if baseline is None:
        return [*rows, outside]
    rows.append(outside | {"ort_ms": baseline.outside_nodes * 1000, "speedup_vs_ort": None})
    if baseline.unmatched:
        count = len(baseline.unmatched)
        unmatched = _row(batch, f"({count} onnxruntime node{'s' if count > 1 else ''} of no step)", "", "", "", None, result)
        ort_ms = sum(node.seconds for node in baseline.unmatched) * 1000
        rows.append(unmatched | {"ort_ms": ort_ms, "speedup_vs_ort": None, "ort_nodes": [node.name for node in baseline.unmatched]})
    return rows


def _row(batch: int, layer: str, op: str, geometry: str, runs_as: str, seconds: float | None, result: Profile) -> dict[str, object]:
    ms = None if seconds is None else seconds * 1000
    share = None if seconds is None else seconds / result.seconds
    return {"batch": batch, "layer": layer, "op": op, "geometry": geometry, "runs_as": runs_as, "ms": ms, "share": share}


def _beside(baseline: Baseline | None, steps: list[StepTime]) -> dict[str, float | None]:
    """A row's onnxruntime columns: the time of onnxruntime's nodes that grew from its
    steps, and sparsec's speed-up over them on those steps (None where no node grew
    from them)."""
    if baseline is None:
        return {}
    matched = [step for step in steps if step.name in baseline.by_step]
    if not matched:
        return {"ort_ms": None, "speedup_vs_ort": None}
    ort = sum(baseline.by_step[name] for name in dict.fromkeys(step.name for step in matched))
    mine = sum(step.seconds for step in matched)
    return {"ort_ms": ort * 1000, "speedup_vs_ort": ort / mine if mine > 0 else None}


def by_runs_as(result: Profile, batch: int, baseline: Baseline | None = None) -> list[dict[str, object]]:
    """The run by what ran its steps (each kernel kind, numpy), largest share first:
    how much of a run the generated kernels take, and how much is left to numpy; with a
    `baseline`, onnxruntime's time for the same steps and sparsec's speed-up over it."""
    kinds: dict[str, list[StepTime]] = {}
    for step in result.steps:
        kinds.setdefault(step.runs_as, []).append(step)
    seconds = {kind: sum(step.seconds for step in steps) for kind, steps in kinds.items()}
    return [
        {"batch": batch, "runs_as": kind, "ms": seconds[kind] * 1000, "share": seconds[kind] / result.seconds} | _beside(baseline, steps)
        for kind, steps in sorted(kinds.items(), key=lambda item: seconds[item[0]], reverse=True)
    ]


def format_profile(rows: list[dict[str, object]], kinds: list[dict[str, object]], runs: int, result: Profile, baseline: Baseline | None = None) -> str:
    """`profile_rows` as a table, then `by_runs_as` on a line."""
    headers = ["layer", "op", "geometry", "runs as", "ms", "share"] + (["ort dense ms", "speed-up"] if baseline else [])
    cells = [
        [str(r["layer"]), str(r["op"]), str(r["geometry"]), str(r["runs_as"]), _number(r["ms"], "{:.3f}"), _number(r["share"], "{:.1%}")]
        + ([_number(r["ort_ms"], "{:.3f}"), _number(r["speedup_vs_ort"], "{:.2f}x")] if baseline else [])
        for r in rows
    ]
    title = f"profile of sparsec jit, batch {rows[0]['batch']}: {result.seconds * 1000:.3f} ms a run over {runs} runs"
    if baseline is not None:
        title += f"; onnxruntime on the dense original, in turns with it: {baseline.seconds * 1000:.3f} ms a run"
    by_kind = "; ".join(f"{kind['runs_as']} {kind['share']:.1%}" + _number(kind.get("speedup_vs_ort"), " ({:.2f}x)") for kind in kinds)
    table = aligned(headers, cells, right={4, 5, 6, 7}, rule=False)
    speedups = " (sparsec's speed-up over onnxruntime on those steps)" if baseline else ""
    lines = [title, *table, f"by what ran the steps{speedups}: {by_kind}"]
    if baseline is not None and not baseline.by_step:
        lines.append("none of onnxruntime's nodes grew from one of sparsec's steps: is the dense model the one the artifact was compiled from (its node names)?")
    return "\n".join(lines) + "\n"


def _number(value: object, form: str) -> str:
    return "" if value is None else form.format(value)
