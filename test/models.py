"""Small ONNX models for tests, built with onnx.helper (no binary fixtures).

    python test/models.py NAME OUT.onnx     # used by lit RUN lines as `%models NAME %t.onnx`

Weights are drawn from a fixed seed, so every run builds the same bytes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32 = TensorProto.FLOAT


def _rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def gemm() -> onnx.ModelProto:
    """x(?, 4) -> Gemm(transB) with bias -> Relu."""
    rng = _rng()
    return _model(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1, alpha=1.0, beta=1.0),
            helper.make_node("Relu", ["y"], ["out"], name="relu"),
        ],
        [helper.make_tensor_value_info("x", F32, ["batch", 4])],
        [helper.make_tensor_value_info("out", F32, ["batch", 3])],
        [_init("w", rng.standard_normal((3, 4)).astype(np.float32)), _init("b", np.array([0.5, -1.0, 0.25], np.float32))],
    )


def mlp() -> onnx.ModelProto:
    """A 2-layer MLP: MatMul + Add + Relu, Gemm, Softmax."""
    rng = _rng()
    return _model(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
            helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
            helper.make_node("Relu", ["h1"], ["h2"], name="act"),
            helper.make_node("Gemm", ["h2", "w2", "b2"], ["logits"], name="fc2", transB=1),
            helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
        ],
        [helper.make_tensor_value_info("x", F32, ["batch", 64])],
        [helper.make_tensor_value_info("probs", F32, ["batch", 10])],
        [
            _init("w1", (rng.standard_normal((64, 32)) * 0.2).astype(np.float32)),
            _init("b1", (rng.standard_normal(32) * 0.1).astype(np.float32)),
            _init("w2", (rng.standard_normal((10, 32)) * 0.2).astype(np.float32)),
            _init("b2", np.zeros(10, np.float32)),
        ],
    )


def conv() -> onnx.ModelProto:
    """Grouped, strided, padded Conv with bias, then MaxPool, GlobalAveragePool, Flatten."""
    rng = _rng()
    return _model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", group=2, strides=[2, 2], pads=[1, 1, 1, 1]),
            helper.make_node("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[2, 2], strides=[1, 1], ceil_mode=1),
            helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
            helper.make_node("Flatten", ["g"], ["out"], name="flat"),
        ],
        [helper.make_tensor_value_info("x", F32, [1, 4, 9, 9])],
        [helper.make_tensor_value_info("out", F32, [1, 6])],
        [_init("w", rng.standard_normal((6, 2, 3, 3)).astype(np.float32)), _init("b", rng.standard_normal(6).astype(np.float32))],
    )


def conv_same() -> onnx.ModelProto:
    """Conv with auto_pad SAME_UPPER and dilations, AveragePool counting pads."""
    rng = _rng()
    return _model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name="conv", auto_pad="SAME_UPPER", strides=[2, 2], dilations=[1, 1]),
            helper.make_node("AveragePool", ["c"], ["out"], name="avg", kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
        ],
        [helper.make_tensor_value_info("x", F32, [2, 3, 8, 7])],
        [helper.make_tensor_value_info("out", F32, [2, 5, 4, 4])],
        [_init("w", rng.standard_normal((5, 3, 3, 3)).astype(np.float32))],
    )


def pool() -> onnx.ModelProto:
    """A MaxPool alone: a model without weights."""
    return _model(
        [helper.make_node("MaxPool", ["x"], ["out"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
        [helper.make_tensor_value_info("x", F32, [1, 4, 9, 9])],
        [helper.make_tensor_value_info("out", F32, [1, 4, 5, 5])],
    )


def depthwise() -> onnx.ModelProto:
    """A MobileNet block: depthwise 3x3 Conv (stride 2, padded, bias), Relu, 1x1 Conv."""
    rng = _rng()
    return _model(
        [
            helper.make_node("Conv", ["x", "dw", "db"], ["d"], name="depthwise", group=8, strides=[2, 2], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["d"], ["r"], name="relu"),
            helper.make_node("Conv", ["r", "pw"], ["out"], name="pointwise"),
        ],
        [helper.make_tensor_value_info("x", F32, ["batch", 8, 9, 40])],
        [helper.make_tensor_value_info("out", F32, ["batch", 16, 5, 20])],
        [
            _init("dw", rng.standard_normal((8, 1, 3, 3)).astype(np.float32)),
            _init("db", rng.standard_normal(8).astype(np.float32)),
            _init("pw", rng.standard_normal((16, 8, 1, 1)).astype(np.float32)),
        ],
    )


def residual() -> onnx.ModelProto:
    """A ResNet basic block: 3x3 Conv (padded, bias) -> Relu -> 1x1 Conv -> Add x -> Relu."""
    rng = _rng()
    return _model(
        [
            helper.make_node("Conv", ["x", "w3", "b3"], ["c"], name="conv3x3", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"], name="relu3x3"),
            helper.make_node("Conv", ["r", "w1"], ["d"], name="conv1x1"),
            helper.make_node("Add", ["x", "d"], ["s"], name="residual"),
            helper.make_node("Relu", ["s"], ["out"], name="relu"),
        ],
        [helper.make_tensor_value_info("x", F32, [1, 16, 12, 12])],
        [helper.make_tensor_value_info("out", F32, [1, 16, 12, 12])],
        [
            _init("w3", (rng.standard_normal((32, 16, 3, 3)) / 12).astype(np.float32)),
            _init("b3", rng.standard_normal(32).astype(np.float32)),
            _init("w1", (rng.standard_normal((16, 32, 1, 1)) / np.sqrt(32)).astype(np.float32)),
        ],
    )


def transformer_mlp(d: int = 16, h: int = 32) -> onnx.ModelProto:
    """LayerNorm -> MatMul -> Gelu -> MatMul -> residual Add (opset 20 for Gelu)."""
    rng = _rng()
    return _model(
        [
            helper.make_node("LayerNormalization", ["x", "ln_scale", "ln_bias"], ["n"], name="ln", axis=-1, epsilon=1e-5),
            helper.make_node("MatMul", ["n", "w_up"], ["u"], name="up"),
            helper.make_node("Gelu", ["u"], ["g"], name="gelu"),
            helper.make_node("MatMul", ["g", "w_down"], ["dn"], name="down"),
            helper.make_node("Add", ["x", "dn"], ["out"], name="residual"),
        ],
        [helper.make_tensor_value_info("x", F32, ["batch", d])],
        [helper.make_tensor_value_info("out", F32, ["batch", d])],
        [
            _init("ln_scale", (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)),
            _init("ln_bias", (0.1 * rng.standard_normal(d)).astype(np.float32)),
            _init("w_up", (rng.standard_normal((d, h)) / np.sqrt(d)).astype(np.float32)),
            _init("w_down", (rng.standard_normal((h, d)) / np.sqrt(h)).astype(np.float32)),
        ],
        opset=20,
    )


def exported_gelu(d: int = 16, h: int = 64) -> onnx.ModelProto:
    """A transformer MLP as PyTorch exports it before opset 20: inputs of (batch,
    sequence, d), MatMul then Add for each Linear, GELU written out as Div, Erf, Add,
    Mul, Mul (what fuse-gelu fuses), a residual Add. Weights are float16 values, so a
    model packed with float16 values computes what onnxruntime does on this one."""
    rng = _rng()

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float16).astype(np.float32)

    return _model(
        [
            helper.make_node("MatMul", ["x", "w_up"], ["up"], name="up"),
            helper.make_node("Add", ["up", "b_up"], ["u"], name="up_bias"),
            helper.make_node("Div", ["u", "sqrt2"], ["scaled"], name="gelu_div"),
            helper.make_node("Erf", ["scaled"], ["erf"], name="gelu_erf"),
            helper.make_node("Add", ["erf", "one"], ["erf1"], name="gelu_add"),
            helper.make_node("Mul", ["u", "erf1"], ["prod"], name="gelu_mul"),
            helper.make_node("Mul", ["prod", "half"], ["g"], name="gelu"),
            helper.make_node("MatMul", ["g", "w_down"], ["down"], name="down"),
            helper.make_node("Add", ["down", "b_down"], ["dn"], name="down_bias"),
            helper.make_node("Add", ["x", "dn"], ["out"], name="residual"),
        ],
        [helper.make_tensor_value_info("x", F32, ["batch", "sequence", d])],
        [helper.make_tensor_value_info("out", F32, ["batch", "sequence", d])],
        [
            _init("w_up", weight(d, h)),
            _init("b_up", weight(h)),
            _init("w_down", weight(h, d)),
            _init("b_down", weight(d)),
            _init("sqrt2", np.array(np.sqrt(2), np.float32)),
            _init("one", np.array(1, np.float32)),
            _init("half", np.array(0.5, np.float32)),
        ],
    )


def llama_mlp(d: int = 16, h: int = 48, eps: float = 1e-5) -> onnx.ModelProto:
    """A LLaMA block's second half as PyTorch's dynamo exporter writes it at opset 18:
    RMSNorm written out (Pow, ReduceMean, Add, Sqrt, Reciprocal, Mul, Mul by gamma:
    what fuse-rms-norm fuses), the gated MLP down(silu(gate(x)) * up(x)) with SiLU as
    Sigmoid and Mul (what fuse-swish fuses), a residual Add. Weights are float16
    values, as in `exported_gelu`."""
    rng = _rng()

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float16).astype(np.float32)

    return _model(
        [
            helper.make_node("Pow", ["x", "two"], ["squared"], name="norm_pow"),
            helper.make_node("ReduceMean", ["squared", "last"], ["mean"], name="norm_mean"),
            helper.make_node("Add", ["mean", "eps"], ["shifted"], name="norm_add"),
            helper.make_node("Sqrt", ["shifted"], ["root"], name="norm_sqrt"),
            helper.make_node("Reciprocal", ["root"], ["inverse"], name="norm_rsqrt"),
            helper.make_node("Mul", ["x", "inverse"], ["normalized"], name="norm_mul"),
            helper.make_node("Mul", ["gamma", "normalized"], ["n"], name="norm"),
            helper.make_node("MatMul", ["n", "w_gate"], ["gate"], name="gate_proj"),
            helper.make_node("Sigmoid", ["gate"], ["sigmoid"], name="act_sigmoid"),
            helper.make_node("Mul", ["gate", "sigmoid"], ["silu"], name="act"),
            helper.make_node("MatMul", ["n", "w_up"], ["up"], name="up_proj"),
            helper.make_node("Mul", ["silu", "up"], ["gated"], name="gated"),
            helper.make_node("MatMul", ["gated", "w_down"], ["down"], name="down_proj"),
            helper.make_node("Add", ["x", "down"], ["out"], name="residual"),
        ],
        [helper.make_tensor_value_info("x", F32, ["batch", "sequence", d])],
        [helper.make_tensor_value_info("out", F32, ["batch", "sequence", d])],
        [
            _init("two", np.array(2, np.float32)),
            _init("last", np.array([-1], np.int64)),
            _init("eps", np.array(eps, np.float32)),
            _init("gamma", (1 + 0.1 * rng.standard_normal(d)).astype(np.float16).astype(np.float32)),
            _init("w_gate", weight(d, h)),
            _init("w_up", weight(d, h)),
            _init("w_down", weight(h, d)),
        ],
        opset=18,
    )


def attention(width: int = 8, heads: int = 2, scale: float = 2.0) -> onnx.ModelProto:
    """Self-attention as PyTorch exports it at opset 17 (BERT's): query, key and value
    Linear layers (MatMul then Add), heads split by Reshape and Transpose, the scores
    q @ k^T divided by `scale` (what fold-scale folds), a Softmax over a sequence given
    at run time, the context merged and projected. Weights are float16 values, as in
    `exported_gelu`."""
    rng = _rng()
    width_per_head = width // heads

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float16).astype(np.float32)

    nodes, initializers = [], []
    for name, perm in (("query", [0, 2, 1, 3]), ("key", [0, 2, 3, 1]), ("value", [0, 2, 1, 3])):
        nodes += [
            helper.make_node("MatMul", ["x", f"{name}.weight"], [f"{name}.mm"], name=f"{name}.mm"),
            helper.make_node("Add", [f"{name}.mm", f"{name}.bias"], [name], name=f"{name}.add"),
            helper.make_node("Reshape", [name, "heads"], [f"{name}.heads"], name=f"{name}.reshape"),
            helper.make_node("Transpose", [f"{name}.heads"], [f"{name}.t"], perm=perm, name=f"{name}.transpose"),
        ]
        initializers += [_init(f"{name}.weight", weight(width, width)), _init(f"{name}.bias", weight(width))]
    nodes += [
        helper.make_node("MatMul", ["query.t", "key.t"], ["scores"], name="scores"),
        helper.make_node("Div", ["scores", "scale"], ["scaled"], name="scaled"),
        helper.make_node("Softmax", ["scaled"], ["probs"], axis=-1, name="probs"),
        helper.make_node("MatMul", ["probs", "value.t"], ["context"], name="context"),
        helper.make_node("Transpose", ["context"], ["context.t"], perm=[0, 2, 1, 3], name="context.transpose"),
        helper.make_node("Reshape", ["context.t", "merged_shape"], ["merged"], name="merged"),
        helper.make_node("MatMul", ["merged", "output.weight"], ["output.mm"], name="output.mm"),
        helper.make_node("Add", ["output.mm", "output.bias"], ["out"], name="output.add"),
    ]
    initializers += [
        _init("output.weight", weight(width, width)),
        _init("output.bias", weight(width)),
        _init("heads", np.array([0, -1, heads, width_per_head], np.int64)),
        _init("merged_shape", np.array([0, -1, width], np.int64)),
        _init("scale", np.array(scale, np.float32)),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", F32, ["batch", "sequence", width])],
        [helper.make_tensor_value_info("out", F32, ["batch", "sequence", width])],
        initializers,
    )


def wide() -> onnx.ModelProto:
    """One Gemm (transB) + bias + Relu with 1024 inputs: rows long enough for the
    panelled kernel variant."""
    rng = _rng()
    node = helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1, name="fc")
    relu = helper.make_node("Relu", ["h"], ["y"], name="relu")
    return _model(
        [node, relu],
        [helper.make_tensor_value_info("x", F32, ["batch", 1024])],
        [helper.make_tensor_value_info("y", F32, ["batch", 32])],
        [_init("w", rng.standard_normal((32, 1024), dtype=np.float32)), _init("b", rng.standard_normal(32, dtype=np.float32))],
    )


def shapes() -> onnx.ModelProto:
    """Reshape, Transpose, Concat, Unsqueeze/Squeeze (opset 13 inputs), Sum, Sub, Div, Tanh, Sigmoid, Erf."""
    return _model(
        [
            helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
            helper.make_node("Transpose", ["r"], ["t"], name="transpose", perm=[0, 2, 1]),
            helper.make_node("Unsqueeze", ["t", "axes"], ["u"], name="unsqueeze"),
            helper.make_node("Squeeze", ["u", "axes"], ["s"], name="squeeze"),
            helper.make_node("Concat", ["s", "t"], ["c"], name="concat", axis=1),
            helper.make_node("Tanh", ["c"], ["c1"], name="tanh"),
            helper.make_node("Sigmoid", ["c"], ["c2"], name="sigmoid"),
            helper.make_node("Erf", ["c"], ["c3"], name="erf"),
            helper.make_node("Sum", ["c1", "c2", "c3"], ["sum"], name="sum"),
            helper.make_node("Sub", ["sum", "c1"], ["d"], name="sub"),
            helper.make_node("Div", ["d", "two"], ["out"], name="div"),
        ],
        [helper.make_tensor_value_info("x", F32, [2, 12])],
        [helper.make_tensor_value_info("out", F32, [2, 8, 3])],
        [
            _init("shape", np.array([0, 3, -1], np.int64)),
            _init("axes", np.array([1], np.int64)),
            _init("two", np.array(2.0, np.float32)),
        ],
        opset=13,
    )


def norms() -> onnx.ModelProto:
    """BatchNormalization, LRN, Dropout, Identity and opset-11 Softmax over axis 1 of a rank-4 tensor."""
    rng = _rng()
    c = 4
    return _model(
        [
            helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["bn"], name="bn", epsilon=1e-3),
            helper.make_node("LRN", ["bn"], ["lrn"], name="lrn", size=3, alpha=1e-3, beta=0.75, bias=1.0),
            helper.make_node("Dropout", ["lrn"], ["drop"], name="dropout"),
            helper.make_node("Identity", ["drop"], ["id"], name="identity"),
            helper.make_node("Softmax", ["id"], ["out"], name="softmax", axis=1),
        ],
        [helper.make_tensor_value_info("x", F32, [2, c, 3, 3])],
        [helper.make_tensor_value_info("out", F32, [2, c, 3, 3])],
        [
            _init("scale", (1 + 0.1 * rng.standard_normal(c)).astype(np.float32)),
            _init("bias", rng.standard_normal(c).astype(np.float32)),
            _init("mean", rng.standard_normal(c).astype(np.float32)),
            _init("var", (1 + rng.random(c)).astype(np.float32)),
        ],
        opset=11,
    )


def constants() -> onnx.ModelProto:
    """Constant and ConstantOfShape fold into weights."""
    return _model(
        [
            helper.make_node("Constant", [], ["k"], name="const", value=numpy_helper.from_array(np.array([1.0, 2.0, 3.0], np.float32))),
            helper.make_node("Constant", [], ["shape"], name="shape_const", value=numpy_helper.from_array(np.array([3], np.int64))),
            helper.make_node("ConstantOfShape", ["shape"], ["fill"], name="fill", value=numpy_helper.from_array(np.array([0.5], np.float32))),
            helper.make_node("Mul", ["x", "k"], ["m"], name="mul"),
            helper.make_node("Add", ["m", "fill"], ["out"], name="add"),
        ],
        [helper.make_tensor_value_info("x", F32, ["batch", 3])],
        [helper.make_tensor_value_info("out", F32, ["batch", 3])],
    )


def run_time_shapes(width: int = 8, heads: int = 2) -> onnx.ModelProto:
    """What PyTorch's exporter writes around a transformer's layers: per-head reshape
    targets from Shape, Gather, Unsqueeze and Concat of the tensor reshaped, token
    embeddings by Gather, position ids sliced to the run-time sequence length, and an
    additive mask from Cast, Sub and Mul of the input mask (int64 inputs ids, mask)."""
    rng = _rng()
    i64 = TensorProto.INT64
    scalar = lambda name, value: _init(name, np.array(value, np.int64))  # noqa: E731
    vector = lambda name, value: _init(name, np.array(value, np.int64))  # noqa: E731
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["tokens"], name="embed"),
        helper.make_node("Shape", ["ids"], ["ids_shape"], name="ids_shape"),
        helper.make_node("Gather", ["ids_shape", "one"], ["length"], name="length", axis=0),
        helper.make_node("Unsqueeze", ["length", "axis0"], ["length_1d"], name="length_1d"),
        helper.make_node("Slice", ["position_ids", "zero_1d", "length_1d", "axis1"], ["positions"], name="positions"),
        helper.make_node("Gather", ["position_table", "positions"], ["placed"], name="place"),
        helper.make_node("Add", ["tokens", "placed"], ["x"], name="embeddings"),
        helper.make_node("Shape", ["x"], ["x_shape"], name="x_shape"),
        helper.make_node("Gather", ["x_shape", "zero"], ["batch"], name="batch", axis=0),
        helper.make_node("Gather", ["x_shape", "one"], ["sequence"], name="sequence", axis=0),
        helper.make_node("Unsqueeze", ["batch", "axis0"], ["batch_1d"], name="batch_1d"),
        helper.make_node("Unsqueeze", ["sequence", "axis0"], ["sequence_1d"], name="sequence_1d"),
        helper.make_node("Concat", ["batch_1d", "sequence_1d", "heads", "head_width"], ["per_head"], name="per_head", axis=0),
        helper.make_node("Reshape", ["x", "per_head"], ["split"], name="split"),
        helper.make_node("Transpose", ["split"], ["heads_first"], name="heads_first", perm=[0, 2, 1, 3]),
        helper.make_node("Unsqueeze", ["mask", "axes12"], ["mask4"], name="mask4"),
        helper.make_node("Cast", ["mask4"], ["mask_float"], name="mask_float", to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one_float", "mask_float"], ["masked"], name="masked"),
        helper.make_node("Mul", ["masked", "lowest"], ["additive"], name="additive"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("ids", i64, ["batch", "sequence"]), helper.make_tensor_value_info("mask", i64, ["batch", "sequence"])],
        [
            helper.make_tensor_value_info("heads_first", F32, ["batch", heads, "sequence", width // heads]),
            helper.make_tensor_value_info("additive", F32, ["batch", 1, 1, "sequence"]),
        ],
        [
            _init("table", rng.standard_normal((16, width)).astype(np.float32)),
            _init("position_table", rng.standard_normal((12, width)).astype(np.float32)),
            _init("position_ids", np.arange(12, dtype=np.int64)[None]),
            scalar("zero", 0), scalar("one", 1), vector("zero_1d", [0]), vector("axis0", [0]), vector("axis1", [1]),
            vector("axes12", [1, 2]), vector("heads", [heads]), vector("head_width", [width // heads]),
            _init("one_float", np.array(1.0, np.float32)), _init("lowest", np.array(-3.4028234663852886e38, np.float32)),
        ],
    )  # fmt: skip


def weight_input() -> onnx.ModelProto:
    """A weight passed in as a graph input (no initializer) stays an input."""
    return _model(
        [helper.make_node("MatMul", ["x", "w"], ["out"], name="fc")],
        [helper.make_tensor_value_info("x", F32, ["batch", 4]), helper.make_tensor_value_info("w", F32, [4, 2])],
        [helper.make_tensor_value_info("out", F32, ["batch", 2])],
    )


def unsupported() -> onnx.ModelProto:
    """An op sparsec does not import."""
    return _model(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Det", ["r"], ["out"], name="my_det")],
        [helper.make_tensor_value_info("x", F32, [2])],
        [helper.make_tensor_value_info("out", F32, [2])],
    )


def gather_nd_batch_dims() -> onnx.ModelProto:
    """A GatherND with batch_dims = 1, which sparsec does not import."""
    return _model(
        [helper.make_node("GatherND", ["x", "i"], ["out"], name="pick", batch_dims=1)],
        [helper.make_tensor_value_info("x", F32, [2, 3]), helper.make_tensor_value_info("i", TensorProto.INT64, [2, 1])],
        [helper.make_tensor_value_info("out", F32, [2])],
    )


def cast_to_string() -> onnx.ModelProto:
    """A Cast to an ONNX data type sparsec has no tensors of (8, string)."""
    return _model(
        [helper.make_node("Cast", ["x"], ["out"], name="to_text", to=TensorProto.STRING)],
        [helper.make_tensor_value_info("x", F32, [2])],
        [helper.make_tensor_value_info("out", TensorProto.STRING, [2])],
    )


def pad_reflect() -> onnx.ModelProto:
    """A Pad in reflect mode, which sparsec does not import (only constant)."""
    return _model(
        [helper.make_node("Pad", ["x", "pads"], ["out"], name="mirror", mode="reflect")],
        [helper.make_tensor_value_info("x", F32, [2, 3])],
        [helper.make_tensor_value_info("out", F32, [2, 5])],
        [_init("pads", np.array([0, 1, 0, 1], np.int64))],
    )


def string_axis() -> onnx.ModelProto:
    """A Concat whose axis attribute is a string (a fuzzed model's): refused by type."""
    return _model(
        [helper.make_node("Concat", ["x", "x"], ["out"], name="join", axis="one")],
        [helper.make_tensor_value_info("x", F32, [2, 3])],
        [helper.make_tensor_value_info("out", F32, [4, 3])],
    )


def unknown_data_type() -> onnx.ModelProto:
    """An initializer whose data type is no ONNX type (33, a fuzzed model's), its value
    in raw bytes: refused by name."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    two.raw_data = np.float32(2.0).tobytes()
    del two.float_data[:]
    two.data_type = 33
    return _model(
        [helper.make_node("Div", ["x", "two"], ["out"], name="halve")],
        [helper.make_tensor_value_info("x", F32, [2, 3])],
        [helper.make_tensor_value_info("out", F32, [2, 3])],
        [two],
    )


def old_opset() -> onnx.ModelProto:
    model = gemm()
    model.opset_import[0].version = 6
    return model


def bad_shapes() -> onnx.ModelProto:
    """A Gemm whose inner dimensions disagree."""
    rng = _rng()
    return _model(
        [helper.make_node("Gemm", ["x", "w"], ["out"], name="fc")],
        [helper.make_tensor_value_info("x", F32, [2, 4])],
        [helper.make_tensor_value_info("out", F32, [2, 3])],
        [_init("w", rng.standard_normal((5, 3)).astype(np.float32))],
    )


MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    f.__name__: f
    for f in (gemm, mlp, conv, conv_same, pool, depthwise, residual, transformer_mlp, exported_gelu, llama_mlp, attention, wide, shapes, run_time_shapes, norms, constants, weight_input, unsupported,
              gather_nd_batch_dims, cast_to_string, pad_reflect, string_axis, unknown_data_type, old_opset, bad_shapes)
}


def gemm_stack(path: str | Path, layers: int, width: int, bias: bool = False, scale: float = 1.0) -> Path:
    """`layers` Gemm(transB) + Relu layers of width x width random weights times `scale`."""
    rng = np.random.default_rng(0)
    nodes, initializers, previous = [], [], "x"
    for i in range(layers):
        inputs = [previous, f"w{i}"] + ([f"b{i}"] if bias else [])
        weight = rng.standard_normal((width, width), dtype=np.float32) * np.float32(scale)
        initializers.append(numpy_helper.from_array(weight, f"w{i}"))
        if bias:
            initializers.append(numpy_helper.from_array(rng.standard_normal(width, dtype=np.float32), f"b{i}"))
        nodes.append(helper.make_node("Gemm", inputs, [f"h{i}"], transB=1, name=f"fc{i}"))
        nodes.append(helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu{i}"))
        previous = f"r{i}"
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", F32, ["batch", width])],
        [helper.make_tensor_value_info(previous, F32, ["batch", width])],
        initializers,
    )
    onnx.save(model, str(path))
    return Path(path)


LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
"""The real architectures the onnx wheel ships (light_resnet50.onnx, ...), their weights
made by ConstantOfShape (all equal)."""


def randomized(path: Path, out: Path) -> Path:
    """The model with each ConstantOfShape replaced by a random (He-scaled) initializer."""
    model = onnx.load(str(path))
    graph = model.graph
    shapes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    rng = np.random.default_rng(7)
    kept = []
    for node in graph.node:
        if node.op_type != "ConstantOfShape":
            kept.append(node)
            continue
        shape = shapes[node.input[0]].astype(int).tolist()
        if len(shape) == 1:  # biases, batch-norm parameters: positive around 1
            array = np.abs(1.0 + 0.1 * rng.standard_normal(shape))
        else:
            array = rng.standard_normal(shape) * np.sqrt(2.0 / max(1, int(np.prod(shape[1:]))))
        graph.initializer.append(numpy_helper.from_array(array.astype(np.float32), node.output[0]))
    del graph.node[:]
    graph.node.extend(kept)
    onnx.save(model, str(out))
    return out


def open_batch(path: Path, out: Path) -> Path:
    """The model with its batch axis left to run time, as exporters write it (PyTorch's
    `dynamic_axes`): its inputs' and outputs' first dimension named "N", and the
    Reshape targets that fix a batch of 1 inferring it (-1)."""
    model = onnx.load(str(path))
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        target = initializers.get(node.input[1]) if node.op_type == "Reshape" else None
        if target is not None and (shape := numpy_helper.to_array(target)).size and shape[0] == 1:
            target.CopyFrom(numpy_helper.from_array(np.concatenate([[-1], shape[1:]]).astype(shape.dtype), target.name))
    for value in (*graph.input, *graph.output):
        if value.name not in initializers:
            value.type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(model, str(out))
    return out


def save(name: str, path: str | Path, external_data: bool = False) -> Path:
    path = Path(path)
    model = MODELS[name]()
    if external_data:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


if __name__ == "__main__":
    args = sys.argv[1:]
    external = "--external-data" in args
    args = [a for a in args if a != "--external-data"]
    if len(args) != 2 or args[0] not in MODELS:
        sys.exit(f"usage: models.py [--external-data] {{{','.join(MODELS)}}} OUT.onnx")
    save(args[0], args[1], external)
