"""The reference interpreter: runs `nn` IR op by op with numpy.

It is the oracle that every pass and kernel is checked against, so it favours
plain, obviously correct numpy over speed: ONNX semantics, float32 in, float32 out.
Convolutions use im2col views (`sliding_window_view`) and pooling one strided slice
per kernel offset, so that the onnx wheel's light models run in seconds (the executor
also runs the ops it has no kernel for here).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, NameLoc, TensorType
from xdsl.ir import Operation, SSAValue

from sparsec.dialects import nn, nn_index
from sparsec.dialects.kernel_ops import SparseConvOp, SparseMatMulOp
from sparsec.dialects.literals import numpy_dtype
from sparsec.dialects.nn import ints_of
from sparsec.dialects.shapes import DYNAMIC, window_output
from sparsec.errors import ExecutionError, SparsecError
from sparsec.kernels import epilogue_activation
from sparsec.dialects import StoredWeightOp
from sparsec.layers import dense_value
from sparsec.weights import WeightStore

NAME_ATTR = "sparsec.name"


def main_function(module: ModuleOp) -> func.FuncOp:
    for op in module.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == "main":
            return op
    raise SparsecError("the module has no func.func @main to run")


def _names(attrs, count: int, prefix: str) -> list[str]:
    names: list[str] = []
    for index in range(count):
        entry = attrs.data[index].data.get(NAME_ATTR) if attrs is not None else None
        names.append(entry.data if entry is not None else f"{prefix}{index}")
    return names


def input_names(function: func.FuncOp) -> list[str]:
    return _names(function.arg_attrs, len(function.args), "arg")


def output_names(function: func.FuncOp) -> list[str]:
    return _names(function.res_attrs, len(function.function_type.outputs.data), "result")


@dataclass
class FeedCheck:
    """What `@main` takes, read from its signature once: names, dtypes and shapes."""

    names: tuple[str, ...]
    types: tuple[TensorType, ...]
    dtypes: tuple[np.dtype, ...]
    shapes: tuple[tuple[int, ...], ...]
    accepted: tuple[tuple[int, ...], ...] | None = None
    """The shapes of the last feeds that passed: feeds of the same names, arrays of
    the same dtypes and shapes pass again without the whole check (an executor's run
    costs a few microseconds of Python besides its kernels; the check took 20 us)."""

    @staticmethod
    def of(function: func.FuncOp) -> FeedCheck:
        types = tuple(arg.type for arg in function.args)
        assert all(isinstance(ty, TensorType) for ty in types)
        dtypes = tuple(numpy_dtype(ty.element_type) for ty in types)  # pyright: ignore
        shapes = tuple(tuple(ty.get_shape()) for ty in types)  # pyright: ignore
        return FeedCheck(tuple(input_names(function)), types, dtypes, shapes)  # pyright: ignore

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The feeds in argument order, after checking names, ranks, sizes and dtypes."""
        if self.accepted is not None and len(feeds) == len(self.names):
            arrays = [feeds.get(name) for name in self.names]
            if all(type(a) is np.ndarray and a.dtype == d and a.shape == s for a, d, s in zip(arrays, self.dtypes, self.accepted)):
                return arrays  # pyright: ignore
        arrays = self._checked(feeds)
        self.accepted = tuple(array.shape for array in arrays)
        return arrays

    def _checked(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        unknown = sorted(set(feeds) - set(self.names))
        if unknown:
            raise ExecutionError(f"unknown input(s) {', '.join(unknown)}; the model's inputs are {', '.join(self.names)}")
        arrays: list[np.ndarray] = []
        for name, ty, expected, shape in zip(self.names, self.types, self.dtypes, self.shapes):
            if name not in feeds:
                raise ExecutionError(f"missing input '{name}' (expected {ty})")
            array = np.asarray(feeds[name])
            if array.dtype != expected:
                raise ExecutionError(f"input '{name}' has dtype {array.dtype}, expected {expected}")
            if array.ndim != len(shape) or any(d not in (DYNAMIC, a) for d, a in zip(shape, array.shape)):
                raise ExecutionError(f"input '{name}' has shape {array.shape}, expected {ty}")
            arrays.append(array)
        return arrays


def check_feeds(function: func.FuncOp, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The feeds in argument order, after checking names, ranks, sizes and dtypes."""
    return FeedCheck.of(function)(feeds)


def _gemm(op: nn.GemmOp, a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
    a = a.T if op.trans_a.value.data else a
    b = b.T if op.trans_b.value.data else b
    alpha, beta = op.alpha.value.data, op.beta.value.data
    y = a @ b
    if alpha != 1.0:  # scaling by 1 changes nothing, and costs a pass over y
        y *= np.float32(alpha)
    if c is not None:
        y += c if beta == 1.0 else c * np.float32(beta)
    return y


def _windows(x: np.ndarray, kernel: tuple[int, ...], strides, dilations) -> np.ndarray:
    """(N, C, *out_spatial, *kernel) view of the already padded input."""
    rank = len(kernel)
    spans = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))
    view = sliding_window_view(x, spans, axis=tuple(range(2, 2 + rank)))
    index = (slice(None), slice(None))
    index += tuple(slice(None, None, s) for s in strides)
    index += tuple(slice(None, None, d) for d in dilations)
    return view[index]


def _pad(x: np.ndarray, pads: tuple[int, ...], value: float, extra_end: tuple[int, ...] = ()) -> np.ndarray:
    """x padded with `value` on its spatial axes (x itself without pads), in x's own
    memory layout: a kernel's output is channels-last in memory, and np.pad's
    channels-first copy of it cost as much as the pooling after it."""
    rank = len(pads) // 2
    extra_end = extra_end or (0,) * rank
    if not any(pads) and not any(extra_end):
        return x
    ends = [pads[i + rank] + extra_end[i] for i in range(rank)]
    padded = np.empty_like(x, shape=(*x.shape[:2], *(size + pads[i] + ends[i] for i, size in enumerate(x.shape[2:]))))
    padded.fill(value)
    padded[(slice(None), slice(None), *(slice(pads[i], pads[i] + size) for i, size in enumerate(x.shape[2:])))] = x
    return padded


def _conv(op: nn.ConvolutionOp, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    kernel = tuple(w.shape[2:])
    strides, dilations, pads = op.geometry(x.shape, kernel)
    n, group = x.shape[0], op.group.value.data
    cg, mg = w.shape[1], w.shape[0] // group
    if cg == 1:
        y = _depthwise_conv(_pad(x, pads, 0.0), w, mg, kernel, strides, dilations)
        return y if b is None else y + b.reshape(-1, *(1,) * len(kernel))
    cols = _windows(_pad(x, pads, 0.0), kernel, strides, dilations)
    rank = len(kernel)
    out_spatial = cols.shape[2 : 2 + rank]
    # (G, Mg, Cg x k) times (N, G, Cg x k, P): the product comes out channels first, and
    # a 1x1 window's columns are the input itself (a view, no copy).
    cols = cols.reshape(n, group, cg, *out_spatial, *kernel)
    cols = np.moveaxis(cols, tuple(range(3 + rank, 3 + 2 * rank)), tuple(range(3, 3 + rank)))  # (N, G, Cg, *k, *out)
    cols = cols.reshape(n, group, cg * math.prod(kernel), math.prod(out_spatial))
    y = np.matmul(w.reshape(group, mg, -1), cols).reshape(n, group * mg, *out_spatial)
    if b is not None:
        y = y + b.reshape(-1, *(1,) * len(kernel))
    return y


def _depthwise_conv(x: np.ndarray, w: np.ndarray, multiplier: int, kernel: tuple[int, ...], strides, dilations) -> np.ndarray:
    """A convolution with one input channel per group (depthwise; `multiplier` output
    channels per input channel) on the already padded input: a multiply-add of whole
    arrays per kernel offset (`_taps`). As a batched matrix product of (positions x 9)
    by (9 x 1) per channel, ShuffleNet's 16 depthwise 3x3 convolutions took 24 ms of
    its 33; now 14 (numpy's passes over the whole arrays bound it)."""
    if multiplier > 1:
        x = np.repeat(x, multiplier, axis=1)  # output channel g * multiplier + j reads input channel g
    y = None
    for offset, part in _taps(x, kernel, strides, dilations):
        term = part * w[(slice(None), 0, *offset)].reshape(-1, *(1,) * len(kernel))
        y = term if y is None else np.add(y, term, out=y)
    return y  # pyright: ignore


def _ceil_extra(x_spatial, kernel, strides, dilations, pads, ceil_mode: bool) -> tuple[int, ...]:
    """End padding that ceil_mode needs so the last partial window exists."""
    if not ceil_mode:
        return (0,) * len(kernel)
    out = window_output(x_spatial, kernel, strides, dilations, pads, True)
    rank = len(kernel)
    extra = []
    for i, (size, k, s, d, o) in enumerate(zip(x_spatial, kernel, strides, dilations, out)):
        needed = (o - 1) * s + (k - 1) * d + 1
        extra.append(max(0, needed - (size + pads[i] + pads[i + rank])))
    return tuple(extra)


def _pool_geometry(op: nn.PoolOp, x: np.ndarray):
    kernel = ints_of(op.kernel_shape)
    strides, dilations, pads = op.geometry(x.shape, kernel)
    extra = _ceil_extra(x.shape[2:], kernel, strides, dilations, pads, bool(op.ceil_mode.value.data))
    return kernel, strides, dilations, pads, extra


def _taps(x: np.ndarray, kernel: tuple[int, ...], strides, dilations) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """Each kernel offset and the strided slice (N, C, *out_spatial) of the already
    padded input that the offset reads in every window."""
    out = [(size - (k - 1) * d - 1) // s + 1 for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations)]
    for offset in itertools.product(*(range(k) for k in kernel)):
        index = tuple(slice(o * d, o * d + (n - 1) * s + 1, s) for o, d, s, n in zip(offset, dilations, strides, out))
        yield offset, x[(slice(None), slice(None), *index)]


def _window_reduce(x: np.ndarray, kernel: tuple[int, ...], strides, dilations, reduce: np.ufunc) -> np.ndarray:
    """`reduce` (np.maximum, np.add) over every window of the already padded input,
    (N, C, *out_spatial): one whole-array step per kernel offset (`_taps`). Reducing a
    window view over its small trailing axes went element by element: SqueezeNet's
    three 3x3 max pools took 41 ms of its 65 in the executor, onnxruntime's whole
    model 4.7."""
    result = None
    for _, part in _taps(x, kernel, strides, dilations):
        result = np.array(part, order="K") if result is None else reduce(result, part, out=result)  # in x's layout
    return result  # pyright: ignore


def _max_pool(op: nn.MaxPoolOp, x: np.ndarray) -> np.ndarray:
    kernel, strides, dilations, pads, extra = _pool_geometry(op, x)
    # Padded with the lowest finite value, as onnxruntime does: a window wholly in the
    # padding gives it, not -inf.
    return _window_reduce(_pad(x, pads, np.finfo(x.dtype).min, extra), kernel, strides, dilations, np.maximum)


def _average_pool(op: nn.AveragePoolOp, x: np.ndarray) -> np.ndarray:
    kernel, strides, dilations, pads, extra = _pool_geometry(op, x)
    sums = _window_reduce(_pad(x, pads, 0.0, extra), kernel, strides, dilations, np.add)
    return (sums / pool_counts(op, x)).astype(x.dtype)


def pool_counts(op: nn.AveragePoolOp, x: np.ndarray) -> np.ndarray:
    """The divisor of each output of an average pool of x, (1, 1, *out_spatial): the
    inputs its window covers, explicit pads included when the op counts them (the
    extra end that ceil_mode adds never counts)."""
    kernel, strides, dilations, pads, extra = _pool_geometry(op, x)
    ones = np.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
    if op.count_include_pad.value.data:
        return _window_reduce(_pad(_pad(ones, pads, 1.0), (0,) * len(pads), 0.0, extra), kernel, strides, dilations, np.add)
    return _window_reduce(_pad(ones, pads, 0.0, extra), kernel, strides, dilations, np.add)


def batch_norm_affine(op: nn.BatchNormOp, scale, b, mean, var) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel scale and shift a normalization applies, x * inv + shift:
    inv = scale / sqrt(var + epsilon) and shift = b - mean * inv, in the parameters'
    own float type (the executor's and fold-batch-norm's folds compute it the same way)."""
    inv = scale / np.sqrt(var + scale.dtype.type(op.epsilon.value.data))
    return inv, b - mean * inv


def _batch_norm(op: nn.BatchNormOp, x, scale, b, mean, var) -> np.ndarray:
    """x * inv + shift: two passes over x where (x - mean) * inv + b took three
    (DenseNet's 62 normalizations after a Concat, which nothing folds: 23 ms)."""
    shape = (-1,) + (1,) * (x.ndim - 2)
    inv, shift = batch_norm_affine(op, scale, b, mean, var)
    y = x * inv.reshape(shape)
    y += shift.reshape(shape)
    return y


def _layer_norm(op: nn.LayerNormOp, x, scale, b=None) -> np.ndarray:
    """In few numpy calls, in place where possible: where a compiled model runs it in
    numpy (the LayerNorms the executor has no kernel for), it runs between kernels that
    have pushed numpy's code out of the caches, where each call costs several
    microseconds (768 values: 52 -> 41 us a call, from np.mean and temporaries)."""
    axes = tuple(range(op.axis.value.data % x.ndim, x.ndim))
    inverse_count = np.float32(1 / max(1, math.prod(x.shape[axis] for axis in axes)))
    centered = x - np.add.reduce(x, axis=axes, keepdims=True) * inverse_count
    variance = np.add.reduce(centered * centered, axis=axes, keepdims=True) * inverse_count
    centered *= 1 / np.sqrt(variance + np.float32(op.epsilon.value.data))
    centered *= scale
    if b is not None:
        centered += b
    return centered


def _rms_norm(op: nn.RMSNormOp, x, scale) -> np.ndarray:
    """As `_layer_norm`, without the centring."""
    axes = tuple(range(op.axis.value.data % x.ndim, x.ndim))
    inverse_count = np.float32(1 / max(1, math.prod(x.shape[axis] for axis in axes)))
    mean_square = np.add.reduce(x * x, axis=axes, keepdims=True) * inverse_count
    y = x * (1 / np.sqrt(mean_square + np.float32(op.epsilon.value.data)))
    y *= scale
    return y


def _rotary_embedding(op: nn.RotaryEmbeddingOp, x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x cos, then each half plus or minus the other half times sin, in place: the same
    products and sums as the seven ops, in five numpy calls."""
    half = x.shape[-1] // 2
    y = x * cos
    y[..., :half] -= x[..., half:] * sin[..., :half]
    y[..., half:] += x[..., :half] * sin[..., half:]
    return y


def _attention(op: nn.AttentionOp, q: np.ndarray, kt: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The ops attention stands for, in their order: q @ kt, times the scale, plus the
    mask, Softmax over the keys (NaN rows to 0 if asked), times v; grouped key and value heads repeated to
    q's (numpy's matmul broadcasts only heads of 1)."""
    heads = q.shape[1]
    kt, v = (np.repeat(t, heads // t.shape[1], axis=1) if 1 < t.shape[1] < heads else t for t in (kt, v))
    scores = np.matmul(q, kt)
    if (scale := op.scale.value.data) != 1.0:
        scores *= np.float32(scale)
    if mask is not None:
        scores = scores + mask
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
    if op.nan_rows_to_zero.value.data:
        probabilities = np.where(np.isnan(probabilities), np.float32(0.0), probabilities)
    return np.matmul(probabilities, v)


def _lrn(op: nn.LRNOp, x: np.ndarray) -> np.ndarray:
    """ONNX LRN: each channel over the sum of squares of the `size` channels around it.
    The window's part past the channels adds nothing, so it is padded no further than
    the channels (a size of 387 million, from the fuzz test, asked for 26 GiB)."""
    size, channels = op.size.value.data, x.shape[1]
    before, after = min((size - 1) // 2, channels), min(size - 1 - (size - 1) // 2, channels)
    squares = np.pad(x * x, [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2))
    window = sliding_window_view(squares, before + after + 1, axis=1).sum(axis=-1)
    alpha, beta, bias = (np.float32(a.value.data) for a in (op.alpha, op.beta, op.bias))
    return x / (bias + alpha / size * window) ** beta


def _softmax(op: nn.SoftmaxOp, x: np.ndarray) -> np.ndarray:
    axis = op.axis.value.data
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


_ERFC_COEFFICIENTS = (
    -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
    0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277,
)  # fmt: skip


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64, vectorized: the Taylor series below |x| = 0.5 (relative error
    under 1e-9 there), else 1 - erfc with Numerical Recipes' Chebyshev fit for erfc
    (fractional error under 1.2e-7): float32-accurate, without a per-element Python call."""
    x = np.asarray(x, dtype=np.float64)
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.zeros_like(t)
    for coefficient in reversed(_ERFC_COEFFICIENTS[1:]):
        poly = t * (coefficient + poly)
    large = 1.0 - t * np.exp(-z * z + _ERFC_COEFFICIENTS[0] + poly)
    near = np.where(z < 0.5, x, 0.0)  # the series only where it is used: no overflow far out
    x2 = near * near
    series = near * (1 - x2 / 3 * (1 - x2 * 3 / 10 * (1 - x2 * 5 / 21 * (1 - x2 * 7 / 36 * (1 - x2 * 9 / 55 * (1 - x2 * 11 / 78))))))
    return np.where(z < 0.5, 2 / math.sqrt(math.pi) * series, np.copysign(large, x))


def _exact_gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))).astype(x.dtype)


def _gelu(op: nn.GeluOp, x: np.ndarray) -> np.ndarray:
    if op.approximate.data == "tanh":
        return _tanh_gelu(x)
    return _exact_gelu(x)


def _tanh_gelu(x: np.ndarray) -> np.ndarray:
    """0.5 x (1 + tanh(sqrt(2 / pi) x (1 + 0.044715 x^2))) in x's precision, in place in
    one array: numpy's x ** 3 calls pow for each float32 (39 ms for GPT-2's 128 x 3072
    hidden values, the whole function 1.4 ms so)."""
    y = x * x
    y *= x.dtype.type(0.044715)
    y += x.dtype.type(1.0)
    y *= x
    y *= x.dtype.type(np.sqrt(2.0 / np.pi))
    np.tanh(y, out=y)
    y += x.dtype.type(1.0)
    y *= x
    y *= x.dtype.type(0.5)
    return y


def _power(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Pow; a single exponent of 2 or 3 as products, as onnxruntime computes it
    (numpy's power calls pow for each float: a written-out LayerNorm squares with it)."""
    if b.size == 1 and float(b.reshape(-1)[0]) in (2.0, 3.0):
        square = a * a
        return square * a if float(b.reshape(-1)[0]) == 3.0 else square
    return np.power(a, b.astype(a.dtype))


def _epilogue(op: Operation, y: np.ndarray, bias: np.ndarray | None, channel_axis: int) -> np.ndarray:
    epilogue = op.epilogue.data  # pyright: ignore
    if bias is not None:
        shape = [1] * y.ndim
        shape[channel_axis] = -1
        y = y + bias.reshape(shape)
    activation = epilogue_activation(epilogue)
    if activation == "relu":
        return np.maximum(y, 0)
    if activation == "swish":
        return y * _sigmoid(y)
    if activation == "gelu_tanh":
        return _tanh_gelu(y)
    return _exact_gelu(y) if activation == "gelu" else y


def _sparse_matmul(op: SparseMatMulOp, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    weight = w.reshape(w.shape[0], -1)
    y = x @ (weight if op.transposed.value.data else weight.T)
    return _epilogue(op, y, b, -1)


def _sparse_conv(op: SparseConvOp, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    return _epilogue(op, _conv(op, x, w), b, 1)  # pyright: ignore


def reshaped(op: nn.ReshapeOp, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape `op` gives an input of `shape` (a 0 keeps that dimension unless the
    op allows zeros; a -1 takes what the others leave)."""
    target = list(ints_of(op.shape))
    if not op.allowzero.value.data:
        target = [shape[i] if d == 0 else d for i, d in enumerate(target)]
    if -1 in target:
        target[target.index(-1)] = math.prod(shape) // max(1, math.prod(d for d in target if d != -1))
    return tuple(target)


VIEW_OPS = (nn.ReshapeOp, nn.FlattenOp, nn.TransposeOp, nn.SqueezeOp, nn.UnsqueezeOp, nn.DropoutOp, nn.IdentityOp)
"""The ops whose result is a view of their input."""


def view(op: Operation, shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """The function that takes an input of `shape` to the result of `op`, one of
    VIEW_OPS, with the op's arguments decoded from the IR once: the executor keeps one
    per input shape (decoding them took most of a reshape's 10 us in a run)."""
    match op:
        case nn.ReshapeOp():
            target = reshaped(op, shape)
            return lambda x: x.reshape(target)
        case nn.FlattenOp():
            axis = op.axis.value.data
            rows = math.prod(shape[: axis + len(shape) if axis < 0 else axis])
            return lambda x: x.reshape(rows, -1)
        case nn.TransposeOp():
            axes = op.permutation(len(shape))
            return lambda x: np.transpose(x, axes)
        case nn.SqueezeOp():
            squeezed = op.squeezed_axes(shape)
            return lambda x: np.squeeze(x, axis=squeezed)
        case nn.UnsqueezeOp():
            added = ints_of(op.axes)
            inserted = tuple(a % (len(shape) + len(added)) for a in added)
            return lambda x: np.expand_dims(x, inserted)
        case nn.DropoutOp() | nn.IdentityOp():
            return lambda x: x
    raise SparsecError(f"'{op.name}' is not a view of its input")


def _viewed(op: Operation, x: np.ndarray) -> np.ndarray:
    return view(op, x.shape)(x)


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Div: integers divide truncating toward zero, as C does."""
    if np.issubdtype(a.dtype, np.integer):
        return (np.abs(a) // np.abs(b) * np.sign(a) * np.sign(b)).astype(a.dtype)
    return a / b


def _dynamic_reshape(op: nn_index.DynamicReshapeOp, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    target = [int(d) for d in shape]
    if not op.allowzero.value.data:
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return x.reshape(target)


def _slice(op: nn_index.SliceOp, data: np.ndarray, starts, ends, axes, steps) -> np.ndarray:
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[int(axis)] = slice(int(start), int(end), int(step))
    return data[tuple(index)]


def _gather_nd(op: nn_index.GatherNDOp, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return data[tuple(np.moveaxis(indices, -1, 0))]


def _cum_sum(op: nn_index.CumSumOp, x: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """ONNX CumSum: `exclusive` shifts the sums by one, `reverse` runs from the end."""
    axis_index = int(axis.reshape(-1)[0])
    y = np.flip(x, axis_index) if op.reverse.value.data else x
    sums = np.cumsum(y, axis=axis_index, dtype=x.dtype)
    if op.exclusive.value.data:
        sums = np.concatenate([np.zeros_like(np.take(sums, [0], axis=axis_index)), np.delete(sums, -1, axis=axis_index)], axis=axis_index)
    return np.flip(sums, axis_index) if op.reverse.value.data else sums


def _arg_max(op: nn_index.ArgMaxOp, x: np.ndarray) -> np.ndarray:
    axis = op.axis.value.data % x.ndim
    if op.select_last_index.value.data:
        index = x.shape[axis] - 1 - np.argmax(np.flip(x, axis), axis=axis)
    else:
        index = np.argmax(x, axis=axis)
    return np.expand_dims(index, axis) if op.keepdims.value.data else index


def _constant_pad(op: nn_index.PadOp, data: np.ndarray, pads: np.ndarray, value: np.ndarray) -> np.ndarray:
    """ONNX Pad, mode constant: negative counts crop."""
    rank = data.ndim
    counts = [int(c) for c in pads.reshape(-1)]
    cropped = data[tuple(slice(max(0, -counts[i]), data.shape[i] - max(0, -counts[i + rank])) for i in range(rank))]
    widths = [(max(0, counts[i]), max(0, counts[i + rank])) for i in range(rank)]
    return np.pad(cropped, widths, constant_values=value.reshape(-1)[0] if value.size else 0)


def _reduce_mean(op: nn.ReduceMeanOp, x: np.ndarray) -> np.ndarray:
    return x.mean(axis=op.reduced_axes(x.ndim), keepdims=bool(op.keepdims.value.data), dtype=np.float64).astype(x.dtype)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x) in x's precision, in place in one array: e^-x overflows to inf for
    x below about -88, which gives 0, the sigmoid rounded (np.where over the two
    stable forms took 1.6 ms for a LLaMA's 128 x 1536 gate values, this 0.2)."""
    y = np.negative(x)
    with np.errstate(over="ignore"):
        np.exp(y, out=y)
    y += x.dtype.type(1.0)
    return np.reciprocal(y, out=y)


def _swish(op: nn.SwishOp, x: np.ndarray) -> np.ndarray:
    alpha = op.alpha.value.data
    y = _sigmoid(x if alpha == 1.0 else x * x.dtype.type(alpha))
    return np.multiply(x, y, out=y)


Kernel = Callable[..., np.ndarray]

_KERNELS: dict[type[Operation], Kernel] = {
    nn.GemmOp: _gemm,
    nn.MatMulOp: lambda op, a, b: np.matmul(a, b),
    nn.ConvOp: _conv,
    nn.ReluOp: lambda op, x: np.maximum(x, 0),
    nn.GeluOp: _gelu,
    nn.ErfOp: lambda op, x: _erf(x).astype(x.dtype),
    nn.SigmoidOp: lambda op, x: _sigmoid(x),
    nn.SwishOp: _swish,
    nn.TanhOp: lambda op, x: np.tanh(x),
    nn.SoftmaxOp: _softmax,
    nn.AddOp: lambda op, a, b: a + b,
    nn.SubOp: lambda op, a, b: a - b,
    nn.MulOp: lambda op, a, b: a * b,
    nn.DivOp: lambda op, a, b: _divide(a, b),
    nn.PowOp: lambda op, a, b: _power(a, b),
    nn.SqrtOp: lambda op, x: np.sqrt(x),
    nn.ExpOp: lambda op, x: np.exp(x),
    nn.LogOp: lambda op, x: np.log(x),
    nn.CosOp: lambda op, x: np.cos(x),
    nn.SinOp: lambda op, x: np.sin(x),
    nn.ReciprocalOp: lambda op, x: np.reciprocal(x),
    nn.ReduceMeanOp: _reduce_mean,
    nn.SumOp: lambda op, *xs: sum(xs[1:], start=xs[0]),
    nn.BatchNormOp: _batch_norm,
    nn.LayerNormOp: _layer_norm,
    nn.RMSNormOp: _rms_norm,
    nn.RotaryEmbeddingOp: _rotary_embedding,
    nn.AttentionOp: _attention,
    nn.LRNOp: _lrn,
    nn.MaxPoolOp: _max_pool,
    nn.AveragePoolOp: _average_pool,
    nn.GlobalAveragePoolOp: lambda op, x: x.mean(axis=tuple(range(2, x.ndim)), keepdims=True),
    nn.ConcatOp: lambda op, *xs: np.concatenate(xs, axis=op.axis.value.data),
    **{view_op: _viewed for view_op in VIEW_OPS},
    nn_index.ShapeOp: lambda op, x: np.array(op.dims(x.shape), dtype=np.int64),
    nn_index.GatherOp: lambda op, data, indices: np.take(data, indices, axis=op.axis.value.data),
    nn_index.GatherNDOp: _gather_nd,
    nn_index.GatherElementsOp: lambda op, data, indices: np.take_along_axis(data, np.where(indices < 0, indices + data.shape[op.axis.value.data], indices), op.axis.value.data),
    nn_index.CumSumOp: _cum_sum,
    nn_index.SliceOp: _slice,
    nn_index.RangeOp: lambda op, start, limit, delta: np.arange(start, limit, delta, dtype=start.dtype),
    nn_index.ExpandOp: lambda op, x, shape: np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(int(d) for d in shape))).copy(),
    nn_index.DynamicReshapeOp: _dynamic_reshape,
    nn_index.CastOp: lambda op, x: x.astype(op.target_dtype()),
    nn_index.WhereOp: lambda op, c, x, y: np.where(c, x, y),
    nn_index.EqualOp: lambda op, a, b: np.equal(a, b),
    nn_index.GreaterOp: lambda op, a, b: np.greater(a, b),
    nn_index.GreaterOrEqualOp: lambda op, a, b: np.greater_equal(a, b),
    nn_index.LessOp: lambda op, a, b: np.less(a, b),
    nn_index.LessOrEqualOp: lambda op, a, b: np.less_equal(a, b),
    nn_index.AndOp: lambda op, a, b: np.logical_and(a, b),
    nn_index.OrOp: lambda op, a, b: np.logical_or(a, b),
    nn_index.NotOp: lambda op, x: np.logical_not(x),
    nn_index.IsNaNOp: lambda op, x: np.isnan(x),
    nn_index.MaxOp: lambda op, *xs: functools.reduce(np.maximum, xs),
    nn_index.MinOp: lambda op, *xs: functools.reduce(np.minimum, xs),
    nn_index.NegOp: lambda op, x: np.negative(x),
    nn_index.AbsOp: lambda op, x: np.abs(x),
    nn_index.ModOp: lambda op, a, b: np.fmod(a, b) if op.fmod.value.data else np.mod(a, b),
    nn_index.ArgMaxOp: _arg_max,
    nn_index.PadOp: _constant_pad,
    SparseMatMulOp: _sparse_matmul,
    SparseConvOp: _sparse_conv,
}


def supported_ops() -> list[str]:
    return sorted(op.name for op in _KERNELS)


def evaluate(op: Operation, operands: list[np.ndarray]) -> np.ndarray:
    """One op's result for these operand values."""
    kernel = _KERNELS.get(type(op))
    if kernel is None:
        raise SparsecError(f"the reference interpreter cannot run '{op.name}' (it runs: {', '.join(supported_ops())})")
    try:
        return np.asarray(kernel(op, *operands))
    except (ValueError, IndexError) as error:
        # Shapes the IR allows but numpy cannot compute, such as zero-sized dimensions.
        shapes = ", ".join(str(tuple(a.shape)) for a in operands)
        node = f" (node '{op.location.desc.data}')" if isinstance(op.location, NameLoc) else ""
        raise ExecutionError(f"'{op.name}'{node} cannot run on inputs of shapes {shapes}: {error}") from None


def _interpret(
    module: ModuleOp, weights: WeightStore, feeds: Mapping[str, np.ndarray], stop: Operation | None = None
) -> list[np.ndarray]:
    """Run `@main` op by op up to `stop` (default: the return); the values of its operands.

    Intermediate values are dropped after their last use.
    """
    function = main_function(module)
    env: dict[SSAValue, np.ndarray] = dict(zip(function.args, check_feeds(function, feeds)))
    remaining_uses: dict[SSAValue, int] = {}
    for op in function.body.ops:
        if op is stop or (stop is None and isinstance(op, func.ReturnOp)):
            return [env[v] for v in op.operands]
        if isinstance(op, func.ReturnOp):
            break
        if isinstance(op, StoredWeightOp):
            env[op.result] = dense_value(op, weights)
            continue
        result = evaluate(op, [env[v] for v in op.operands])
        expected = op.results[0].type
        assert isinstance(expected, TensorType)
        env[op.results[0]] = result.astype(numpy_dtype(expected.element_type), copy=False)
        for operand in op.operands:
            remaining_uses[operand] = remaining_uses.get(operand, operand.uses.get_length()) - 1
            if remaining_uses[operand] == 0 and not isinstance(operand.owner, StoredWeightOp):
                env.pop(operand, None)
    raise SparsecError(f"'{stop.name}' is not an op of @main" if stop else "@main has no func.return")


def inputs_of(module: ModuleOp, weights: WeightStore, feeds: Mapping[str, np.ndarray], stop: Operation) -> list[np.ndarray]:
    """Run `@main` only as far as `stop`; returns the values of its operands."""
    return _interpret(module, weights, feeds, stop)


def run(module: ModuleOp, weights: WeightStore, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run `@main` on `feeds` (by input name); returns every output by name. Floating
    point's special cases give their IEEE results without numpy's warnings, as ONNX
    defines them (MPNet's position buckets take the log of 0, then mask it out)."""
    with np.errstate(all="ignore"):
        return dict(zip(output_names(main_function(module)), _interpret(module, weights, feeds)))
