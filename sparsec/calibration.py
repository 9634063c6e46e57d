"""Calibration data, and the input activations of a layer collected from it.

A calibration file is an `.npz` of arrays keyed by graph input name, first axis the
sample. Calibrated pruning passes ask for the inputs that reach one layer: the model
runs (reference interpreter) batch by batch up to that layer only, and each batch's
feature matrix is handed over and dropped, so memory holds one batch of activations,
not the whole set.

The feature matrix of a layer has one row per position the weight is applied at and
one column per input feature, in the order of the weight's (out, in, *kernel) view:

    Gemm / MatMul   x reshaped to (rows, K)
    Conv            im2col patches (N * output positions, C * kh * kw)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from sparsec import reference
from sparsec.dialects import nn
from sparsec.dialects.literals import numpy_dtype
from sparsec.errors import SparsecError
from sparsec.weights import WeightStore


@dataclass(frozen=True)
class CalibrationData:
    """Model inputs by name, one sample per leading index."""

    arrays: Mapping[str, np.ndarray]

    @staticmethod
    def load(path: str | Path) -> CalibrationData:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError) as error:
            raise SparsecError(f"calibration file '{path}': cannot read: {error}") from None
        if not arrays:
            raise SparsecError(f"calibration file '{path}' holds no arrays")
        counts = {len(a) for a in arrays.values()}
        if len(counts) != 1:
            raise SparsecError(f"calibration file '{path}': arrays have different sample counts {sorted(counts)}")
        return CalibrationData(arrays)

    @property
    def samples(self) -> int:
        return len(next(iter(self.arrays.values())))

    def batches(self, inputs: dict[str, np.dtype], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Batches of the arrays of `inputs`, each in its input's dtype (float32
        features, int64 token ids)."""
        missing = [n for n in inputs if n not in self.arrays]
        if missing:
            raise SparsecError(f"calibration data lacks input(s) {', '.join(missing)} (it has {', '.join(self.arrays)})")
        for start in range(0, self.samples, batch_size):
            yield {n: np.ascontiguousarray(self.arrays[n][start : start + batch_size], dtype=dtype) for n, dtype in inputs.items()}


def features(op: Operation, operands: list[np.ndarray]) -> np.ndarray:
    """The layer's input as a (rows, in_features) matrix in the weight's canonical order."""
    if isinstance(op, nn.GemmOp):
        a = operands[0]
        return a.T if op.trans_a.value.data else a
    if isinstance(op, nn.MatMulOp):
        return operands[0].reshape(-1, operands[0].shape[-1])
    if isinstance(op, nn.ConvOp):
        x, w = operands[0], operands[1]
        kernel = tuple(w.shape[2:])
        strides, dilations, pads = op.geometry(x.shape, kernel)
        cols = reference._windows(reference._pad(x, pads, 0.0), kernel, strides, dilations)
        return np.moveaxis(cols, 1, 1 + len(kernel)).reshape(-1, x.shape[1] * math.prod(kernel))
    raise SparsecError(f"calibration: cannot take the features of '{op.name}'")


def layer_features(
    module: ModuleOp, weights: WeightStore, layer: Operation, data: CalibrationData, batch_size: int = 32
) -> Iterator[np.ndarray]:
    """The feature matrix of `layer` for each calibration batch, with the weights as they are now."""
    function = reference.main_function(module)
    inputs = {name: numpy_dtype(arg.type.element_type) for name, arg in zip(reference.input_names(function), function.args)}  # pyright: ignore
    for batch in data.batches(inputs, batch_size):
        operands = reference.inputs_of(module, weights, batch, layer)
        yield np.asarray(features(layer, operands), dtype=np.float64)
