"""Hugging Face BERTs as PyTorch exports them (test/exports, made by make_exports.py):
they import, compute what onnxruntime computes for any batch, sequence and padding,
and compile to sparse kernels for every layer.

Their embeddings are Gathers, their position ids a Slice up to the run-time sequence
length, their attention masks Range, comparisons, GatherND, Expand and Where, their
reshape targets computed from Shape: `nn_index`'s ops and the importer's folding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import sparsec
from sparsec.dialects import nn, nn_index
from sparsec.dialects.kernel_ops import KernelOp

EXPORTS = sorted((Path(__file__).parent.parent / "exports").glob("*.onnx"))
SIZES = [(1, 1), (2, 7), (3, 40)]
COMPILE = "prune-magnitude{pattern=nm n=2 m=4 min-elements=0},fold-batch-norm,fuse-gelu,fold-scale,pack-bitmask,lower-kernels"


def _feeds(batch: int, sequence: int) -> dict[str, np.ndarray]:
    """Token ids, two segments, and the last sequence padded from its middle on."""
    rng = np.random.default_rng(batch * 100 + sequence)
    mask = np.ones((batch, sequence), np.int64)
    mask[-1, (sequence + 1) // 2 :] = 0
    return {
        "input_ids": rng.integers(0, 128, (batch, sequence)),
        "attention_mask": mask,
        "token_type_ids": (np.arange(sequence) >= sequence // 2).astype(np.int64)[None].repeat(batch, 0),
    }


def _onnxruntime(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_the_exports_are_there():
    assert len(EXPORTS) == 5


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.stem)
def test_export_imports_and_matches_onnxruntime(path):
    model = sparsec.load(path)
    for batch, sequence in SIZES:
        feeds = _feeds(batch, sequence)
        got = model.run(feeds)
        for name, expected in zip(["last_hidden_state", "pooler_output"], _onnxruntime(path, feeds), strict=True):
            np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=2e-6, err_msg=f"{name} at {batch}x{sequence}")


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.stem)
def test_export_compiles_every_layer_to_a_sparse_kernel(tmp_path, path):
    """n:m 2:4 on all 13 layers; the compiled model against the pruned model's
    reference run, on two threads."""
    model = sparsec.load(path)
    model.apply(COMPILE.split(",")[0])
    pruned = {size: model.run(_feeds(*size)) for size in SIZES}
    model.apply(",".join(COMPILE.split(",")[1:]))
    assert sum(isinstance(op, KernelOp) for op in model.module.walk()) == 13
    model.save(tmp_path / "bert.spx")
    compiled = sparsec.load(tmp_path / "bert.spx", threads=2)
    for size, expected in pruned.items():
        got = compiled.run(_feeds(*size))
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-3, atol=1e-3, err_msg=f"{name} at {size}")


def test_torchscript_reshapes_to_heads_become_constant():
    """The per-head reshapes' targets are Shape, Gather and Concat of the tensor they
    reshape: ONNX's symbolic inference names the copied sizes, and they become
    `nn.reshape` to [0, 0, 4, 8], with no shape arithmetic left for them."""
    model = sparsec.load(EXPORTS[1])
    assert "torchscript_14" in EXPORTS[1].stem
    reshapes = [op for op in model.module.walk() if isinstance(op, nn.ReshapeOp)]
    assert [tuple(nn.ints_of(op.shape)) for op in reshapes].count((0, 0, -1, 8)) == 6
    assert all(op.results[0].type.get_shape()[2:] == (4, 8) for op in reshapes if len(nn.ints_of(op.shape)) == 4)


def test_position_ids_slice_and_embeddings_run_at_run_time():
    model = sparsec.load(EXPORTS[1])
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
    feeds = _feeds(2, 9)
    expected = model.run(feeds)
    for name, got in zip(expected, _onnxruntime(tmp_path / "back.onnx", feeds), strict=True):
        np.testing.assert_allclose(got, expected[name], rtol=1e-5, atol=2e-6)
