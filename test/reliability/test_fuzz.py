"""Fuzzing: mutated ONNX models and .spx artifacts never end in an unhandled exception.

Loading either raises a SparsecError (a one-line user error) or succeeds; anything else
is a bug. Mutations work on bytes (flips, truncation, splices) and, for ONNX, on the
protobuf fields sparsec reads (dimensions, attributes, inputs, initializers).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import models
import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparsec
from sparsec.errors import SparsecError

SMALL_MODELS = ["gemm", "mlp", "conv", "shapes", "norms", "constants", "transformer_mlp", "run_time_shapes"]
FUZZ_EXAMPLES = int(os.environ.get("SPARSEC_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES or 150, derandomize=not FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""150 examples a test, the same ones in every run: drawn anew each run, they failed
CI runs at random on importer bugs that no change of theirs made (a string axis, a
data type 33). SPARSEC_FUZZ_EXAMPLES=N draws N new ones a test: a fuzzing campaign
(docs/reliability.md), whose findings become fixes and test cases."""


def load_or_refuse(path: Path) -> None:
    try:
        model = sparsec.load(path)
    except SparsecError:
        return
    try:
        feeds = {}
        from sparsec import reference
        from sparsec.dialects.literals import numpy_dtype

        function = reference.main_function(model.module)
        for name, arg in zip(reference.input_names(function), function.args):
            shape = [d if d >= 0 else 2 for d in arg.type.get_shape()]
            if np.prod(shape) > 1_000_000:
                return
            feeds[name] = np.ones(shape, numpy_dtype(arg.type.element_type))
        model.run(feeds)
    except (SparsecError, FloatingPointError):
        return


@st.composite
def byte_mutations(draw, data: bytes) -> bytes:
    mutated = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "truncate", "splice", "zero"]))
        position = draw(st.integers(0, max(0, len(mutated) - 1)))
        if kind == "flip" and mutated:
            mutated[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del mutated[position:]
        elif kind == "splice":
            mutated[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif mutated:
            mutated[position] = 0
    return bytes(mutated)


@FUZZ
@given(st.sampled_from(SMALL_MODELS), st.data())
def test_mutated_onnx_bytes(name, data):
    original = models.MODELS[name]().SerializeToString()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        path.write_bytes(data.draw(byte_mutations(original)))
        load_or_refuse(path)


@FUZZ
@given(st.sampled_from(SMALL_MODELS), st.data())
def test_mutated_onnx_fields(name, data):
    model = models.MODELS[name]()
    graph = model.graph
    for _ in range(data.draw(st.integers(1, 4))):
        target = data.draw(st.sampled_from(["dim", "attribute", "input", "initializer", "output", "opset"]))
        if target == "dim" and graph.input:
            value = data.draw(st.sampled_from(list(graph.input)))
            dims = value.type.tensor_type.shape.dim
            if dims:
                dims[data.draw(st.integers(0, len(dims) - 1))].dim_value = data.draw(st.integers(-3, 10**6))
        elif target == "attribute" and graph.node:
            node = data.draw(st.sampled_from(list(graph.node)))
            if node.attribute:
                attr = node.attribute[data.draw(st.integers(0, len(node.attribute) - 1))]
                attr.i = data.draw(st.integers(-(2**40), 2**40))
                del attr.ints[:]
                attr.ints.extend(data.draw(st.lists(st.integers(-5, 5), max_size=6)))
        elif target == "input" and graph.node:
            node = data.draw(st.sampled_from(list(graph.node)))
            if node.input:
                node.input[data.draw(st.integers(0, len(node.input) - 1))] = data.draw(st.sampled_from(["", "nope", "x"]))
        elif target == "initializer" and graph.initializer:
            tensor = graph.initializer[data.draw(st.integers(0, len(graph.initializer) - 1))]
            if tensor.dims:
                tensor.dims[0] = data.draw(st.integers(0, 10**7))
        elif target == "output" and graph.output:
            graph.output[0].name = data.draw(st.sampled_from(["", "ghost", graph.output[0].name]))
        elif target == "opset":
            model.opset_import[0].version = data.draw(st.integers(-1, 30))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        onnx.save(model, str(path))
        load_or_refuse(path)


def _artifact() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        model = sparsec.load(models.save("mlp", Path(tmp) / "m.onnx"))
        model.apply("prune-magnitude{pattern=nm n=2 m=4 min-elements=0},pack-bitmask,lower-kernels")
        model.save(Path(tmp) / "m.spx")
        return (Path(tmp) / "m.spx").read_bytes()


ARTIFACT = _artifact()


@FUZZ
@given(st.data())
def test_mutated_artifacts(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.spx"
        path.write_bytes(data.draw(byte_mutations(ARTIFACT)))
        load_or_refuse(path)
