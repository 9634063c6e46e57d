"""`sparsec bench`'s timing: engines measured in turns, so that a change in the
machine's load reaches every engine alike, and the first run of each turn (caches
cold after the other engines) left out; and its profile of sparsec's run, step by step, with onnxruntime's beside it."""

from __future__ import annotations

import time

import models
import pytest
from test_implicit_conv import prologue_model

import sparsec
from sparsec.bench import TURN_RUNS, TURN_SECONDS, WARMUP, by_runs_as, format_profile, measure, profile, profile_rows
from sparsec.ort_profile import Baseline, NodeTime
from sparsec.runtime.executor import Profile, StepTime

FAST, COLD = 0.001, 0.02


class Host:
    """A simulated machine: an engine's run takes COLD seconds when another engine ran
    last (its weights left the caches) and FAST seconds when it ran last itself, longer
    while the host is busy."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.busy = False

    def engine(self, name: str):
        def run() -> None:
            cold = not self.calls or self.calls[-1] != name
            self.calls.append(name)
            time.sleep((COLD if cold else FAST) * (3 if self.busy else 1))

        return run


def turns(calls: list[str]) -> list[str]:
    """The engines in the order of their turns."""
    return [name for index, name in enumerate(calls) if index == 0 or calls[index - 1] != name]


def test_engines_take_turns_after_their_warm_up():
    host = Host()
    timings = measure({"a": host.engine("a"), "b": host.engine("b")}, runs=4 * TURN_RUNS, seconds=0)
    assert [timing.engine for timing in timings] == ["a", "b"]
    assert host.calls[: 2 * WARMUP] == ["a"] * WARMUP + ["b"] * WARMUP
    assert host.calls[2 * WARMUP :] == (["a"] * (1 + TURN_RUNS) + ["b"] * (1 + TURN_RUNS)) * 4
    # A turn's first run finds its caches cold, and is not timed.
    for timing in timings:
        assert timing.median_ms < COLD * 1000 / 2


def test_every_engine_sees_the_busy_minutes():
    host = Host()
    engines = {"a": host.engine("a"), "b": host.engine("b")}
    original_b = engines["b"]

    def b_then_busy() -> None:
        original_b()
        host.busy = len(host.calls) > 40

    engines["b"] = b_then_busy
    timings = measure(engines, runs=10, seconds=8 * TURN_SECONDS)
    a, b = (timing.median_ms for timing in timings)
    # Timed one after the other, a would run idle and b busy: 3x apart.
    assert a == pytest.approx(b, rel=0.5)
    assert turns(host.calls).count("a") >= 4


def test_a_tiny_engine_stops_at_a_hundred_times_its_runs():
    calls = []
    timings = measure({"tiny": lambda: calls.append(1)}, runs=2, seconds=60)
    assert len(calls) < 400
    assert timings[0].median_ms < 1


def lowered_2_4(name: str, tmp_path) -> sparsec.Model:
    """test/models.py's model `name` pruned to n:m 2:4 and lowered to kernels, on one thread."""
    models.save(name, tmp_path / f"{name}.onnx")
    model = sparsec.load(tmp_path / f"{name}.onnx")
    model.apply("prune-magnitude{pattern=nm n=2 m=4 min-elements=0},pack-bitmask,lower-kernels")
    model.threads = 1
    return model


def test_the_profile_names_each_step_and_what_ran_it(tmp_path):
    """A profile has one row per step, named by its ONNX node, saying what it computes
    and what ran it (the two layers' kernels, with fc1's bias and Relu fused; Softmax's
    kernel); the steps' times add up to the run's, less what surrounds them; the table
    lists the slowest first, then the rest and the time outside the steps, shares
    adding up to the run, and the shares by what ran the steps add up to the steps'
    share."""
    model = lowered_2_4("mlp", tmp_path)
    result, baseline = profile(model, 4, runs=5)
    assert baseline is None
    assert [(step.name, step.runs_as) for step in result.steps] == [("fc1", "nm kernel"), ("fc2", "nm kernel"), ("softmax", "softmax kernel")]
    assert [step.geometry for step in result.steps] == ["64->32", "32->10", "?x10"]  # features in -> out; a batch given at run time
    assert all(step.seconds > 0 for step in result.steps)
    assert 0 < sum(step.seconds for step in result.steps) <= result.seconds
    rows = profile_rows(result, 4, top=1)
    assert [row["layer"] for row in rows[1:]] == ["(2 more steps)", "(outside the steps)"]
    assert profile_rows(result, 4, top=2)[2]["layer"] == "(1 more step)"
    assert rows[0]["ms"] == max(step.seconds for step in result.steps) * 1000
    assert sum(row["share"] for row in rows) == pytest.approx(1.0)
    kinds = by_runs_as(result, 4)
    shares = [kind["share"] for kind in kinds]
    assert {kind["runs_as"] for kind in kinds} == {"nm kernel", "softmax kernel"} and shares == sorted(shares, reverse=True)
    assert sum(shares) == pytest.approx(1.0 - rows[-1]["share"])


