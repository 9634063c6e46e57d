"""sparsec IR back to ONNX, with the weights as the pipeline left them.

Every `nn` op maps back to the ONNX operator it mirrors, packed weights are decoded,
and kernel ops become the Gemm or Conv (plus Relu) they were lowered from; properties become node
attributes (`trans_b` -> `transB`), and properties that ONNX passes as inputs from
opset 13 on (Reshape's shape, Unsqueeze/Squeeze axes, and ReduceMean's from 18 on)
become int64 initializers. The model is written at opset 17 (LayerNormalization), 18
when it uses ReduceMean, 20 when it uses Gelu, 23 RMSNormalization, 24 Swish.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects import func
from xdsl.dialects.builtin import DenseArrayBase, FloatAttr, IntegerAttr, ModuleOp, StringAttr, TensorType
from xdsl.ir import Attribute, Operation, SSAValue

from sparsec.dialects import nn
from sparsec.dialects.kernel_ops import KernelOp, SparseConvOp
from sparsec.dialects.literals import numpy_dtype
from sparsec.dialects.nn import ints_of
from sparsec.dialects.shapes import DYNAMIC
from sparsec.errors import SparsecError
from sparsec.fileio import atomic_path
from sparsec.kernels import epilogue_activation
from sparsec.dialects import StoredWeightOp
from sparsec.layers import dense_value
from sparsec.reference import input_names, main_function, output_names
from sparsec.weights import WeightStore

_ONNX_ATTRIBUTE_NAMES = {"trans_a": "transA", "trans_b": "transB"}
_PROPERTIES_AS_INPUTS = {nn.ReshapeOp: "shape", nn.UnsqueezeOp: "axes", nn.SqueezeOp: "axes", nn.ReduceMeanOp: "axes"}
_BASE_OPSET = 17
_MIN_OPSETS = {"ReduceMean": 18, "Gelu": 20, "RMSNormalization": 23, "Swish": 24}
"""Operators whose form here (axes as an input, the operator itself) needs a later opset."""
_EXTERNAL_DATA_THRESHOLD = 1 << 30
"""Models with more weight bytes than this are saved with external data (protobuf caps at 2 GB)."""


def _attribute_value(attr: Attribute) -> int | float | str | list[int]:
    match attr:
        case IntegerAttr():
            return attr.value.data
        case FloatAttr():
            return attr.value.data
        case StringAttr():
            return attr.data
        case DenseArrayBase():
            return list(ints_of(attr))
        case _:
            raise SparsecError(f"cannot export attribute {attr} to ONNX")


def _value_info(name: str, ty: Attribute) -> onnx.ValueInfoProto:
    assert isinstance(ty, TensorType)
    dims = [d if d != DYNAMIC else f"{name}_dim{i}" for i, d in enumerate(ty.get_shape())]
    elem = helper.np_dtype_to_tensor_dtype(numpy_dtype(ty.element_type))
    return helper.make_tensor_value_info(name, elem, dims)


class _Exporter:
    def __init__(self, weights: WeightStore):
        self.weights = weights
        self.names: dict[SSAValue, str] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.opset = _BASE_OPSET

    def name_of(self, value: SSAValue) -> str:
        """The value's ONNX name: its SSA name and a number, unlike any weight's name
        (exporters name weights `val_128` too)."""
        if value not in self.names:
            taken = set(self.names.values())
            number = len(self.names)
            while (name := f"{value.name_hint or 'v'}_{number}") in taken or name in self.weights:
                number += 1
            self.names[value] = name
        return self.names[value]

    def add_initializer(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def export_op(self, op: Operation) -> None:
        if isinstance(op, StoredWeightOp):
            name = op.weight_name.data
            self.names[op.result] = name
            self.add_initializer(name, dense_value(op, self.weights))
            return
        if isinstance(op, KernelOp):
            self.export_kernel_op(op)
            return
        if isinstance(op, nn.RotaryEmbeddingOp):
            self.export_rotary(op)
            return
        if isinstance(op, nn.AttentionOp):
            self.export_attention(op)
            return
        if not isinstance(op, nn.NNOp):
            raise SparsecError(f"'{op.name}' has no ONNX counterpart")
        self.opset = max(self.opset, _MIN_OPSETS.get(op.ONNX_OP, _BASE_OPSET))
        inputs = [self.name_of(v) for v in op.operands]
        attributes: dict[str, int | float | str | list[int]] = {}
        as_input = _PROPERTIES_AS_INPUTS.get(type(op))
        for key, attr in op.properties.items():
            if key == as_input:
                inputs.append(self.add_initializer(f"{self.name_of(op.results[0])}_{key}", np.array(ints_of(attr), dtype=np.int64)))
            else:
                attributes[_ONNX_ATTRIBUTE_NAMES.get(key, key)] = _attribute_value(attr)
        outputs = [self.name_of(op.results[0])]
        self.nodes.append(helper.make_node(op.ONNX_OP, inputs, outputs, name=outputs[0], **attributes))


    def export_rotary(self, op: nn.RotaryEmbeddingOp) -> None:
        """The seven ops a rotary embedding stands for (`fuse-rotary`): ONNX's own
        RotaryEmbedding takes other tables."""
        x, cos, sin = (self.name_of(v) for v in op.operands)
        output = self.name_of(op.output)
        width = op.x.type.get_shape()[-1]  # pyright: ignore

        def named(part: str) -> str:
            return f"{output}_{part}"

        for key, value in {"zero": 0, "half": width // 2, "width": width, "last": -1, "one": 1}.items():
            self.add_initializer(named(key), np.array([value], np.int64))
        for kind, inputs, result, attributes in [
            ("Slice", [x, named("half"), named("width"), named("last"), named("one")], named("second"), {}),
            ("Neg", [named("second")], named("negated"), {}),
            ("Slice", [x, named("zero"), named("half"), named("last"), named("one")], named("first"), {}),
            ("Concat", [named("negated"), named("first")], named("rotated"), {"axis": -1}),
            ("Mul", [x, cos], named("cos_part"), {}),
            ("Mul", [named("rotated"), sin], named("sin_part"), {}),
            ("Add", [named("cos_part"), named("sin_part")], output, {}),
        ]:
            self.nodes.append(helper.make_node(kind, inputs, [result], name=result, **attributes))

    def export_attention(self, op: nn.AttentionOp) -> None:
        """The ops an attention stands for (`fuse-attention`): ONNX's own
        Attention (opset 23) takes its keys untransposed. Grouped key or value heads
        are repeated to the queries' first (Unsqueeze, Expand, Reshape)."""
        output = self.name_of(op.output)
        q, kt, v = (self.name_of(operand) for operand in (op.q, op.kt, op.v))
        heads, depth = op.q.type.get_shape()[1], op.q.type.get_shape()[3]  # pyright: ignore
        value_depth = op.v.type.get_shape()[3]  # pyright: ignore

        def node(kind: str, inputs: list[str], part: str, **attributes) -> str:
            result = output if part == "output" else f"{output}_{part}"
            self.nodes.append(helper.make_node(kind, inputs, [result], name=result, **attributes))
            return result

        def grouped(name: str, operand: SSAValue, part: str, shape: list[int]) -> str:
            shared = operand.type.get_shape()[1]  # pyright: ignore
            if shared in (1, heads, DYNAMIC):  # MatMul broadcasts 1 (a run-time count must be 1 or H)
                return name
            if DYNAMIC in (heads, *shape):
                raise SparsecError(f"ONNX export: '{op.name}' with {shared} {part} heads for {heads} query heads needs static head counts and widths")
            axes = self.add_initializer(f"{output}_{part}_axes", np.array([2], np.int64))
            repeats = self.add_initializer(f"{output}_{part}_repeats", np.array([1, 1, heads // shared, 1, 1], np.int64))
            target = self.add_initializer(f"{output}_{part}_shape", np.array([0, heads, *shape], np.int64))
            expanded = node("Expand", [node("Unsqueeze", [name, axes], f"{part}_unsqueezed"), repeats], f"{part}_expanded")
            return node("Reshape", [expanded, target], f"{part}_grouped")

        scores = node("MatMul", [q, grouped(kt, op.kt, "key", [depth, -1])], "scores")
        if (scale := op.scale.value.data) != 1.0:
            scores = node("Mul", [scores, self.add_initializer(f"{output}_scale", np.array(scale, np.float32))], "scaled")
        if op.mask is not None:
            scores = node("Add", [scores, self.name_of(op.mask)], "masked")
        probabilities = node("Softmax", [scores], "probabilities", axis=-1)
        if op.nan_rows_to_zero.value.data:
            zero = self.add_initializer(f"{output}_zero", np.array(0.0, np.float32))
            probabilities = node("Where", [node("IsNaN", [probabilities], "nan"), zero, probabilities], "zeroed")
        node("MatMul", [probabilities, grouped(v, op.v, "value", [-1, value_depth])], "output")

    def export_kernel_op(self, op: KernelOp) -> None:
        """A kernel op as the ONNX node it was lowered from, plus Relu, Gelu or Swish for a
        fused epilogue."""
        inputs = [self.name_of(v) for v in op.operands]
        output = self.name_of(op.results[0])
        activation = epilogue_activation(op.epilogue.data)
        node = {"relu": "Relu", "gelu": "Gelu", "gelu_tanh": "Gelu", "swish": "Swish"}[activation] if activation else None
        first = f"{output}_pre_{activation}" if activation else output
        if isinstance(op, SparseConvOp):
            attributes = {
                _ONNX_ATTRIBUTE_NAMES.get(k, k): _attribute_value(v)
                for k, v in op.properties.items()
                if k not in ("kernel", "kind", "epilogue")
            }
            self.nodes.append(helper.make_node("Conv", inputs, [first], name=first, **attributes))
        elif len(op.x.type.get_shape()) == 2:  # pyright: ignore
            self.nodes.append(
                helper.make_node("Gemm", inputs, [first], name=first, transB=0 if op.transposed.value.data else 1)
            )
        else:
            weight = inputs[1]
            if not op.transposed.value.data:
                weight = f"{first}_weight_t"
                self.nodes.append(helper.make_node("Transpose", [inputs[1]], [weight], name=weight))
            product = f"{first}_product" if op.b is not None else first
            self.nodes.append(helper.make_node("MatMul", [inputs[0], weight], [product], name=product))
            if op.b is not None:
                self.nodes.append(helper.make_node("Add", [product, inputs[2]], [first], name=first))
        if node:
            self.opset = max(self.opset, _MIN_OPSETS.get(node, _BASE_OPSET))
            attributes = {"approximate": "tanh"} if activation == "gelu_tanh" else {}
            self.nodes.append(helper.make_node(node, [first], [output], name=output, **attributes))


def export_model(module: ModuleOp, weights: WeightStore) -> onnx.ModelProto:
    """The module's @main as an ONNX model."""
    function = main_function(module)
    exporter = _Exporter(weights)
    for arg, name in zip(function.args, input_names(function)):
        exporter.names[arg] = name
    terminator = function.body.block.last_op
    assert isinstance(terminator, func.ReturnOp)
    returned = list(terminator.operands)
    aliased: list[tuple[SSAValue, str]] = []
    for value, name in zip(returned, output_names(function)):
        if value in exporter.names or isinstance(value.owner, StoredWeightOp):
            aliased.append((value, name))
        else:
            exporter.names[value] = name
    for op in function.body.ops:
        if op is not terminator:
            exporter.export_op(op)
    for value, name in aliased:
        exporter.nodes.append(helper.make_node("Identity", [exporter.name_of(value)], [name], name=f"{name}_output"))
    graph = helper.make_graph(
        exporter.nodes,
        "sparsec",
        [_value_info(n, a.type) for n, a in zip(input_names(function), function.args)],
        [_value_info(n, v.type) for n, v in zip(output_names(function), returned)],
        exporter.initializers,
    )
    opset = exporter.opset
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="sparsec")


def write_onnx(module: ModuleOp, weights: WeightStore, path: str | Path) -> None:
    """Write the model atomically; large models keep their weights in `<name>.data`."""
    path = Path(path)
    model = export_model(module, weights)
    external = weights.nbytes > _EXTERNAL_DATA_THRESHOLD
    with atomic_path(path) as tmp:
        if external:
            onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=path.name + ".data", size_threshold=1024)
        else:
            onnx.save_model(model, str(tmp))
