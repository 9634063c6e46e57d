"""sparsec IR to a Core ML ML program (`.mlpackage`), with sparse weights kept sparse.

Packed weights become `constexpr_sparse_to_dense` ops (iOS16 opset): bitmask weights
carry sparsec's mask and values unchanged (sparsec's bitmask is Core ML's layout), n:m
and block weights are re-encoded as a bitmask of the same values, since Core ML has
no structured format. Dense weights become `const` ops; activations stay float32.

Needs coremltools (`pip install 'sparsec[coreml]'`). Core ML feature names must be
identifiers, so other characters in ONNX names become `_`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue

from sparsec.dialects import StoredWeightOp, nn
from sparsec.dialects.kernel_ops import KernelOp, SparseConvOp, SparseMatMulOp
from sparsec.dialects.nn import ints_of
from sparsec.dialects.shapes import DYNAMIC, resolve_pads
from sparsec.dialects.sparse import PackedWeightOp
from sparsec.errors import SparsecError
from sparsec.kernels import epilogue_activation
from sparsec.layers import dense_value
from sparsec.packing import Encoding, encode_bitmask
from sparsec.reference import input_names, main_function, output_names
from sparsec.weights import WeightStore


MAX_DYNAMIC_SIZE = 65536
"""Core ML ML programs need a finite upper bound for a flexible (`?`) dimension."""


def _coremltools() -> tuple[Any, Any]:
    try:
        import coremltools as ct
        from coremltools.converters.mil import Builder as mb
    except ImportError:
        raise SparsecError("Core ML export needs coremltools: pip install 'sparsec[coreml]'") from None
    return ct, mb


def feature_name(name: str) -> str:
    cleaned = re.sub(r"\W", "_", name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"t_{cleaned}"


def _float(attr) -> float:
    return float(attr.value.data)


def _int(attr) -> int:
    return int(attr.value.data)


class _Lowering:
    """Emits MIL ops for `nn` ops inside an `mb.program` body."""

    def __init__(self, mb: Any, weights: WeightStore):
        self.mb = mb
        self.weights = weights
        self.values: dict[SSAValue, Any] = {}

    def weight(self, op: StoredWeightOp) -> Any:
        mb = self.mb
        name = feature_name(op.weight_name.data)
        if not isinstance(op, PackedWeightOp):
            return mb.const(val=np.asarray(self.weights[op.weight_name.data]), name=name)
        arrays = {role: self.weights[n] for role, n in op.stored_tensors().items()}
        if op.encoding.encoding is not Encoding.BITMASK:
            dense = dense_value(op, self.weights)
            arrays = encode_bitmask(dense, np.dtype(arrays["values"].dtype)).arrays
        shape = np.array(op.tensor_type.get_shape(), dtype=np.uint32)
        sparse = mb.constexpr_sparse_to_dense(nonzero_data=arrays["values"], mask=arrays["mask"], shape=shape, name=name)
        return sparse if arrays["values"].dtype == np.float32 else mb.cast(x=sparse, dtype="fp32", name=f"{name}_fp32")

    def window(self, op: nn.WindowOp, kernel: tuple[int, ...]) -> dict[str, Any]:
        x_shape = op.operands[0].type.get_shape()  # pyright: ignore
        rank = len(kernel)
        strides = ints_of(op.strides) or (1,) * rank
        dilations = ints_of(op.dilations) or (1,) * rank
        auto = op.auto_pad.data
        if auto in ("SAME_UPPER", "SAME_LOWER", "VALID"):
            return {"strides": strides, "pad_type": {"SAME_UPPER": "same", "SAME_LOWER": "same_lower", "VALID": "valid"}[auto]}
        pads = resolve_pads("NOTSET", x_shape[2:], kernel, strides, dilations, ints_of(op.pads))
        interleaved = [p for i in range(rank) for p in (pads[i], pads[i + rank])]
        return {"strides": strides, "pad_type": "custom", "pad": interleaved, "_dilations": dilations}

    def gemm(self, op: nn.GemmOp, a, b, c=None):
        mb = self.mb
        y = mb.matmul(x=a, y=b, transpose_x=bool(_int(op.trans_a)), transpose_y=bool(_int(op.trans_b)))
        if _float(op.alpha) != 1.0:
            y = mb.mul(x=y, y=np.float32(_float(op.alpha)))
        if c is not None:
            y = mb.add(x=y, y=c if _float(op.beta) == 1.0 else mb.mul(x=c, y=np.float32(_float(op.beta))))
        return y

    def conv(self, op: nn.ConvolutionOp, x, w, b=None):
        geometry = self.window(op, tuple(op.w.type.get_shape()[2:]))  # pyright: ignore
        dilations = geometry.pop("_dilations", None) or ints_of(op.dilations) or None
        args = {"x": x, "weight": w, "groups": _int(op.group), **geometry}
        if dilations:
            args["dilations"] = dilations
        if b is not None:
            args["bias"] = b
        return self.mb.conv(**args)

    def kernel_op(self, op: KernelOp, args: list) -> Any:
        """A kernel op as the matmul or conv it computes, with its epilogue."""
        mb = self.mb
        if isinstance(op, SparseConvOp):
            y = self.conv(op, *args)  # pyright: ignore
        else:
            y = mb.matmul(x=args[0], y=args[1], transpose_y=not op.transposed.value.data)
            if len(args) == 3:
                y = mb.add(x=y, y=args[2])
        activation = epilogue_activation(op.epilogue.data)
        if activation == "relu":
            return mb.relu(x=y)
        if activation == "swish":
            return mb.silu(x=y)
        if activation == "gelu_tanh":
            return mb.gelu(x=y, mode="TANH_APPROXIMATION")
        return mb.gelu(x=y, mode="EXACT") if activation == "gelu" else y

    def rms_norm(self, op: nn.RMSNormOp, x, scale):
        """x / sqrt(mean(x^2) + epsilon) * scale: Core ML has no RMS norm op."""
        mb, rank = self.mb, len(op.x.type.get_shape())  # pyright: ignore
        axes = list(range(_int(op.axis) % rank, rank))
        mean_square = mb.reduce_mean(x=mb.mul(x=x, y=x), axes=axes, keep_dims=True)
        return mb.mul(x=mb.mul(x=x, y=mb.rsqrt(x=mean_square, epsilon=_float(op.epsilon))), y=scale)

    def swish(self, op: nn.SwishOp, x):
        """x sigmoid(alpha x): SiLU where alpha is 1."""
        mb, alpha = self.mb, op.alpha.value.data
        return mb.silu(x=x) if alpha == 1.0 else mb.mul(x=x, y=mb.sigmoid(x=mb.mul(x=x, y=np.float32(alpha))))

    def attention(self, op: nn.AttentionOp, q, kt, v, mask=None):
        """The five ops an attention stands for; Core ML's matmul broadcasts key and
        value heads of 1, not groups."""
        heads = op.q.type.get_shape()[1]  # pyright: ignore
        for operand in (op.kt, op.v):
            if operand.type.get_shape()[1] not in (1, heads, DYNAMIC):  # pyright: ignore
                raise SparsecError(f"Core ML export: '{op.name}' with {operand.type.get_shape()[1]} key or value heads for {heads} query heads has no Core ML counterpart")  # pyright: ignore
        mb = self.mb
        scores = mb.matmul(x=q, y=kt)
        if (scale := op.scale.value.data) != 1.0:
            scores = mb.mul(x=scores, y=np.float32(scale))
        if mask is not None:
            scores = mb.add(x=scores, y=mask)
        probabilities = mb.softmax(x=scores, axis=-1)
        if op.nan_rows_to_zero.value.data:  # NaN is the one value not equal to itself
            probabilities = mb.select(cond=mb.not_equal(x=probabilities, y=probabilities), a=np.float32(0.0), b=probabilities)
        return mb.matmul(x=probabilities, y=v)

    def pool(self, op: nn.PoolOp, x):
        kernel = ints_of(op.kernel_shape)
        geometry = self.window(op, kernel)
        if any(d != 1 for d in geometry.pop("_dilations", ()) or ()):
            raise SparsecError(f"Core ML export: '{op.name}' with dilations has no Core ML counterpart")
        args = {"x": x, "kernel_sizes": kernel, "ceil_mode": bool(_int(op.ceil_mode)), **geometry}
        if isinstance(op, nn.MaxPoolOp):
            return self.mb.max_pool(**args)
        return self.mb.avg_pool(exclude_padding_from_average=not _int(op.count_include_pad), **args)

    def reshape_to_result(self, op: Operation, x):
        shape = list(op.results[0].type.get_shape())  # pyright: ignore
        if shape.count(DYNAMIC) > 1:
            raise SparsecError(f"Core ML export: '{op.name}' to {op.results[0].type} has more than one dynamic dimension")
        return self.mb.reshape(x=x, shape=[-1 if d == DYNAMIC else d for d in shape])

    def lower(self, op: Operation, args: list) -> Any:
        if isinstance(op, KernelOp):
            return self.kernel_op(op, args)
        mb = self.mb
        table: dict[type[Operation], Callable[..., Any]] = {
            nn.GemmOp: lambda *a: self.gemm(op, *a),  # pyright: ignore
            nn.MatMulOp: lambda a, b: mb.matmul(x=a, y=b),
            nn.ConvOp: lambda *a: self.conv(op, *a),  # pyright: ignore
            nn.ReluOp: lambda x: mb.relu(x=x),
            nn.SigmoidOp: lambda x: mb.sigmoid(x=x),
            nn.TanhOp: lambda x: mb.tanh(x=x),
            nn.ErfOp: lambda x: mb.erf(x=x),
            nn.GeluOp: lambda x: mb.gelu(x=x, mode="EXACT" if op.approximate.data == "none" else "TANH_APPROXIMATION"),  # pyright: ignore
            nn.SoftmaxOp: lambda x: mb.softmax(x=x, axis=_int(op.axis)),  # pyright: ignore
            nn.AddOp: lambda a, b: mb.add(x=a, y=b),
            nn.SubOp: lambda a, b: mb.sub(x=a, y=b),
            nn.MulOp: lambda a, b: mb.mul(x=a, y=b),
            nn.DivOp: lambda a, b: mb.real_div(x=a, y=b),
            nn.SumOp: lambda *xs: _chain(mb, xs),
            nn.BatchNormOp: lambda x, s, b, m, v: mb.batch_norm(x=x, mean=m, variance=v, gamma=s, beta=b, epsilon=_float(op.epsilon)),  # pyright: ignore
            nn.LayerNormOp: lambda x, s, b=None: mb.layer_norm(
                x=x, axes=list(range(_int(op.axis) % len(op.x.type.get_shape()), len(op.x.type.get_shape()))),  # pyright: ignore
                gamma=s, beta=b, epsilon=_float(op.epsilon)),  # pyright: ignore
            nn.RMSNormOp: lambda x, s: self.rms_norm(op, x, s),  # pyright: ignore
            nn.SwishOp: lambda x: self.swish(op, x),  # pyright: ignore
            nn.AttentionOp: lambda *a: self.attention(op, *a),  # pyright: ignore
            nn.LRNOp: lambda x: mb.local_response_norm(x=x, size=_int(op.size), alpha=_float(op.alpha), beta=_float(op.beta), k=_float(op.bias)),  # pyright: ignore
            nn.MaxPoolOp: lambda x: self.pool(op, x),  # pyright: ignore
            nn.AveragePoolOp: lambda x: self.pool(op, x),  # pyright: ignore
            nn.GlobalAveragePoolOp: lambda x: mb.reduce_mean(x=x, axes=list(range(2, len(op.operands[0].type.get_shape()))), keep_dims=True),  # pyright: ignore
            nn.ReshapeOp: lambda x: self.reshape_to_result(op, x),
            nn.FlattenOp: lambda x: self.reshape_to_result(op, x),
            nn.TransposeOp: lambda x: mb.transpose(x=x, perm=list(op.permutation(len(op.input.type.get_shape())))),  # pyright: ignore
            nn.ConcatOp: lambda *xs: mb.concat(values=list(xs), axis=_int(op.axis)),  # pyright: ignore
            nn.UnsqueezeOp: lambda x: mb.expand_dims(x=x, axes=list(ints_of(op.axes))),  # pyright: ignore
            nn.SqueezeOp: lambda x: mb.squeeze(x=x, axes=list(op.squeezed_axes(op.input.type.get_shape()))),  # pyright: ignore
            nn.DropoutOp: lambda x: x,
            nn.IdentityOp: lambda x: x,
        }
        return table[type(op)](*args)


SUPPORTED = (
    nn.GemmOp, nn.MatMulOp, nn.ConvOp, nn.ReluOp, nn.SigmoidOp, nn.TanhOp, nn.ErfOp, nn.GeluOp, nn.SoftmaxOp,
    nn.AddOp, nn.SubOp, nn.MulOp, nn.DivOp, nn.SumOp, nn.BatchNormOp, nn.LayerNormOp, nn.RMSNormOp, nn.SwishOp, nn.AttentionOp, nn.LRNOp, nn.MaxPoolOp,
    nn.AveragePoolOp, nn.GlobalAveragePoolOp, nn.ReshapeOp, nn.FlattenOp, nn.TransposeOp, nn.ConcatOp,
    nn.UnsqueezeOp, nn.SqueezeOp, nn.DropoutOp, nn.IdentityOp, nn.WeightOp, PackedWeightOp, func.ReturnOp,
    SparseMatMulOp, SparseConvOp,
)  # fmt: skip


def _chain(mb: Any, values) -> Any:
    total = values[0]
    for value in values[1:]:
        total = mb.add(x=total, y=value)
    return total


def _check_supported(function: func.FuncOp) -> None:
    unsupported = sorted({op.name for op in function.body.ops if not isinstance(op, SUPPORTED)})
    if unsupported:
        raise SparsecError(f"Core ML export: no Core ML counterpart for {', '.join(unsupported)}")


def build_mlmodel(module: ModuleOp, weights: WeightStore) -> Any:
    """The module as a coremltools MLModel (ML program, iOS16 opset)."""
    ct, mb = _coremltools()
    from coremltools.converters.mil.mil import Function, Program, get_new_symbol

    function = main_function(module)
    _check_supported(function)
    names = [feature_name(n) for n in input_names(function)]
    inputs = []
    for name, arg in zip(names, function.args):
        shape = [ct.RangeDim(1, MAX_DYNAMIC_SIZE) if d == DYNAMIC else d for d in arg.type.get_shape()]  # pyright: ignore
        inputs.append(ct.TensorType(name=name, shape=shape, dtype=np.float32))
    lowering = _Lowering(mb, weights)
    specs = {
        name: mb.TensorSpec(shape=tuple(get_new_symbol() if d == DYNAMIC else d for d in arg.type.get_shape()))  # pyright: ignore
        for name, arg in zip(names, function.args)
    }
    with Function(specs, ct.target.iOS16) as mil_function:
        lowering.values.update({arg: mil_function.inputs[name] for name, arg in zip(names, function.args)})
        for op in function.body.ops:
            if isinstance(op, func.ReturnOp):
                outputs = [mb.identity(x=lowering.values[v], name=feature_name(n)) for v, n in zip(op.operands, output_names(function))]
            elif isinstance(op, StoredWeightOp):
                lowering.values[op.result] = lowering.weight(op)
            else:
                lowering.values[op.results[0]] = lowering.lower(op, [lowering.values[v] for v in op.operands])
        mil_function.set_outputs(outputs)
    program = Program()
    program.add_function("main", mil_function)
    return ct.convert(
        program,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS16,
        compute_precision=ct.precision.FLOAT32,
        inputs=inputs,
    )


def write_mlpackage(module: ModuleOp, weights: WeightStore, path: str | Path) -> None:
    """Build and save the `.mlpackage` directory; it appears whole or not at all."""
    target = Path(path)
    model = build_mlmodel(module, weights)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save(str(staging / target.name))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / target.name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
