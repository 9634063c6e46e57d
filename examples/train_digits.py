"""Train the bundled example: an MLP on scikit-learn's digits (8x8 images, 10 classes).

    python examples/train_digits.py

Writes, beside this script:
  digits_mlp.onnx     64 -> 256 -> 128 -> 10 MLP (Gemm + Relu), input "input", output "logits"
  digits_test.npz     the held-out split: "input" (float32, pixels / 16) and "label" (int64)
  digits_calib.npz    128 training images for calibrated pruning: "input"

Everything is seeded (split, initialization, batches), so the files are reproducible.
The data set ships inside scikit-learn; nothing is downloaded.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SIZES = (64, 256, 128, 10)
SEED = 0
HERE = Path(__file__).parent


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return train_test_split(x, digits.target.astype(np.int64), test_size=0.2, random_state=SEED, stratify=digits.target)


def forward(params: list[np.ndarray], x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    activations = [x]
    for i in range(0, len(params), 2):
        x = x @ params[i].T + params[i + 1]
        if i + 2 < len(params):
            x = np.maximum(x, 0)
        activations.append(x)
    return x, activations


def train(x: np.ndarray, y: np.ndarray, epochs: int = 60, batch: int = 32, rate: float = 2e-3) -> list[np.ndarray]:
    rng = np.random.default_rng(SEED)
    params: list[np.ndarray] = []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:]):
        params += [rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / fan_in), np.zeros(fan_out)]
    moments = [np.zeros_like(p) for p in params]
    squares = [np.zeros_like(p) for p in params]
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            index = order[start : start + batch]
            logits, activations = forward(params, x[index])
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            grad = probs
            grad[np.arange(len(index)), y[index]] -= 1
            grad /= len(index)
            step += 1
            for layer in reversed(range(len(params) // 2)):
                weight_grad, bias_grad = grad.T @ activations[layer], grad.sum(axis=0)
                if layer:
                    grad = (grad @ params[2 * layer]) * (activations[layer] > 0)
                for i, g in ((2 * layer, weight_grad), (2 * layer + 1, bias_grad)):
                    moments[i] = 0.9 * moments[i] + 0.1 * g
                    squares[i] = 0.999 * squares[i] + 0.001 * g * g
                    params[i] -= rate * (moments[i] / (1 - 0.9**step)) / (np.sqrt(squares[i] / (1 - 0.999**step)) + 1e-8)
    return [p.astype(np.float32) for p in params]


def to_onnx(params: list[np.ndarray]) -> onnx.ModelProto:
    nodes, initializers, previous = [], [], "input"
    layers = len(params) // 2
    for i in range(layers):
        initializers += [numpy_helper.from_array(params[2 * i], f"fc{i}.weight"), numpy_helper.from_array(params[2 * i + 1], f"fc{i}.bias")]
        output = "logits" if i == layers - 1 else f"fc{i}"
        nodes.append(helper.make_node("Gemm", [previous, f"fc{i}.weight", f"fc{i}.bias"], [output], name=f"fc{i}", transB=1))
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [output], [f"relu{i}"], name=f"relu{i}"))
            previous = f"relu{i}"
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", SIZES[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", SIZES[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="sparsec examples")
    model.ir_version = 8
    return model


if __name__ == "__main__":
    x_train, x_test, y_train, y_test = data()
    params = train(x_train, y_train)
    accuracy = float((forward(params, x_test)[0].argmax(axis=1) == y_test).mean())
    onnx.save(to_onnx(params), str(HERE / "digits_mlp.onnx"))
    np.savez(HERE / "digits_test.npz", input=x_test, label=y_test)
    np.savez(HERE / "digits_calib.npz", input=x_train[:128])
    print(f"test accuracy {accuracy:.4f} on {len(y_test)} images; wrote digits_mlp.onnx, digits_test.npz, digits_calib.npz")
