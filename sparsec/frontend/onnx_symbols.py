"""Symbolic dimensions of every tensor in an ONNX graph, by ONNX's own shape inference.

Exporters compute reshape targets at run time (`Shape`, `Gather`, `Concat` of a
tensor's sizes) so that one model takes any batch and sequence. ONNX's shape
inference with data propagation follows those computations symbolically: the query
projection of a BERT is `[batch, sequence, 768]` and its per-head reshape
`[batch, sequence, 12, 64]`, the same names standing for the same run-time sizes. The
importer uses them to turn such a Reshape into a constant one (`0` copies the
dimension that has the same name, `-1` takes the rest) and to give static sizes to
results whose shape follows from values (Slice, Range, Expand).

Nothing here is trusted for correctness: a dimension that inference cannot name is
`None`, and every op's own shape inference still checks what it is given.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper, shape_inference
from onnx.onnx_cpp2py_export.shape_inference import InferenceError

from sparsec.weights import WeightStore

Dim = int | str | None
"""A size, a symbol naming a run-time size, or unknown."""

PROPAGATED_ELEMENTS = 1024
"""Initializers up to this size go to inference with their values, for the shape
arithmetic it propagates; larger ones (weights) only with their types."""


def _dims(value: onnx.ValueInfoProto) -> list[Dim] | None:
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]


def symbolic_dims(model: onnx.ModelProto, weights: WeightStore, weight_names: dict[str, str]) -> dict[str, list[Dim]]:
    """Dimensions by tensor name; empty where ONNX's inference fails on the model.

    `model` has no initializer bytes; `weight_names` maps an initializer to its name in
    `weights`, whose small arrays go to inference as values (the others, with their
    types only).
    """
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    graph = probe.graph
    del graph.value_info[:]
    initializers = list(graph.initializer)
    del graph.initializer[:]
    declared = {value.name for value in graph.input}
    for tensor in initializers:
        if tensor.name in declared:
            declared.discard(tensor.name)
            graph.input.remove(next(v for v in graph.input if v.name == tensor.name))
        array = weights[weight_names[tensor.name]] if tensor.name in weight_names else None
        if array is not None and array.size <= PROPAGATED_ELEMENTS:
            graph.initializer.append(numpy_helper.from_array(array, tensor.name))
        else:
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    try:
        inferred = shape_inference.infer_shapes(probe, data_prop=True)
    except (InferenceError, onnx.checker.ValidationError, RuntimeError, ValueError):
        return {}
    found: dict[str, list[Dim]] = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        dims = _dims(value)
        if dims is not None:
            found[value.name] = dims
    return found
