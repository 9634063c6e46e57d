"""Repeated runs of one executor: each kernel step's call is resolved on the first run
with an input shape and reused; a kernel step reading an earlier kernel's output takes
it in place; feeds that change between runs (layout, shape, dtype, names) are still
checked and copied for the kernels."""

from __future__ import annotations

import os
import threading

import models
import numpy as np
import onnx
import pytest

import sparsec
from conftest import in_forked_child
from sparsec.errors import ExecutionError
from sparsec.runtime.executor import BLAS_SOLO_FROM, Executor


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> sparsec.Model:
    """Three Gemm + Relu layers, 2:4 sparse: three kernel steps in a chain."""
    path = models.gemm_stack(tmp_path_factory.mktemp("mlp") / "mlp.onnx", layers=3, width=256, bias=True, scale=0.09)
    model = sparsec.load(path)
    model.apply("prune-magnitude{pattern=nm n=2 m=4 min-elements=0},pack-bitmask,lower-kernels")
    return model


@pytest.fixture
def executor(mlp, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    executor = Executor(mlp.module, mlp.weights, threads=2)
    yield executor
    executor.close()


def check(executor: Executor, model: sparsec.Model, x: np.ndarray) -> None:
    (name,) = model.run({"x": x})
    np.testing.assert_allclose(executor.run({"x": x})[name], model.run({"x": x})[name], rtol=1e-4, atol=1e-5)


def test_kernel_steps_take_earlier_kernel_outputs_in_place(mlp, executor):
    x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
    check(executor, mlp, x)
    first, *later = [step.calls[(2, 256)] for step in executor.steps if step.calls]
    assert len(later) == 2
    assert first.input is not None  # the feed, copied to a cache line
    assert all(call.input is None for call in later)  # read where the previous kernel wrote
    calls = [call for step in executor.steps for call in step.calls.values()]
    check(executor, mlp, x + 1)
    assert [call for step in executor.steps for call in step.calls.values()] == calls  # resolved once


def test_outputs_are_copies(mlp, executor):
    rng = np.random.default_rng(1)
    x, other = (rng.standard_normal((3, 256)).astype(np.float32) for _ in range(2))
    (name,) = mlp.run({"x": x})
    kept = executor.run({"x": x})[name]
    before = kept.copy()
    executor.run({"x": other})
    np.testing.assert_array_equal(kept, before)


def test_feeds_that_change_between_runs(mlp, executor):
    """After a run that passed, feeds of another layout, batch, dtype or name set."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    check(executor, mlp, x)
    check(executor, mlp, np.asfortranarray(x))  # same shape and dtype, not contiguous
    check(executor, mlp, rng.standard_normal((256, 4)).astype(np.float32).T)
    raw = np.zeros(4 * 256 + 1, np.float32)[1:].reshape(4, 256)  # 4 bytes into a line
    raw[...] = x
    check(executor, mlp, raw)
    check(executor, mlp, x[:1])  # another batch: its own calls
    check(executor, mlp, rng.standard_normal((40, 256)).astype(np.float32))  # batched kernels
    with pytest.raises(ExecutionError, match="dtype float64, expected float32"):
        executor.run({"x": x.astype(np.float64)})
    with pytest.raises(ExecutionError, match="unknown input"):
        executor.run({"x": x, "extra": x})
    with pytest.raises(ExecutionError, match="missing input 'x'"):
        executor.run({})
    with pytest.raises(ExecutionError, match="has shape"):
        executor.run({"x": x[:, :95]})
    check(executor, mlp, x)


def test_limited_threads_compute_the_same(mlp, executor):
    """At 64 rows (two lane chunks of the batched n:m kernels) the layers are split
    between the two threads; limited to one, the same calls run whole on the calling
    thread, to the same bits."""
    x = np.random.default_rng(3).standard_normal((64, 256)).astype(np.float32)
    (name,) = mlp.run({"x": x})
    both = executor.run({"x": x})[name]
    assert not any(call.alone for call in kernel_calls(executor))
    executor.limit_threads(1)
    one = executor.run({"x": x})[name]
    assert all(call.alone for call in kernel_calls(executor))
    np.testing.assert_array_equal(one, both)


@pytest.mark.parametrize(("work", "threads", "shares"), [(1, 1, 1), (3, 2, 2), (15, 2, 2), (16, 2, 8), (10**6, 2, 8)])
def test_small_calls_take_one_share_per_thread(executor, work, threads, shares):
    """A call's units are cut into one share per thread below SHARE_THREADS_WORK (8)
    threads' worth of work, else SHARES_PER_THREAD (4) per thread; a call too small to
    hand off takes one share, on the calling thread."""
    cut = executor._shares_for(100, work, 1)
    assert (cut.threads, len(cut.bounds)) == (threads, shares)
    assert cut.bounds[0][0] == 0 and cut.bounds[-1][1] == 100 and all(a[1] == b[0] for a, b in zip(cut.bounds, cut.bounds[1:]))


def kernel_calls(executor):
    """The calls that run a kernel: a call's batch chunks, or the call itself."""
    calls = [call for step in executor.steps for call in step.calls.values()]
    return [part for call in calls for part in ([chunk for _, chunk in call.batch_chunks] or [call])]


def test_runs_from_several_threads(mlp, executor):
    """Runs share the kept buffers: from several Python threads they take turns, and
    each gets its own inputs' outputs."""
    rng = np.random.default_rng(4)
    inputs = [rng.standard_normal((batch, 256)).astype(np.float32) for batch in (1, 3, 1, 40, 3, 1, 40, 7)]
    (name,) = mlp.run({"x": inputs[0]})
    expected = [executor.run({"x": x})[name] for x in inputs]
    got: dict[int, list[np.ndarray]] = {}

    def worker(index: int) -> None:
        got[index] = [executor.run({"x": x})[name] for x in inputs[index:] + inputs[:index] for _ in range(5)]

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, results in got.items():
        order = [i for i in list(range(index, len(inputs))) + list(range(index)) for _ in range(5)]
        for result, i in zip(results, order, strict=True):
            np.testing.assert_array_equal(result, expected[i])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_fork_during_a_run_leaves_the_child_free_to_run(mlp, executor):
    x = np.random.default_rng(5).standard_normal((3, 256)).astype(np.float32)
    (name,) = mlp.run({"x": x})
    expected = executor.run({"x": x})[name]
    with executor._running:  # as if another thread were in the middle of a run
        assert in_forked_child(lambda: np.array_equal(executor.run({"x": x})[name], expected))


def wide_then_narrow(path) -> None:
    """fc0: Gemm 128 -> 512, Relu; fc1: Gemm 512 -> 8 (4,096 weights: the one left dense)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    arrays = {"w0": rng.standard_normal((512, 128)) * 0.09, "b0": rng.standard_normal(512), "w1": rng.standard_normal((8, 512)) * 0.05, "b1": rng.standard_normal(8)}
    nodes = [
        helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], transB=1, name="fc0"),
        helper.make_node("Relu", ["h"], ["r"], name="relu0"),
        helper.make_node("Gemm", ["r", "w1", "b1"], ["y"], transB=1, name="fc1"),
    ]
    graph = helper.make_graph(
        nodes, "wide_then_narrow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(a.astype(np.float32), name) for name, a in arrays.items()],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_large_blas_calls_run_on_one_thread_next_to_the_workers(tmp_path, monkeypatch):
    """Layers left dense run in numpy, with BLAS: once a kernel call has taken the
    worker pool, or from the start on one thread, a large BLAS call runs on one BLAS
    thread (its threads spin after each call on the CPUs the workers wait on; one
    thread is one thread) and the limit is lifted after it. Small calls, other ops,
    executors without such steps, and executors whose pool no call has taken leave
    BLAS alone."""
    from threadpoolctl import ThreadpoolController, threadpool_limits

    from sparsec import reference
    from sparsec.dialects import nn

    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    assert 3 * 224 * 224 * 64 * 3 * 3 * 3 >= BLAS_SOLO_FROM > 2**17  # SqueezeNet's first convolution; the digits MLP's dense layer
    wide_then_narrow(tmp_path / "mlp.onnx")
    model = sparsec.load(tmp_path / "mlp.onnx")
    model.apply("prune-magnitude{pattern=nm n=2 m=4 min-elements=0},pack-bitmask,lower-kernels")
    assert not Executor(model.module, model.weights, threads=2)._calls_blas  # every layer a kernel
    dense = sparsec.load(tmp_path / "mlp.onnx")  # Gemms and Relu in numpy
    model = sparsec.load(tmp_path / "mlp.onnx")
    model.apply("prune-magnitude{pattern=nm n=2 m=4 min-elements=5000},pack-bitmask,lower-kernels")  # fc0 a kernel
    seen: list[tuple[bool, int]] = []
    evaluate = reference.evaluate

    def counting(op, operands):
        seen.append((isinstance(op, nn.GemmOp), ThreadpoolController().info()[0]["num_threads"]))
        return evaluate(op, operands)

    monkeypatch.setattr(reference, "evaluate", counting)
    rng = np.random.default_rng(0)
    with threadpool_limits(2, user_api="blas"):
        alone = Executor(model.module, model.weights, threads=1)
        for batch, gemm_threads in [(4, 2), (8192, 1)]:
            seen.clear()
            alone.run({"x": rng.standard_normal((batch, 128)).astype(np.float32)})
            assert alone.blas is not None and set(seen) == {(True, gemm_threads)}
        alone.close()
        seen.clear()
        idle = Executor(dense.module, dense.weights, threads=2)  # no kernel: the pool never works
        idle.run({"x": rng.standard_normal((8192, 128)).astype(np.float32)})
        assert idle.blas is None and set(seen) == {(True, 2)}  # its Relus write kept outputs without `evaluate`
        idle.close()
        executor = Executor(model.module, model.weights, threads=2)
        # 4 rows: fc0 runs alone, the pool untouched; 8192: fc0 takes the pool, fc1 is
        # large (8192 x 512 x 4096 values); 4 again: fc1 small (4 x 512 x 4096).
        for batch, gemm_threads in [(4, 2), (8192, 1), (4, 2)]:
            seen.clear()
            x = rng.standard_normal((batch, 128)).astype(np.float32)
            got = executor.run({"x": x})
            assert set(seen) == {(True, gemm_threads)}
            assert ThreadpoolController().info()[0]["num_threads"] == 2
            for name, value in model.run({"x": x}).items():
                np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5)
        executor.close()


def test_pool_calls_on_the_workers_limit_blas_too(tmp_path):
    """A pool kernel's call that takes the worker pool sets the BLAS limit as a layer's
    does: the workers spin after it on the CPUs a numpy step's BLAS threads would take
    (ShuffleNet, whose pools are its only calls on the pool: two threads ran slower
    than one without the limit). A pool too small to share leaves BLAS alone."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p", "w"], ["y"], kernel_shape=[1, 1]),
    ]
    weight = numpy_helper.from_array(rng.standard_normal((8, 3, 1, 1)).astype(np.float32), "w")
    for size, limited in [(224, True), (8, False)]:
        graph = helper.make_graph(
            nodes, "pool_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight],
        )  # fmt: skip
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "pool.onnx"))
        model = sparsec.load(tmp_path / "pool.onnx")
        executor = Executor(model.module, model.weights, threads=2)
        x = rng.standard_normal((1, 3, size, size)).astype(np.float32)
        np.testing.assert_allclose(executor.run({"x": x})["y"], model.run({"x": x})["y"], rtol=1e-5, atol=1e-5)
        assert executor.pools and executor._calls_blas and (executor.blas is not None) == limited
        executor.close()


