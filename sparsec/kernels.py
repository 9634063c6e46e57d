"""Kernel specialization keys: what a generated sparse kernel is specialized on.

The key is data on the IR (`sparse.matmul` / `sparse.conv` carry its symbol) and code
generation is a pure function of it, so layers with equal keys share one kernel. Passes
use the key to name kernels; the runtime generates and compiles them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xdsl.dialects.builtin import f16

if TYPE_CHECKING:
    from sparsec.dialects.sparse import PackedWeightOp

KINDS = ("bitmask", "nm", "block", "dense")
ACTIVATIONS = ("relu", "gelu")
EPILOGUES = ("none", "bias", *ACTIVATIONS, *(f"bias_{a}" for a in ACTIVATIONS))
"""What a kernel applies to each output: an optional bias, then an optional activation
(Relu, or Gelu with the exact erf form)."""
BATCHED_KINDS = ("bitmask", "nm")
PANEL = 256
"""Columns per panel of the batched kernels (a multiple of the 64-column mask step)."""
GATHER_MAX_DENSITY = 0.28
"""Bitmask weights with at most this share of non-zeros run one batch row through the
gather variant. Its bytes grow with the non-zeros (3.25 per non-zero against the mask's
0.125 per weight plus 2 per non-zero) while the mask kernel's work per column is fixed,
so it pays from about 72% sparsity (measured crossover on 4096x4096, one thread)."""
GATHER_SPAN = 256
"""Columns one gather chunk may span: its offsets from the chunk's first column are bytes."""


@dataclass(frozen=True)
class KernelKey:
    """Everything a kernel is specialized on; equal keys share one compiled kernel."""

    kind: str  # bitmask | nm | block | dense
    rows: int  # N, output channels
    cols: int  # K, input channels
    values: str = "f16"  # f16 | f32
    n: int = 0
    m: int = 0
    block: int = 0
    epilogue: str = "none"
    native_f16: bool = True
    """False for targets without half-precision conversion instructions (x86 without
    F16C): float16 values are widened with integer operations instead of a libcall."""
    batched: bool = False
    """The variant for larger batches on transposed activations (runtime/codegen/batched.py);
    only bitmask and n:m weights have one (BATCHED_KINDS)."""
    avx512: bool = False
    """True for targets with AVX-512 (F, BW): kernels may use its dynamic lane permutes,
    which portable LLVM IR cannot express; other targets get the portable kernels."""

    gather: bool = False
    """The variant for one batch row of sparse bitmask weights on AVX-512: chunks of up
    to 16 non-zeros, their columns as byte offsets, the inputs gathered
    (runtime/codegen/bitmask.py); the executor picks it where `gather_applies`."""

    @property
    def symbol(self) -> str:
        shape = f"{self.rows}x{self.cols}"
        detail = {"bitmask": "bitmask", "nm": f"nm{self.n}_{self.m}", "block": f"block{self.block}", "dense": "dense"}[self.kind]
        suffix = "" if self.epilogue == "none" else f"_{self.epilogue}"
        portable = "" if self.native_f16 or self.values != "f16" else "_swf16"
        variant = "_batched" if self.batched else "_gather" if self.gather else ""
        return f"spmm_{detail}_{self.values}_{shape}{suffix}{portable}{variant}"

    def gather_applies(self, nonzeros: int) -> bool:
        """Whether a bitmask weight with `nonzeros` non-zeros runs one batch row faster
        through the gather variant: float16 values on AVX-512, sparse enough
        (GATHER_MAX_DENSITY), and columns that fit the record's 24-bit field."""
        return (
            self.kind == "bitmask"
            and self.avx512
            and self.native_f16
            and self.values == "f16"
            and self.cols <= 1 << 24
            and nonzeros <= GATHER_MAX_DENSITY * self.rows * self.cols
        )

    @property
    def position_bits(self) -> int:
        return math.ceil(math.log2(self.m)) if self.m > 1 else 0

    @property
    def mask_words(self) -> int:
        """16-bit mask words per row of a bitmask weight: rows are padded to whole
        64-bit steps, so a kernel can read four words at once."""
        return 4 * math.ceil(self.cols / 64)

    @property
    def panel_columns(self) -> int:
        """Columns per panel: batched kernels take the weight a panel at a time, so the
        inputs they read (panel x batch floats) stay in L1. Bitmask rows keep a value
        offset per panel; n:m panels hold whole runs (else there is one panel)."""
        if self.kind == "bitmask" or (self.kind == "nm" and PANEL % self.m == 0):
            return PANEL
        return self.cols

    @property
    def panels(self) -> int:
        return math.ceil(self.cols / self.panel_columns)

    @property
    def nm_lanes(self) -> bool:
        """Whether the n:m kernel maps runs onto 16-lane vectors: m and the kept values
        per run divide 16, float16 values, an AVX-512 target, and at least one whole step."""
        kept = self.m - self.n
        return (
            self.kind == "nm"
            and self.avx512
            and self.values == "f16"
            and 16 % self.m == 0
            and 16 % kept == 0
            and self.cols >= self.nm_span
        )

    @property
    def nm_span(self) -> int:
        """Columns one vector of 16 kept values covers."""
        return 16 * self.m // (self.m - self.n)

    @property
    def nm_word_bits(self) -> int:
        """Bits of the word holding one step's 16 positions: 32, or 64 for m > 4."""
        return 32 if 16 * self.position_bits <= 32 else 64

    @property
    def parallel_units(self) -> int:
        """How many units [begin, end) ranges over: rows, or row blocks."""
        return math.ceil(self.rows / self.block) if self.kind == "block" else self.rows


def epilogue_name(bias: bool, activation: str | None) -> str:
    """The epilogue that adds a bias (or not), then applies `activation` (or none)."""
    return "_".join((["bias"] if bias else []) + ([activation] if activation else [])) or "none"


def epilogue_activation(epilogue: str) -> str | None:
    """The activation an epilogue applies: one of ACTIVATIONS, or None."""
    last = epilogue.rsplit("_", 1)[-1]
    return last if last in ACTIVATIONS else None


def key_for(weight: PackedWeightOp, transposed: bool, kind: str, epilogue: str) -> KernelKey:
    """The key of a kernel of `kind` reading `weight` in its (out, in) view.

    `transposed` says the weight is stored (in, out); Conv weights flatten to
    (out, in * kernel).
    """
    shape = weight.tensor_type.get_shape()
    rows, cols = (shape[1], shape[0]) if transposed else (shape[0], math.prod(shape[1:]))
    encoding = weight.encoding
    return KernelKey(
        kind,
        rows,
        cols,
        values="f16" if encoding.values == f16 else "f32",
        n=encoding.n.data if kind == "nm" else 0,
        m=encoding.m.data if kind == "nm" else 0,
        block=encoding.block_size.data if kind == "block" else 0,
        epilogue=epilogue,
    )
