"""JIT compilation of generated kernels with llvmlite (MCJIT), with a disk cache.

The target machine is built for the host CPU: its name and its feature string from
llvmlite (the name alone can be a different marketing name). `SPARSEC_CPU=generic`, or
a host whose CPU llvmlite cannot describe, selects the portable path: a baseline
target for the architecture with no optional features; `SPARSEC_CPU=<LLVM CPU name>`
tunes for that CPU (its scheduling, and the kernel choices below) with the host's
features, and a name LLVM does not know is an error. The target's features are part
of each kernel key (`native_f16`, `avx512`, `vbmi2`): only AVX-512 kernels use
target-specific intrinsics (and one instruction as inline assembly), and every other
target gets the portable form of the same computation. Some choices follow the CPU
rather than its features (`tuning`).

Compiled objects are cached under `$SPARSEC_CACHE_DIR` (default
`$XDG_CACHE_HOME/sparsec` or `~/.cache/sparsec`), one entry per kernel, keyed by its
key, a hash of the sources it depends on (`fingerprint_sources`: the code generator
and the operand layouts), the CPU name, its features and the llvmlite version, so a
hit loads object code without generating or parsing any IR.
Kernels missing from the cache compile in a pipeline: generated in the calling thread,
optimized and compiled by LLVM in a worker thread. A cache entry carries a
checksum of its object code; a damaged entry is ignored and rebuilt.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm

from sparsec import kernels
from sparsec.errors import SparsecError
from sparsec.kernels import AnyKey
from sparsec.runtime import codegen

KERNEL_SIGNATURE = ctypes.CFUNCTYPE(
    None,
    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
    ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
)  # fmt: skip
_CHECKSUM_BYTES = 32
CLEANUP_PASSES = ("simplify_cfg",)
"""The LLVM passes for kernels written in vectors (codegen Kernel.EXPLICIT_VECTORS):
the generator has already placed their work where it belongs (and unrolled the loops
that pay for it, FunctionBuilder.loop) and folds constant index arithmetic as it
builds it (FunctionBuilder.binary), so what is left is merging the blocks its loops
and conditions leave; instruction selection combines the rest. O2 runs about 60
passes, and took 13-22 ms per kernel against 3-5 ms for instcombine and simplifycfg,
for the same speed of the kernels; LLVM's unroll pass, which also unrolls every small
loop of unknown trip count, added 4 to 14 ms. Without instcombine LLVM's part of the
41 kernels of benchmarks/jit.py took 0.92x the time (median), and the kernels ran
as fast or faster, alternated in one process: 1.01x to 1.08x on eight single layers
(batch 1 and 32), 0.96x to 1.07x on six networks, reruns within noise."""


@dataclass(frozen=True)
class Target:
    cpu: str
    features: str

    @staticmethod
    def host() -> Target:
        """The host CPU, or the portable baseline when asked for or undetectable."""
        _initialize_llvm()
        cpu = os.environ.get("SPARSEC_CPU", "host")
        if cpu == "generic":
            return Target.portable()
        if cpu != "host" and not _recognized_cpu(cpu):
            raise SparsecError(f"SPARSEC_CPU={cpu!r} is no CPU LLVM knows for {llvm.get_process_triple()}: use host, generic or an LLVM CPU name (znver4, icelake-server, ...)")
        try:
            features = llvm.get_host_cpu_features().flatten()
            return Target(_host_cpu_name(features) if cpu == "host" else cpu, features)
        except RuntimeError:
            return Target.portable()

    @staticmethod
    def portable() -> Target:
        _initialize_llvm()
        return Target("generic", "")

    @property
    def native_f16(self) -> bool:
        """Whether float16 -> float32 conversion is an instruction (else kernels widen
        float16 with integer operations rather than call a runtime library)."""
        triple = llvm.get_process_triple()
        if not triple.startswith(("x86_64", "i686", "i386")):
            return True
        return "+f16c" in self.features.split(",")

    @property
    def avx512(self) -> bool:
        """Whether kernels may use AVX-512 (F and BW) lane permutes."""
        features = self.features.split(",")
        return "+avx512f" in features and "+avx512bw" in features

    @property
    def vbmi2(self) -> bool:
        """Whether kernels may use AVX-512 VBMI2's 16-bit expand (KernelKey.vbmi2)."""
        return self.avx512 and "+avx512vbmi2" in self.features.split(",")

    @property
    def tuning(self) -> str:
        """The kernel choices this CPU gets (KernelKey.tuning): "zen" on AMD Zen,
        "rapids" on Intel Sapphire and Emerald Rapids (one core design), else "default"."""
        if self.cpu.startswith("znver"):
            return "zen"
        return "rapids" if self.cpu in ("sapphirerapids", "emeraldrapids") else "default"

    def machine(self) -> llvm.TargetMachine:
        target = llvm.Target.from_triple(llvm.get_process_triple())
        return target.create_target_machine(cpu=self.cpu, features=self.features, opt=3, jit=True)


