"""Worker threads that take a share of a kernel call within a microsecond or so.

A thread asleep on a lock or an event takes tens of microseconds to wake (a
ThreadPoolExecutor round trip measured 71 us on a 2-vCPU VM, half the time a 90%-sparse
11008x4096 layer takes on two threads), so the hand-off ate what the second core gave.
Here each worker waits in native code, with the GIL released, spinning on its own slot
of memory for IDLE_SPIN_SECONDS after its last job, and only then parks on a
threading.Event; OpenMP runtimes and onnxruntime's thread pool wait the same way.

The protocol, on a slot of int64 words per worker (the caller's words and the worker's
on different cache lines, so their writes do not pass one line back and forth):

- post: the caller writes the kernel's address and its nine arguments, then the job's
  sequence number to POSTED, then reads STATE; a PARKED worker needs its event set.
- the worker sees POSTED change, calls the kernel and writes the number to DONE.
- before parking, the worker writes PARKED to STATE, then reads POSTED once more. The
  caller's two steps and these two are sequentially consistent, so at least one side
  sees the other's write: no job is left behind a parked worker (a needless wake-up
  only costs one more spell of spinning).
- wait: the caller spins until DONE holds the number, yielding its CPU now and then.

A kernel address of 0 asks the worker to stop. xDSL's LLVM translator drops atomic
orderings and has neither fences nor indirect calls, so this small module is written
with llvmlite's IR builder instead of the kernels' xDSL builder.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from sparsec.runtime.jit import CompiledKernels, compile_llvm_ir
from sparsec.runtime.memory import on_cache_line

IDLE_SPIN_SECONDS = 0.002
"""How long a worker spins for the next job before it parks: longer than the gaps
between the kernel calls of one model run (numpy ops, Python), far shorter than
what a user would notice as a busy core."""
WAIT_SPIN_SECONDS = 0.00005
"""How long the caller spins on a worker's DONE before it yields its CPU once."""

POSTED, KERNEL, ARGUMENTS = 0, 1, 2
"""Word offsets of the caller's part of a slot (ARGUMENTS: nine words)."""
DONE, STATE = 16, 17
"""Word offsets of the worker's part, on the slot's third cache line."""
SLOT_WORDS = 24
SPINNING, PARKED = 0, 1

_I64 = ir.IntType(64)
_BYTES = ir.IntType(8).as_pointer()
_KERNEL = ir.FunctionType(ir.VoidType(), [_BYTES] * 6 + [_I64] * 3)
_SIGNATURES = {
    "sparsec_worker_post": ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, *[ctypes.c_int64] * 11),
    "sparsec_worker_serve": ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64),
    "sparsec_worker_wait": ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64),
}


