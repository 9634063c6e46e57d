"""Hugging Face transformers as PyTorch exports them (test/exports, made by
make_exports.py: BERT five ways, DistilBERT, RoBERTa, ALBERT, DeBERTa-v2, MPNet,
MobileBERT, GPT-2, LLaMA, CLIP's text encoder, ViT, Swin): they import,
compute what onnxruntime computes for any batch, sequence and padding, and compile to
sparse kernels for every layer.

Their embeddings are Gathers, their position ids a Slice up to the run-time sequence
length (RoBERTa's a CumSum), their attention masks Range, comparisons, GatherND,
Expand and Where, their reshape targets computed from Shape: `nn_index`'s ops and the
importer's folding.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import sparsec
from sparsec.dialects import nn, nn_index
from sparsec.dialects.kernel_ops import KernelOp

FOLDER = Path(__file__).parent.parent / "exports"
EXPORTS = sorted(FOLDER.glob("*.onnx"))
SIZES = [(1, 1), (2, 7), (3, 40)]
COMPILE = "prune-magnitude{pattern=nm n=2 m=4 min-elements=0},strip-identity,fold-batch-norm,fuse-layer-norm,fuse-rms-norm,fuse-gelu,fuse-swish,fuse-rotary,fold-scale,fuse-attention,pack-bitmask,lower-kernels"


def _feeds(path: Path, batch: int, sequence: int) -> dict[str, np.ndarray]:
    """Token ids, the last sequence padded from its middle on, two segments; or
    `batch` 32x32 images (ViT), whatever the model takes."""
    rng = np.random.default_rng(batch * 100 + sequence)
    mask = np.ones((batch, sequence), np.int64)
    mask[-1, (sequence + 1) // 2 :] = 0
    feeds = {
        "input_ids": rng.integers(0, 128, (batch, sequence)),
        "attention_mask": mask,
        "token_type_ids": (np.arange(sequence) >= sequence // 2).astype(np.int64)[None].repeat(batch, 0),
        "pixel_values": rng.standard_normal((batch, 3, 32, 32)).astype(np.float32),
    }
    return {name: feeds[name] for name in _input_names(path)}


def _input_names(path: Path) -> list[str]:
    return [i.name for i in ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()]


def _onnxruntime(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_the_exports_are_there():
    assert len(EXPORTS) == 16


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.stem)
def test_export_imports_and_matches_onnxruntime(path):
    model = sparsec.load(path)
    for batch, sequence in SIZES:
        feeds = _feeds(path, batch, sequence)
        got = model.run(feeds)
        for name, expected in zip(got, _onnxruntime(path, feeds), strict=True):
            np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=2e-6, err_msg=f"{name} at {batch}x{sequence}")


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.stem)
def test_export_compiles_every_layer_to_a_sparse_kernel(tmp_path, path):
    """n:m 2:4 on every layer (GPT-2's Conv1D layers and ViT's patch convolution
    too); the compiled model on two threads against the reference interpreter's run of
    the same lowered module (float16 values included)."""
    model = sparsec.load(path)
    model.apply(COMPILE)
    layers = [op for op in model.module.walk() if isinstance(op, nn.MatMulOp | nn.GemmOp | nn.ConvOp)]
    assert not [op for op in layers if any(isinstance(v.owner, nn.WeightOp) for v in op.operands)]
    assert sum(isinstance(op, KernelOp) for op in model.module.walk()) >= 8  # GPT-2: 4 a layer
    model.save(tmp_path / "model.spx")
    compiled = sparsec.load(tmp_path / "model.spx", threads=2)
    for size in SIZES:
        feeds = _feeds(path, *size)
        expected, got = model.run(feeds), compiled.run(feeds)
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=2e-5, err_msg=f"{name} at {size}")


def test_runs_print_no_numpy_warnings(tmp_path):
    """MPNet's position buckets take the log of 0 and cast the -inf to an integer
    before a Where drops it: the reference and the compiled model give ONNX's (IEEE)
    results and print no numpy warning."""
    path = FOLDER / "mpnet_torchscript_17.onnx"
    model = sparsec.load(path)
    model.apply(COMPILE)
    model.save(tmp_path / "model.spx")
    feeds = _feeds(path, 2, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sparsec.load(path).run(feeds)
        sparsec.load(tmp_path / "model.spx").run(feeds)


def test_torchscript_reshapes_to_heads_become_constant():
    """The per-head reshapes' targets are Shape, Gather and Concat of the tensor they
    reshape: ONNX's symbolic inference names the copied sizes, and they become
    `nn.reshape` to [0, 0, 4, 8], with no shape arithmetic left for them."""
    model = sparsec.load(FOLDER / "bert_eager_torchscript_14.onnx")
    reshapes = [op for op in model.module.walk() if isinstance(op, nn.ReshapeOp)]
    assert [tuple(nn.ints_of(op.shape)) for op in reshapes].count((0, 0, -1, 8)) == 6
    assert all(op.results[0].type.get_shape()[2:] == (4, 8) for op in reshapes if len(nn.ints_of(op.shape)) == 4)


def test_position_ids_slice_and_embeddings_run_at_run_time():
    model = sparsec.load(FOLDER / "bert_eager_torchscript_14.onnx")
    kinds = {type(op) for op in model.module.walk()}
    assert {nn_index.SliceOp, nn_index.GatherOp, nn_index.RangeOp, nn_index.WhereOp} <= kinds
    assert nn.PowOp in kinds and nn.ReduceMeanOp in kinds  # opset 14 writes LayerNorm out


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.stem)
def test_export_writes_back_to_onnx_that_onnxruntime_runs(tmp_path, path):
    """Every new op maps back to its ONNX operator (ReduceMean's axes as an input,
    at opset 18); names stay unique though the dynamo exporter names weights as
    sparsec names values (`val_128`)."""
    model = sparsec.load(path)
    model.save(tmp_path / "back.onnx")
    feeds = _feeds(path, 2, 9)
    expected = model.run(feeds)
    for name, got in zip(expected, _onnxruntime(tmp_path / "back.onnx", feeds), strict=True):
        np.testing.assert_allclose(got, expected[name], rtol=1e-5, atol=2e-6)


def test_calibrated_pruning_reads_token_ids(tmp_path):
    """Wanda and SparseGPT run the model on calibration samples: token ids, mask and
    token types go in as the int64 inputs they are."""
    path = FOLDER / "bert_eager_torchscript_17.onnx"
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 128, (16, 12))
    np.savez(tmp_path / "calib.npz", input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids))
    for method in ("wanda", "sparsegpt"):
        model = sparsec.load(path)
        model.apply(f'prune-{method}{{pattern=nm n=2 m=4 min-elements=0 calibration="{tmp_path / "calib.npz"}"}}')
        pruned = [w for w in model.module.walk() if isinstance(w, nn.WeightOp) and w.sparsity is not None]
        assert len(pruned) == 13
        assert all(np.isfinite(v).all() for v in model.run(_feeds(path, 2, 7)).values())


def test_gpt2_gelu_fuses_in_its_tanh_form():
    """GPT-2's GELU, tanh's approximation written out in eight ops, is one nn.gelu
    {approximate = "tanh"} after fuse-gelu, and computes what onnxruntime does."""
    path = FOLDER / "gpt2_torchscript_17.onnx"
    model = sparsec.load(path)
    model.apply("fuse-gelu")
    kinds = [op for op in model.module.walk() if isinstance(op, nn.GeluOp | nn.TanhOp | nn.PowOp)]
    assert [op.approximate.data for op in kinds if isinstance(op, nn.GeluOp)] == ["tanh", "tanh"] and len(kinds) == 2
    feeds = _feeds(path, 2, 9)
    for got, expected in zip(model.run(feeds).values(), _onnxruntime(path, feeds), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6)
