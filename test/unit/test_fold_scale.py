"""fold-scale on attention as PyTorch exports it: the scores' scale moves into the
query layer's weight and bias, the model computes what it did, and compiled it
matches onnxruntime on the original."""

from __future__ import annotations

import models
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import sparsec
from sparsec.dialects import nn


def _inputs(batch: int, sequence: int) -> np.ndarray:
    return np.random.default_rng(batch * 100 + sequence).standard_normal((batch, sequence, 8)).astype(np.float32)


def test_scale_folds_into_the_queries_and_computes_the_same(tmp_path):
    """sqrt(3), no power of two: the folded weights differ from the old in their last bits."""
    path = tmp_path / "attention.onnx"
    onnx.save(models.attention(scale=float(np.sqrt(3))), str(path))
    model = sparsec.load(path)
    x = _inputs(2, 5)
    before = model.run({"x": x})["out"]
    model.apply("fold-scale")
    ops = list(model.module.walk())
    assert not any(isinstance(op, nn.DivOp) for op in ops)
    assert sorted(name for name in model.weights if name.endswith("_scaled")) == ["query.bias_scaled", "query.weight_scaled"]
    assert "scale" not in model.weights and "query.weight" not in model.weights
    np.testing.assert_allclose(model.run({"x": x})["out"], before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch, sequence", [(1, 1), (2, 7), (1, 40)])
def test_compiled_attention_matches_onnxruntime(tmp_path, batch, sequence):
    """Compiled as `compile -o X.spx` does (dense float16 kernels, a scale of 2 that
    keeps the weights float16 values): the Div is gone, the Softmax a kernel."""
    path = tmp_path / "attention.onnx"
    onnx.save(models.attention(), str(path))
    model = sparsec.load(path)
    model.apply("prune-magnitude{sparsity=0.0 min-elements=0},fold-batch-norm,fuse-layer-norm,fuse-gelu,fold-scale,pack-bitmask,lower-kernels")
    assert not any(isinstance(op, nn.DivOp) for op in model.module.walk())
    spx = tmp_path / "attention.spx"
    model.save(spx)
    compiled = sparsec.load(spx, threads=2)
    x = _inputs(batch, sequence)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(compiled.run({"x": x})["out"], expected, rtol=1e-4, atol=1e-5)
    assert "softmax kernel" in compiled.compiled().generated_kernels()
