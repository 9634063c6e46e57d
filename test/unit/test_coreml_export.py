"""Core ML export: sparse weights become constexpr_sparse_to_dense ops that coremltools
loads back and decompresses to exactly sparsec's weights."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import pytest

import sparsec
from sparsec.dialects.sparse import PackedWeightOp
from sparsec.errors import SparsecError
from sparsec.export.coreml import feature_name
from sparsec.layers import dense_value

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil.frontend.milproto.load import load as milproto_load  # noqa: E402
from coremltools.converters.mil.mil.ops.defs.iOS16.constexpr_ops import constexpr_sparse_to_dense  # noqa: E402


def loaded_program(path: Path):
    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    spec = mlmodel.get_spec()
    return spec, milproto_load(spec, specification_version=spec.specificationVersion, file_weights_dir=mlmodel.weights_dir)


@pytest.mark.parametrize(
    ("name", "pipeline"),
    [
        ("mlp", "prune-magnitude{sparsity=0.75 min-elements=0},pack-bitmask"),
        ("conv", "prune-magnitude{pattern=nm n=1 m=2 min-elements=0},pack-bitmask"),
        ("transformer_mlp", "prune-magnitude{pattern=block block-size=2 sparsity=0.5 min-elements=0},pack-bitmask"),
        ("norms", "strip-identity"),
        ("shapes", ""),
        ("llama_mlp", "fuse-rms-norm,fuse-swish,prune-magnitude{pattern=nm n=2 m=4 min-elements=0},pack-bitmask"),
    ],
)
def test_decompressed_weights_equal_sparsecs(tmp_path, name, pipeline):
    model = sparsec.load(models.save(name, tmp_path / f"{name}.onnx"))
    if pipeline:
        model.apply(pipeline)
    model.save(tmp_path / f"{name}.mlpackage")
    spec, program = loaded_program(tmp_path / f"{name}.mlpackage")
    assert spec.WhichOneof("Type") == "mlProgram"
    ours = {
        feature_name(op.weight_name.data): dense_value(op, model.weights)
        for op in model.module.walk()
        if isinstance(op, PackedWeightOp)
    }
    theirs = {
        op.name: constexpr_sparse_to_dense.decompress(op.nonzero_data.val, op.mask.val, op.shape.val)
        for op in program.functions["main"].operations
        if op.op_type == "constexpr_sparse_to_dense"
    }
    assert set(theirs) == set(ours)
    for key, dense in ours.items():
        np.testing.assert_array_equal(theirs[key].astype(np.float32), dense)


def test_bitmask_arrays_are_carried_unchanged(tmp_path):
    model = sparsec.load(models.save("mlp", tmp_path / "mlp.onnx"))
    model.apply("prune-magnitude{sparsity=0.5 min-elements=0},pack-bitmask{encoding=bitmask}")
    model.save(tmp_path / "mlp.mlpackage")
    _, program = loaded_program(tmp_path / "mlp.mlpackage")
    sparse_ops = {op.name: op for op in program.functions["main"].operations if op.op_type == "constexpr_sparse_to_dense"}
    for op in model.module.walk():
        if isinstance(op, PackedWeightOp):
            exported = sparse_ops[feature_name(op.weight_name.data)]
            np.testing.assert_array_equal(exported.mask.val, model.weights[f"{op.weight_name.data}:mask"])
            np.testing.assert_array_equal(exported.nonzero_data.val, model.weights[f"{op.weight_name.data}:values"])


def test_ops_without_core_ml_counterpart_are_named(tmp_path):
    from sparsec.context import make_context
    from sparsec.irfile import parse_module
    from sparsec.model import Model

    text = """
    func.func @main(%x: tensor<1x2x8x8xf32>) -> tensor<1x2x3x3xf32> {
      %y = nn.max_pool %x {kernel_shape = array<i64: 3, 3>, dilations = array<i64: 2, 2>} : (tensor<1x2x8x8xf32>) -> tensor<1x2x4x4xf32>
      %z = nn.max_pool %y {kernel_shape = array<i64: 2, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x3x3xf32>
      func.return %z : tensor<1x2x3x3xf32>
    }"""
    ctx = make_context()
    model = Model(parse_module(text, ctx), ctx)
    with pytest.raises(SparsecError, match="'nn.max_pool' with dilations has no Core ML counterpart"):
        model.save(tmp_path / "bad.mlpackage")
    assert not (tmp_path / "bad.mlpackage").exists()


def test_rms_norm_and_silu_export_as_core_ml_ops(tmp_path):
    """LLaMA's fused RMSNorm becomes reduce_mean, rsqrt and muls (Core ML has no RMS norm
    op), its SiLU Core ML's silu."""
    model = sparsec.load(models.save("llama_mlp", tmp_path / "llama_mlp.onnx"))
    model.apply("fuse-rms-norm,fuse-swish,pack-bitmask")
    model.save(tmp_path / "llama_mlp.mlpackage")
    _, program = loaded_program(tmp_path / "llama_mlp.mlpackage")
    kinds = [op.op_type for op in program.functions["main"].operations]
    assert {"reduce_mean", "rsqrt", "silu"} <= set(kinds) and "sigmoid" not in kinds


def test_attention_exports_as_its_five_core_ml_ops(tmp_path):
    """An nn.attention becomes matmul, mul (its scale), add (its mask), softmax (NaN
    rows to 0 by not_equal and select, if asked) and matmul; grouped key heads, which Core ML's matmul does not broadcast, are refused
    by name."""
    from sparsec.context import make_context
    from sparsec.irfile import parse_module
    from sparsec.model import Model

    def attention(key_heads: int, nan_to_zero: int = 0) -> Model:
        text = f"""
        func.func @main(%q: tensor<1x4x3x8xf32>, %kt: tensor<1x{key_heads}x8x3xf32>, %v: tensor<1x{key_heads}x3x8xf32>, %m: tensor<1x1x3x3xf32>) -> tensor<1x4x3x8xf32> {{
          %y = nn.attention %q, %kt, %v, %m {{scale = 0.5 : f32, nan_rows_to_zero = {nan_to_zero} : i64}} : (tensor<1x4x3x8xf32>, tensor<1x{key_heads}x8x3xf32>, tensor<1x{key_heads}x3x8xf32>, tensor<1x1x3x3xf32>) -> tensor<1x4x3x8xf32>
          func.return %y : tensor<1x4x3x8xf32>
        }}"""
        ctx = make_context()
        return Model(parse_module(text, ctx), ctx)

    attention(4).save(tmp_path / "attention.mlpackage")
    _, program = loaded_program(tmp_path / "attention.mlpackage")
    kinds = [op.op_type for op in program.functions["main"].operations]
    assert kinds.count("matmul") == 2 and {"mul", "add", "softmax"} <= set(kinds)
    attention(4, nan_to_zero=1).save(tmp_path / "zeroed.mlpackage")  # NaN rows to 0
    _, program = loaded_program(tmp_path / "zeroed.mlpackage")
    assert {"not_equal", "select"} <= {op.op_type for op in program.functions["main"].operations}
    with pytest.raises(SparsecError, match="'nn.attention' with 2 key or value heads for 4 query heads has no Core ML counterpart"):
        attention(2).save(tmp_path / "grouped.mlpackage")
    assert not (tmp_path / "grouped.mlpackage").exists()
