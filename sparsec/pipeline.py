"""Pass registry, textual pipelines and the instrumented pass runner.

Pipelines use xDSL's syntax, `pass-a{option=value other-option=3},pass-b`, parsed by
xDSL itself. sparsec's own passes live in `sparsec.passes` (one file each); a few of
xDSL's generic passes (canonicalize, cse, dce) are registered beside them.

Running a pipeline verifies the module after every pass (on by default, as in
mlir-opt), can print the IR after all or some passes, and records each pass's wall
time for `--timing`.
"""

from __future__ import annotations

import sys
import time
from typing import get_type_hints
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, get_pass_option_infos
from xdsl.transforms.canonicalize import CanonicalizePass
from xdsl.transforms.common_subexpression_elimination import CommonSubexpressionElimination
from xdsl.transforms.dead_code_elimination import DeadCodeElimination
from xdsl.utils.arg_spec import ArgSpec, ParameterType
from xdsl.utils.arg_spec import parse_pipeline as parse_pipeline_specs
from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException, VerifyException

from sparsec.context import SparsecContext
from sparsec.errors import PassFailure, PipelineError, SparsecError
from sparsec.irfile import INLINE_WEIGHT_LIMIT, print_module

_XDSL_PASSES: tuple[type[ModulePass], ...] = (
    CanonicalizePass,
    CommonSubexpressionElimination,
    DeadCodeElimination,
)


def registered_passes() -> dict[str, type[ModulePass]]:
    """Every pass a pipeline may name, by name."""
    from sparsec.passes import ALL_PASSES

    return {p.name: p for p in (*ALL_PASSES, *_XDSL_PASSES)}


_XDSL_DESCRIPTIONS = {
    "cse": "Eliminate common subexpressions (xDSL).",
    "dce": "Remove ops whose results are unused and that have no side effects (xDSL).",
    "canonicalize": "Apply every canonicalization pattern (xDSL).",
}


