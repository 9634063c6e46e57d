"""Pack pruned weights: a bit mask plus the non-zero values, or a smaller structured encoding.

    pack-bitmask                          # auto: the smallest encoding the pattern allows
    pack-bitmask{encoding=bitmask dtype=fp32}

Every weight with a `#sparse.pattern` becomes a `sparse.packed` op. `bitmask` is Core
ML's `constexpr_sparse_to_dense` layout and fits any pattern; `nm` and `block` need the
matching pattern (sparsec/packing.py and docs/formats.md give the layouts and sizes).
An explicit encoding that a weight's pattern does not allow falls back to bitmask
with a warning. Values are rounded to `dtype`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from sparsec.context import weight_store
from sparsec.irfile import drop_unread_weights
from sparsec.dialects import nn
from sparsec.dialects.sparse import VALUE_TYPES, EncodingAttr, PackedWeightOp, PatternKind
from sparsec.errors import PassFailure, PipelineError
from sparsec.layers import layer_weights
from sparsec.packing import VALUE_DTYPES, Encoding, Packed, encode_bitmask, encode_block, encode_nm
from sparsec.weights import WeightStore

log = logging.getLogger("sparsec")

_ENCODINGS = ("auto", *(e.value for e in Encoding))
_ALLOWED_BY_PATTERN = {
    PatternKind.UNSTRUCTURED: (Encoding.BITMASK,),
    PatternKind.NM: (Encoding.NM, Encoding.BITMASK),
    PatternKind.BLOCK: (Encoding.BLOCK, Encoding.BITMASK),
}
"""Encodings each pattern allows; on equal size the structured one (listed first) wins,
since its kernels need no mask decoding."""


@dataclass(frozen=True)
class PackBitmaskPass(ModulePass):
    """Pack pruned weights into a bit mask plus float16 non-zeros, or an n:m or block encoding."""

    name = "pack-bitmask"

    encoding: str = "auto"
    """auto | bitmask | nm | block."""
    dtype: str = "fp16"
    """Value type of the packed non-zeros: fp16 | fp32."""

    def __post_init__(self) -> None:
        if self.encoding not in _ENCODINGS:
            raise PipelineError(f"{self.name}: option 'encoding' must be one of {', '.join(_ENCODINGS)}, got '{self.encoding}'")
        if self.dtype not in VALUE_DTYPES:
            raise PipelineError(f"{self.name}: option 'dtype' must be one of {', '.join(VALUE_DTYPES)}, got '{self.dtype}'")

    def candidates(self, op: nn.WeightOp) -> tuple[Encoding, ...]:
        assert op.sparsity is not None
        allowed = _ALLOWED_BY_PATTERN[op.sparsity.pattern_kind]
        if self.encoding == "auto":
            return allowed
        if Encoding(self.encoding) not in allowed:
            log.warning(
                f"{self.name}: weight '{op.weight_name.data}' has pattern {op.sparsity.pattern_kind.value}, "
                f"which encoding {self.encoding} cannot store; packing it as bitmask"
            )
            return (Encoding.BITMASK,)
        return (Encoding(self.encoding),)

    def encode(self, op: nn.WeightOp, array: np.ndarray, stored_axis: int) -> tuple[Packed, EncodingAttr]:
        """The smallest of the candidate encodings."""
        dtype, values = VALUE_DTYPES[self.dtype], VALUE_TYPES[self.dtype.replace("fp", "f")]
        pattern = op.sparsity
        assert pattern is not None
        options: list[tuple[Packed, EncodingAttr]] = []
        for encoding in self.candidates(op):
            match encoding:
                case Encoding.BITMASK:
                    options.append((encode_bitmask(array, dtype), EncodingAttr.make(encoding, values)))
                case Encoding.NM:
                    n, m = pattern.n.data, pattern.m.data
                    try:
                        packed = encode_nm(array, n, m, stored_axis, dtype)
                    except ValueError as error:
                        raise PassFailure(f"{self.name}: weight '{op.weight_name.data}' breaks its {n}:{m} pattern: {error}") from None
                    options.append((packed, EncodingAttr.make(encoding, values, n=n, m=m, axis=stored_axis)))
                case Encoding.BLOCK:
                    size = pattern.block_size.data
                    options.append(
                        (encode_block(array, size, stored_axis, dtype), EncodingAttr.make(encoding, values, block_size=size, axis=stored_axis))
                    )
        return min(options, key=lambda option: option[0].nbytes)

    def pack(self, op: nn.WeightOp, stored_axis: int, weights: WeightStore) -> None:
        name = op.weight_name.data
        array = weights[name]
        if self.dtype == "fp16" and np.abs(array).max(initial=0) > np.finfo(np.float16).max:
            raise PassFailure(f"{self.name}: weight '{name}' has values beyond the float16 range; use dtype=fp32")
        packed, encoding = self.encode(op, array, stored_axis)
        replacement = PackedWeightOp(name, encoding, packed.nbytes, op.tensor_type, op.sparsity)
        for role, store_name in replacement.stored_tensors().items():
            weights[store_name] = packed.arrays[role]
        Rewriter.replace_op(op, replacement)
        replacement.result.name_hint = op.result.name_hint

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        weights = weight_store(ctx)
        axes = {w.op: w.stored_axis for w in layer_weights(op)}
        pending = [w for w in op.walk() if isinstance(w, nn.WeightOp) and w.sparsity is not None]
        for weight in pending:
            assert weight.sparsity is not None
            to_stored = axes.get(weight, lambda axis: axis)
            self.pack(weight, to_stored(weight.sparsity.axis.data), weights)
        drop_unread_weights(op, weights, [weight.weight_name.data for weight in pending])
