"""fuse-gelu on a transformer MLP as PyTorch exports it before opset 20 (GELU as
Div, Erf, Add, Mul, Mul): the GELU runs in the up projection's kernel, and the
compiled model computes what onnxruntime computes on the original; every spelling of
the GELU the pass takes fuses and computes what it did."""

from __future__ import annotations

import models
import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsec
from sparsec.context import make_context
from sparsec.dialects import nn
from sparsec.irfile import parse_module
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


def _spelled_gelu(head: str, swaps: tuple[bool, ...], form: str) -> str:
    """IR of one spelling of GELU on tensor<?x8xf32>: x * 0.5 * (1 + erf(x / sqrt 2))
    by Div or Mul (`head` "div" or "mul"), or the tanh approximation ("tanh"), each
    binary op's operands in either order, and one of the three groupings of the
    products."""
    t = "tensor<?x8xf32>"

    def binary(op: str, result: str, a: str, b: str, swap: bool, a_type: str = t, b_type: str = t) -> str:
        (a, a_type), (b, b_type) = ((b, b_type), (a, a_type)) if swap else ((a, a_type), (b, b_type))
        return f"  %{result} = nn.{op} %{a}, %{b} : ({a_type}, {b_type}) -> {t}"

    s = "tensor<f32>"
    lines = [f'  %one = nn.weight "one" dense<1.0> : {s}', f'  %half = nn.weight "half" dense<0.5> : {s}']
    if head == "tanh":
        lines += [
            f'  %three = nn.weight "three" dense<3.0> : {s}',
            f'  %k = nn.weight "k" dense<0.0447149985> : {s}',
            f'  %scale = nn.weight "scale" dense<0.797884583> : {s}',
            f"  %p = nn.pow %x, %three : ({t}, {s}) -> {t}",
            binary("mul", "c", "p", "k", swaps[4], t, s),
            binary("add", "u", "x", "c", swaps[5]),
            binary("mul", "d", "u", "scale", swaps[0], t, s),
            f"  %e = nn.tanh %d : ({t}) -> {t}",
        ]
    else:
        lines += [
            f'  %scale = nn.weight "scale" dense<{1.41421354 if head == "div" else 0.707106769}> : {s}',
            f"  %d = nn.div %x, %scale : ({t}, {s}) -> {t}" if head == "div" else binary("mul", "d", "x", "scale", swaps[0], t, s),
            f"  %e = nn.erf %d : ({t}) -> {t}",
        ]
    lines.append(binary("add", "a", "e", "one", swaps[1], t, s))
    if form == "x_a_half":
        lines += [binary("mul", "m", "x", "a", swaps[2]), binary("mul", "y", "m", "half", swaps[3], t, s)]
    elif form == "half_x_a":
        lines += [binary("mul", "h", "x", "half", swaps[2], t, s), binary("mul", "y", "h", "a", swaps[3])]
    else:
        lines += [binary("mul", "h", "a", "half", swaps[2], t, s), binary("mul", "y", "x", "h", swaps[3])]
    body = "\n".join(lines)
    return f'func.func @main(%x: {t} {{sparsec.name = "x"}}) -> ({t} {{sparsec.name = "y"}}) {{\n{body}\n  func.return %y : {t}\n}}\n'


@settings(max_examples=60, deadline=None)
@given(
    head=st.sampled_from(["div", "mul", "tanh"]),
    swaps=st.tuples(*[st.booleans()] * 6),
    form=st.sampled_from(["x_a_half", "half_x_a", "a_half_x"]),
    seed=st.integers(0, 2**16),
)
def test_every_spelling_fuses_and_computes_the_same(head, swaps, form, seed):
    ctx = make_context()
    module = parse_module(_spelled_gelu(head, swaps, form), ctx)
    model = sparsec.Model(module, ctx)
    x = (np.random.default_rng(seed).standard_normal((5, 8)) * 4).astype(np.float32)
    before = model.run({"x": x})["y"]
    model.apply("fuse-gelu")
    assert [op.name for op in model.module.walk() if isinstance(op, nn.NNOp)] == ["nn.gelu"]
    assert [op.approximate.data for op in model.module.walk() if isinstance(op, nn.GeluOp)] == ["tanh" if head == "tanh" else "none"]
    assert len(model.weights) == 0  # the constants left the store
    np.testing.assert_allclose(model.run({"x": x})["y"], before, rtol=1e-5, atol=1e-6)
