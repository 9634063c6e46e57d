"""Where an ONNX file keeps its initializers' bytes, found without parsing them.

`onnx.load` parses a whole file into protobuf messages, so every embedded weight sits
in the message arena while the importer makes its array: twice the weights at the
peak, however many fields are cleared afterwards (the arena is freed whole). Instead,
`split_raw_data` walks the protobuf wire format (tags and lengths only, through a
read-only memory map, so the weights' pages are never read) and returns a *skeleton*:
the file's bytes with the `raw_data` of each initializer left out, which protobuf
parses into a small ModelProto, and where each left-out field lay, so the importer
reads those bytes from the file straight into their arrays.

Only `ModelProto.graph` -> `GraphProto.initializer` -> `TensorProto.raw_data` is
rewritten, and only for types whose raw bytes are a plain little-endian array
(`PLAIN_TYPES`); every other field is copied as it is, so the skeleton parses to the
same message minus those bytes. A file the walk cannot follow raises `WireError`; the
importer then hands it to `onnx.load`, which reports what is wrong with it.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from onnx import TensorProto

MODEL_GRAPH, GRAPH_INITIALIZER, TENSOR_DATA_TYPE, TENSOR_RAW_DATA = 7, 5, 2, 9
"""Field numbers in onnx.proto."""
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
"""Protobuf wire types (the group types 3 and 4 do not occur in ONNX)."""

PLAIN_TYPES = frozenset(
    {
        TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BOOL,
        TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
        TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64,
    }
)  # fmt: skip
"""Element types read in place; others (bfloat16, float8, 4-bit) go through onnx."""


class WireError(ValueError):
    """The bytes are not protobuf this walk can follow."""


@dataclass(frozen=True)
class Span:
    """Bytes [offset, offset + length) of the file."""

    offset: int
    length: int


@dataclass(frozen=True)
class _Field:
    number: int
    wire: int
    start: int
    """Where the field's tag starts."""
    value: int
    """Where its value starts (after the length, for a length-delimited field)."""
    end: int


def _varint(data: mmap.mmap | bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at `pos`, and where it ends."""
    result = shift = 0
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise WireError(f"unterminated varint before byte {pos}")


def _fields(data: mmap.mmap | bytes, start: int, end: int) -> Iterator[_Field]:
    """The fields of the message in data[start:end], in order."""
    pos = start
    while pos < end:
        tag, value = _varint(data, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == VARINT:
            value_end = _varint(data, value, end)[1]
        elif wire == LENGTH_DELIMITED:
            length, value = _varint(data, value, end)
            value_end = value + length
        elif wire in (FIXED64, FIXED32):
            value_end = value + (8 if wire == FIXED64 else 4)
        else:
            raise WireError(f"wire type {wire} at byte {pos}")
        if number == 0 or value_end > end:
            raise WireError(f"field {number} at byte {pos} runs past its message")
        yield _Field(number, wire, pos, value, value_end)
        pos = value_end


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | LENGTH_DELIMITED) + _encode_varint(len(payload)) + payload


def split_raw_data(data: mmap.mmap | bytes) -> tuple[bytes, list[Span | None]]:
    """The skeleton of the ModelProto in `data`, and for each initializer of its graph,
    in order, where its left-out raw bytes lie (None: it kept them, or had none)."""
    spans: list[Span | None] = []

    def initializer(tensor: _Field) -> bytes:
        kept, span = _tensor(data, tensor)
        spans.append(span)
        return kept

    def graph(field: _Field) -> bytes:
        return _rewritten(data, field.value, field.end, GRAPH_INITIALIZER, initializer)

    return _rewritten(data, 0, len(data), MODEL_GRAPH, graph), spans


def _rewritten(data: mmap.mmap | bytes, start: int, end: int, number: int, rewrite: Callable[[_Field], bytes]) -> bytes:
    """The message in data[start:end] with each length-delimited field `number`
    replaced by rewrite(field) (re-framed with its new length); other fields as they are."""
    out = bytearray()
    for field in _fields(data, start, end):
        if field.number == number and field.wire == LENGTH_DELIMITED:
            out += _length_delimited(number, rewrite(field))
        else:
            out += data[field.start : field.end]
    return bytes(out)


def _tensor(data: mmap.mmap | bytes, tensor: _Field) -> tuple[bytes, Span | None]:
    """A TensorProto without its raw data (when the type is plain), and where it lay.
    Protobuf keeps the last value of a field that occurs more than once; so does this."""
    fields = list(_fields(data, tensor.value, tensor.end))
    raw = [f for f in fields if f.number == TENSOR_RAW_DATA and f.wire == LENGTH_DELIMITED]
    types = [f for f in fields if f.number == TENSOR_DATA_TYPE and f.wire == VARINT]
    if not raw or not types or _varint(data, types[-1].value, types[-1].end)[0] not in PLAIN_TYPES:
        return data[tensor.value : tensor.end], None
    kept = b"".join(data[f.start : f.end] for f in fields if f not in raw)
    return kept, Span(raw[-1].value, raw[-1].end - raw[-1].value)