def _kept_by(executor: Executor, key: tuple) -> str:
    """The name of the op whose output `executor.kept.buffers` keeps under `key` (by op and
    shape, or by color and shape for one color's one op)."""
    if key[0] != "color":
        return key[0].name
    (name,) = [op.name for op, color in executor.colors.items() if color == key[1]]
    return name


def test_concats_and_relus_write_into_outputs_kept_from_run_to_run(tmp_path):
    """A float32 Concat or Relu writes into an output array the executor keeps (a fresh
    one costs its page faults every run), one per op and shape, and a Relu of a Concat
    that only it reads writes over the Concat's (`_Step.in_place`); each run's results
    are right, and a returned result is a copy that the next run does not change."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Concat", ["a", "b"], ["c"], axis=-3), helper.make_node("Relu", ["c"], ["y"]), helper.make_node("Relu", ["a"], ["z"])]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", channels, 5, 7]) for name, channels in (("a", 3), ("b", 4))]
    graph = helper.make_graph(nodes, "concat", inputs, [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in "yz"])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "concat.onnx"))
    model = sparsec.load(tmp_path / "concat.onnx")
    executor = Executor(model.module, model.weights, threads=1)
    assert [step.op.name for step in executor.steps if step.in_place] == ["nn.relu"]
    rng = np.random.default_rng(0)
    results, kept = [], set()
    for images in (2, 2, 1):
        feeds = {"a": rng.standard_normal((images, 3, 5, 7)).astype(np.float32), "b": rng.standard_normal((images, 4, 5, 7)).astype(np.float32)}
        got = executor.run(feeds)
        np.testing.assert_array_equal(got["y"], np.maximum(np.concatenate([feeds["a"], feeds["b"]], axis=1), 0))
        np.testing.assert_array_equal(got["z"], np.maximum(feeds["a"], 0))
        results += [(value, value.copy()) for value in got.values()]
        kept |= {(_kept_by(executor, key), id(array)) for key, array in executor.kept.buffers.items() if key[-1] in ((2, 7, 5, 7), (1, 7, 5, 7), (2, 3, 5, 7), (1, 3, 5, 7))}
    assert sorted(name for name, _ in kept) == ["nn.concat", "nn.concat", "nn.relu", "nn.relu"]
    assert all(np.array_equal(got, copy) for got, copy in results)
    (concat,) = [step.op for step in executor.steps if step.op.name == "nn.concat"]
    parts = [np.ones((1, 3, 5, 7), np.float32), np.zeros((1, 4, 5, 7), np.float32)]
    first, second = executor._concat(concat, parts), executor._concat(concat, parts[::-1])  # pyright: ignore
    assert np.shares_memory(first, second) and np.array_equal(first, np.concatenate(parts[::-1], axis=1))


def test_a_chain_of_concats_shares_one_output(tmp_path):
    """Concats each taking the one before as first operand (DenseNet's features) share
    the last one's kept output, each its leading channels: only the new operands are
    copied in. Every member's result, returned or read by later steps, is still right
    after the members after it have run, and after a Relu of the last (which does not
    write over it), in two runs and on a second batch size."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Relu", ["x"], ["b1"]),
        helper.make_node("Concat", ["x", "b1"], ["c1"], axis=1),
        helper.make_node("Relu", ["c1"], ["b2"]),
        helper.make_node("Concat", ["c1", "b2"], ["c2"], axis=1),
        helper.make_node("Add", ["x", "x"], ["b3"]),
        helper.make_node("Concat", ["c2", "b3"], ["c3"], axis=1),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("Add", ["c1", "c1"], ["d1"]),
    ]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("c1", "c2", "r3", "d1")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 3, 5])], outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "chain.onnx"))
    model = sparsec.load(tmp_path / "chain.onnx")
    executor = Executor(model.module, model.weights, threads=1)
    concats = [step.op for step in executor.steps if step.op.name == "nn.concat"]
    assert executor.concat_ends == {concats[0]: concats[2], concats[1]: concats[2]}
    assert not any(step.in_place for step in executor.steps)
    rng = np.random.default_rng(1)
    for images in (1, 1, 3):
        x = rng.standard_normal((images, 2, 3, 5)).astype(np.float32)
        c1 = np.concatenate([x, np.maximum(x, 0)], axis=1)
        c2 = np.concatenate([c1, np.maximum(c1, 0)], axis=1)
        expected = {"c1": c1, "c2": c2, "r3": np.maximum(np.concatenate([c2, x + x], axis=1), 0), "d1": c1 + c1}
        got = executor.run({"x": x})
        for name, value in expected.items():
            np.testing.assert_array_equal(got[name], value)
    assert sorted(key[-1] for key in executor.kept.buffers if key[0] is concats[2]) == [(1, 10, 3, 5), (3, 10, 3, 5)]
    assert not any(key[0] in concats[:2] for key in executor.kept.buffers)


