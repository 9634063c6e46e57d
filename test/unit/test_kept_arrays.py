"""An executor keeps the arrays, calls and plans it makes for a set of input shapes
for later runs on them, for at most KEPT_SHAPE_SETS sets and KEPT_BYTES of arrays:
another set then drops them all (`Executor._forget_kept`). Runs after a drop make
theirs anew and compute, bit for bit, what the first runs on their shapes did; a set
kept alone takes what a new executor's first run on it takes. Within a set, outputs
never needed at once share arrays, with the same results."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import pytest
from test_implicit_conv import bottleneck_model

import sparsec
from sparsec.dialects.kernel_ops import SparseConvOp
from sparsec.runtime import executor as executor_module
from sparsec.runtime.executor import Executor

EXPORTS = Path(__file__).parent.parent / "exports"


def _runs_after_drops_repeat_first_runs(model: sparsec.Model, feeds_by_shape: dict[int, dict[str, np.ndarray]], order: list[int], threads: int, sets: int) -> None:
    """Run `order`'s feeds, which meet each shape again after drops, and check each run
    against the first on its shape (bit for bit), the first ones against the
    reference, and that no more than `sets` sets are ever kept."""
    executor = Executor(model.module, model.weights, threads=threads)
    first: dict[int, dict[str, np.ndarray]] = {}
    try:
        for shape in order:
            got = executor.run(feeds_by_shape[shape])
            assert 1 <= len(executor.kept.shapes) <= sets
            if shape not in first:
                first[shape] = got
                for name, value in model.run(feeds_by_shape[shape]).items():
                    np.testing.assert_allclose(got[name], value, rtol=1e-3, atol=1e-4, err_msg=name)
            for name, value in first[shape].items():
                np.testing.assert_array_equal(got[name], value, err_msg=f"{name} at {shape}")
    finally:
        executor.close()


@pytest.fixture(scope="module")
def squeezenet(tmp_path_factory) -> sparsec.Model:
    """SqueezeNet at n:m 2:4 with a batch given at run time: implicit convolutions (zero
    planes, framed 1x1 convolutions reading lanes in place), pools, Concats."""
    folder = tmp_path_factory.mktemp("squeezenet")
    fixed = models.randomized(models.LIGHT / "light_squeezenet.onnx", folder / "fixed.onnx")
    model = sparsec.load(models.open_batch(fixed, folder / "squeezenet.onnx"))
    model.apply("prune-magnitude{pattern=nm n=2 m=4},pack-bitmask,lower-kernels")
    return model


@pytest.mark.parametrize("threads", [1, 2])
def test_a_network_runs_as_before_after_its_kept_arrays_are_dropped(squeezenet, monkeypatch, threads):
    monkeypatch.setattr(executor_module, "KEPT_SHAPE_SETS", 2)
    name = Executor(squeezenet.module, squeezenet.weights, threads=1).feeds.names[0]
    rng = np.random.default_rng(threads)
    feeds = {batch: {name: rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)} for batch in (1, 2, 3)}
    _runs_after_drops_repeat_first_runs(squeezenet, feeds, [1, 2, 3, 1, 1, 3, 2, 1], threads, 2)


def _llama() -> tuple[sparsec.Model, dict[int, dict[str, np.ndarray]]]:
    model = sparsec.load(EXPORTS / "llama_torchscript_17.onnx")
    model.apply("fuse-attention,prune-magnitude{pattern=nm n=3 m=4 min-elements=0},pack-bitmask,lower-kernels")
    rng = np.random.default_rng(0)
    feeds = {length: {"input_ids": rng.integers(0, 128, (1, length)), "attention_mask": np.ones((1, length), np.int64)} for length in (1, 5, 9, 16, 17)}
    return model, feeds


@pytest.mark.parametrize("threads", [1, 2])
def test_a_transformer_on_many_sequence_lengths_keeps_a_few(monkeypatch, threads):
    """A sequence length more than KEPT_SHAPE_SETS drops the kept ones; each length
    runs as it first did (attention and rotary calls, combining copies, shape
    functions' values made anew)."""
    monkeypatch.setattr(executor_module, "KEPT_SHAPE_SETS", 3)
    model, feeds = _llama()
    _runs_after_drops_repeat_first_runs(model, feeds, [1, 5, 9, 16, 1, 17, 5, 5, 9, 1, 16], threads, 3)


def test_kept_bytes_bound_the_sets_kept(monkeypatch):
    """Past KEPT_BYTES a new set drops the others first: each new length is then kept
    alone, in as many bytes as a new executor's first run on it keeps."""
    monkeypatch.setattr(executor_module, "KEPT_BYTES", 0)
    model, feeds = _llama()
    executor = Executor(model.module, model.weights, threads=1)
    try:
        for length in (5, 16, 5, 9, 9):
            executor.run(feeds[length])
            assert executor.kept.shapes == {tuple(array.shape for array in feeds[length].values())}
            alone = Executor(model.module, model.weights, threads=1)
            alone.run(feeds[length])
            assert 0 < executor.kept_bytes() == alone.kept_bytes()
            alone.close()
    finally:
        executor.close()


@pytest.mark.parametrize("name", ["llama_torchscript_17", "gpt2_torchscript_17", "bert_sdpa_dynamo_18"])
@pytest.mark.parametrize("threads", [1, 2])
def test_outputs_needed_at_different_times_share_arrays(monkeypatch, name, threads):
    """Outputs whose values are never needed at once share arrays (`Executor.colors`,
    runtime/liveness.py): a two-layer transformer's dozens of such steps take a
    handful of colors, and it computes bit for bit what it does with an array per
    output."""
    model = sparsec.load(EXPORTS / f"{name}.onnx")
    model.apply("fuse-attention,prune-magnitude{pattern=nm n=3 m=4 min-elements=0},pack-bitmask,lower-kernels")
    rng = np.random.default_rng(2)
    feeds = {"input_ids": rng.integers(0, 128, (2, 9)), "attention_mask": np.ones((2, 9), np.int64), "token_type_ids": np.zeros((2, 9), np.int64)}
    shared = Executor(model.module, model.weights, threads=threads)
    monkeypatch.setattr(Executor, "_output_colors", lambda self: {})
    own = Executor(model.module, model.weights, threads=threads)
    try:
        feeds = {name: feeds[name] for name in shared.feeds.names}
        assert len(shared.colors) > 30 and len(set(shared.colors.values())) <= len(shared.colors) // 2
        assert any(step.writes_over for step in shared.steps)
        for _ in range(2):
            expected, got = own.run(feeds), shared.run(feeds)
            for output, value in expected.items():
                np.testing.assert_array_equal(got[output], value)
        assert shared.kept_bytes() < own.kept_bytes()
    finally:
        shared.close()
        own.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_convolutions_and_pools_share_lanes(squeezenet, tmp_path, monkeypatch, threads):
    """Convolutions' and pools' outputs share arrays too, lanes (with their zero
    planes) only with lanes of one kind (`Executor._kept_lanes`): SqueezeNet (Concats'
    lanes and pools of their own) and a bottleneck of residual Adds, some taken into
    their addend's lanes (runtime/liveness.py: such a step's result is the addend's
    array), compute bit for bit what they do with an array per output, at 1 and 3
    images, in fewer kept bytes."""
    bottleneck_model(tmp_path / "bottleneck.onnx", "batch")
    bottleneck = sparsec.load(tmp_path / "bottleneck.onnx")
    bottleneck.apply("prune-magnitude{pattern=nm n=3 m=4 min-elements=0},pack-bitmask,lower-kernels")
    rng = np.random.default_rng(threads)
    for model, image in ((squeezenet, (3, 224, 224)), (bottleneck, (8, 12, 12))):
        shared = Executor(model.module, model.weights, threads=threads)
        with monkeypatch.context() as patched:
            patched.setattr(Executor, "_output_colors", lambda self: {})
            own = Executor(model.module, model.weights, threads=threads)
        try:
            assert any(isinstance(op, SparseConvOp) for op in shared.colors)
            name = shared.feeds.names[0]
            for images in (1, 3, 1):
                feeds = {name: rng.standard_normal((images, *image)).astype(np.float32)}
                expected, got = own.run(feeds), shared.run(feeds)
                for output, value in expected.items():
                    np.testing.assert_array_equal(got[output], value, err_msg=output)
            assert shared.kept_bytes() < own.kept_bytes()
        finally:
            shared.close()
            own.close()
