"""Element-wise functions for kernel epilogues, on scalars or vectors of f32, in plain
LLVM arithmetic: no libm calls (nothing for the JIT to resolve) and vectorizable.

Gelu is ONNX's exact form, 0.5 x (1 + erf(x / sqrt 2)). erf is the rational
approximation Eigen and XLA use for float32: x P(x^2) / Q(x^2) on x clamped to [-4, 4]
(beyond, erf rounds to +-1 in float32), with P of degree 6 and Q of degree 4 in x^2.
Evaluated in f32 its absolute error stays under 4.2e-7 (Abramowitz and Stegun's 7.1.26,
used before, reached 5.3e-7 and needed an exp), and it is 15 operations: the kernels
that fuse Gelu compile sooner. Unlike the reference interpreter's erf
(sparsec/reference.py) it has no separate series for small |x|: Gelu adds erf to 1, so
only its absolute error matters.

Swish with alpha 1 (SiLU, LLaMA's gated MLP) is x / (1 + e^-x), with the exp below: for x
under -88.4 e^-x clamps to e^88.4 and the quotient rounds to -0 or a tiny negative; for x
above 87.3 e^-x is 0 and the quotient is x. GELU's tanh approximation (GPT-2's) is the
same form, x / (1 + e^(-2z)) for its tanh's argument z, since 0.5 (1 + tanh z) =
sigmoid(2z).

exp (for Softmax and Swish) is Cephes' expf, as Eigen writes it for vectors: x = n ln 2
+ r with n = round(x / ln 2) and |r| <= ln 2 / 2 (ln 2 in two parts, so r is exact),
e^r by a degree-7 polynomial, and 2^n by writing n + 127 into the exponent bits. Its
error is within 1.3 ulp (the algorithm in numpy over 2 million points from -87.3 to 88.3;
numpy's float32 exp: 2.3 ulp). Inputs below EXP_LOWEST give 0 (float32 would give a subnormal,
under 1.2e-38), inputs above 88.376 give e^88.376 (Softmax's are at most 0), and NaN
stays NaN.
"""

from __future__ import annotations

import math

from xdsl.dialects import llvm
from xdsl.dialects.builtin import VectorType, i32
from xdsl.ir import SSAValue

from sparsec.runtime.codegen.builder import FunctionBuilder, vector

_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)  # fmt: skip
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03, -1.42647390514189e-02)
"""Coefficients of P and Q in x^2, highest degree first."""


def _polynomial(b: FunctionBuilder, coefficients: tuple[float, ...], x: SSAValue) -> SSAValue:
    """sum c_i x^(n - i) by Horner's rule, one multiply-add per coefficient after the first."""
    value = b.like(coefficients[0], x)
    for coefficient in coefficients[1:]:
        value = b.fmuladd(value, x, b.like(coefficient, x))
    return value


def erf(b: FunctionBuilder, x: SSAValue) -> SSAValue:
    """erf to within 4.2e-7 absolute: x P(x^2) / Q(x^2), x clamped to [-4, 4]."""
    clamped = b.emit(llvm.VectorFMinOp(b.fmax(x, b.like(-4.0, x)), b.like(4.0, x)))
    square = b.fmul(clamped, clamped)
    return b.fdiv(b.fmul(clamped, _polynomial(b, _ERF_P, square)), _polynomial(b, _ERF_Q, square))


def gelu(b: FunctionBuilder, x: SSAValue) -> SSAValue:
    half = b.fmul(x, b.like(0.5, x))
    return b.fmul(half, b.fadd(b.like(1.0, x), erf(b, b.fmul(x, b.like(1 / math.sqrt(2), x)))))


TANH_CUBIC = 0.044715
"""The cubic term's factor in GELU's tanh approximation."""
EXP_LOWEST = -87.33654
"""ln of float32's smallest normal: exp of anything lower is 0 here."""
_EXP_HIGHEST = 88.37626
"""The largest input whose exponent n (127) is a normal float32's."""
_LN2_HIGH, _LN2_LOW = 0.693359375, -2.12194440e-4
"""ln 2 as a float with few mantissa bits (n x it is exact) plus the rest."""
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
"""e^r = 1 + r + r^2 P(r) on |r| <= ln 2 / 2, P's coefficients highest degree first."""
_ROUNDING = 12582912.0
"""1.5 x 2^23: adding it rounds a float of magnitude under 2^22 to an integer, which
its low mantissa bits then hold."""


def swish(b: FunctionBuilder, x: SSAValue) -> SSAValue:
    """x sigmoid(x) = x / (1 + e^-x)."""
    return _over_one_plus_exp(b, x, b.fsub(b.like(0.0, x), x))


def tanh_gelu(b: FunctionBuilder, x: SSAValue) -> SSAValue:
    """GELU's tanh approximation, 0.5 x (1 + tanh(z)) with z = sqrt(2 / pi) (x + 0.044715
    x^3), as x sigmoid(2z) = x / (1 + e^(-2z)): one exp, no cancellation near 0."""
    cubic = b.fmuladd(b.fmul(x, x), b.like(TANH_CUBIC, x), b.like(1.0, x))
    return _over_one_plus_exp(b, x, b.fmul(b.fmul(x, cubic), b.like(-2 * math.sqrt(2 / math.pi), x)))


def _over_one_plus_exp(b: FunctionBuilder, x: SSAValue, power: SSAValue) -> SSAValue:
    """x / (1 + e^power)."""
    return b.fdiv(x, b.fadd(b.like(1.0, x), exp(b, power)))


def exp(b: FunctionBuilder, x: SSAValue) -> SSAValue:
    """e^x within 1.3 ulp, for f32 scalars or vectors (see the module docstring)."""
    clamped = b.select(b.fcmp("ogt", x, b.like(_EXP_HIGHEST, x)), b.like(_EXP_HIGHEST, x), x)
    clamped = b.select(b.fcmp("olt", clamped, b.like(EXP_LOWEST, x)), b.like(EXP_LOWEST, x), clamped)
    shifted = b.fmuladd(clamped, b.like(1 / math.log(2), x), b.like(_ROUNDING, x))
    n = b.fsub(shifted, b.like(_ROUNDING, x))
    r = b.fmuladd(n, b.like(-_LN2_HIGH, x), clamped)
    r = b.fmuladd(n, b.like(-_LN2_LOW, x), r)
    p = b.fmuladd(_polynomial(b, _EXP_P, r), b.fmul(r, r), b.fadd(r, b.like(1.0, x)))
    bits = b.bitcast(shifted, vector(i32, x.type.get_shape()[0]) if isinstance(x.type, VectorType) else i32)  # n in the low bits
    two_to_n = b.add(b.shl(bits, b.like(23, bits)), b.like(127 << 23, bits))
    result = b.fmul(p, b.bitcast(two_to_n, x.type))
    return b.select(b.fcmp("olt", x, b.like(EXP_LOWEST, x)), b.like(0.0, x), result)