def test_view_steps_keep_their_function_per_input_shape(tmp_path):
    """Reshapes, transposes, flattens, squeezes and unsqueezes run in numpy as views of
    their input, by a function kept per input shape (reference.view: the op's arguments
    decoded from the IR once), once per input array: the same array gets the same
    view object (kernel calls know their inputs by identity), a new one, of the same
    shape or not, a view of its own. A shape they cannot take fails on its first run as
    in the reference."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Unsqueeze", ["t", "axes"], ["u"]),
        helper.make_node("Squeeze", ["u", "axes"], ["s"]),
        helper.make_node("Flatten", ["s"], ["f"], axis=1),
        helper.make_node("Identity", ["f"], ["i"]),
        helper.make_node("Reshape", ["i", "shape"], ["y"]),
    ]
    initializers = [numpy_helper.from_array(np.array([1], np.int64), "axes"), numpy_helper.from_array(np.array([4, -1], np.int64), "shape")]
    graph = helper.make_graph(nodes, "views", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 3])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "views.onnx"))
    model = sparsec.load(tmp_path / "views.onnx")
    executor = Executor(model.module, model.weights, threads=1)
    rng = np.random.default_rng(2)
    for images in (2, 2, 4, 2, 2):
        x = rng.standard_normal((images, 2, 3)).astype(np.float32)
        np.testing.assert_array_equal(executor.run({"x": x})["y"], x.transpose(0, 2, 1).reshape(4, -1))
    views = [step.views for step in executor.steps if step.views is not None]
    assert len(views) == 6 and all(len(functions) == 2 for functions in views)
    made = [step.last_view[1] for step in executor.steps if step.views is not None]  # pyright: ignore
    executor.run({"x": x})
    assert all(view is step.last_view[1] for view, step in zip(made, [step for step in executor.steps if step.views is not None]))  # pyright: ignore
    with pytest.raises(ExecutionError, match="nn.reshape"):
        executor.run({"x": rng.standard_normal((3, 2, 3)).astype(np.float32)})