RAPIDS_FEATURES = ("+amx-tile", "+avx512fp16")
"""Features only Intel's Sapphire Rapids cores and later have."""


def _host_cpu_name(features: str) -> str:
    """LLVM's name for the host CPU, from its model number; a core with RAPIDS_FEATURES
    is a Sapphire Rapids one whatever the number says: a VM of this project's reported
    model 167, which LLVM calls `rocketlake`, with AMX and AVX-512 FP16, so it got
    another CPU's scheduling and kernel choices (`tuning`) than the same core reported
    as model 207 (`emeraldrapids`) in earlier sessions."""
    name = llvm.get_host_cpu_name()
    listed = features.split(",")
    if "rapids" not in name and all(feature in listed for feature in RAPIDS_FEATURES):
        return "sapphirerapids"
    return name


@cache
def _initialize_llvm() -> None:
    """LLVM's native target, its assembly printer (object code) and its assembly parser
    (the kernels' inline assembly, FunctionBuilder.expand)."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_native_asmparser()


@cache
def _recognized_cpu(cpu: str) -> bool:
    """Whether LLVM knows `cpu` for this process's target. LLVM only warns on standard
    error about a name it does not know, and ignores it; the warning is caught here."""
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            llvm.Target.from_triple(llvm.get_process_triple()).create_target_machine(cpu=cpu)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        return b"not a recognized processor" not in captured.read()


def cache_dir() -> Path:
    if "SPARSEC_CACHE_DIR" in os.environ:
        return Path(os.environ["SPARSEC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sparsec"


def fingerprint_sources() -> list[Path]:
    """The files a compiled kernel depends on besides its key: the code generator, the
    key's layout rules, the operand layouts the kernels read (runtime/operands.py: a
    kernel cached before a layout changed would misread the new one) and this file."""
    runtime = Path(__file__).parent
    return [*sorted(Path(codegen.__file__).parent.glob("*.py")), Path(kernels.__file__), runtime / "operands.py", Path(__file__)]


def _codegen_fingerprint() -> str:
    """A hash of `fingerprint_sources`: a cache entry made by other code is never used."""
    digest = hashlib.sha256()
    for path in fingerprint_sources():
        digest.update(path.read_bytes())
    return digest.hexdigest()


QUICK_SWITCH_SECONDS = 0.0002
"""Python's thread switch interval while kernels compile in a pipeline."""
_PIPELINE = threading.Lock()
"""Held by a compile pipeline: llvmlite runs one call into LLVM at a time anyway, and
pipelines taking turns restore the switch interval they found."""

_FINGERPRINT = _codegen_fingerprint()
_PROCESS_TRIPLE = llvm.get_process_triple()
"""Asked once: llvmlite holds one lock over every call into LLVM, so a generating thread
that asked for it per kernel would wait on the compiling thread (`_object_codes`)."""


