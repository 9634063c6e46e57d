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
`$XDG_CACHE_HOME/sparsec` or `~/.cache/sparsec`), keyed by the kernel keys, a hash of
the code generator's sources, the CPU name, its features and the llvmlite version, so a
hit loads object code without generating or parsing any IR. A cache entry carries a
checksum of its object code; a damaged entry is ignored and rebuilt.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm
from xdsl.backend.llvm.convert import convert_module

from sparsec import kernels
from sparsec.errors import SparsecError
from sparsec.kernels import AnyKey
from sparsec.runtime import codegen
from sparsec.runtime.codegen.kernels import explicit_vectors, kernel_module

KERNEL_SIGNATURE = ctypes.CFUNCTYPE(
    None,
    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
    ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
)  # fmt: skip
_CHECKSUM_BYTES = 32
CLEANUP_PASSES = ("instruction_combine", "simplify_cfg")
"""The LLVM passes for kernels written in vectors (codegen Kernel.EXPLICIT_VECTORS):
the generator has already placed their work where it belongs (and unrolled the loops
that pay for it, FunctionBuilder.loop), so what is left is folding the index
arithmetic. O2 runs about 60 passes, and took 13-22 ms per kernel against 3-5 ms for
these, for the same speed of the kernels; LLVM's unroll pass, which also unrolls every
small loop of unknown trip count, added 4 to 14 ms."""


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
            return Target(llvm.get_host_cpu_name() if cpu == "host" else cpu, llvm.get_host_cpu_features().flatten())
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
        """The kernel choices this CPU gets (KernelKey.tuning): "zen" on AMD Zen, else
        "default"."""
        return "zen" if self.cpu.startswith("znver") else "default"

    def machine(self) -> llvm.TargetMachine:
        target = llvm.Target.from_triple(llvm.get_process_triple())
        return target.create_target_machine(cpu=self.cpu, features=self.features, opt=3, jit=True)


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


def _codegen_fingerprint() -> str:
    """A hash of the code generator's sources (with the key's layout rules and this
    file): a cache entry made by other code is never used."""
    digest = hashlib.sha256()
    for path in [*sorted(Path(codegen.__file__).parent.glob("*.py")), Path(kernels.__file__), Path(__file__)]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


_FINGERPRINT = _codegen_fingerprint()


def cache_path(keys: Sequence[AnyKey], target: Target) -> Path:
    """Where the object code for these kernels on `target` is cached: keyed by the keys
    (code generation is a pure function of them), the generator's sources, the CPU, its
    features and the llvmlite version, so a hit needs no IR at all."""
    text = "\n".join([*map(repr, keys), _FINGERPRINT, target.cpu, target.features, llvmlite.__version__])
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


def _object_code(keys: Sequence[AnyKey], machine: llvm.TargetMachine) -> bytes:
    """Generate, optimize and compile the kernels for `keys` into object code."""
    keys = list(keys)
    with _collector_paused():
        ir = str(convert_module(kernel_module(keys), fallback_target_triple=llvm.get_process_triple()))
    if not explicit_vectors(keys):
        return _optimized_object(ir, machine)
    return _optimized_object(ir, machine, CLEANUP_PASSES)


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
    return machine.emit_object(module)


def compile_kernels(keys: Sequence[AnyKey], target: Target | None = None, use_cache: bool = True) -> CompiledKernels:
    """JIT the kernels for `keys` (duplicates are compiled once) for `target`, the host
    by default, through the disk cache."""
    target = target or Target.host()
    keys = list(dict.fromkeys(keys))
    machine = target.machine()
    code, from_cache = _cached(cache_path(keys, target), lambda: _object_code(keys, machine), use_cache)
    return _load(code, machine, {key.symbol: KERNEL_SIGNATURE for key in keys}, from_cache)


def compile_llvm_ir(ir: str, signatures: dict[str, type], target: Target | None = None) -> CompiledKernels:
    """JIT LLVM IR text (runtime support code that is not a kernel) for `target`, the
    host by default, optimized like the kernels and through the same disk cache, keyed
    by the text; `signatures` gives each entry point's ctypes function type."""
    target = target or Target.host()
    machine = target.machine()
    text = "\n".join([ir, target.cpu, target.features, llvmlite.__version__])
    path = cache_dir() / f"{hashlib.sha256(text.encode()).hexdigest()}.o"
    code, from_cache = _cached(path, lambda: _optimized_object(ir, machine))
    return _load(code, machine, signatures, from_cache)


def _cached(path: Path, compile_object: Callable[[], bytes], use_cache: bool = True) -> tuple[bytes, bool]:
    """The object code cached at `path`, else `compile_object()`'s (then cached); and
    whether it came from the cache."""
    code = _read_cached(path) if use_cache else None
    if code is not None:
        return code, True
    code = compile_object()
    if use_cache:
        _write_cached(path, code)
    return code, False


def _load(code: bytes, machine: llvm.TargetMachine, signatures: dict[str, type], from_cache: bool) -> CompiledKernels:
    """Link object code into a new engine and resolve the entry points in `signatures`."""
    empty = llvm.parse_assembly("")
    empty.triple = machine.triple
    engine = llvm.create_mcjit_compiler(empty, machine)
    engine.add_object_file(llvm.ObjectFileRef.from_data(code))
    engine.finalize_object()
    compiled = CompiledKernels(engine, from_cache=from_cache)
    for symbol, signature in signatures.items():
        compiled.functions[symbol] = signature(engine.get_function_address(symbol))
    return compiled