def describe_pass(pass_type: type[ModulePass]) -> str:
    """The first paragraph of the pass's docstring, on one line."""
    if pass_type.name in _XDSL_DESCRIPTIONS:
        return _XDSL_DESCRIPTIONS[pass_type.name]
    paragraph = (pass_type.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def pass_options(pass_type: type[ModulePass]) -> list[tuple[str, str, str | None]]:
    """(option name as written in pipelines, type, default) for each option."""
    return [
        (info.name.replace("_", "-"), info.expected_type.strip("'"), info.default_value)
        for info in get_pass_option_infos(pass_type)
    ]


def parse_pipeline(text: str) -> tuple[ModulePass, ...]:
    """Parse a textual pipeline; every pass and option is checked here, before any runs."""
    available = registered_passes()
    try:
        specs = list(parse_pipeline_specs(text))
    except ArgSpecParseError as error:
        raise PipelineError(str(error)) from None
    passes: list[ModulePass] = []
    for spec in specs:
        if spec.name not in available:
            raise PipelineError(
                f"unknown pass '{spec.name}' in pipeline '{text}'; available passes: "
                f"{', '.join(sorted(available))} (see `sparsec list-passes`)"
            )
        pass_type = available[spec.name]
        known = {name for name, _, _ in pass_options(pass_type)}
        unknown = sorted(set(spec.normalize_parameter_names().parameters) - {k.replace("-", "_") for k in known})
        if unknown:
            raise PipelineError(
                f"pass '{spec.name}' has no option {', '.join(repr(u.replace('_', '-')) for u in unknown)} "
                f"(options: {', '.join(sorted(known)) or 'none'})"
            )
        try:
            passes.append(pass_type.from_spec(_floats_widened(pass_type, spec)))
        except PipelineError:
            raise
        except (ValueError, TypeError) as error:
            raise PipelineError(f"pass '{spec.name}': {error}") from None
    return tuple(passes)


def _as_float(value: ParameterType) -> ParameterType:
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _floats_widened(pass_type: type[ModulePass], spec: ArgSpec) -> ArgSpec:
    """Let `sparsity=1` and `threshold=1e-3` be floats.

    xDSL's pipeline lexer refuses an int for a float option and reads exponent
    notation as a bare word.
    """
    hints = get_type_hints(pass_type)
    parameters = {}
    for key, values in spec.normalize_parameter_names().parameters.items():
        if "float" in str(hints.get(key, "")):
            values = tuple(_as_float(v) for v in values)
        parameters[key] = values
    return ArgSpec(spec.name, parameters)


def pipeline_text(passes: tuple[ModulePass, ...]) -> str:
    """The passes as pipeline text, options spelled with hyphens as users write them."""
    specs = (p.spec() for p in passes)
    return ",".join(
        str(ArgSpec(spec.name, {k.replace("_", "-"): v for k, v in spec.parameters.items()})) for spec in specs
    )


@dataclass
class Instrumentation:
    """What to do around each pass: verify, print IR, time."""

    verify_each: bool = True
    print_ir_after_all: bool = False
    print_ir_after: frozenset[str] = frozenset()
    ir_stream: IO[str] = field(default_factory=lambda: sys.stderr)
    inline_limit: int = INLINE_WEIGHT_LIMIT
    progress: Callable[[int, int, str], None] | None = None
    """Called before each pass with (index, count, pass name), and once at the end."""


@dataclass(frozen=True)
class PassTiming:
    name: str
    seconds: float


def run_pipeline(
    module: ModuleOp,
    ctx: SparsecContext,
    passes: tuple[ModulePass, ...],
    instrumentation: Instrumentation | None = None,
) -> list[PassTiming]:
    """Apply `passes` in order; returns each pass's wall time."""
    inst = instrumentation or Instrumentation()
    timings: list[PassTiming] = []
    for index, pass_ in enumerate(passes):
        if inst.progress is not None:
            inst.progress(index, len(passes), pass_.name)
        start = time.perf_counter()
        try:
            pass_.apply(ctx, module)
        except SparsecError:
            raise
        except DiagnosticException as error:
            raise PassFailure(f"pass '{pass_.name}' failed: {error}") from None
        timings.append(PassTiming(pass_.name, time.perf_counter() - start))
        if inst.verify_each:
            try:
                module.verify()
            except VerifyException as error:
                raise PassFailure(f"the IR after pass '{pass_.name}' does not verify: {error}") from None
        if inst.print_ir_after_all or pass_.name in inst.print_ir_after:
            inst.ir_stream.write(f"// -----// IR Dump After {pass_.name} //----- //\n")
            print_module(module, ctx.weights, inst.ir_stream, inline_limit=inst.inline_limit)
    if inst.progress is not None:
        inst.progress(len(passes), len(passes), "done")
    return timings


def format_timing(timings: list[PassTiming], total: float | None = None) -> str:
    """An mlir-opt style wall-time report."""
    total = total if total is not None else sum(t.seconds for t in timings)
    rule = "===" + "-" * 73 + "==="
    lines = [
        rule,
        "Execution time report".center(79).rstrip(),
        rule,
        f"  Total Execution Time: {total:.4f} seconds",
        "",
        "  ----Wall Time----  ----Name----",
    ]
    rest = total - sum(t.seconds for t in timings)
    for name, seconds in [(t.name, t.seconds) for t in timings] + [("Rest (verification, printing)", rest)]:
        share = 100.0 * seconds / total if total > 0 else 0.0
        lines.append(f"  {seconds:8.4f} ({share:5.1f}%)  {name}")
    lines.append(f"  {total:8.4f} (100.0%)  Total")
    return "\n".join(lines) + "\n"


__all__ = [
    "Instrumentation",
    "PassTiming",
    "format_timing",
    "parse_pipeline",
    "pipeline_text",
    "registered_passes",
    "run_pipeline",
]
