"""JIT compilation of generated kernels with llvmlite (MCJIT), with a disk cache.

The target machine is built for the host CPU: its name and its feature string from
llvmlite (the name alone can be a different marketing name). `SPARSEC_CPU=generic`, or
a host whose CPU llvmlite cannot describe, selects the portable path: a baseline
target for the architecture with no optional features. The generated IR uses no
target-specific intrinsics, so both paths compute the same results.

Compiled objects are cached under `$SPARSEC_CACHE_DIR` (default
`$XDG_CACHE_HOME/sparsec` or `~/.cache/sparsec`), keyed by the IR's hash, the CPU name,
its features and the llvmlite version. A cache entry carries a checksum of its object
code; a damaged entry is ignored and rebuilt.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm
from xdsl.backend.llvm.convert import convert_module
from xdsl.dialects.builtin import ModuleOp

KERNEL_SIGNATURE = ctypes.CFUNCTYPE(
    None,
    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
    ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
)  # fmt: skip
_CHECKSUM_BYTES = 32


@dataclass(frozen=True)
class Target:
    cpu: str
    features: str

    @staticmethod
    def host() -> Target:
        """The host CPU, or the portable baseline when asked for or undetectable."""
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        if os.environ.get("SPARSEC_CPU", "host") == "generic":
            return Target.portable()
        try:
            return Target(llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten())
        except RuntimeError:
            return Target.portable()

    @staticmethod
    def portable() -> Target:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
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

    def machine(self) -> llvm.TargetMachine:
        target = llvm.Target.from_triple(llvm.get_process_triple())
        return target.create_target_machine(cpu=self.cpu, features=self.features, opt=3, jit=True)


def cache_dir() -> Path:
    if "SPARSEC_CACHE_DIR" in os.environ:
        return Path(os.environ["SPARSEC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sparsec"


@dataclass
class _ObjectCache:
    """MCJIT object cache: one file per module, object code plus its SHA-256."""

    path: Path
    hit: bool = False

    def load(self, _module: llvm.ModuleRef) -> bytes | None:
        try:
            data = self.path.read_bytes()
        except OSError:
            return None
        checksum, code = data[:_CHECKSUM_BYTES], data[_CHECKSUM_BYTES:]
        if hashlib.sha256(code).digest() != checksum:
            return None  # damaged: compile again and overwrite
        self.hit = True
        return code

    def store(self, _module: llvm.ModuleRef, code: bytes) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as stream:
                stream.write(hashlib.sha256(code).digest() + code)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only cache only costs compile time


@dataclass
class CompiledKernels:
    """Entry points of one compiled module; keeps the engine alive while they are used."""

    engine: llvm.ExecutionEngine
    functions: dict[str, ctypes._CFuncPtr] = field(default_factory=dict)
    from_cache: bool = False


def compile_kernels(module: ModuleOp, target: Target | None = None, use_cache: bool = True) -> CompiledKernels:
    """Compile every `llvm.func` of `module` for `target` (the host by default)."""
    target = target or Target.host()
    machine = target.machine()
    ir = str(convert_module(module, fallback_target_triple=llvm.get_process_triple()))
    backing = llvm.parse_assembly(ir)
    backing.triple = machine.triple
    backing.data_layout = str(machine.target_data)
    backing.verify()
    key = hashlib.sha256("\n".join([ir, target.cpu, target.features, llvmlite.__version__]).encode()).hexdigest()
    cache = _ObjectCache(cache_dir() / f"{key}.o")
    cached = use_cache and cache.path.is_file() and cache.load(backing) is not None
    if not cached:
        options = llvm.create_pipeline_tuning_options(speed_level=3)
        options.loop_vectorization = True
        options.slp_vectorization = True
        builder = llvm.create_pass_builder(machine, options)
        builder.getModulePassManager().run(backing, builder)
    engine = llvm.create_mcjit_compiler(backing, machine)
    if use_cache:
        engine.set_object_cache(cache.store, cache.load)
    engine.finalize_object()
    compiled = CompiledKernels(engine, from_cache=cache.hit)
    for function in backing.functions:
        if not function.is_declaration:
            address = engine.get_function_address(function.name)
            compiled.functions[function.name] = KERNEL_SIGNATURE(address)
    return compiled
