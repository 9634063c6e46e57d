"""Worker threads that take shares of a kernel call within a microsecond or so.

A thread asleep on a lock or an event takes tens of microseconds to wake (a
ThreadPoolExecutor round trip measured 71 us on a 2-vCPU VM, half the time a 90%-sparse
11008x4096 layer takes on two threads), so the hand-off ate what the second core gave.
Here each worker waits in native code, with the GIL released, spinning on its own slot
of memory for IDLE_SPIN_SECONDS after its last job, and only then parks on a
threading.Event; OpenMP runtimes and onnxruntime's thread pool wait the same way.

A call's units are cut into shares, more than there are threads, and each thread
claims the next share from a counter until none are left (`share`): a thread that
starts late or runs slow (on a VM, a neighbour can take a core for a while) leaves
more shares to the others, where equal parts made every call wait for the slowest.

The protocol, on a slot of int64 words per worker (the caller's words and the worker's
on different cache lines, so their writes do not pass one line back and forth):

- post: the caller writes the kernel's address and the job (its arguments but the
  units, the shares and the counter), then the job's sequence number to POSTED, then
  reads STATE; a PARKED worker needs its event set.
- the worker sees POSTED change, claims shares until none are left and writes the
  number to DONE.
- before parking, the worker writes PARKED to STATE, then reads POSTED once more. The
  caller's two steps and these two are sequentially consistent, so at least one side
  sees the other's write: no job is left behind a parked worker (a needless wake-up
  only costs one more spell of spinning).
- wait: the caller spins until DONE holds the number, yielding its CPU now and then.
- run: one native call resets the counter, posts the job to the workers, claims shares
  itself and waits: the Python a call costs runs with its code out of the caches (a
  kernel has just streamed megabytes through them), at several times its usual cost,
  so a call makes one ctypes call. Parked workers send it back to Python before the
  caller claims any share, to be woken.

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

from sparsec.runtime.jit import KERNEL_SIGNATURE, CompiledKernels, compile_llvm_ir
from sparsec.runtime.memory import on_cache_line

IDLE_SPIN_SECONDS = 0.002
"""How long a worker spins for the next job before it parks: longer than the gaps
between the kernel calls of one model run (numpy ops, Python), far shorter than
what a user would notice as a busy core."""
WAIT_SPIN_SECONDS = 0.00005
"""How long the caller spins on a worker's DONE before it yields its CPU once."""

POSTED, KERNEL, JOB = 0, 1, 2
"""Word offsets of the caller's part of a slot (JOB: JOB_WORDS words, `share`'s
arguments after the kernel)."""
JOB_WORDS = 10
DONE, STATE = 16, 17
"""Word offsets of the worker's part, on the slot's third cache line."""
SLOT_WORDS = 24
SPINNING, PARKED = 0, 1
MASK_BITS = 62
"""The highest bit of `run`'s mask of parked workers (which stays positive)."""

_I64 = ir.IntType(64)
_BYTES = ir.IntType(8).as_pointer()
_KERNEL = ir.FunctionType(ir.VoidType(), [_BYTES] * 6 + [_I64] * 3)
_WORDS = [ctypes.c_int64] * (1 + JOB_WORDS)  # the kernel's address, then the job
_SIGNATURES = {
    "sparsec_worker_run": ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, *_WORDS, ctypes.c_int64),
    "sparsec_worker_post": ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, *_WORDS),
    "sparsec_worker_share": ctypes.CFUNCTYPE(ctypes.c_int64, *_WORDS),
    "sparsec_worker_serve": ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64),
    "sparsec_worker_wait": ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64),
    "sparsec_worker_steps": KERNEL_SIGNATURE,
}
STEP_WORDS = 10
"""Words of one entry of a step table (`_ProtocolBuilder.steps`): a kernel's address
and the nine arguments of its call."""


