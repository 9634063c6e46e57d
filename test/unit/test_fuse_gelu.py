"""fuse-gelu on a transformer MLP as PyTorch exports it before opset 20 (GELU as
Div, Erf, Add, Mul, Mul): the GELU runs in the up projection's kernel, and the
compiled model computes what onnxruntime computes on the original."""

from __future__ import annotations

import models
import numpy as np
import onnxruntime as ort
import pytest

import sparsec
from sparsec.dialects import nn
from sparsec.dialects.kernel_ops import SparseMatMulOp
from sparsec.runtime.executor import Executor


def _run_jit(model: sparsec.Model, x: np.ndarray) -> np.ndarray:
    executor = Executor(model.module, model.weights, threads=2)
    try:
        return executor.run({"x": x})["out"]
    finally:
        executor.close()


def _inputs(batch: int, sequence: int) -> np.ndarray:
    return np.random.default_rng(batch * 100 + sequence).standard_normal((batch, sequence, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return models.save("exported_gelu", tmp_path_factory.mktemp("gelu") / "mlp.onnx")


def test_gelu_runs_in_the_kernel_before_it(exported):
    model = sparsec.load(exported)
    model.apply("prune-magnitude{pattern=nm n=2 m=4 min-elements=0}")
    unfused = model.run({"x": _inputs(3, 5)})["out"]
    model.apply("fuse-gelu,pack-bitmask,lower-kernels")
    ops = list(model.module.walk())
    assert not any(isinstance(op, nn.ErfOp | nn.DivOp | nn.MulOp | nn.GeluOp) for op in ops)
    assert [op.properties["epilogue"].data for op in ops if isinstance(op, SparseMatMulOp)] == ["bias_gelu", "bias"]  # pyright: ignore
    np.testing.assert_allclose(_run_jit(model, _inputs(3, 5)), unfused, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("batch, sequence", [(1, 1), (3, 5), (2, 40)])
def test_compiled_model_matches_onnxruntime(exported, batch, sequence):
    """Dense float16 kernels on float16-valued weights: only the order of the sums differs."""
    model = sparsec.load(exported)
    model.apply("prune-magnitude{sparsity=0.0 min-elements=0},fuse-gelu,pack-bitmask,lower-kernels")
    x = _inputs(batch, sequence)
    expected = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(_run_jit(model, x), expected, rtol=1e-4, atol=1e-5)