class _ProtocolBuilder:
    """The LLVM module of the three entry points: post, serve and wait."""

    def __init__(self) -> None:
        self.module = ir.Module("sparsec_workers")
        self.module.triple = llvm.get_process_triple()
        x86 = self.module.triple.startswith(("x86_64", "i686", "i386"))
        # The spin-wait hint: fewer wasted cycles and no memory-order flush on exit.
        self.pause = ir.Function(self.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause") if x86 else None

    def word(self, b: ir.IRBuilder, slot: ir.Value, index: int) -> ir.Value:
        return b.gep(slot, [ir.Constant(_I64, index)], inbounds=True)

    def idle(self, b: ir.IRBuilder, polls: ir.Value, spins: ir.Value, poll: ir.Block, enough: ir.Block) -> ir.Value:
        """A spin loop's idle step: pause, count the poll, then poll again, or go to
        `enough` after `spins` polls; returns the new count."""
        if self.pause is not None:
            b.call(self.pause, [])
        more = b.add(polls, ir.Constant(_I64, 1))
        b.cbranch(b.icmp_signed("<", more, spins), poll, enough)
        return more

    def function(self, name: str, arguments: int) -> tuple[ir.Function, ir.IRBuilder]:
        function = ir.Function(self.module, ir.FunctionType(_I64, [_I64.as_pointer()] + [_I64] * arguments), name)
        return function, ir.IRBuilder(function.append_basic_block("entry"))

    def post(self) -> None:
        """post(slot, sequence, kernel, x, y, a0, a1, a2, bias, batch, first, last) -> 1
        if the worker is parked (the caller then sets its event), else 0."""
        function, b = self.function("sparsec_worker_post", 11)
        slot, sequence, *job = function.args
        for index, value in enumerate(job):
            b.store(value, self.word(b, slot, KERNEL + index))
        b.store_atomic(sequence, self.word(b, slot, POSTED), "seq_cst", 8)
        state = b.load_atomic(self.word(b, slot, STATE), "seq_cst", 8)
        b.ret(b.zext(b.icmp_unsigned("==", state, ir.Constant(_I64, PARKED)), _I64))

    def serve(self) -> None:
        """serve(slot, spins) runs the slot's jobs until it has seen none for `spins`
        polls; returns 0 when it parks, 1 when asked to stop."""
        function, b = self.function("sparsec_worker_serve", 1)
        slot, spins = function.args
        entry = b.block
        b.store_atomic(ir.Constant(_I64, SPINNING), self.word(b, slot, STATE), "seq_cst", 8)
        initial = b.load_atomic(self.word(b, slot, DONE), "monotonic", 8)
        names = ("poll", "job", "idle", "park", "resume", "run", "stop", "quit")
        poll, job, idle, park, resume, run, stop, quit_ = (function.append_basic_block(name) for name in names)
        b.branch(poll)

        b.position_at_end(poll)
        seen = b.phi(_I64)
        polls = b.phi(_I64)
        posted = b.load_atomic(self.word(b, slot, POSTED), "acquire", 8)
        b.cbranch(b.icmp_unsigned("!=", posted, seen), job, idle)

        b.position_at_end(idle)
        more = self.idle(b, polls, spins, poll, park)

        b.position_at_end(park)
        b.store_atomic(ir.Constant(_I64, PARKED), self.word(b, slot, STATE), "seq_cst", 8)
        late = b.load_atomic(self.word(b, slot, POSTED), "seq_cst", 8)
        b.cbranch(b.icmp_unsigned("!=", late, seen), resume, stop)
        b.position_at_end(stop)
        b.ret(ir.Constant(_I64, 0))

        b.position_at_end(resume)
        b.store_atomic(ir.Constant(_I64, SPINNING), self.word(b, slot, STATE), "seq_cst", 8)
        b.branch(poll)

        b.position_at_end(job)
        kernel = b.load(self.word(b, slot, KERNEL))
        b.cbranch(b.icmp_unsigned("==", kernel, ir.Constant(_I64, 0)), quit_, run)
        b.position_at_end(quit_)
        b.store_atomic(posted, self.word(b, slot, DONE), "release", 8)
        b.ret(ir.Constant(_I64, 1))

        b.position_at_end(run)
        words = [b.load(self.word(b, slot, ARGUMENTS + index)) for index in range(9)]
        pointers = [b.inttoptr(word, _BYTES) for word in words[:6]]
        b.call(b.inttoptr(kernel, _KERNEL.as_pointer()), pointers + words[6:])
        b.store_atomic(posted, self.word(b, slot, DONE), "release", 8)
        b.branch(poll)

        seen.add_incoming(initial, entry)
        seen.add_incoming(seen, idle)
        seen.add_incoming(seen, resume)
        seen.add_incoming(posted, run)
        polls.add_incoming(ir.Constant(_I64, 0), entry)
        polls.add_incoming(more, idle)
        polls.add_incoming(ir.Constant(_I64, 0), resume)
        polls.add_incoming(ir.Constant(_I64, 0), run)

    def wait(self) -> None:
        """wait(slot, sequence, spins) -> 1 once DONE holds `sequence`, 0 if it still
        does not after `spins` polls."""
        function, b = self.function("sparsec_worker_wait", 2)
        slot, sequence, spins = function.args
        entry = b.block
        poll, idle, give_up, finished = (function.append_basic_block(n) for n in ("poll", "idle", "give_up", "finished"))
        b.branch(poll)
        b.position_at_end(poll)
        polls = b.phi(_I64)
        done = b.load_atomic(self.word(b, slot, DONE), "acquire", 8)
        b.cbranch(b.icmp_unsigned("==", done, sequence), finished, idle)
        b.position_at_end(idle)
        more = self.idle(b, polls, spins, poll, give_up)
        polls.add_incoming(ir.Constant(_I64, 0), entry)
        polls.add_incoming(more, idle)
        b.position_at_end(give_up)
        b.ret(ir.Constant(_I64, 0))
        b.position_at_end(finished)
        b.ret(ir.Constant(_I64, 1))


def protocol_ir() -> str:
    """The LLVM IR of the worker protocol's entry points."""
    builder = _ProtocolBuilder()
    builder.post()
    builder.serve()
    builder.wait()
    return str(builder.module)


@functools.cache
def _protocol() -> CompiledKernels:
    return compile_llvm_ir(protocol_ir(), _SIGNATURES)


@functools.cache
def _polls_per_second() -> float:
    """How many polls of the spin loops take a second on this machine (the pause
    instruction's latency differs tenfold between CPUs), timed on a slot whose job
    never finishes."""
    wait = _protocol().functions["sparsec_worker_wait"]
    slot = np.zeros(SLOT_WORDS, np.int64)
    polls = 5000
    start = time.perf_counter()
    wait(slot.ctypes.data, -1, polls)
    return polls / max(time.perf_counter() - start, 1e-6)


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: its affinity mask (which taskset and cpusets
    narrow), and no more than a CPU quota of its cgroup allows (a container's `--cpus`)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity masks on this OS
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup)
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota)))


