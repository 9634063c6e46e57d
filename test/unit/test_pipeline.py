"""Text pipelines from Python: parsing, options, verification, timing."""

from __future__ import annotations

import pytest

import sparsec
from sparsec.errors import PassFailure, PipelineError
from sparsec.pipeline import Instrumentation, parse_pipeline, pipeline_text, registered_passes


def test_pipeline_text_round_trips():
    passes = parse_pipeline("strip-identity,cse,dce")
    assert pipeline_text(passes) == "strip-identity,cse,dce"


def test_every_pass_has_a_description():
    from sparsec.pipeline import describe_pass

    for name, pass_type in registered_passes().items():
        assert describe_pass(pass_type), name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "unknown pass 'nope'"),
        ("strip-identity{x=1}", "pass 'strip-identity' has no option 'x'"),
        ("strip-identity{", "Expected argument name here"),
    ],
)
def test_bad_pipelines_are_refused_before_running(text: str, message: str):
    with pytest.raises(PipelineError, match=message):
        parse_pipeline(text)


def test_apply_removes_dropout_and_times_each_pass(model_path):
    model = sparsec.load(model_path("norms"))
    timings = model.apply("strip-identity,dce")
    assert [t.name for t in timings] == ["strip-identity", "dce"]
    assert "nn.dropout" not in model.text() and "nn.identity" not in model.text()


def test_a_pass_that_breaks_the_ir_is_reported(model_path):
    from dataclasses import dataclass

    from xdsl.dialects.builtin import TensorType, f32
    from xdsl.passes import ModulePass

    from sparsec.dialects import nn

    @dataclass(frozen=True)
    class Breaker(ModulePass):
        name = "breaker"

        def apply(self, ctx, op):
            for inner in op.walk():
                if isinstance(inner, nn.ReluOp):
                    inner.results[0]._type = TensorType(f32, [7])  # pyright: ignore

    model = sparsec.load(model_path("gemm"))
    with pytest.raises(PassFailure, match="the IR after pass 'breaker' does not verify"):
        model.apply((Breaker(),), Instrumentation(verify_each=True))
