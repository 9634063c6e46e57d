"""`sparsec bench`'s timing: engines measured in turns, so that a change in the
machine's load reaches every engine alike, and the first run of each turn (caches
cold after the other engines) left out."""

from __future__ import annotations

import time

import pytest

from sparsec.bench import TURN_RUNS, TURN_SECONDS, WARMUP, measure

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
