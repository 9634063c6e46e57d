"""The `.spx` artifact: one safetensors file holding a compiled model.

    tensors    every array the IR refers to: packed arrays (`NAME:mask`, `NAME:values`,
               ...) and dense weights, written without copies by the safetensors library
    metadata   format        "sparsec.spx"
               version       format version (this sparsec writes and reads 1)
               ir            the module as text, weights by reference (no inline values),
                             with locations so layer names survive
               checksums     JSON {tensor name: sha256 of its bytes}, plus "__ir__"
               source        the ONNX model it was compiled from (for `bench`), or ""

The header's keys are sorted, so one model compiles to the same bytes every time.
Loading maps the file into memory (`mmap`) and hands out read-only numpy views, so a
model's weights are not copied. Every checksum is verified at load by default;
`verify=False` skips that for trusted files (the check reads every byte once).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import struct
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from xdsl.dialects.builtin import ModuleOp

from sparsec import __version__
from sparsec.context import SparsecContext
from sparsec.errors import SparsecError
from sparsec.fileio import atomic_path
from sparsec.irfile import module_text, parse_module, storing_ops
from sparsec.weights import WeightStore

FORMAT = "sparsec.spx"
VERSION = 1
IR_CHECKSUM = "__ir__"

_DTYPES = {
    "F16": np.float16, "F32": np.float32, "F64": np.float64, "U8": np.uint8, "I8": np.int8,
    "I16": np.int16, "I32": np.int32, "I64": np.int64, "BOOL": np.bool_,
}  # fmt: skip


class ArtifactError(SparsecError):
    """A `.spx` file that cannot be trusted: truncated, altered, or from a newer sparsec."""


def _digest(data: bytes | memoryview | np.ndarray) -> str:
    return hashlib.sha256(data).hexdigest()


def referenced_tensors(module: ModuleOp, weights: WeightStore) -> dict[str, np.ndarray]:
    return {
        name: np.require(weights[name], requirements="C")
        for op in storing_ops(module)
        for name in op.stored_tensors().values()
    }


def write_spx(module: ModuleOp, weights: WeightStore, path: str | Path, source: Path | None = None) -> None:
    """Write the artifact atomically; `source` is the model it was compiled from."""
    tensors = referenced_tensors(module, weights)
    ir = module_text(module, weights, inline_limit=0, debuginfo=True)
    checksums = {name: _digest(array.reshape(-1).view(np.uint8)) for name, array in tensors.items()}
    checksums[IR_CHECKSUM] = _digest(ir.encode())
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "producer": f"sparsec {__version__}",
        "ir": ir,
        "checksums": json.dumps(checksums),
        "source": str(source) if source is not None else "",
    }
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
        _sort_header(tmp)


def _sort_header(path: str | Path) -> None:
    """Rewrite the safetensors header with its keys in sorted order, so one model
    compiles to the same bytes every time: safetensors 0.8 writes the metadata in a
    per-process random order (safetensors issue 584). Done only where re-serializing
    the header as written gives back its exact bytes; the sorted header then has the
    same length, and the tensors' offsets stay as they are."""
    compact = {"separators": (",", ":"), "ensure_ascii": False}
    with open(path, "r+b") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        text = file.read(length).rstrip(b" ")  # safetensors pads the header with spaces
        header = json.loads(text)
        if json.dumps(header, **compact).encode() == text:
            file.seek(8)
            file.write(json.dumps(header, sort_keys=True, **compact).encode())


def _header(path: Path, buffer: mmap.mmap) -> tuple[dict, int]:
    """The safetensors header and the offset where tensor data starts."""
    if len(buffer) < 8:
        raise ArtifactError(f"{path}: not a .spx file (too short)")
    (length,) = struct.unpack("<Q", buffer[:8])
    if 8 + length > len(buffer):
        raise ArtifactError(f"{path}: truncated (the header runs past the end of the file)")
    try:
        return json.loads(buffer[8 : 8 + length]), 8 + length
    except (ValueError, UnicodeDecodeError):
        raise ArtifactError(f"{path}: not a .spx file (its header is not JSON)") from None


def _metadata(path: Path, header: dict) -> dict[str, str]:
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a sparsec artifact (format '{metadata.get('format')}', expected '{FORMAT}')")
    try:
        version = int(metadata.get("version", ""))
    except ValueError:
        raise ArtifactError(f"{path}: unreadable format version '{metadata.get('version')}'") from None
    if version > VERSION:
        raise ArtifactError(
            f"{path}: written by a newer sparsec (format version {version}; this sparsec reads up to {VERSION})"
        )
    for key in ("ir", "checksums"):
        if key not in metadata:
            raise ArtifactError(f"{path}: corrupted (metadata has no '{key}')")
    return metadata


def _mapped_arrays(path: Path, buffer: mmap.mmap, header: dict, start: int) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]])
            begin, end = (start + offset for offset in info["data_offsets"])
            shape = tuple(int(d) for d in info["shape"])
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{path}: corrupted entry for tensor '{name}'") from None
        count = int(np.prod(shape))
        if not start <= begin <= end <= len(buffer) or end - begin != count * dtype.itemsize:
            raise ArtifactError(f"{path}: truncated or corrupted (tensor '{name}' lies outside the file)")
        arrays[name] = np.frombuffer(buffer, dtype=dtype, count=count, offset=begin).reshape(shape)
    return arrays


def _verify(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    try:
        checksums = json.loads(metadata["checksums"])
    except ValueError:
        raise ArtifactError(f"{path}: corrupted (checksums are not JSON)") from None
    if _digest(metadata["ir"].encode()) != checksums.get(IR_CHECKSUM):
        raise ArtifactError(f"{path}: the IR fails its checksum; the file was altered or corrupted")
    for name, array in arrays.items():
        if checksums.get(name) != _digest(array.reshape(-1).view(np.uint8)):
            raise ArtifactError(f"{path}: tensor '{name}' fails its checksum; the file was altered or corrupted")


def source_of(path: str | Path) -> Path | None:
    """The model an artifact was compiled from, as recorded (it may have moved since)."""
    try:
        with safe_open(str(path), framework="numpy") as handle:
            source = (handle.metadata() or {}).get("source", "")
    except (SafetensorError, OSError):
        return None
    return Path(source) if source else None


def read_spx(path: str | Path, ctx: SparsecContext, verify: bool = True) -> ModuleOp:
    """Map an artifact; its arrays go into `ctx.weights` as read-only views of the file."""
    path = Path(path)
    if not path.is_file():
        raise SparsecError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="numpy"):
            pass  # the library's own validation of the container
    except (SafetensorError, OSError) as error:
        raise ArtifactError(f"{path}: not a valid .spx (safetensors) file: {error}") from None
    with open(path, "rb") as stream:
        buffer = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
    header, start = _header(path, buffer)
    metadata = _metadata(path, header)
    arrays = _mapped_arrays(path, buffer, header, start)
    if verify:
        _verify(path, arrays, metadata)
    ctx.weights.update(arrays)
    module = parse_module(metadata["ir"], ctx, source=f"{path}(ir)")
    missing = [n for op in storing_ops(module) for n in op.stored_tensors().values() if n not in ctx.weights]
    if missing:
        raise ArtifactError(f"{path}: corrupted (the IR refers to missing tensors {', '.join(missing[:5])})")
    return module
