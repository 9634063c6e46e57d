"""Every bad input the driver can be given: one line on stderr naming the problem, exit
code 2, no traceback, no output file left behind, and the inputs unchanged.
docs/reliability.md lists the same cases."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import models
import numpy as np
import pytest

SPARSEC = [sys.executable, "-m", "sparsec.cli"]


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    models.save("gemm", tmp_path / "model.onnx")
    models.save("mlp", tmp_path / "ext.onnx", external_data=True)
    models.save("unsupported", tmp_path / "unsupported.onnx")
    models.save("bad_shapes", tmp_path / "bad_shapes.onnx")
    models.save("old_opset", tmp_path / "old.onnx")
    models.save("run_time_shapes", tmp_path / "tokens.onnx")
    np.save(tmp_path / "ids.npy", np.array([[3, 99]]))
    np.save(tmp_path / "mask.npy", np.ones((1, 2), np.int64))
    data = (tmp_path / "model.onnx").read_bytes()
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07garbage" * 10)
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "lonely").mkdir()
    (tmp_path / "lonely" / "noext.onnx").write_bytes((tmp_path / "ext.onnx").read_bytes())
    subprocess.run([*SPARSEC, "compile", str(tmp_path / "model.onnx"), "--pattern", "nm:2:4", "--min-elements", "0",
                    "-o", str(tmp_path / "model.spx")], check=True)  # fmt: skip
    spx = (tmp_path / "model.spx").read_bytes()
    (tmp_path / "truncated.spx").write_bytes(spx[:-50])
    flipped = bytearray(spx)
    flipped[-20] ^= 0x10
    (tmp_path / "altered.spx").write_bytes(bytes(flipped))
    (length,) = struct.unpack("<Q", spx[:8])
    header = json.loads(spx[8 : 8 + length])
    header["__metadata__"]["version"] = "2"
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    (tmp_path / "newer.spx").write_bytes(struct.pack("<Q", len(encoded)) + encoded + spx[8 + length :])
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    np.save(tmp_path / "x_shape.npy", np.ones((2, 5), np.float32))
    np.save(tmp_path / "x_dtype.npy", np.ones((2, 4), np.float64))
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "bad.mlir").write_text("func.func @main( {")
    (tmp_path / "binary.mlir").write_bytes(b"\x00\xff\xfe binary")
    return tmp_path


CASES = {
    "malformed onnx": (["import", "{w}/garbage.onnx"], "garbage.onnx is not a valid ONNX model"),
    "truncated onnx": (["import", "{w}/truncated.onnx"], "truncated.onnx is not a valid ONNX model"),
    "missing external data": (["import", "{w}/lonely/noext.onnx"], "external data of initializer"),
    "unsupported op": (["import", "{w}/unsupported.onnx"], "op type 'Det' is not supported; supported ops:"),
    "shapes that cannot be inferred": (["import", "{w}/bad_shapes.onnx"], "inner dimensions differ"),
    "opset out of range": (["import", "{w}/old.onnx"], "opset 6 is not supported (supported: 7 to 24)"),
    "missing model": (["import", "{w}/absent.onnx"], "absent.onnx: no such file"),
    "unknown model kind": (["run", "{w}/model.txt"], "unknown model kind '.txt'"),
    "malformed IR": (["opt", "{w}/bad.mlir"], "bad.mlir:1:"),
    "IR that is not text": (["opt", "{w}/binary.mlir"], "binary.mlir' is not IR text (UTF-8); opt reads .mlir, .onnx and .spx files"),
    "wrong input name": (["run", "{w}/model.onnx", "--input", "y={w}/x.npy"], "unknown input(s) y; the model's inputs are x"),
    "wrong input shape": (["run", "{w}/model.onnx", "--input", "x={w}/x_shape.npy"], "input 'x' has shape (2, 5), expected"),
    "wrong input dtype": (["run", "{w}/model.onnx", "--input", "x={w}/x_dtype.npy"], "input 'x' has dtype float64, expected float32"),
    "missing input": (["run", "{w}/model.onnx"], "missing input 'x'"),
    "token id out of range": (
        ["run", "{w}/tokens.onnx", "--input", "ids={w}/ids.npy", "--input", "mask={w}/mask.npy"],
        "'nn.gather' (node 'embed') cannot run on inputs of shapes (16, 8), (1, 2): index 99 is out of bounds",
    ),
    "unreadable input file": (["run", "{w}/model.onnx", "--input", "x={w}/absent.npy"], "cannot read"),
    "truncated artifact": (["inspect", "{w}/truncated.spx"], "truncated.spx: not a valid .spx"),
    "altered artifact": (["inspect", "{w}/altered.spx"], "fails its checksum; the file was altered or corrupted"),
    "newer artifact": (["inspect", "{w}/newer.spx"], "written by a newer sparsec (format version 2; this sparsec reads up to 1)"),
    "pipeline syntax": (["opt", "{w}/model.onnx", "-p", "prune-magnitude{sparsity=0.5"], "pass-pipeline:1:"),
    "unknown pass": (["opt", "{w}/model.onnx", "-p", "prune-everything"], "unknown pass 'prune-everything'"),
    "unknown option": (["opt", "{w}/model.onnx", "-p", "prune-magnitude{speed=1}"], "pass 'prune-magnitude' has no option 'speed'"),
    "bad option value": (["opt", "{w}/model.onnx", "-p", "prune-magnitude{sparsity=2}"], "option 'sparsity' must be in [0, 1], got 2.0"),
    "bad option type": (["opt", "{w}/model.onnx", "-p", "prune-magnitude{n=two pattern=nm m=4}"], "pass 'prune-magnitude'"),
    "bad config file": (["opt", "{w}/model.onnx", "-p", 'prune-magnitude{config="{w}/bad.json"}'], "bad.json': not valid JSON"),
    "bad calibration file": (["opt", "{w}/model.onnx", "-p", 'prune-wanda{sparsity=0.5 calibration="{w}/bad.json"}'], "calibration file"),
    "output in a missing directory": (["compile", "{w}/model.onnx", "-o", "{w}/nowhere/out.spx"], "directory '{w}/nowhere' does not exist"),
    "output equal to input": (["compile", "{w}/model.onnx", "-o", "{w}/model.onnx"], "is the input file"),
    "unknown output kind": (["compile", "{w}/model.onnx", "-o", "{w}/out.tflite"], "unknown output kind '.tflite'"),
    "bad pattern flag": (["compile", "{w}/model.onnx", "--pattern", "nm:4", "-o", "{w}/out.spx"], "expected unstructured, block:B or nm:N:M"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input(workspace: Path, case: str):
    args, message = CASES[case]
    args = [a.replace("{w}", str(workspace)) for a in args]
    before = digest(workspace)
    result = subprocess.run([*SPARSEC, *args], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("sparsec: error: ")
    assert message.replace("{w}", str(workspace)) in result.stderr
    assert "Traceback" not in result.stderr
    if case not in ("malformed IR", "pipeline syntax"):  # these two show the position on extra lines
        assert len(lines) == 1, result.stderr
    assert digest(workspace) == before  # inputs unchanged, and no output (or temporary file) left


def test_internal_faults_exit_1_and_show_a_traceback_only_with_debug(workspace: Path, monkeypatch, capsys):
    from sparsec import cli

    def fault(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "cmd_import", fault)
    assert cli.main(["import", str(workspace / "model.onnx")]) == 1
    err = capsys.readouterr().err
    assert "sparsec: internal error: RuntimeError: boom (rerun with --debug for a traceback)" in err
    assert "Traceback" not in err
    assert cli.main(["--debug", "import", str(workspace / "model.onnx")]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_no_pickle_anywhere():
    sources = Path(__file__).parents[2]
    for folder in ("sparsec", "passes", "runtime"):
        for path in (sources / folder).rglob("*.py"):
            text = path.read_text()
            assert "import pickle" not in text and "allow_pickle=True" not in text, path
