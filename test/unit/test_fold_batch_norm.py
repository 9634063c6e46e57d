"""fold-batch-norm on whole models: the light models with batch normalization against
onnxruntime, and a pruned model compiled with the fold against the same model without."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import sparsec
from conftest import onnxruntime_outputs, random_feeds
from sparsec.dialects import nn
from sparsec.runtime.executor import Executor
from models import LIGHT, randomized


def count(model: sparsec.Model, kind: type) -> int:
    return sum(isinstance(op, kind) for op in model.module.walk())


@pytest.mark.parametrize("name", ["resnet50", "densenet121", "inception_v2", "shufflenet"])
def test_folded_light_models_match_onnxruntime(name, tmp_path):
    """Every normalization right after a convolution folds (DenseNet's and ShuffleNet's
    others follow a Concat or a pool, and stay), and so does every Mul and Add of a
    per-channel constant (DenseNet's 121 and Inception's 69 of each, after a
    convolution or a normalization: none stays); the outputs still match onnxruntime,
    and the model before the fold to float32 rounding. (With random weights ResNet50's
    and ShuffleNet's softmax saturate to one class, which a wrong fold can keep;
    DenseNet's logits and Inception's probabilities show one.)"""
    path = randomized(LIGHT / f"light_{name}.onnx", tmp_path / f"{name}.onnx")
    model = sparsec.load(path)
    unfolded = model.clone()
    after_conv = sum(isinstance(op.x.owner, nn.ConvOp) and op.x.has_one_use() for op in model.module.walk() if isinstance(op, nn.BatchNormOp))
    norms, weights, affine = count(model, nn.BatchNormOp), len(model.weights), count(model, nn.MulOp) + count(model, nn.AddOp)
    model.apply("fold-batch-norm")
    assert after_conv > 0 and count(model, nn.BatchNormOp) == norms - after_conv
    assert len(model.weights) <= weights - 3 * after_conv - affine  # scale, shift, mean and var gone, a bias in; each Mul's or Add's constant gone
    assert count(model, nn.MulOp) + count(model, nn.AddOp) == 0
    feeds = random_feeds(model)
    expected, before = onnxruntime_outputs(path, feeds), unfolded.run(feeds)
    for key, value in model.run(feeds).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(value, before[key], rtol=1e-4, atol=1e-5 * float(np.abs(before[key]).max()))


def conv_bn_model(path: Path) -> Path:
    """Conv (bias) -> BN -> Relu -> Conv (no bias) -> BN -> Relu, 16 -> 32 -> 32 channels."""
    rng = np.random.default_rng(3)

    def norm_params(prefix: str, channels: int) -> list[TensorProto]:
        values = {"scale": 1 + 0.3 * rng.standard_normal(channels), "shift": rng.standard_normal(channels),
                  "mean": rng.standard_normal(channels), "var": 0.5 + rng.random(channels)}  # fmt: skip
        return [numpy_helper.from_array(v.astype(np.float32), f"{prefix}_{k}") for k, v in values.items()]

    def bn(prefix: str, x: str, y: str):
        return helper.make_node("BatchNormalization", [x, *(f"{prefix}_{k}" for k in ("scale", "shift", "mean", "var"))], [y], epsilon=1e-3)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        bn("bn1", "c1", "n1"),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        bn("bn2", "c2", "n2"),
        helper.make_node("Relu", ["n2"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array((rng.standard_normal((32, 16, 3, 3)) * 0.1).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1"),
        numpy_helper.from_array((rng.standard_normal((32, 32, 3, 3)) * 0.1).astype(np.float32), "w2"),
        *norm_params("bn1", 32),
        *norm_params("bn2", 32),
    ]
    graph = helper.make_graph(
        nodes, "conv_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_fold_after_pruning_keeps_the_zeros_and_the_outputs(tmp_path, monkeypatch):
    """Pruned, then folded: each folded weight is zero exactly where the pruned one is
    and the model computes what the pruned one did (float32); packed and lowered, the
    convolutions run as kernels with bias and Relu fused, matching the reference on
    the same float16 weights."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    path = conv_bn_model(tmp_path / "conv_bn.onnx")
    pruned = sparsec.load(path)
    pruned.apply("prune-magnitude{pattern=nm n=2 m=4 min-elements=0}")
    folded = pruned.clone()
    folded.apply("fold-batch-norm")
    for name in ("w1", "w2"):
        np.testing.assert_array_equal(folded.weights[f"{name}_bn"] == 0, pruned.weights[name] == 0)
    x = np.random.default_rng(4).standard_normal((2, 16, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(folded.run({"x": x})["y"], pruned.run({"x": x})["y"], rtol=1e-4, atol=1e-5)
    folded.apply("pack-bitmask,lower-kernels")
    assert count(folded, nn.BatchNormOp) == 0 and count(folded, nn.ReluOp) == 0
    got = Executor(folded.module, folded.weights).run({"x": x})["y"]
    np.testing.assert_allclose(got, folded.run({"x": x})["y"], rtol=1e-3, atol=1e-4)


def test_compile_folds_for_the_runtime_only(tmp_path):
    """`sparsec compile` folds for a .spx; an .onnx output keeps the normalizations."""
    path = conv_bn_model(tmp_path / "conv_bn.onnx")
    from sparsec.cli import main

    assert main(["compile", str(path), "--pattern", "nm:2:4", "--min-elements", "0", "-o", str(tmp_path / "m.spx")]) == 0
    assert main(["compile", str(path), "--pattern", "nm:2:4", "--min-elements", "0", "-o", str(tmp_path / "m.onnx")]) == 0
    assert count(sparsec.load(tmp_path / "m.spx"), nn.BatchNormOp) == 0
    assert sum(node.op_type == "BatchNormalization" for node in onnx.load(str(tmp_path / "m.onnx")).graph.node) == 2


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_and_batch_norm_fold(trans_b, tmp_path, monkeypatch):
    """Gemm (beta 0.5, a bias) -> BatchNormalization -> Relu, as a Linear layer and
    BatchNorm1d export: folded, it matches onnxruntime, and compiled to kernels (bias
    and Relu fused), the reference on the same float16 weights."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    rng = np.random.default_rng(5)
    weight = (rng.standard_normal((48, 64) if trans_b else (64, 48)) * 0.2).astype(np.float32)
    norm = {"scale": 1 + 0.3 * rng.standard_normal(48), "shift": rng.standard_normal(48), "mean": rng.standard_normal(48), "var": 0.5 + rng.random(48)}
    nodes = [
        helper.make_node("Gemm", ["x", "w", "c"], ["g"], name="fc", transB=trans_b, beta=0.5),
        helper.make_node("BatchNormalization", ["g", "scale", "shift", "mean", "var"], ["n"]),
        helper.make_node("Relu", ["n"], ["y"]),
    ]
    initializers = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(rng.standard_normal(48).astype(np.float32), "c")]
    initializers += [numpy_helper.from_array(v.astype(np.float32), k) for k, v in norm.items()]
    graph = helper.make_graph(
        nodes, "gemm_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers,
    )  # fmt: skip
    path = tmp_path / "gemm_bn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    model = sparsec.load(path)
    model.apply("prune-magnitude{pattern=nm n=2 m=4 min-elements=0},fold-batch-norm")
    assert count(model, nn.BatchNormOp) == 0
    x = rng.standard_normal((5, 64)).astype(np.float32)
    pruned = sparsec.load(path)
    pruned.apply("prune-magnitude{pattern=nm n=2 m=4 min-elements=0}")
    np.testing.assert_allclose(model.run({"x": x})["y"], pruned.run({"x": x})["y"], rtol=1e-4, atol=1e-5)
    dense = sparsec.load(path)
    dense.apply("fold-batch-norm")
    np.testing.assert_allclose(dense.run({"x": x})["y"], onnxruntime_outputs(path, {"x": x})["y"], rtol=1e-4, atol=1e-5)
    model.apply("pack-bitmask,lower-kernels")
    assert count(model, nn.GemmOp) == 0 and count(model, nn.ReluOp) == 0
    got = Executor(model.module, model.weights).run({"x": x})["y"]
    np.testing.assert_allclose(got, model.run({"x": x})["y"], rtol=1e-3, atol=1e-4)
