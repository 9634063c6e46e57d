"""Whole models through the JIT engine against the reference interpreter on the same
pruned, packed weights (rounded to float16): rtol 1e-3, atol 1e-4.

CI runs every light model of the onnx wheel at 2:4, as it fixes its batch and with the
batch left open (at 1 and 2 images), and the transformer MLP block (768 -> 3072 GELU
-> 768, residual, LayerNorm) and an MLP at every configuration, at batch 1 and 8.
SPARSEC_FULL_MATRIX=1 also runs every light model at every configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

import models
import numpy as np
import onnx
import pytest

import sparsec
from conftest import random_feeds
from sparsec.dialects.kernel_ops import SparseConvOp, SparseMatMulOp
from sparsec.runtime.executor import Executor
from test_light_models import MODELS

CONFIGS = {
    "dense": "prune-magnitude{sparsity=0.0}",
    "u50": "prune-magnitude{sparsity=0.5}",
    "u75": "prune-magnitude{sparsity=0.75}",
    "u90": "prune-magnitude{sparsity=0.9}",
    "nm24": "prune-magnitude{pattern=nm n=2 m=4}",
    "nm34": "prune-magnitude{pattern=nm n=3 m=4}",
    "block4": "prune-magnitude{pattern=block block-size=4 sparsity=0.75}",
    "block16": "prune-magnitude{pattern=block block-size=16 sparsity=0.75}",
}
FULL = os.environ.get("SPARSEC_FULL_MATRIX") == "1"


def compare(model: sparsec.Model, feeds: dict[str, np.ndarray]) -> None:
    expected = model.run(feeds)
    executor = Executor(model.module, model.weights, threads=2)
    try:
        got = executor.run(feeds)
    finally:
        executor.close()
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-3, atol=1e-4, err_msg=name)


def lowered_layers(model: sparsec.Model) -> int:
    return sum(isinstance(op, SparseMatMulOp | SparseConvOp) for op in model.module.walk())


@pytest.fixture(scope="module")
def transformer_block(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("transformer") / "block.onnx"
    onnx.save(models.transformer_mlp(768, 3072), str(path))
    return path


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    return models.gemm_stack(path, layers=3, width=512, bias=True, scale=float(np.sqrt(2 / 512)))


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("which", ["transformer_block", "mlp"])
def test_models_match_the_reference(request, which, config, batch):
    model = sparsec.load(request.getfixturevalue(which))
    model.apply(CONFIGS[config] + ",pack-bitmask,lower-kernels")
    assert lowered_layers(model) >= 2
    compare(model, random_feeds(model, dynamic=batch))


LIGHT_CONFIGS = list(CONFIGS) if FULL else ["nm24"]


@pytest.mark.parametrize("config", LIGHT_CONFIGS)
@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_light_models_match_the_reference(path, config, tmp_path):
    model = sparsec.load(models.randomized(path, tmp_path / path.name))
    model.apply(CONFIGS[config] + ",pack-bitmask,lower-kernels")
    assert lowered_layers(model) >= 1
    compare(model, random_feeds(model))


@pytest.mark.parametrize("config", LIGHT_CONFIGS)
@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_light_models_with_an_open_batch_match_the_reference(path, config, tmp_path):
    """The same networks with their batch left to run time (as PyTorch exports them:
    residual Adds taken in, implicit forms and pool bands planned from one image,
    outputs sharing arrays), at 1 and then 2 images on one executor."""
    model = sparsec.load(models.open_batch(models.randomized(path, tmp_path / path.name), tmp_path / f"open_{path.name}"))
    model.apply(CONFIGS[config] + ",pack-bitmask,lower-kernels")
    executor = Executor(model.module, model.weights, threads=2)
    try:
        for images in (1, 2):
            feeds = random_feeds(model, dynamic=images)
            expected, got = model.run(feeds), executor.run(feeds)
            for name, value in expected.items():
                np.testing.assert_allclose(got[name], value, rtol=1e-3, atol=1e-4, err_msg=f"{name} at {images}")
    finally:
        executor.close()
