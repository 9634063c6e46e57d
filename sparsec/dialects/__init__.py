"""sparsec's dialects: `nn` (model ops with ONNX semantics) and `sparse` (patterns,
packed weights, kernel ops)."""

from xdsl.ir import Dialect

from sparsec.dialects.kernel_ops import SparseConvOp, SparseMatMulOp
from sparsec.dialects.nn import COMPUTE_OPS, WeightOp
from sparsec.dialects.nn_index import INDEX_OPS
from sparsec.dialects.sparse import EncodingAttr, PackedWeightOp, PatternAttr

NN = Dialect("nn", [WeightOp, *COMPUTE_OPS, *INDEX_OPS], [])
Sparse = Dialect("sparse", [PackedWeightOp, SparseMatMulOp, SparseConvOp], [PatternAttr, EncodingAttr])

StoredWeightOp = WeightOp | PackedWeightOp
"""Ops that stand for a weight whose arrays live in the weight store (dense or packed)."""

__all__ = ["NN", "Sparse", "StoredWeightOp"]
