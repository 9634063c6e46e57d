"""Reading and writing sparsec IR as text (`.mlir`), with weights kept out of the ops.

A weight with at most `inline_limit` elements is printed inline (`nn.weight "b"
dense<[...]> : tensor<4xf32>`), so small tests stay readable. Larger weights go to a
sidecar safetensors file beside the `.mlir` file, named by the module attribute
`sparsec.weights`; reading the `.mlir` file finds and loads it. When IR is printed to
a stream there is no sidecar, so large weights are left out (like MLIR's
`--mlir-elide-elementsattrs-if-larger`) unless `inline_limit` is -1, which inlines
every weight.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp, StringAttr
from xdsl.ir import Operation
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.rewriter import Rewriter
from xdsl.utils.exceptions import ParseError, VerifyException

from sparsec.context import SparsecContext
from sparsec.dialects.literals import array_from_dense, dense_from_array
from sparsec.dialects import StoredWeightOp
from sparsec.dialects.nn import WeightOp
from sparsec.errors import IRError
from sparsec.fileio import atomic_output, atomic_path
from sparsec.weights import WeightStore

INLINE_WEIGHT_LIMIT = 256
"""Weights with at most this many elements print inline by default."""

SIDECAR_ATTR = "sparsec.weights"


def storing_ops(module: ModuleOp) -> Iterator[StoredWeightOp]:
    for op in module.walk():
        if isinstance(op, StoredWeightOp):
            yield op


def drop_unread_weights(module: ModuleOp, weights: WeightStore, names: Iterable[str]) -> None:
    """Remove from `weights` each of `names` that no op of `module` stores any more:
    what a pass that replaced weight ops leaves behind."""
    read = {name for op in storing_ops(module) for name in op.stored_tensors().values()}
    for name in names:
        if name not in read and name in weights:
            weights.pop(name)


def erase_unread_weights(module: ModuleOp, weights: WeightStore, candidates: Iterable[StoredWeightOp]) -> None:
    """Erase each of `candidates` that nothing reads any more, and its tensor from
    `weights` when no other op stores it: what a pass leaves behind that folded the
    weights it read into others."""
    unread = [op for op in dict.fromkeys(candidates) if op.results[0].first_use is None]
    for op in unread:
        op.detach()
        op.erase()
    drop_unread_weights(module, weights, [name for op in unread for name in op.stored_tensors().values()])


def replace_chain(before: Sequence[Operation], last: Operation, fused: Operation) -> list[WeightOp]:
    """Put `fused` in the place of a chain of ops (`before`, in order, then `last`, whose
    result it replaces), named and located as `last`; the weights the chain read, which
    may now be unread (for `erase_unread_weights`). What a pass that fuses a chain
    written out op by op does."""
    constants = [o.owner for op in (*before, last) for o in op.operands if isinstance(o.owner, WeightOp)]
    fused.location = last.location
    Rewriter.replace_op(last, fused)
    for op in reversed(before):
        Rewriter.erase_op(op)
    return constants


def parse_module(
    text: str, ctx: SparsecContext, *, source: str = "<stdin>", base_dir: Path | None = None
) -> ModuleOp:
    """Parse IR text; inline weight values and the sidecar move into `ctx.weights`."""
    try:
        module = Parser(ctx, text, name=source).parse_module()
    except ParseError as error:
        raise IRError(str(error)) from None
    except VerifyException as error:
        raise IRError(f"{source}: {error}") from None
    for op in storing_ops(module):
        for role, name in op.stored_tensors().items():
            inline = op.properties.pop(role, None)
            if isinstance(inline, DenseIntOrFPElementsAttr):
                ctx.weights[name] = array_from_dense(inline)
    sidecar = module.attributes.pop(SIDECAR_ATTR, None)
    if isinstance(sidecar, StringAttr):
        _load_sidecar((base_dir or Path.cwd()) / sidecar.data, ctx.weights, source)
    return module


def _load_sidecar(path: Path, weights: WeightStore, source: str) -> None:
    if not path.is_file():
        raise IRError(f"{source}: weight file '{path}' named by {SIDECAR_ATTR} does not exist")
    try:
        weights.update(load_file(path))
    except (SafetensorError, OSError) as error:
        raise IRError(f"{source}: weight file '{path}' is not a valid safetensors file: {error}") from None


def read_mlir(path: str | Path, ctx: SparsecContext) -> ModuleOp:
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise IRError(f"cannot read '{path}': {error}") from None
    return parse_module(text, ctx, source=str(path), base_dir=path.parent)


@contextlib.contextmanager
def _inlined(module: ModuleOp, weights: WeightStore, inline_limit: int) -> Iterator[list[str]]:
    """Attach small weights' arrays to their ops for printing; yields the names left out.

    An op's arrays are inlined all together or not at all.
    """
    attached: list[tuple[StoredWeightOp, str]] = []
    left_out: list[str] = []
    try:
        for op in storing_ops(module):
            names = {role: name for role, name in op.stored_tensors().items() if name in weights}
            if not names:
                continue
            if inline_limit >= 0 and any(weights[name].size > inline_limit for name in names.values()):
                left_out += names.values()
                continue
            for role, name in names.items():
                op.properties[role] = dense_from_array(weights[name])
                attached.append((op, role))
        yield left_out
    finally:
        for op, role in attached:
            del op.properties[role]


def print_module(
    module: ModuleOp,
    weights: WeightStore,
    stream: IO[str],
    *,
    inline_limit: int = INLINE_WEIGHT_LIMIT,
    debuginfo: bool = False,
) -> list[str]:
    """Print `module`; returns the names of weights too large to print inline.

    With `debuginfo`, op locations (ONNX node names) are printed too.
    """
    with _inlined(module, weights, inline_limit) as left_out:
        Printer(stream=stream, print_debuginfo=debuginfo).print_op(module)
        stream.write("\n")
    return left_out


def module_text(
    module: ModuleOp, weights: WeightStore, inline_limit: int = INLINE_WEIGHT_LIMIT, debuginfo: bool = False
) -> str:
    stream = io.StringIO()
    print_module(module, weights, stream, inline_limit=inline_limit, debuginfo=debuginfo)
    return stream.getvalue()


def write_mlir(
    module: ModuleOp,
    weights: WeightStore,
    path: str | Path,
    *,
    inline_limit: int = INLINE_WEIGHT_LIMIT,
    debuginfo: bool = False,
) -> None:
    """Write `path` and, for weights too large to inline, its sidecar, atomically."""
    path = Path(path)
    sidecar = path.with_suffix(".weights.safetensors")
    with _inlined(module, weights, inline_limit) as left_out:
        if left_out:
            module.attributes[SIDECAR_ATTR] = StringAttr(sidecar.name)
        try:
            if left_out:
                tensors = {name: np.require(weights[name], requirements="C") for name in left_out}
                with atomic_path(sidecar) as tmp:
                    save_file(tensors, tmp)
            with atomic_output(path) as stream:
                Printer(stream=stream, print_debuginfo=debuginfo).print_op(module)
                stream.write("\n")
        finally:
            module.attributes.pop(SIDECAR_ATTR, None)
