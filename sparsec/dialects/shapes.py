"""Shape arithmetic shared by the `nn` ops' verifiers and shape inference.

A shape is a tuple of ints where `DYNAMIC` (xDSL's `DYNAMIC_INDEX`, printed `?`)
stands for a dimension only known at run time. Every function either returns the inferred shape or raises
`ShapeError` with a message that says which dimensions disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from xdsl.dialects.builtin import DYNAMIC_INDEX

DYNAMIC = DYNAMIC_INDEX
Shape = tuple[int, ...]


class ShapeError(ValueError):
    """Operand shapes that no ONNX semantics can reconcile."""


def is_dynamic(dim: int) -> bool:
    return dim == DYNAMIC


def compatible(a: Shape, b: Shape) -> bool:
    """Equal rank, and every pair of static dimensions agrees."""
    return len(a) == len(b) and all(
        x == y or is_dynamic(x) or is_dynamic(y) for x, y in zip(a, b)
    )


def fmt(shape: Shape) -> str:
    return "x".join("?" if is_dynamic(d) else str(d) for d in shape) or "scalar"


def broadcast(*shapes: Shape) -> Shape:
    """Multidirectional (numpy) broadcasting, as ONNX Add/Mul/Sum define it."""
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    result: list[int] = []
    for axis, dims in enumerate(zip(*padded)):
        static = {d for d in dims if not is_dynamic(d) and d != 1}
        if len(static) > 1:
            raise ShapeError(
                f"shapes {', '.join(fmt(s) for s in shapes)} do not broadcast "
                f"(dimension {axis}: {sorted(static)})"
            )
        if static:
            result.append(static.pop())
        elif any(is_dynamic(d) for d in dims):
            result.append(DYNAMIC)
        else:
            result.append(1)
    return tuple(result)


def normalize_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank


def product(dims: Sequence[int]) -> int:
    """Product of dimensions, dynamic if any of them is."""
    if any(is_dynamic(d) for d in dims):
        return DYNAMIC
    return math.prod(dims)


def resolve_pads(
    auto_pad: str,
    spatial: Shape,
    kernel: Shape,
    strides: Shape,
    dilations: Shape,
    pads: Shape,
) -> Shape:
    """Explicit (begin..., end...) pads for ONNX's auto_pad modes.

    SAME_UPPER puts the odd padding at the end, SAME_LOWER at the beginning.
    """
    rank = len(spatial)
    if auto_pad in ("NOTSET", ""):
        return tuple(pads) if pads else (0,) * (2 * rank)
    if auto_pad == "VALID":
        return (0,) * (2 * rank)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ShapeError(
            f"auto_pad '{auto_pad}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID"
        )
    begin: list[int] = []
    end: list[int] = []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        if is_dynamic(size):
            raise ShapeError(f"auto_pad {auto_pad} needs static spatial sizes")
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return tuple(begin + end)


def window_output(
    spatial: Shape,
    kernel: Shape,
    strides: Shape,
    dilations: Shape,
    pads: Shape,
    ceil_mode: bool = False,
) -> Shape:
    """Output spatial sizes of a convolution or pooling window."""
    rank = len(spatial)
    out: list[int] = []
    for i, (size, k, s, d) in enumerate(zip(spatial, kernel, strides, dilations)):
        if is_dynamic(size):
            out.append(DYNAMIC)
            continue
        span = size + pads[i] + pads[i + rank] - ((k - 1) * d + 1)
        if span < 0:
            raise ShapeError(
                f"window of size {k} (dilation {d}) does not fit spatial size {size} "
                f"with pads {pads[i]}, {pads[i + rank]}"
            )
        steps = -(-span // s) if ceil_mode else span // s
        if ceil_mode and steps * s >= size + pads[i]:
            # ONNX drops a last window that would start inside the end padding.
            steps -= 1
        out.append(steps + 1)
    return tuple(out)
