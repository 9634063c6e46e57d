"""Tensor bytes <-> builtin types and `dense<...>` literals, bit-exact.

xDSL prints float elements with six digits, which loses bits. Inline weights are
printed here instead with the shortest decimal that reads back to the same value,
and in hexadecimal (`dense<"0x...">`) when no decimal form is exact (NaN payloads,
infinities, a float that does not survive the parser's rounding).
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import (
    BytesAttr,
    DenseIntOrFPElementsAttr,
    Float16Type,
    Float32Type,
    Float64Type,
    IntegerType,
    Signedness,
    TensorType,
    f16,
    f32,
    f64,
    i1,
    i8,
    i16,
    i32,
    i64,
)
from xdsl.ir import Attribute

from sparsec.errors import WeightStoreError

_NUMPY_TO_IR: dict[np.dtype, Attribute] = {
    np.dtype(np.float16): f16,
    np.dtype(np.float32): f32,
    np.dtype(np.float64): f64,
    np.dtype(np.int8): i8,
    np.dtype(np.int16): i16,
    np.dtype(np.int32): i32,
    np.dtype(np.int64): i64,
    np.dtype(np.uint8): IntegerType(8, Signedness.UNSIGNED),
    np.dtype(np.bool_): i1,
}


def ir_element_type(dtype: np.dtype) -> Attribute:
    try:
        return _NUMPY_TO_IR[np.dtype(dtype)]
    except KeyError:
        supported = ", ".join(str(d) for d in _NUMPY_TO_IR)
        raise WeightStoreError(
            f"tensors of dtype {np.dtype(dtype)} are not supported (supported: {supported})"
        ) from None


def numpy_dtype(element_type: Attribute) -> np.dtype:
    for dtype, ir_type in _NUMPY_TO_IR.items():
        if ir_type == element_type:
            return dtype
    raise WeightStoreError(f"element type {element_type} has no numpy counterpart")


def tensor_type_of(array: np.ndarray) -> TensorType:
    return TensorType(ir_element_type(array.dtype), array.shape)


def dense_from_array(array: np.ndarray) -> DenseIntOrFPElementsAttr:
    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    return DenseIntOrFPElementsAttr(tensor_type_of(array), BytesAttr(array.tobytes(order="C")))


def array_from_dense(attr: DenseIntOrFPElementsAttr) -> np.ndarray:
    ty = attr.type
    assert isinstance(ty, TensorType)
    dtype = numpy_dtype(ty.element_type)
    shape = ty.get_shape()
    raw = np.frombuffer(attr.data.data, dtype=np.uint8 if dtype == np.bool_ else dtype)
    if raw.size == 1 and int(np.prod(shape)) != 1:
        raw = np.broadcast_to(raw, (int(np.prod(shape)),))
    return raw.astype(dtype).reshape(shape)


def _element_text(value: np.generic) -> str:
    if isinstance(value, np.floating):
        # MLIR float literals need a '.' in the mantissa: 1e-30 -> 1.0e-30.
        mantissa, e, exponent = str(value).partition("e")
        if "." not in mantissa:
            mantissa += ".0"
        return mantissa + e + exponent
    if isinstance(value, np.bool_):
        return "true" if value else "false"
    return str(int(value))


def _reads_back(array: np.ndarray, texts: list[str]) -> bool:
    """True when the parser (Python float, then the element width) restores `array`."""
    if not np.issubdtype(array.dtype, np.floating):
        return True
    parsed = np.array([float(t) for t in texts], dtype=np.float64).astype(array.dtype)
    return parsed.tobytes() == array.reshape(-1).tobytes()


def _nested(texts: list[str], shape: tuple[int, ...]) -> str:
    if not shape:
        return texts[0]
    step = len(texts) // shape[0] if shape[0] else 0
    inner = [_nested(texts[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]
    return "[" + ", ".join(inner) + "]"


def format_dense(attr: DenseIntOrFPElementsAttr) -> str:
    """`dense<...> ` literal text (without the type) that parses back bit for bit."""
    array = array_from_dense(attr)
    flat = array.reshape(-1)
    if flat.size and np.issubdtype(array.dtype, np.floating) and not np.isfinite(flat).all():
        return f'dense<"0x{array.tobytes().hex().upper()}">'
    texts = [_element_text(v) for v in flat]
    if not flat.size or not _reads_back(array, texts):
        return f'dense<"0x{array.tobytes().hex().upper()}">'
    if flat.size > 1 and len(set(texts)) == 1:
        return f"dense<{texts[0]}>"
    return f"dense<{_nested(texts, array.shape)}>"


def is_float_type(element_type: Attribute) -> bool:
    return isinstance(element_type, Float16Type | Float32Type | Float64Type)
