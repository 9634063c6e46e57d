"""sparsec: a sparsity compiler for neural networks.

    import sparsec
    model = sparsec.load("model.onnx")
    model.apply("strip-identity")
    outputs = model.run({"input": x})
"""

__version__ = "0.1.0"

from sparsec.errors import SparsecError  # noqa: E402
from sparsec.model import Model, load  # noqa: E402

__all__ = ["Model", "SparsecError", "load"]