def cache_path(key: AnyKey, target: Target) -> Path:
    """Where the object code of the kernel for `key` on `target` is cached: keyed by the
    key (code generation is a pure function of it), the generator's sources, the CPU,
    its features and the llvmlite version, so a hit needs no IR at all."""
    text = "\n".join([repr(key), _FINGERPRINT, target.cpu, target.features, llvmlite.__version__])
    return cache_dir() / f"{hashlib.sha256(text.encode()).hexdigest()}.o"


def _read_cached(path: Path) -> bytes | None:
    """The object code of a cache entry, or None when missing or damaged."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    checksum, code = data[:_CHECKSUM_BYTES], data[_CHECKSUM_BYTES:]
    return code if hashlib.sha256(code).digest() == checksum else None


def _write_cached(path: Path, code: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as stream:
            stream.write(hashlib.sha256(code).digest() + code)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs compile time


@dataclass
class CompiledKernels:
    """Entry points of the compiled kernels; keeps the engine alive while they are used."""

    engine: llvm.ExecutionEngine
    functions: dict[str, ctypes._CFuncPtr] = field(default_factory=dict)
    from_cache: bool = False


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a while: generating a kernel makes tens
    of thousands of objects, enough to set off full collections that cost more than the
    generation itself on a large model's heap; the IR (cyclic through its parent links)
    is collected at a later collection instead."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _object_codes(keys: Sequence[AnyKey], machine: llvm.TargetMachine) -> list[bytes]:
    """Each kernel of `keys` generated and compiled into object code of its own. This
    thread generates the kernels one after another while a worker thread has LLVM
    optimize and compile the ones before (llvmlite's calls release the GIL), so a
    model's first run pays closer to the longer of the two than to their sum (a
    kernel's generation and translation are about 45% of its cold compile): ResNet50
    at n:m 3:4 compiled its 22 kernels and then its 26 implicit convolutions in 723 and
    812 ms one after another, 527 and 627 pipelined."""
    if len(keys) == 1:
        return [_kernel_object(_kernel_source(keys[0]), machine)]
    with _PIPELINE, _quick_thread_switches(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsec-llvm") as compiler:
        compiling = [compiler.submit(_kernel_object, _kernel_source(key), machine) for key in keys]
        return [future.result() for future in compiling]


@contextmanager
def _quick_thread_switches() -> Iterator[None]:
    """Python's thread switch interval at 0.2 ms for a while (5 ms by default): the
    compiling thread makes a dozen short calls into LLVM per kernel and after each
    waits for the GIL, which the generating thread otherwise keeps for up to the whole
    interval (10 kernels: 320 ms one after another, 270 pipelined, 206 with this)."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(QUICK_SWITCH_SECONDS)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _kernel_source(key: AnyKey) -> tuple[str, Sequence[str] | None]:
    """The LLVM IR text of the kernel for `key`, and the passes it takes: the short
    pipeline when it is written in vectors, else None (O2).

    The code generator (and with it xDSL's llvm dialect and its translation to
    llvmlite) is imported here, for the first kernel missing from the cache, not with
    this module: a process whose kernels all come from the cache starts without it
    (xDSL's translator alone took 0.07 s to import here)."""
    from xdsl.backend.llvm.convert import convert_module

    from sparsec.runtime.codegen.kernels import explicit_vectors, kernel_module

    with _collector_paused():
        ir = str(convert_module(kernel_module([key]), fallback_target_triple=_PROCESS_TRIPLE))
    return ir, CLEANUP_PASSES if explicit_vectors([key]) else None


def _kernel_object(source: tuple[str, Sequence[str] | None], machine: llvm.TargetMachine) -> bytes:
    """Object code of a kernel from its IR and passes (`_kernel_source`)."""
    ir, passes = source
    return _optimized_object(ir, machine, passes)


def _optimized_object(ir: str, machine: llvm.TargetMachine, passes: Sequence[str] | None = None) -> bytes:
    """LLVM IR text, verified, optimized and compiled for `machine`: by `passes` (names
    of llvmlite's pass manager methods, `add_<name>_pass`), else by LLVM's O2 pipeline."""
    module = llvm.parse_assembly(ir)
    module.triple = machine.triple
    module.data_layout = str(machine.target_data)
    module.verify()
    options = llvm.create_pipeline_tuning_options(speed_level=2)
    options.loop_vectorization = True
    options.slp_vectorization = True
    builder = llvm.create_pass_builder(machine, options)
    if passes is None:
        builder.getModulePassManager().run(module, builder)
    else:
        manager = llvm.create_new_module_pass_manager()
        for name in passes:
            getattr(manager, f"add_{name}_pass")()
        manager.run(module, builder)
        with _loop_strength_reduction_off():
            return machine.emit_object(module)
    return machine.emit_object(module)


@contextmanager
def _loop_strength_reduction_off() -> Iterator[None]:
    """LLVM's loop strength reduction off while a kernel written in vectors compiles.

    The generator already writes those loops the way the pass would: pointers carried
    from one iteration to the next, with constant offsets off them that address modes
    take (FunctionBuilder.mul). The pass finds nothing to improve there (the same
    speed on every benchmarked kernel) and was a quarter of LLVM's time, 5-7 ms of a
    kernel's 20. The switch is a process-wide LLVM option with no per-module form, so
    it is set for this call only and then set back to LLVM's default: another llvmlite
    user in the process (Numba) that compiles in another thread in that window would
    get the same code without the pass, never wrong code."""
    llvm.set_option("sparsec", "-disable-lsr=true")
    try:
        yield
    finally:
        llvm.set_option("sparsec", "-disable-lsr=false")


def compile_kernels(keys: Sequence[AnyKey], target: Target | None = None, use_cache: bool = True) -> CompiledKernels:
    """JIT the kernels for `keys` (duplicates are compiled once) for `target`, the host
    by default, through the disk cache: an entry per kernel, so models that share a
    kernel share its entry, and only the kernels missing from it are compiled."""
    target = target or Target.host()
    keys = list(dict.fromkeys(keys))
    machine = target.machine()
    paths = [cache_path(key, target) for key in keys]
    codes = [_read_cached(path) if use_cache else None for path in paths]
    missing = [index for index, code in enumerate(codes) if code is None]
    for index, code in zip(missing, _object_codes([keys[index] for index in missing], machine)):
        codes[index] = code
        if use_cache:
            _write_cached(paths[index], code)
    return _load(codes, machine, {key.symbol: KERNEL_SIGNATURE for key in keys}, not missing)  # pyright: ignore


def compile_llvm_ir(ir: str, signatures: dict[str, type], target: Target | None = None) -> CompiledKernels:
    """JIT LLVM IR text (runtime support code that is not a kernel) for `target`, the
    host by default, optimized like the kernels and through the same disk cache, keyed
    by the text; `signatures` gives each entry point's ctypes function type."""
    target = target or Target.host()
    machine = target.machine()
    text = "\n".join([ir, target.cpu, target.features, llvmlite.__version__])
    path = cache_dir() / f"{hashlib.sha256(text.encode()).hexdigest()}.o"
    code = _read_cached(path)
    from_cache = code is not None
    if code is None:
        code = _optimized_object(ir, machine)
        _write_cached(path, code)
    return _load([code], machine, signatures, from_cache)


def _load(codes: Sequence[bytes], machine: llvm.TargetMachine, signatures: dict[str, type], from_cache: bool) -> CompiledKernels:
    """Link object files into a new engine and resolve the entry points in `signatures`."""
    empty = llvm.parse_assembly("")
    empty.triple = machine.triple
    engine = llvm.create_mcjit_compiler(empty, machine)
    for code in codes:
        engine.add_object_file(llvm.ObjectFileRef.from_data(code))
    engine.finalize_object()
    compiled = CompiledKernels(engine, from_cache=from_cache)
    for symbol, signature in signatures.items():
        compiled.functions[symbol] = signature(engine.get_function_address(symbol))
    return compiled
