"""sparsec's dialects: `nn` (model ops with ONNX semantics) and `sparse` (patterns)."""

from sparsec.dialects.nn import NN
from sparsec.dialects.sparse import Sparse

__all__ = ["NN", "Sparse"]
