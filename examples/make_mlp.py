"""Build examples/mlp.onnx: a 784-512-256-10 MLP with fixed random weights.

A stand-in workload large enough to prune (the layers exceed the 2048-element
threshold below which weights stay dense).

    python examples/make_mlp.py [OUT.onnx]
"""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build() -> onnx.ModelProto:
    rng = np.random.default_rng(2026)
    sizes = [784, 512, 256, 10]
    nodes, initializers, previous = [], [], "input"
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        weight = (rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        bias = (0.01 * rng.standard_normal(fan_out)).astype(np.float32)
        initializers += [numpy_helper.from_array(weight, f"fc{i}.weight"), numpy_helper.from_array(bias, f"fc{i}.bias")]
        output = f"fc{i}" if i < len(sizes) - 2 else "logits"
        nodes.append(helper.make_node("Gemm", [previous, f"fc{i}.weight", f"fc{i}.bias"], [output], name=f"fc{i}", transB=1))
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [output], [f"relu{i}"], name=f"relu{i}"))
            previous = f"relu{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", sizes[-1]])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("mlp.onnx")
    onnx.save(build(), str(out))
    print(f"wrote {out}")
