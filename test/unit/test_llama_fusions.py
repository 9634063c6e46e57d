"""fuse-rms-norm and fuse-swish on a LLaMA block as PyTorch exports it (RMSNorm and
SiLU written out): the norm runs as the executor's RMS norm kernel, the SiLU in the
gate projection's kernel, and the compiled model computes what onnxruntime computes
on the original; every spelling of RMSNorm the pass takes fuses and computes what it
did; ONNX's own RMSNormalization (opset 23) and Swish (opset 24) import, run and
export back; fuse-rotary's rotary embeddings compute what the seven ops did, bit for
bit."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import sparsec
from sparsec.context import make_context
from sparsec.dialects import nn
from sparsec.dialects.kernel_ops import SparseMatMulOp
from sparsec.export.onnx import export_model
from sparsec.irfile import parse_module
from sparsec.model import Model
from sparsec.runtime.executor import Executor

FUSIONS = "strip-identity,fuse-rms-norm,fuse-swish"
EXPORTS = Path(__file__).parent.parent / "exports"


def _inputs(batch: int, sequence: int, width: int = 16) -> np.ndarray:
    return np.random.default_rng(batch * 100 + sequence).standard_normal((batch, sequence, width)).astype(np.float32)


def _run_jit(model: sparsec.Model, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    executor = Executor(model.module, model.weights, threads=2)
    try:
        return executor.run(feeds), executor.generated_kernels()
    finally:
        executor.close()


def _onnxruntime(path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return models.save("llama_mlp", tmp_path_factory.mktemp("llama") / "mlp.onnx")


def test_norm_and_silu_run_in_kernels(exported):
    model = sparsec.load(exported)
    model.apply("prune-magnitude{pattern=nm n=2 m=4 min-elements=0}")
    x = _inputs(3, 5)
    unfused = model.run({"x": x})["out"]
    model.apply(f"{FUSIONS},pack-bitmask,lower-kernels")
    ops = list(model.module.walk())
    assert not any(isinstance(op, nn.PowOp | nn.ReduceMeanOp | nn.SqrtOp | nn.ReciprocalOp | nn.SigmoidOp) for op in ops)
    assert sum(isinstance(op, nn.RMSNormOp) for op in ops) == 1
    assert [op.properties["epilogue"].data for op in ops if isinstance(op, SparseMatMulOp)] == ["swish", "none", "none"]  # pyright: ignore
    got, kernels = _run_jit(model, {"x": x})
    assert "RMS norm kernel" in kernels
    np.testing.assert_allclose(got["out"], unfused, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("batch, sequence", [(1, 1), (3, 5), (2, 40)])
def test_compiled_model_matches_onnxruntime(exported, batch, sequence):
    """Dense float16 kernels on float16-valued weights: only the order of the sums differs."""
    model = sparsec.load(exported)
    model.apply(f"prune-magnitude{{sparsity=0.0 min-elements=0}},{FUSIONS},pack-bitmask,lower-kernels")
    x = _inputs(batch, sequence)
    np.testing.assert_allclose(_run_jit(model, {"x": x})[0]["out"], _onnxruntime(exported, {"x": x})[0], rtol=1e-4, atol=1e-5)


def _rms_spelled(channels: int, square: str, invert: str, gamma: bool, swapped: bool, epsilon: float) -> onnx.ModelProto:
    """x (batch, rows, channels) squared (`square`: Pow or Mul), its mean over the last
    axis plus epsilon, its square root, x divided by it (`invert`: Reciprocal then Mul,
    Div of 1 then Mul, or Div), then a Mul by gamma where asked; `swapped` puts the
    other operand first in the Add and the Muls."""
    rng = np.random.default_rng(channels)

    def ordered(a: str, b: str) -> list[str]:
        return [b, a] if swapped else [a, b]

    nodes = [
        helper.make_node("Pow", ["x", "two"], ["p"]) if square == "pow" else helper.make_node("Mul", ["x", "x"], ["p"]),
        helper.make_node("ReduceMean", ["p"], ["m"], axes=[-1]),
        helper.make_node("Add", ordered("m", "eps"), ["e"]),
        helper.make_node("Sqrt", ["e"], ["s"]),
    ]
    normalized = "n" if gamma else "out"
    if invert == "div":
        nodes.append(helper.make_node("Div", ["x", "s"], [normalized]))
    else:
        nodes.append(helper.make_node("Reciprocal", ["s"], ["r"]) if invert == "reciprocal" else helper.make_node("Div", ["one", "s"], ["r"]))
        nodes.append(helper.make_node("Mul", ordered("x", "r"), [normalized]))
    initializers = [numpy_helper.from_array(np.array(v, np.float32), name) for name, v in (("two", 2.0), ("one", 1.0), ("eps", epsilon))]
    if gamma:
        nodes.append(helper.make_node("Mul", ordered("n", "gamma"), ["out"]))
        initializers.append(numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "gamma"))
    graph = helper.make_graph(
        nodes, "rms_norm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "rows", channels])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "rows", channels])], initializers,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@settings(max_examples=30, deadline=None)
@given(
    channels=st.sampled_from([8, 33, 576]),
    square=st.sampled_from(["pow", "mul"]),
    invert=st.sampled_from(["reciprocal", "div_one", "div"]),
    gamma=st.booleans(),
    swapped=st.booleans(),
    epsilon=st.sampled_from([1e-6, 1e-5, 0.1]),
    rows=st.integers(1, 9),
)
def test_every_spelling_fuses_and_matches_onnxruntime(tmp_path_factory, channels, square, invert, gamma, swapped, epsilon, rows):
    path = tmp_path_factory.mktemp("rms") / "rms.onnx"
    onnx.save(_rms_spelled(channels, square, invert, gamma, swapped, epsilon), str(path))
    model = sparsec.load(path)
    model.apply("fuse-rms-norm")
    assert [op.name for op in model.module.walk() if op.name.startswith("nn.") and op.name != "nn.weight"] == ["nn.rms_norm"]
    x = np.random.default_rng(rows).standard_normal((2, rows, channels)).astype(np.float32) * 3 + 1
    expected = _onnxruntime(path, {"x": x})[0]
    np.testing.assert_allclose(model.run({"x": x})["out"], expected, rtol=1e-4, atol=1e-5)
    got, kernels = _run_jit(model, {"x": x})
    assert kernels == ["RMS norm kernel"]
    np.testing.assert_allclose(got["out"], expected, rtol=1e-4, atol=1e-5)


def _single_node(op_type: str, opset: int, channels: int, **attributes) -> onnx.ModelProto:
    inputs = ["x", "scale"] if op_type == "RMSNormalization" else ["x"]
    initializers = [numpy_helper.from_array(np.linspace(0.5, 1.5, channels, dtype=np.float32), "scale")] if op_type == "RMSNormalization" else []
    graph = helper.make_graph(
        [helper.make_node(op_type, inputs, ["out"], **attributes)], op_type,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", channels])], initializers,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize(
    "op_type, opset, attributes, kernel",
    [
        ("RMSNormalization", 23, {"epsilon": 1e-3}, "RMS norm kernel"),
        ("Swish", 24, {}, None),
        ("Swish", 24, {"alpha": 1.702}, None),
    ],
)
def test_onnx_operators_import_run_and_export(tmp_path, op_type, opset, attributes, kernel):
    path = tmp_path / "model.onnx"
    onnx.save(_single_node(op_type, opset, 40, **attributes), str(path))
    x = np.random.default_rng(0).standard_normal((5, 40)).astype(np.float32) * 30
    expected = _onnxruntime(path, {"x": x})[0]
    model = sparsec.load(path)
    np.testing.assert_allclose(model.run({"x": x})["out"], expected, rtol=1e-5, atol=1e-6)
    got, kernels = _run_jit(model, {"x": x})
    assert kernels == ([kernel] if kernel else [])
    np.testing.assert_allclose(got["out"], expected, rtol=1e-5, atol=1e-6)
    exported = tmp_path / "back.onnx"
    onnx.save(export_model(model.module, model.weights), str(exported))
    assert [node.op_type for node in onnx.load(str(exported)).graph.node] == [op_type]
    np.testing.assert_allclose(_onnxruntime(exported, {"x": x})[0], expected, rtol=1e-6, atol=1e-6)


def test_swish_kernel_exports_as_matmul_and_swish(tmp_path, exported):
    model = sparsec.load(exported)
    model.apply(f"prune-magnitude{{pattern=nm n=2 m=4 min-elements=0}},{FUSIONS},pack-bitmask,lower-kernels")
    x = _inputs(2, 3)
    reference = model.run({"x": x})["out"]
    path = tmp_path / "back.onnx"
    onnx.save(export_model(model.module, model.weights), str(path))
    assert {"RMSNormalization", "Swish"} <= {node.op_type for node in onnx.load(str(path)).graph.node}
    np.testing.assert_allclose(_onnxruntime(path, {"x": x})[0], reference, rtol=1e-4, atol=1e-5)


def _rotary_written_out(heads: int, width: int, swapped: bool, axis_index: bool) -> onnx.ModelProto:
    """x (batch, heads, sequence, width) rotated by cos and sin inputs (batch, 1,
    sequence, width) as PyTorch exports LLaMA's rotary embedding; `swapped` puts the
    tables first in the Muls and the Add's operands the other way round, `axis_index`
    writes the last axis as 3 and the second half's end as `width` (the dynamo
    exporter's), else as -1 and INT64_MAX (the TorchScript exporter's)."""
    half, axis = width // 2, 3 if axis_index else -1
    end = width if axis_index else np.iinfo(np.int64).max

    def ordered(a: str, b: str) -> list[str]:
        return [b, a] if swapped else [a, b]

    nodes = [
        helper.make_node("Mul", ordered("x", "cos"), ["a"]),
        helper.make_node("Slice", ["x", "zero", "half", "axis", "one"], ["s1"]),
        helper.make_node("Slice", ["x", "half", "end", "axis", "one"], ["s2"]),
        helper.make_node("Neg", ["s2"], ["n"]),
        helper.make_node("Concat", ["n", "s1"], ["c"], axis=axis),
        helper.make_node("Mul", ordered("c", "sin"), ["b"]),
        helper.make_node("Add", ordered("a", "b"), ["out"]),
    ]
    constants = {"zero": 0, "half": half, "end": end, "axis": axis, "one": 1}
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", heads, "sequence", width])
    tables = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 1, "sequence", width]) for name in ("cos", "sin")]
    graph = helper.make_graph(
        nodes, "rotary", [x, *tables], [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", heads, "sequence", width])],
        [numpy_helper.from_array(np.array([v], np.int64), name) for name, v in constants.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@settings(max_examples=25, deadline=None)
@given(heads=st.integers(1, 4), width=st.sampled_from([2, 8, 64]), swapped=st.booleans(), axis_index=st.booleans(), sequence=st.integers(1, 9))
def test_rotary_embedding_fuses_and_computes_the_same(tmp_path_factory, heads, width, swapped, axis_index, sequence):
    """The fused op against onnxruntime on the seven ops, bit for bit against the
    reference interpreter's run of them, and written back to ONNX as the seven."""
    folder = tmp_path_factory.mktemp("rotary")
    path = folder / "rotary.onnx"
    onnx.save(_rotary_written_out(heads, width, swapped, axis_index), str(path))
    rng = np.random.default_rng(sequence)
    angles = rng.standard_normal((2, 1, sequence, width // 2)).astype(np.float32)
    feeds = {"x": rng.standard_normal((2, heads, sequence, width)).astype(np.float32)}
    feeds |= {"cos": np.cos(np.concatenate([angles, angles], -1)), "sin": np.sin(np.concatenate([angles, angles], -1))}
    model = sparsec.load(path)
    unfused = model.run(feeds)["out"]
    model.apply("fuse-rotary")
    assert [op.name for op in model.module.walk() if op.name.startswith("nn.") and op.name != "nn.weight"] == ["nn.rotary_embedding"]
    np.testing.assert_array_equal(model.run(feeds)["out"], unfused)
    np.testing.assert_allclose(unfused, _onnxruntime(path, feeds)[0], rtol=1e-6, atol=1e-6)
    back = folder / "back.onnx"
    onnx.save(export_model(model.module, model.weights), str(back))
    np.testing.assert_array_equal(_onnxruntime(back, feeds)[0], _onnxruntime(path, feeds)[0])


@settings(max_examples=40, deadline=None)
@given(
    shape=st.sampled_from([(2, 3, 5), (1, 9, 17), (2, 1), (1, 3, 40), (7,), ()]),
    width=st.sampled_from([2, 8, 34, 64, 130]),
    tables=st.sampled_from(["rows", "full", "flat"]),
    transposed=st.booleans(),
    seed=st.integers(0, 99),
)
def test_rotary_kernel_computes_the_reference_bit_for_bit(shape, width, tables, transposed, seed):
    """The rotary kernel (runtime/codegen/rotary.py) on x of rank 1 to 4, widths with
    and without a partial vector in each half, cos and sin broadcast over heads
    ("rows"), full or given per row only ("flat"), x read through a transposed view:
    the same bits as the reference's five numpy calls, on one and two threads."""
    x_shape = (*shape, width)
    rank = len(x_shape)
    table_shape = {"rows": (1,) * (rank - 2) + x_shape[-2:], "full": x_shape, "flat": x_shape[-2:]}[tables]
    types = [f"tensor<{'x'.join(map(str, t))}xf32>" for t in (x_shape, table_shape, table_shape)]
    text = f"""func.func @main(%x: {types[0]} {{sparsec.name = "x"}}, %c: {types[1]} {{sparsec.name = "c"}}, %s: {types[2]} {{sparsec.name = "s"}}) -> ({types[0]} {{sparsec.name = "y"}}) {{
  %y = nn.rotary_embedding %x, %c, %s : ({", ".join(types)}) -> {types[0]}
  func.return %y : {types[0]}
}}"""
    ctx = make_context()
    model = Model(parse_module(text, ctx), ctx)
    rng = np.random.default_rng(seed)
    if transposed and rank > 2:  # heads and rows swapped, as a head split's view is
        x = np.swapaxes(rng.standard_normal((*x_shape[:-3], x_shape[-2], x_shape[-3], width)).astype(np.float32), -2, -3)
    else:
        x = rng.standard_normal(x_shape).astype(np.float32)
    feeds = {"x": x, "c": rng.standard_normal(table_shape).astype(np.float32), "s": rng.standard_normal(table_shape).astype(np.float32)}
    expected = model.run(feeds)["y"]
    for threads in (1, 2):
        executor = Executor(model.module, model.weights, threads=threads)
        np.testing.assert_array_equal(executor.run(feeds)["y"], expected)
        assert executor._runs_as(executor.steps[0]) == "rotary kernel"
        executor.close()


def test_llama_export_rotates_its_queries_and_keys_in_one_step_each():
    model = sparsec.load(EXPORTS / "llama_torchscript_17.onnx")
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 128, (2, 7)), "attention_mask": np.ones((2, 7), np.int64)}
    before = model.run(feeds)["last_hidden_state"]
    model.apply("strip-identity,fuse-rotary")
    kinds = [op.name for op in model.module.walk()]
    assert kinds.count("nn.rotary_embedding") == 4 and "nn.neg" not in kinds  # 2 layers, queries and keys
    np.testing.assert_array_equal(model.run(feeds)["last_hidden_state"], before)


def test_attention_scale_folds_through_the_rotation_into_the_query_layer():
    """fold-scale takes 1 / sqrt(head width) back through nn.rotary_embedding (linear in
    x) into each layer's query weight: no Mul of the scores by a constant is left."""
    model = sparsec.load(EXPORTS / "llama_torchscript_17.onnx")
    rng = np.random.default_rng(1)
    feeds = {"input_ids": rng.integers(0, 128, (2, 7)), "attention_mask": np.ones((2, 7), np.int64)}
    before = model.run(feeds)["last_hidden_state"]
    model.apply("strip-identity,fuse-rotary,fold-scale")
    scaled = [op.weight_name.data for op in model.module.walk() if isinstance(op, nn.WeightOp) and op.weight_name.data.endswith("_scaled")]
    assert len(scaled) == 2  # one query weight a layer
    np.testing.assert_allclose(model.run(feeds)["last_hidden_state"], before, rtol=1e-5, atol=1e-6)
