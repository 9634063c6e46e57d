"""Element-wise functions for kernel epilogues, on scalars or vectors of f32, in plain
LLVM arithmetic: no libm calls (nothing for the JIT to resolve) and vectorizable.

Gelu is ONNX's exact form, 0.5 x (1 + erf(x / sqrt 2)), with Abramowitz and Stegun's
erf 7.1.26 (absolute error under 1.5e-7; 4.7e-7 evaluated in f32). Gelu only needs erf's absolute error
to be small (it adds erf to 1), so unlike the reference interpreter's erf
(sparsec/reference.py) there is no separate series for small |x|; and the shortest
such form keeps the kernels that fuse Gelu quick to compile.
"""

from __future__ import annotations

import math

from xdsl.dialects import llvm
from xdsl.dialects.builtin import VectorType, i32
from xdsl.ir import SSAValue

from sparsec.runtime.codegen.builder import FunctionBuilder

_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
_ROUNDING = 12582912.0  # 1.5 * 2^23: adding it rounds an f32 of magnitude < 2^22 to an integer


def _int_type(b: FunctionBuilder, x: SSAValue):
    return VectorType(i32, x.type.get_shape()) if isinstance(x.type, VectorType) else i32  # pyright: ignore


def exp(b: FunctionBuilder, x: SSAValue) -> SSAValue:
    """e^x for x >= -87 (inputs below are clamped there; the callers' arguments are
    at most 0): 2^n * 2^f with n the nearest integer to x log2 e and a degree-6
    polynomial for 2^f, |f| <= 1/2 (relative error about 1e-7)."""
    x = b.fmax(x, b.like(-87.0, x))
    scaled = b.fmul(x, b.like(1 / math.log(2), x))
    shifted = b.fadd(scaled, b.like(_ROUNDING, x))
    whole = b.fsub(shifted, b.like(_ROUNDING, x))
    fraction = b.fmul(b.fsub(scaled, whole), b.like(math.log(2), x))
    power = b.like(1 / math.factorial(6), x)
    for k in range(5, -1, -1):
        power = b.fmuladd(power, fraction, b.like(1 / math.factorial(k), x))
    ints = _int_type(b, x)
    # The low mantissa bits of `shifted` hold n (plus the constant's own bits).
    n = b.sub(b.bitcast(shifted, ints), b.bitcast(b.like(_ROUNDING, x), ints))
    exponent = b.shl(b.add(n, b.like(127, n, i32)), b.like(23, n, i32))
    return b.fmul(power, b.bitcast(exponent, x.type))


def erf(b: FunctionBuilder, x: SSAValue) -> SSAValue:
    """erf to within 1.5e-7 absolute: 1 - t (a1 + t (a2 + ... a5 t)) e^(-x^2) with
    t = 1 / (1 + p |x|), odd by its sign."""
    z = b.emit(llvm.FAbsOp(x, x.type))
    t = b.fdiv(b.like(1.0, x), b.fadd(b.like(1.0, x), b.fmul(b.like(_ERF_P, x), z)))
    poly = b.like(_ERF_A[-1], x)
    for coefficient in reversed(_ERF_A[:-1]):
        poly = b.fmuladd(poly, t, b.like(coefficient, x))
    decay = exp(b, b.fmul(b.fmul(z, z), b.like(-1.0, x)))
    magnitude = b.fsub(b.like(1.0, x), b.fmul(b.fmul(poly, t), decay))
    return b.emit(llvm.FCopySignOp(magnitude, x))


def gelu(b: FunctionBuilder, x: SSAValue) -> SSAValue:
    half = b.fmul(x, b.like(0.5, x))
    return b.fmul(half, b.fadd(b.like(1.0, x), erf(b, b.fmul(x, b.like(1 / math.sqrt(2), x)))))
