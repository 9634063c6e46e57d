"""The .spx artifact: sizes, memory mapping, and refusal of damaged files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import models
import numpy as np
import onnx
import pytest

import sparsec
from sparsec.artifact import ArtifactError
from conftest import random_feeds


@pytest.fixture
def gemm_artifact(tmp_path: Path) -> tuple[Path, Path]:
    """A 4-layer 1024-wide Gemm model with biases, and its 75%-unstructured artifact."""
    onnx_path = models.gemm_stack(tmp_path / "gemm.onnx", layers=4, width=1024, bias=True)
    model = sparsec.load(onnx_path)
    model.apply("prune-magnitude{sparsity=0.75},pack-bitmask")
    model.save(tmp_path / "gemm.spx")
    return onnx_path, tmp_path / "gemm.spx"


def test_sizes_at_75_percent(gemm_artifact):
    onnx_path, spx = gemm_artifact
    model = sparsec.load(spx)
    tensors = sum(array.nbytes for _, array in model.weights.items())
    size = spx.stat().st_size
    assert size <= tensors * 1.01 + 64 * 1024
    elements = sum(int(np.prod(t.dims)) for t in onnx.load(str(onnx_path)).graph.initializer)
    print(f"spx {size} bytes = {size / (2 * elements):.1%} of fp16, {size / onnx_path.stat().st_size:.1%} of the fp32 ONNX")
    assert size <= 0.32 * 2 * elements
    assert size <= 0.16 * onnx_path.stat().st_size


def test_loading_maps_the_file(gemm_artifact):
    _, spx = gemm_artifact
    model = sparsec.load(spx)
    values = model.weights["w0:values"]
    assert not values.flags.writeable and not values.flags.owndata
    assert values.base is not None


def test_outputs_survive_the_artifact(tmp_path):
    path = models.save("transformer_mlp", tmp_path / "t.onnx")
    model = sparsec.load(path)
    model.apply("prune-magnitude{pattern=nm n=2 m=4 min-elements=0},pack-bitmask")
    feeds = random_feeds(model)
    model.save(tmp_path / "t.spx")
    again = sparsec.load(tmp_path / "t.spx", engine="reference")  # the same engine: equal to the bit
    compiled = sparsec.load(tmp_path / "t.spx")  # the JIT (its LayerNorm is a kernel)
    for key, value in model.run(feeds).items():
        np.testing.assert_array_equal(again.run(feeds)[key], value)
        np.testing.assert_allclose(compiled.run(feeds)[key], value, rtol=1e-5, atol=1e-6)
    again.save(tmp_path / "t2.onnx")
    assert sparsec.load(tmp_path / "t2.onnx").run(feeds).keys() == model.run(feeds).keys()


def test_one_model_compiles_to_the_same_bytes(tmp_path):
    """safetensors writes its header's metadata in a random order; write_spx sorts it."""
    model = sparsec.load(models.save("transformer_mlp", tmp_path / "t.onnx"))
    model.apply("prune-magnitude{pattern=nm n=2 m=4 min-elements=0},pack-bitmask")
    for copy in range(4):
        model.save(tmp_path / f"t{copy}.spx")
    assert len({(tmp_path / f"t{copy}.spx").read_bytes() for copy in range(4)}) == 1
    header, _ = _header(tmp_path / "t0.spx")
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])


def _header(path: Path) -> tuple[dict, int]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), length


def _rewrite_metadata(path: Path, out: Path, **changes: str) -> None:
    data = path.read_bytes()
    header, length = _header(path)
    header["__metadata__"].update(changes)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    out.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + length :])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", "not a valid .spx|truncated"),
        ("flip", "fails its checksum"),
        ("version", "written by a newer sparsec"),
        ("ir", "the IR fails its checksum"),
        ("garbage", "not a valid .spx"),
    ],
)
def test_damaged_artifacts_are_refused(gemm_artifact, tmp_path, damage, message):
    _, spx = gemm_artifact
    bad = tmp_path / "bad.spx"
    data = spx.read_bytes()
    match damage:
        case "truncate":
            bad.write_bytes(data[: len(data) // 2])
        case "flip":
            flipped = bytearray(data)
            flipped[-100] ^= 0x01
            bad.write_bytes(bytes(flipped))
        case "version":
            _rewrite_metadata(spx, bad, version="99")
        case "ir":
            header, _ = _header(spx)
            _rewrite_metadata(spx, bad, ir=header["__metadata__"]["ir"].replace("nn.relu", "nn.sigmoid"))
        case "garbage":
            bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ArtifactError, match=message):
        sparsec.load(bad)
    assert spx.read_bytes() == data
