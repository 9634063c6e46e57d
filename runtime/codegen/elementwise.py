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
"""

from __future__ import annotations

import math

from xdsl.dialects import llvm
from xdsl.ir import SSAValue

from sparsec.runtime.codegen.builder import FunctionBuilder

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
