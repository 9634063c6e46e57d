"""The worker pool's hand-off protocol (runtime/workers.py): every share of every call
runs exactly once, before `run` returns, also when workers park between calls."""

from __future__ import annotations

import ctypes
import os
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import in_forked_child
from sparsec.runtime import workers
from sparsec.runtime.jit import KERNEL_SIGNATURE
from sparsec.runtime.workers import Shares, WorkerPool, available_cpus, cgroup_cpu_quota


class CountingKernel:
    """A kernel-shaped Python callback that counts the units it is given, per thread."""

    def __init__(self, units: int, seconds: float = 0.0, slow_thread: str | None = None):
        self.counts = np.zeros(units, np.int64)
        self.threads: set[str] = set()
        self.shares_by_thread: dict[str, int] = {}
        self.seconds = seconds
        """How long each share takes (on `slow_thread` only, if given)."""
        self.slow_thread = slow_thread
        self.function = KERNEL_SIGNATURE(self.visit)

    def visit(self, x, y, a0, a1, a2, bias, batch, first, last) -> None:
        name = threading.current_thread().name
        if self.seconds and self.slow_thread in (None, name):
            time.sleep(self.seconds)
        self.counts[first:last] += batch
        self.threads.add(name)
        self.shares_by_thread[name] = self.shares_by_thread.get(name, 0) + 1


def run_soon(pool: WorkerPool, kernel: CountingKernel, shares: list[tuple[int, int]] | Shares, name: str = "caller") -> None:
    """pool.run, failing (not hanging) if a share is lost."""
    caller = threading.Thread(target=pool.run, args=(kernel.function, (0, 0, 0, 0, 0, 0, 1), shares), name=name, daemon=True)
    caller.start()
    caller.join(timeout=10)
    assert not caller.is_alive(), "a share was never run"


def shares_of(units: int, parts: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, units, parts + 1).astype(int).tolist()
    return list(zip(bounds[:-1], bounds[1:]))


@settings(max_examples=20, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(4, 200),
    st.integers(1, 4),
    st.lists(st.sampled_from([0.0, 1e-5, 3e-3]), min_size=1, max_size=30),
    st.booleans(),
)
def test_every_share_runs_once_per_call(workers_count, units, shares_per_thread, pauses, spin):
    """Calls back to back (the worker is spinning), after short pauses and after pauses
    longer than IDLE_SPIN_SECONDS (the worker has parked and must be woken); and with
    spinning off (more threads than CPUs), where every call wakes a parked worker."""
    kernel = CountingKernel(units, seconds=2e-4)
    pool = WorkerPool(workers_count, spin=spin)
    shares = Shares(shares_of(units, min(units, (workers_count + 1) * shares_per_thread)), threads=workers_count + 1)
    try:
        for call, pause in enumerate(pauses, start=1):
            time.sleep(pause)
            run_soon(pool, kernel, shares)
            assert (kernel.counts == call).all()  # finished when run returns
    finally:
        pool.close()
    if len(shares) > 1 and len(pauses) > 3:
        assert any(name.startswith("sparsec-worker-") for name in kernel.threads)


def test_a_slow_thread_leaves_its_shares_to_the_others():
    """Shares are claimed, not dealt: while the caller is held up in its first share,
    the worker runs the rest."""
    kernel = CountingKernel(80, seconds=0.05, slow_thread="caller")
    pool = WorkerPool(1)
    try:
        run_soon(pool, kernel, Shares(shares_of(80, 8), threads=2))
    finally:
        pool.close()
    assert (kernel.counts == 1).all()
    assert kernel.shares_by_thread.get("caller", 0) <= 2
    assert kernel.shares_by_thread["sparsec-worker-0"] >= 6


def test_parking_races(monkeypatch: pytest.MonkeyPatch):
    """Workers that park after a few polls: posts keep meeting workers on their way to
    parking, the race the protocol's sequentially consistent steps settle."""
    monkeypatch.setattr(workers, "IDLE_SPIN_SECONDS", 1e-7)
    kernel = CountingKernel(64)
    pool = WorkerPool(2)
    try:
        for call in range(1, 2001):
            run_soon(pool, kernel, shares_of(64, 3))
            if call % 100 == 0:
                assert (kernel.counts == call).all()
    finally:
        pool.close()


def test_a_share_of_steps_runs_its_table_entries_in_turn_on_one_thread():
    """`steps` runs a share's table entries [first, last) one after another, each with
    its own kernel and arguments: the executor's batch chunks side by side."""
    calls: list[tuple[int, int, int, int, str]] = []
    lock = threading.Lock()

    def record(x, y, a0, a1, a2, bias, batch, first, last) -> None:
        with lock:
            calls.append((x, batch, first, last, threading.current_thread().name))

    kernel = KERNEL_SIGNATURE(record)
    address = ctypes.cast(kernel, ctypes.c_void_p).value
    entries = 7
    table = np.zeros((entries, workers.STEP_WORDS), np.int64)
    table[:, 0] = address
    table[:, 1] = np.arange(entries) + 100  # x, told apart per entry
    table[:, 7] = np.arange(entries) * 10  # batch
    table[:, 8], table[:, 9] = np.arange(entries), np.arange(entries) + 1
    bounds = [(0, 3), (3, 4), (4, 7)]
    pool = WorkerPool(1)
    try:
        for _ in range(20):
            calls.clear()
            pool.run(pool.steps, (table.ctypes.data, 0, 0, 0, 0, 0, 0), Shares(bounds, threads=2), pool.steps_address)
            assert sorted(call[:4] for call in calls) == [(100 + e, 10 * e, e, e + 1) for e in range(entries)]
            for first, last in bounds:
                ran = [call for call in calls if first + 100 <= call[0] < last + 100]
                assert [call[0] for call in ran] == list(range(first + 100, last + 100))  # in turn
                assert len({call[4] for call in ran}) == 1  # on one thread
    finally:
        pool.close()


def test_close_stops_the_threads():
    before = set(threading.enumerate())
    pool = WorkerPool(2)
    assert len(set(threading.enumerate()) - before) == 2
    pool.close()
    pool.close()  # a second close does nothing
    assert set(threading.enumerate()) <= before


def test_more_shares_than_workers_is_refused():
    pool = WorkerPool(1)
    try:
        with pytest.raises(ValueError, match="3 threads for 1 workers"):
            pool.run(CountingKernel(3).function, (0, 0, 0, 0, 0, 0, 1), shares_of(3, 3))
    finally:
        pool.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_every_share_itself():
    """The child of a fork has none of the pool's threads: posting to them would wait
    forever, so its pools run all shares on the calling thread."""
    kernel = CountingKernel(30)
    pool = WorkerPool(2)
    try:
        run_soon(pool, kernel, shares_of(30, 3))

        def child_runs_every_share() -> bool:
            kernel.threads.clear()
            pool.run(kernel.function, (0, 0, 0, 0, 0, 0, 1), shares_of(30, 3))
            return bool((kernel.counts == 2).all()) and kernel.threads == {threading.current_thread().name}

        assert in_forked_child(child_runs_every_share)
    finally:
        pool.close()


def test_cpus_follow_a_cgroup_quota(tmp_path):
    """A container's CPU quota caps the default thread count; no quota leaves the
    affinity mask's count."""
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(v2) == 1.5
    assert available_cpus(v2) == min(2, available_cpus(tmp_path / "none"))
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(v2) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(v1) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    assert cgroup_cpu_quota(v1) == 0.5
    assert available_cpus(v1) == 1
    assert cgroup_cpu_quota(tmp_path / "none") is None