class _ProtocolBuilder:
    """The LLVM module of the four entry points: post, serve, wait and run."""

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

    def function(self, name: str, types: list[ir.Type]) -> tuple[ir.Function, ir.IRBuilder]:
        """A function of `types` returning int64."""
        function = ir.Function(self.module, ir.FunctionType(_I64, types), name)
        return function, ir.IRBuilder(function.append_basic_block("entry"))

    def share(self) -> ir.Function:
        """share(kernel, x, y, a0, a1, a2, bias, batch, shares, count, counter): claim
        share i = counter++ of the `count` (first, last) int64 pairs at `shares` and call
        kernel(x, y, a0, a1, a2, bias, batch, first, last), until i reaches `count`;
        returns the number of shares this thread ran."""
        function, b = self.function("sparsec_worker_share", [_I64] * (1 + JOB_WORDS))
        kernel, *arguments, shares, count, counter = function.args
        entry = b.block
        claim, run, finished = (function.append_basic_block(n) for n in ("claim", "run", "finished"))
        b.branch(claim)
        b.position_at_end(claim)
        ran = b.phi(_I64)
        share = b.atomic_rmw("add", b.inttoptr(counter, _I64.as_pointer()), ir.Constant(_I64, 1), "monotonic")
        b.cbranch(b.icmp_signed("<", share, count), run, finished)
        b.position_at_end(run)
        pair = b.gep(b.inttoptr(shares, _I64.as_pointer()), [b.mul(share, ir.Constant(_I64, 2))], inbounds=True)
        first, last = b.load(pair), b.load(b.gep(pair, [ir.Constant(_I64, 1)], inbounds=True))
        pointers = [b.inttoptr(word, _BYTES) for word in arguments[:6]]
        b.call(b.inttoptr(kernel, _KERNEL.as_pointer()), pointers + [arguments[6], first, last])
        more = b.add(ran, ir.Constant(_I64, 1))
        b.branch(claim)
        ran.add_incoming(ir.Constant(_I64, 0), entry)
        ran.add_incoming(more, run)
        b.position_at_end(finished)
        b.ret(ran)
        return function

    def steps(self) -> None:
        """steps(table, _, _, _, _, _, _, first, last): call the kernels of table
        entries [first, last) in turn, each entry STEP_WORDS int64 words: the kernel's
        address, then its arguments (six pointers, three integers). It has a kernel's
        signature, so the pool runs a share of several calls (a batched call's chunk:
        its transposing copies and the kernel) as one share of one call."""
        function = ir.Function(self.module, _KERNEL, "sparsec_worker_steps")
        table, *_unused, first, last = function.args
        b = ir.IRBuilder(function.append_basic_block("entry"))
        entry = b.block
        loop, body, finished = (function.append_basic_block(n) for n in ("loop", "body", "finished"))
        b.branch(loop)
        b.position_at_end(loop)
        step = b.phi(_I64)
        b.cbranch(b.icmp_signed("<", step, last), body, finished)
        b.position_at_end(body)
        words = b.gep(b.bitcast(table, _I64.as_pointer()), [b.mul(step, ir.Constant(_I64, STEP_WORDS))], inbounds=True)
        word = [b.load(b.gep(words, [ir.Constant(_I64, index)], inbounds=True)) for index in range(STEP_WORDS)]
        pointers = [b.inttoptr(value, _BYTES) for value in word[1:7]]
        b.call(b.inttoptr(word[0], _KERNEL.as_pointer()), pointers + word[7:])
        next_step = b.add(step, ir.Constant(_I64, 1))
        b.branch(loop)
        step.add_incoming(first, entry)
        step.add_incoming(next_step, body)
        b.position_at_end(finished)
        b.ret_void()

    def post(self) -> ir.Function:
        """post(slot, sequence, kernel, job...) -> 1 if the worker is parked (the caller
        then sets its event), else 0."""
        function, b = self.function("sparsec_worker_post", [_I64.as_pointer()] + [_I64] * (2 + JOB_WORDS))
        slot, sequence, *job = function.args
        for index, value in enumerate(job):
            b.store(value, self.word(b, slot, KERNEL + index))
        b.store_atomic(sequence, self.word(b, slot, POSTED), "seq_cst", 8)
        state = b.load_atomic(self.word(b, slot, STATE), "seq_cst", 8)
        b.ret(b.zext(b.icmp_unsigned("==", state, ir.Constant(_I64, PARKED)), _I64))
        return function

    def serve(self, share: ir.Function) -> None:
        """serve(slot, spins) runs the slot's jobs until it has seen none for `spins`
        polls; returns 0 when it parks, 1 when asked to stop."""
        function, b = self.function("sparsec_worker_serve", [_I64.as_pointer(), _I64])
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
        b.call(share, [kernel] + [b.load(self.word(b, slot, JOB + index)) for index in range(JOB_WORDS)])
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

    def wait(self) -> ir.Function:
        """wait(slot, sequence, spins) -> 1 once DONE holds `sequence`, 0 if it still
        does not after `spins` polls."""
        function, b = self.function("sparsec_worker_wait", [_I64.as_pointer(), _I64, _I64])
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
        return function

    def run(self, post: ir.Function, share: ir.Function, wait: ir.Function) -> None:
        """run(slots, workers, sequence, kernel, job..., spins): reset the job's counter,
        post the job to the slots of workers [0, workers). Returns the mask of the workers
        found parked (bit MASK_BITS for all from there on), if any, having claimed no
        share (the caller wakes them, claims shares and waits); else claims shares and
        waits up to `spins` polls for each worker: 0 when all are done, -1 when one is
        not yet."""
        function, b = self.function("sparsec_worker_run", [_I64.as_pointer()] + [_I64] * (3 + JOB_WORDS + 1))
        slots, workers, sequence, kernel, *job, spins = function.args
        entry = b.block
        names = ("post", "posted", "own", "wait", "waited", "late", "finished", "parked")
        post_loop, posted, own, wait_loop, waited, late, finished, parked_exit = (function.append_basic_block(n) for n in names)
        one, zero = ir.Constant(_I64, 1), ir.Constant(_I64, 0)

        def slot_of(worker: ir.Value) -> ir.Value:
            return b.gep(slots, [b.mul(worker, ir.Constant(_I64, SLOT_WORDS))], inbounds=True)

        # Workers read the counter only after POSTED (acquire), which the post stores after this.
        b.store(zero, b.inttoptr(job[-1], _I64.as_pointer()))
        b.branch(post_loop)
        b.position_at_end(post_loop)
        worker = b.phi(_I64)
        parked = b.phi(_I64)
        post_body = function.append_basic_block("post_body")
        b.cbranch(b.icmp_signed("<", worker, workers), post_body, posted)
        b.position_at_end(post_body)
        found = b.call(post, [slot_of(worker), sequence, kernel, *job])
        bit = b.select(b.icmp_unsigned("<", worker, ir.Constant(_I64, MASK_BITS)), worker, ir.Constant(_I64, MASK_BITS))
        parked_after = b.or_(parked, b.shl(found, bit))
        next_worker = b.add(worker, one)
        b.branch(post_loop)
        worker.add_incoming(zero, entry)
        worker.add_incoming(next_worker, post_body)
        parked.add_incoming(zero, entry)
        parked.add_incoming(parked_after, post_body)

        b.position_at_end(posted)
        b.cbranch(b.icmp_unsigned("!=", parked, zero), parked_exit, own)
        b.position_at_end(parked_exit)
        b.ret(parked)

        b.position_at_end(own)
        b.call(share, [kernel, *job])
        b.branch(wait_loop)
        b.position_at_end(wait_loop)
        waiting = b.phi(_I64)
        b.cbranch(b.icmp_signed("<", waiting, workers), waited, finished)
        b.position_at_end(waited)
        done = b.call(wait, [slot_of(waiting), sequence, spins])
        next_waiting = b.add(waiting, one)
        b.cbranch(b.icmp_unsigned("!=", done, zero), wait_loop, late)
        waiting.add_incoming(zero, own)
        waiting.add_incoming(next_waiting, waited)
        b.position_at_end(late)
        b.ret(ir.Constant(_I64, -1))
        b.position_at_end(finished)
        b.ret(zero)