def cgroup_cpu_quota(cgroup: Path) -> float | None:
    """CPUs' worth of time per period the cgroup mounted at `cgroup` may use (as a
    container sees its own), or None without a quota: cgroup v2's `cpu.max` ("quota
    period", or "max period"), else v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us`."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def _serve(serve: Callable[..., int], slot: np.ndarray, wakeup: threading.Event, spins: int) -> None:
    """A worker thread: spin on `slot` in native code, park on `wakeup` when idle."""
    while serve(slot.ctypes.data, spins) == 0:
        wakeup.wait()
        wakeup.clear()


def _stop(post: Callable[..., int], slots: np.ndarray, sequences: list[int], wakeups: list[threading.Event], threads: list[threading.Thread]) -> None:
    for worker, slot in enumerate(slots):
        sequences[worker] += 1
        post(slot.ctypes.data, sequences[worker], 0, *[0] * 9)
        wakeups[worker].set()
    for thread in threads:
        if thread is not threading.current_thread():  # a collection can run on a worker
            thread.join()


_POOLS: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child has only the thread that forked: its pools run every share on the
    calling thread from now on."""
    for pool in _POOLS:
        pool._forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class WorkerPool:
    """`workers` threads that run shares of kernel calls next to the calling thread.

    With `spin` off, workers park as soon as they are idle and the caller yields its
    CPU while it waits: for more threads than CPUs, where spinning threads would take
    the CPUs from the ones with work (4 threads on 2 CPUs ran a layer 1.7x slower than
    one thread did with spinning, 3x slower than 2 threads)."""

    def __init__(self, workers: int, spin: bool = True):
        functions = _protocol().functions
        self._post = functions["sparsec_worker_post"]
        self._wait = functions["sparsec_worker_wait"]
        rate = _polls_per_second() if spin else 0.0
        self._wait_polls = max(1, int(rate * WAIT_SPIN_SECONDS))
        # Slots start on a cache line: each of their three lines then belongs to one side.
        self._slots = on_cache_line(np.zeros, (workers, SLOT_WORDS), np.int64)
        self._addresses = [self._slots[worker].ctypes.data for worker in range(workers)]
        self._sequences = [0] * workers
        self._wakeups = [threading.Event() for _ in range(workers)]
        self._lock = threading.Lock()
        idle_polls = max(1, int(rate * IDLE_SPIN_SECONDS))
        serve = functions["sparsec_worker_serve"]
        threads = [
            threading.Thread(target=_serve, args=(serve, slot, wakeup, idle_polls), name=f"sparsec-worker-{worker}", daemon=True)
            for worker, (slot, wakeup) in enumerate(zip(self._slots, self._wakeups))
        ]
        for thread in threads:
            thread.start()
        # Stopping needs nothing of `self`, so an unclosed pool still stops when collected.
        self._finalizer = weakref.finalize(self, _stop, self._post, self._slots, self._sequences, self._wakeups, threads)
        self._forked = False
        _POOLS.add(self)

    @property
    def workers(self) -> int:
        return len(self._addresses)

    def run(self, kernel: ctypes._CFuncPtr, arguments: Sequence[int], shares: Sequence[tuple[int, int]]) -> None:
        """Call `kernel(*arguments, first, last)` for every (first, last) of `shares`:
        the first share on the calling thread, the others on workers 0, 1, ..."""
        if len(shares) - 1 > self.workers:
            raise ValueError(f"{len(shares)} shares for {self.workers} workers and the caller")
        if self._forked:
            for share in shares:
                kernel(*arguments, *share)
            return
        address = ctypes.cast(kernel, ctypes.c_void_p).value
        with self._lock:
            for worker, (first, last) in enumerate(shares[1:]):
                self._sequences[worker] += 1
                if self._post(self._addresses[worker], self._sequences[worker], address, *arguments, first, last):
                    self._wakeups[worker].set()
            kernel(*arguments, *shares[0])
            try:
                self._finish(len(shares) - 1)
            except KeyboardInterrupt:
                self._finish(len(shares) - 1)  # the workers still write into the caller's buffers
                raise

    def _finish(self, workers: int) -> None:
        """Wait until workers [0, workers) have done their last posted job."""
        for worker in range(workers):
            while not self._wait(self._addresses[worker], self._sequences[worker], self._wait_polls):
                time.sleep(0)

    def close(self) -> None:
        """Stop the worker threads (and wait for them)."""
        self._finalizer()
