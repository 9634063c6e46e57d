"""sparsec: a sparsity compiler for neural networks.

    import sparsec
    model = sparsec.load("model.onnx")
    model.apply("strip-identity")
    outputs = model.run({"input": x})
"""

from sparsec.errors import SparsecError
from sparsec.model import Model, load

__all__ = ["Model", "SparsecError", "load"]