def protocol_ir() -> str:
    """The LLVM IR of the worker protocol's entry points."""
    builder = _ProtocolBuilder()
    post = builder.post()
    share = builder.share()
    builder.serve(share)
    wait = builder.wait()
    builder.run(post, share, wait)
    builder.steps()
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


def _stop(post: Callable[..., int], slots: np.ndarray, sequence: list[int], wakeups: list[threading.Event], threads: list[threading.Thread]) -> None:
    sequence[0] += 1
    for slot, wakeup in zip(slots, wakeups):
        post(slot.ctypes.data, sequence[0], 0, *[0] * JOB_WORDS)
        wakeup.set()
    for thread in threads:
        if thread is not threading.current_thread():  # a collection can run on a worker
            thread.join()


class Shares:
    """The (first, last) units of each share of a call, kept also as the int64 pairs
    the native `share` claims (made once per layer and batch), and how many threads
    take part: the calling thread and `threads - 1` workers (by default one share
    each)."""

    def __init__(self, bounds: Sequence[tuple[int, int]], threads: int | None = None):
        self.bounds = [(int(first), int(last)) for first, last in bounds]
        self.threads = len(self.bounds) if threads is None else threads
        self._pairs = np.array(self.bounds, np.int64).reshape(-1, 2)
        self.address = self._pairs.ctypes.data

    def __len__(self) -> int:
        return len(self.bounds)


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
        self._run = functions["sparsec_worker_run"]
        self._share = functions["sparsec_worker_share"]
        self.steps = functions["sparsec_worker_steps"]
        """Runs a share of several kernel calls from a table (`_ProtocolBuilder.steps`)."""
        self.steps_address = ctypes.cast(self.steps, ctypes.c_void_p).value
        rate = _polls_per_second() if spin else 0.0
        self._wait_polls = max(1, int(rate * WAIT_SPIN_SECONDS))
        # Slots start on a cache line: each of their three lines then belongs to one side.
        self._slots = on_cache_line(np.zeros, (workers, SLOT_WORDS), np.int64)
        self._addresses = [self._slots[worker].ctypes.data for worker in range(workers)]
        self._counter = on_cache_line(np.zeros, (SLOT_WORDS,), np.int64)
        """The next share a call's threads claim, on a line of its own (every thread
        writes it)."""
        self._counter_address = self._counter.ctypes.data
        self._sequence = [0]
        """The number of the last job posted (one count for all workers, so the native
        `run` posts the same number to each; a list, shared with the finalizer)."""
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
        self._finalizer = weakref.finalize(self, _stop, self._post, self._slots, self._sequence, self._wakeups, threads)
        self._forked = False
        _POOLS.add(self)

    @property
    def workers(self) -> int:
        return len(self._addresses)

    def run(self, kernel: ctypes._CFuncPtr, arguments: Sequence[int], shares: Shares | Sequence[tuple[int, int]], address: int | None = None) -> None:
        """Call `kernel(*arguments, first, last)` once for every (first, last) of
        `shares`, which the calling thread and workers 0, 1, ... (shares.threads in all)
        claim one after another. `arguments` are the kernel's first seven; `address` is
        the kernel's, if the caller has it (finding it costs microseconds)."""
        if not isinstance(shares, Shares):
            shares = Shares(shares)
        workers = shares.threads - 1
        if workers > self.workers:
            raise ValueError(f"{shares.threads} threads for {self.workers} workers and the caller")
        if self._forked:
            for share in shares.bounds:
                kernel(*arguments, *share)
            return
        if address is None:
            address = ctypes.cast(kernel, ctypes.c_void_p).value
        job = (address, *arguments, shares.address, len(shares.bounds), self._counter_address)
        with self._lock:
            self._sequence[0] += 1
            status = self._run(self._addresses[0], workers, self._sequence[0], *job, self._wait_polls)
            if status == 0:
                return
            if status > 0:  # no share claimed yet: wake the parked workers, then claim
                for worker in range(workers):
                    if status >> min(worker, MASK_BITS) & 1:
                        self._wakeups[worker].set()
                self._share(*job)
            try:
                self._finish(workers)
            except KeyboardInterrupt:
                self._finish(workers)  # the workers still write into the caller's buffers
                raise

    def run_steps(self, table: int, shares: Shares) -> None:
        """Run the kernel calls of the step table at address `table` (STEP_WORDS words
        an entry, `_ProtocolBuilder.steps`), each share a range of its entries."""
        self.run(self.steps, (table, 0, 0, 0, 0, 0, 0), shares, self.steps_address)

    def _finish(self, workers: int) -> None:
        """Wait until workers [0, workers) have done the last job posted."""
        for worker in range(workers):
            while not self._wait(self._addresses[worker], self._sequence[0], self._wait_polls):
                time.sleep(0)

    def close(self) -> None:
        """Stop the worker threads (and wait for them)."""
        self._finalizer()