def test_onnxruntime_profile_sits_beside_each_step(tmp_path):
    """With the dense original, each step has onnxruntime's time for the nodes that
    grew from it, in turns with sparsec's runs: fc1's MatMul and Add, which onnxruntime
    fuses under a name of its own, are fc1's; fc2 and Softmax by their names. The
    speed-up is onnxruntime's time over sparsec's, and onnxruntime's column adds up to
    its run."""
    model = lowered_2_4("mlp", tmp_path)
    result, baseline = profile(model, 4, runs=7, dense=tmp_path / "mlp.onnx")
    assert set(baseline.by_step) == {"fc1", "fc2", "softmax"} and not baseline.unmatched
    assert all(seconds > 0 for seconds in baseline.by_step.values())
    assert 0 < sum(baseline.by_step.values()) <= baseline.seconds
    rows = profile_rows(result, 4, top=3, baseline=baseline)
    assert [row["layer"] for row in rows[3:]] == ["(outside the steps)"]
    for row in rows[:3]:
        assert row["ort_ms"] == pytest.approx(baseline.by_step[row["layer"]] * 1000)
        assert row["speedup_vs_ort"] == pytest.approx(row["ort_ms"] / row["ms"])
    assert sum(row["ort_ms"] for row in rows) == pytest.approx(baseline.seconds * 1000)
    rest = profile_rows(result, 4, top=1, baseline=baseline)[1]
    assert rest["ort_ms"] == pytest.approx(sum(baseline.by_step[s.name] for s in result.steps if s.name != rows[0]["layer"]) * 1000)
    kinds = {kind["runs_as"]: kind for kind in by_runs_as(result, 4, baseline)}
    nm = [step for step in result.steps if step.runs_as == "nm kernel"]
    assert kinds["nm kernel"]["ort_ms"] == pytest.approx(sum(baseline.by_step[step.name] for step in nm) * 1000)
    assert kinds["nm kernel"]["speedup_vs_ort"] == pytest.approx(kinds["nm kernel"]["ort_ms"] / kinds["nm kernel"]["ms"])
    table = format_profile(rows, list(kinds.values()), 7, result, baseline)
    assert "ort dense ms  speed-up" in table and "onnxruntime on the dense original" in table
    assert f"nm kernel {kinds['nm kernel']['share']:.1%} ({kinds['nm kernel']['speedup_vs_ort']:.2f}x)" in table


def test_onnxruntime_nodes_of_no_step_get_a_row_of_their_own():
    """onnxruntime's layout reorders (which grew from no step) are a last row, with
    their names for JSON and no sparsec time; a step no node grew from has no
    onnxruntime time."""
    result = Profile([StepTime("conv", "sparse.conv", "nm kernel, implicit", 0.002), StepTime("gap", "nn.global_average_pool", "numpy", 0.001)], 0.004)
    baseline = Baseline({"conv": 0.003}, [NodeTime("ReorderInput", "ReorderInput", 0.0005), NodeTime("ReorderOutput", "ReorderOutput", 0.0002)], 0.0045)
    rows = profile_rows(result, 1, top=5, baseline=baseline)
    assert [(row["layer"], row["ort_ms"]) for row in rows] == [
        ("conv", pytest.approx(3.0)), ("gap", None), ("(outside the steps)", pytest.approx(0.8)), ("(2 onnxruntime nodes of no step)", pytest.approx(0.7)),
    ]  # fmt: skip
    assert rows[0]["speedup_vs_ort"] == pytest.approx(1.5) and rows[-1]["ms"] is None and rows[-1]["ort_nodes"] == ["ReorderInput", "ReorderOutput"]
    last = format_profile(rows, by_runs_as(result, 1, baseline), 3, result, baseline).splitlines()[-2]
    assert last.split() == ["(2", "onnxruntime", "nodes", "of", "no", "step)", "0.700"]


def test_steps_taken_in_count_as_the_step_that_takes_them(tmp_path):
    """A normalization and Relu before a convolution are put off to it: their steps
    name it as the one that takes them in, and onnxruntime's time for them (it runs
    them before the convolution, as DenseNet121's after each Concat) is the
    convolution's."""
    onnx_path = tmp_path / "prologue.onnx"
    prologue_model(onnx_path, "norm_relu")  # BatchNormalization "bn" -> Relu "relu" -> 3x3 Conv "conv"
    model = sparsec.load(onnx_path)
    model.apply("prune-magnitude{pattern=nm n=3 m=4 min-elements=0},pack-bitmask,lower-kernels")
    model.threads = 1
    result, baseline = profile(model, 2, runs=4, dense=onnx_path)
    assert {step.name: step.taken_in_by for step in result.steps} == {"bn": "conv", "relu": "conv", "conv": None}
    assert list(baseline.by_step) == ["conv"]
    assert not [node for node in baseline.unmatched if not node.name.startswith("Reorder")]


def test_a_dense_model_of_other_node_names_is_pointed_out():
    """When none of onnxruntime's nodes grows from a step (--dense is another model,
    or the same one with its nodes renamed), the profile says so."""
    result = Profile([StepTime("fc1", "sparse.matmul", "nm kernel", 0.002)], 0.003)
    baseline = Baseline({}, [NodeTime("renamed0", "Gemm", 0.002)], 0.0025)
    table = format_profile(profile_rows(result, 1, 5, baseline), by_runs_as(result, 1, baseline), 3, result, baseline)
    assert table.splitlines()[-1].startswith("none of onnxruntime's nodes grew from one of sparsec's steps")
    matched = Baseline({"fc1": 0.002}, [], 0.0025)
    assert "none of" not in format_profile(profile_rows(result, 1, 5, matched), by_runs_as(result, 1, matched), 3, result, matched)


def test_a_convolution_step_says_its_channels_window_stride_and_image(tmp_path):
    """A convolution's geometry gives its channels in and out, window, stride, input
    image and groups; a pool's its window, stride and image; others their result's
    shape."""
    model = lowered_2_4("conv", tmp_path)
    result, _ = profile(model, 1, runs=2)
    assert {step.name: step.geometry for step in result.steps} == {"conv": "4->6 3x3/2 at 9x9 in 2 groups", "pool": "2x2 at 5x5", "gap": "1x6x1x1", "flat": "1x6"}
