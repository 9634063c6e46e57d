"""fuse-layer-norm on layer normalization written out op by op, as PyTorch exports
nn.LayerNorm before opset 17: every spelling the pass takes fuses into one
nn.layer_norm that runs as the executor's layer norm kernel and computes what
onnxruntime computes on the original."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from sparsec.runtime.executor import Executor

import sparsec
from sparsec.dialects import nn

EXPORTS = Path(__file__).parent.parent / "exports"


def _written_out(channels: int, gamma: bool, beta: bool, swapped: bool, epsilon: float) -> onnx.ModelProto:
    """x (batch, rows, channels) through ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt,
    Div, then Mul by gamma and Add of beta where asked; `swapped` puts the constants
    first in their Add and Mul."""
    rng = np.random.default_rng(channels)

    def ordered(a: str, b: str) -> list[str]:
        return [b, a] if swapped else [a, b]

    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1]),
        helper.make_node("Sub", ["x", "m"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["p"]),
        helper.make_node("ReduceMean", ["p"], ["v"], axes=[-1]),
        helper.make_node("Add", ordered("v", "eps"), ["e"]),
        helper.make_node("Sqrt", ["e"], ["s"]),
        helper.make_node("Div", ["d", "s"], ["n" if gamma or beta else "out"]),
    ]
    initializers = [numpy_helper.from_array(np.array(2.0, np.float32), "two"), numpy_helper.from_array(np.array(epsilon, np.float32), "eps")]
    if gamma:
        nodes.append(helper.make_node("Mul", ordered("n", "gamma"), ["g" if beta else "out"]))
        initializers.append(numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "gamma"))
    if beta:
        nodes.append(helper.make_node("Add", ordered("g" if gamma else "n", "beta"), ["out"]))
        initializers.append(numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "beta"))
    graph = helper.make_graph(
        nodes, "layer_norm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "rows", channels])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "rows", channels])], initializers,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


@settings(max_examples=25, deadline=None)
@given(
    channels=st.sampled_from([8, 33, 768]),
    gamma=st.booleans(),
    beta=st.booleans(),
    swapped=st.booleans(),
    epsilon=st.sampled_from([1e-12, 1e-5, 0.1]),
    rows=st.integers(1, 9),
)
def test_every_spelling_fuses_and_matches_onnxruntime(tmp_path_factory, channels, gamma, beta, swapped, epsilon, rows):
    path = tmp_path_factory.mktemp("ln") / "ln.onnx"
    onnx.save(_written_out(channels, gamma, beta, swapped, epsilon), str(path))
    model = sparsec.load(path)
    model.apply("fuse-layer-norm")
    assert [op.name for op in model.module.walk() if op.name.startswith("nn.") and op.name != "nn.weight"] == ["nn.layer_norm"]
    x = np.random.default_rng(rows).standard_normal((2, rows, channels)).astype(np.float32) * 3 + 1
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(model.run({"x": x})["out"], expected, rtol=1e-4, atol=1e-5)
    executor = Executor(model.module, model.weights, threads=2)
    try:
        assert executor.generated_kernels() == ["layer norm kernel"]
        np.testing.assert_allclose(executor.run({"x": x})["out"], expected, rtol=1e-4, atol=1e-5)
    finally:
        executor.close()


def test_bert_exported_at_opset_14_compiles_with_layer_norm_kernels(tmp_path):
    """`compile -o X.spx` runs the pass: all five of the tiny BERT's LayerNorms fuse,
    and none of the nine ops is left."""
    model = sparsec.load(EXPORTS / "bert_eager_torchscript_14.onnx")
    model.apply("fuse-layer-norm")
    kinds = [type(op) for op in model.module.walk()]
    assert kinds.count(nn.LayerNormOp) == 5
    assert not {nn.ReduceMeanOp, nn.PowOp, nn.SqrtOp} & set(kinds)
