"""The `sparsec` command, in the manner of mlir-opt and iree-compile.

    sparsec import MODEL.onnx [-o OUT.mlir]
    sparsec opt IN.mlir -p 'pass-a{opt=v},pass-b' [--timing] [--print-ir-after-all]
    sparsec compile MODEL [--pattern nm:3:4 | block:4 --sparsity 0.5] [-p PIPELINE] -o OUT.{mlir,onnx,spx}
    sparsec inspect MODEL.spx [--json]
    sparsec bench MODEL.spx [--batch 1 8] [--dense ORIGINAL.onnx] [--profile [N]] [--json]
    sparsec eval MODEL.onnx --data TEST.npz --labels label --calibration CALIB.npz --methods magnitude,sparsegpt
    sparsec run MODEL --input NAME=FILE.npy ... [-o OUT.npz]
    sparsec list-passes

User errors print one line, `sparsec: error: ...`, and exit with code 2; internal
faults exit with code 1 and show a traceback only with `--debug`.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import VerifyException

from sparsec.context import make_context
from sparsec.errors import SparsecError
from sparsec.fileio import atomic_output, atomic_path, check_output_path
from sparsec.irfile import INLINE_WEIGHT_LIMIT, parse_module, print_module
from sparsec.bench import bench, by_runs_as, check_batch, check_compiled, check_shapes, feed_shapes, fixed_batch, format_profile, format_timings, named_shapes, parse_dim, parse_shape, profile, profile_rows, timing_rows
from sparsec.inspect import describe, format_description
from sparsec.model import OUTPUT_KINDS, Model, load
from sparsec.pipeline import (
    Instrumentation,
    format_timing,
    parse_pipeline,
    pass_options,
    describe_pass,
    registered_passes,
    pipeline_text,
)

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
SPLIT_MARKER = "// -----"


def _package_version() -> str:
    try:
        return version("sparsec")
    except PackageNotFoundError:
        return "unknown"


def _emit_ir(model: Model, output: str | None, args: argparse.Namespace) -> None:
    """Print IR to stdout, or write it (with its sidecar) to `output`."""
    inline_limit = args.inline_weight_limit
    if output is None:
        left_out = print_module(
            model.module, model.weights, sys.stdout, inline_limit=inline_limit, debuginfo=args.print_debuginfo
        )
        if left_out:
            print(
                f"sparsec: note: {len(left_out)} weight(s) with more than {inline_limit} "
                "elements are not printed; write to a file with -o to keep them in a "
                "sidecar, or pass --inline-weight-limit=-1",
                file=sys.stderr,
            )
    else:
        model.save(output, inline_limit=inline_limit, debuginfo=args.print_debuginfo)


def _instrumentation(args: argparse.Namespace) -> Instrumentation:
    after = frozenset(p for item in args.print_ir_after for p in item.split(",") if p)
    unknown = after - set(registered_passes())
    if unknown:
        raise SparsecError(f"--print-ir-after: unknown pass(es) {', '.join(sorted(unknown))}")
    return Instrumentation(
        verify_each=not args.no_verify,
        print_ir_after_all=args.print_ir_after_all,
        print_ir_after=after,
        ir_stream=sys.stderr,
        inline_limit=args.inline_weight_limit,
        progress=_progress_bar() if sys.stderr.isatty() else None,
    )


def _progress_bar():
    """A tqdm bar on stderr that advances pass by pass (only used on a terminal)."""
    from tqdm import tqdm

    bar: dict[str, tqdm] = {}

    def update(index: int, count: int, name: str) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=count, file=sys.stderr, unit="pass", leave=False)
        bar["bar"].n = index
        bar["bar"].set_description(name)
        if index == count:
            bar["bar"].close()

    return update


def _apply(model: Model, passes: tuple[ModulePass, ...], args: argparse.Namespace) -> None:
    if getattr(args, "verbose", False):
        print(f"sparsec: pipeline: {pipeline_text(passes)}", file=sys.stderr)
    start = time.perf_counter()
    timings = model.apply(passes, _instrumentation(args))
    if args.timing:
        sys.stderr.write(format_timing(timings, time.perf_counter() - start))


def cmd_import(args: argparse.Namespace) -> int:
    if Path(args.model).suffix != ".onnx":
        raise SparsecError(f"'{args.model}': import reads ONNX models (.onnx)")
    if args.output is not None:
        check_output_path(args.output, args.model)
    _emit_ir(load(args.model), args.output, args)
    return 0


def _opt_chunk(
    text: str, source: str, base_dir: Path, passes: tuple[ModulePass, ...], args: argparse.Namespace
) -> Model:
    ctx = make_context()
    module = parse_module(text, ctx, source=source, base_dir=base_dir)
    if not args.no_verify:
        try:
            module.verify()
        except VerifyException as error:
            raise SparsecError(f"{source}: {error}") from None
    model = Model(module, ctx)
    _apply(model, passes, args)
    return model


def cmd_opt(args: argparse.Namespace) -> int:
    passes = parse_pipeline(args.passes)
    if args.input != "-" and Path(args.input).suffix in (".onnx", ".spx"):
        model = load(args.input)
        _apply(model, passes, args)
        _emit_ir(model, args.output, args)
        return 0
    if args.input == "-":
        text, source, base_dir = sys.stdin.read(), "<stdin>", Path.cwd()
    else:
        path = Path(args.input)
        if not path.is_file():
            raise SparsecError(f"'{path}': no such file")
        try:
            text, source, base_dir = path.read_text(), str(path), path.parent
        except UnicodeDecodeError:
            raise SparsecError(f"'{path}' is not IR text (UTF-8); opt reads .mlir, .onnx and .spx files") from None
    if args.output is not None:
        check_output_path(args.output, *([args.input] if args.input != "-" else []))
    chunks = text.split(SPLIT_MARKER) if args.split_input_file else [text]
    stream = io.StringIO()
    line_offset = 0
    for index, chunk in enumerate(chunks):
        if index:
            stream.write(SPLIT_MARKER + "\n")
        # Pad with newlines so that diagnostics keep the line numbers of the whole file.
        padded = "\n" * line_offset + chunk
        line_offset += chunk.count("\n")
        try:
            model = _opt_chunk(padded, source, base_dir, passes, args)
        except SparsecError as error:
            if not args.verify_diagnostics:
                raise
            stream.write(f"{error}\n")
            continue
        if args.output is not None and len(chunks) == 1:
            _emit_ir(model, args.output, args)
            return 0
        print_module(
            model.module, model.weights, stream, inline_limit=args.inline_weight_limit, debuginfo=args.print_debuginfo
        )
    if args.output is None:
        sys.stdout.write(stream.getvalue())
    else:
        with atomic_path(args.output) as tmp:
            tmp.write_text(stream.getvalue())
    return 0


def _pattern_pass(args: argparse.Namespace) -> str | None:
    """`--pattern nm:3:4 --sparsity S --axis A` as a prune-magnitude pass."""
    if args.pattern is None:
        for flag, value in (("--sparsity", args.sparsity), ("--axis", args.axis), ("--min-elements", args.min_elements),
                            ("--calibration", args.calibration)):
            if value is not None:
                raise SparsecError(f"{flag} needs --pattern (unstructured, block:B or nm:N:M)")
        return None
    kind, *params = args.pattern.split(":")
    options: list[str] = []
    if kind == "unstructured" and not params:
        options.append("pattern=unstructured")
    elif kind == "block" and len(params) == 1 and params[0].isdigit():
        options += ["pattern=block", f"block-size={params[0]}"]
    elif kind == "nm" and len(params) == 2 and all(p.isdigit() for p in params):
        options += ["pattern=nm", f"n={params[0]}", f"m={params[1]}"]
    else:
        raise SparsecError(f"--pattern '{args.pattern}': expected unstructured, block:B or nm:N:M (e.g. nm:3:4)")
    if args.sparsity is not None:
        options.append(f"sparsity={args.sparsity!r}")
    if args.axis is not None:
        options.append(f"axis={args.axis}")
    if args.min_elements is not None:
        options.append(f"min-elements={args.min_elements}")
    if args.method != "magnitude":
        if args.calibration is None:
            raise SparsecError(f"--method {args.method} needs --calibration FILE.npz")
        options.append(f'calibration="{args.calibration}"')
    elif args.calibration is not None:
        raise SparsecError("--calibration is for --method wanda or sparsegpt")
    return f"prune-{args.method}{{" + " ".join(options) + "}"


def compile_passes(args: argparse.Namespace, output_kind: str) -> tuple[ModulePass, ...]:
    """What `compile` runs: --pattern's pruning, then -p, then for a `.spx` identities
    stripped (no-op Casts and Concats too, which would copy tensors), batch
    normalizations folded into their convolutions (after pruning, so the weights are
    pruned as the model stores them), layer and RMS norms written out op by op fused
    (so that they run as kernels), GELUs and SiLUs written out fused (so that
    lower-kernels fuses them into the layer before), rotary embeddings fused (one
    numpy step for seven), scales by one value folded into the layer they scale
    (attention's), attention written out fused (one kernel for five numpy steps),
    packing (for a `.spx` or `.mlpackage`) and kernel lowering (for a `.spx`) unless
    the pipeline did them, then --report. Parsed once, so option and file checks happen once, before the model
    loads."""
    passes = parse_pipeline(",".join(stage for stage in (_pattern_pass(args), args.passes) if stage))
    names = {p.name for p in passes}
    extra = []
    if output_kind == ".spx" and not names & {"strip-identity", "lower-kernels"}:
        extra.append("strip-identity")
    if output_kind == ".spx" and not names & {"fold-batch-norm", "pack-bitmask"}:
        extra.append("fold-batch-norm")
    for fusion in ("fuse-layer-norm", "fuse-rms-norm", "fuse-gelu", "fuse-swish", "fuse-rotary"):
        if output_kind == ".spx" and not names & {fusion, "lower-kernels"}:
            extra.append(fusion)
    if output_kind == ".spx" and not names & {"fold-scale", "pack-bitmask"}:
        extra.append("fold-scale")
    if output_kind == ".spx" and not names & {"fuse-attention", "lower-kernels"}:
        extra.append("fuse-attention")
    if output_kind in (".spx", ".mlpackage") and "pack-bitmask" not in names:
        extra.append("pack-bitmask")
    if output_kind == ".spx" and "lower-kernels" not in names:
        extra.append("lower-kernels")
    if args.report:
        extra.append("sparsity-report{output=stdout}")
    return passes + parse_pipeline(",".join(extra))


def cmd_compile(args: argparse.Namespace) -> int:
    output = check_output_path(args.output, args.model)
    if output.suffix not in OUTPUT_KINDS:
        raise SparsecError(
            f"-o '{output}': unknown output kind '{output.suffix}' (supported: {', '.join(OUTPUT_KINDS)})"
        )
    passes = compile_passes(args, output.suffix)
    model = load(args.model)
    _apply(model, passes, args)
    model.save(output, inline_limit=args.inline_weight_limit, debuginfo=args.print_debuginfo)
    if args.emit_llvm is not None:
        _emit_llvm(model, Path(args.emit_llvm))
    return 0


def _emit_llvm(model: Model, directory: Path) -> None:
    """Write the LLVM IR of each kernel the runtime may use on this host (the batched and
    chunk variants too), as DIRECTORY/SYMBOL.ll."""
    from sparsec.runtime.codegen.kernels import kernel_llvm_ir
    from sparsec.runtime.executor import all_kernel_keys
    from sparsec.runtime.jit import Target

    if not directory.is_dir():
        raise SparsecError(f"--emit-llvm: directory '{directory}' does not exist")
    for key in all_kernel_keys(model.module, model.weights, Target.host()):
        with atomic_output(directory / f"{key.symbol}.ll") as stream:
            stream.write(kernel_llvm_ir(key))


def _load_inputs(specs: Sequence[str]) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep:
            if Path(spec).suffix != ".npz":
                raise SparsecError(f"--input '{spec}': expected NAME=FILE.npy or FILE.npz")
            file = spec
        try:
            loaded = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise SparsecError(f"--input '{spec}': cannot read '{file}': {error}") from None
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                feeds.update({k: loaded[k] for k in loaded.files} if not sep else {name: loaded[loaded.files[0]]})
        else:
            feeds[name] = loaded
    return feeds


def cmd_inspect(args: argparse.Namespace) -> int:
    model = load(args.model, verify=not args.no_verify)
    info = describe(model, args.model)
    sys.stdout.write(json.dumps(info, indent=2) + "\n" if args.json else format_description(info))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.output is not None:
        check_output_path(args.output, args.model)
    outputs = load(args.model, threads=args.threads, engine=args.engine).run(_load_inputs(args.input))
    if args.output is None:
        for name, value in outputs.items():
            print(f"{name}: {value.dtype}{list(value.shape)} {np.array2string(value.reshape(-1)[:8], precision=6)}")
        return 0
    with atomic_path(args.output) as tmp:
        with open(tmp, "wb") as stream:
            np.savez(stream, **outputs)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from sparsec import evaluate as ev

    if args.plot is not None:
        check_output_path(args.plot)
    from sparsec.runtime.workers import available_cpus

    data, labels = ev.load_data(Path(args.data), args.labels)
    rows = ev.evaluate(
        load(args.model),
        data,
        labels,
        ev.parse_sweep(args.sweep),
        [m.strip() for m in args.methods.split(",") if m.strip()],
        Path(args.calibration) if args.calibration else None,
        args.min_elements,
        args.threads or available_cpus(),
    )
    sys.stdout.write(ev.rows_json(rows) if args.json else ev.format_rows(rows, markdown=args.markdown))
    if args.plot is not None:
        ev.plot(rows, Path(args.plot))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from sparsec.runtime.workers import available_cpus

    model = load(args.model, threads=args.threads, engine="jit")
    if (note := check_compiled(model, args.model)) is not None:
        print(f"sparsec: note: {note}", file=sys.stderr)
    dense = Path(args.dense) if args.dense else model.source_model
    if dense is not None and not dense.is_file():
        if args.dense:
            raise SparsecError(f"--dense '{dense}': no such file")
        raise SparsecError(f"'{args.model}' was compiled from '{dense}', which is gone: give the dense original with --dense ORIGINAL.onnx")
    threads = args.threads or available_cpus()
    batches = args.batch or [fixed_batch(model) or 1]
    names = [name for name, _ in args.shape]
    if twice := next((name for name in names if names.count(name) > 1), None):
        raise SparsecError(f"--shape: input '{twice}' is given twice")
    named = [name for name, _ in args.dim]
    if twice := next((name for name in named if named.count(name) > 1), None):
        raise SparsecError(f"--dim: dimension '{twice}' is given twice")
    shapes = (named_shapes(model, dense, dict(args.dim)) if args.dim else {}) | dict(args.shape)
    check_shapes(model, shapes, batches)
    for batch in batches:
        check_batch(model, batch)  # before the first table, not after it
    report: dict[str, list] = {"timings": [], "profile": [], "profile_by_runs_as": []}
    for batch in batches:
        timings = bench(model, dense, batch, threads, args.runs, args.seconds, shapes)
        inputs = feed_shapes(model, batch, shapes)
        report["timings"] += timing_rows(timings, batch, inputs)
        if not args.json:
            sys.stdout.write(format_timings(timings, batch, inputs))
        if args.profile:
            steps, baseline = profile(model, batch, args.runs, dense, threads, shapes)
            rows, kinds = profile_rows(steps, batch, args.profile, baseline), by_runs_as(steps, batch, baseline)
            report["profile"] += rows
            report["profile_by_runs_as"] += kinds
            if not args.json:
                sys.stdout.write(format_profile(rows, kinds, args.runs, steps, baseline))
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


def cmd_list_passes(args: argparse.Namespace) -> int:
    for name, pass_type in sorted(registered_passes().items()):
        print(f"{name}")
        print(f"    {describe_pass(pass_type)}")
        for option, kind, default in pass_options(pass_type):
            shown = "" if default is None else f" = {default}"
            print(f"    {option}: {kind}{shown}")
    return 0


def _positive(text: str) -> int:
    """An argument that counts something (threads, runs, a batch): a whole number from 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _input_shape(text: str) -> tuple[str, tuple[int | None, ...]]:
    try:
        return parse_shape(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _named_dim(text: str) -> tuple[str, int]:
    try:
        return parse_dim(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def _add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--passes", default="", metavar="PIPELINE",
                        help="textual pass pipeline: 'pass-a{option=value},pass-b'")
    parser.add_argument("--print-ir-after-all", action="store_true", help="print the IR (to stderr) after every pass")
    parser.add_argument("--print-ir-after", action="append", default=[], metavar="PASS",
                        help="print the IR (to stderr) after the named pass(es)")
    parser.add_argument("--timing", action="store_true", help="print a per-pass wall-time report to stderr")
    parser.add_argument("--no-verify", action="store_true", help="do not verify the IR after each pass")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the expanded pipeline")


def _add_ir_printing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--print-debuginfo", action="store_true",
                        help="print op locations (ONNX node names) in the IR")
    parser.add_argument("--inline-weight-limit", type=int, default=INLINE_WEIGHT_LIMIT, metavar="N",
                        help="print weights with at most N elements inline; -1 inlines all "
                        f"(default {INLINE_WEIGHT_LIMIT})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsec", description="A sparsity compiler for neural networks.")
    parser.add_argument("--version", action="version", version=f"sparsec {_package_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for every error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("import", help="import an ONNX model into sparsec IR")
    p.add_argument("model", help="the .onnx model")
    p.add_argument("-o", "--output", help="output .mlir file (default: stdout)")
    _add_ir_printing(p)
    p.set_defaults(handler=cmd_import)

    p = commands.add_parser("opt", help="run a pass pipeline over IR")
    p.add_argument("input", nargs="?", default="-", help="input .mlir (or .onnx) file; - for stdin")
    p.add_argument("-o", "--output", help="output .mlir file (default: stdout)")
    p.add_argument("--split-input-file", action="store_true", help=f"process chunks separated by '{SPLIT_MARKER}' independently")
    p.add_argument("--verify-diagnostics", action="store_true", help="print errors as output and exit 0 (for lit tests)")
    _add_pipeline_options(p)
    _add_ir_printing(p)
    p.set_defaults(handler=cmd_opt)

    p = commands.add_parser("compile", help="compile a model; the extension of -o picks the output")
    p.add_argument("model", help="the .onnx or .mlir model")
    p.add_argument("-o", "--output", required=True,
                   help="output: .mlir (IR), .onnx (model), .spx (artifact) or .mlpackage (Core ML)")
    p.add_argument("--pattern", help="prune by magnitude: unstructured, block:B or nm:N:M")
    p.add_argument("--sparsity", type=float, help="fraction to prune, for unstructured and block")
    p.add_argument("--method", choices=("magnitude", "wanda", "sparsegpt"), default="magnitude",
                   help="pruning method for --pattern (wanda and sparsegpt need --calibration)")
    p.add_argument("--calibration", metavar="FILE.npz", help="calibration inputs by graph input name")
    p.add_argument("--axis", type=int, help="axis of the (out, in, *kernel) view (default: block 0, n:m 1)")
    p.add_argument("--min-elements", type=int, help="leave weights with at most this many elements dense (default 2048)")
    p.add_argument("--report", action="store_true", help="print the per-layer sparsity report")
    p.add_argument("--emit-llvm", metavar="DIR", help="write each generated kernel's LLVM IR into DIR")
    _add_pipeline_options(p)
    _add_ir_printing(p)
    p.set_defaults(handler=cmd_compile)

    p = commands.add_parser("inspect", help="per-layer encodings and sizes of a compiled model")
    p.add_argument("model", help="a .spx artifact (or .mlir / .onnx)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-verify", action="store_true", help="skip the artifact's checksums")
    p.set_defaults(handler=cmd_inspect)

    p = commands.add_parser("run", help="run a model on inputs")
    p.add_argument("model", help="the .onnx, .mlir or .spx model")
    p.add_argument("--engine", choices=("jit", "reference"),
                   help="jit (generated kernels; the default for .spx) or reference (numpy)")
    p.add_argument("--threads", type=_positive, help="JIT worker threads (default: the CPUs this process may use)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input by name (repeatable), or a .npz with all inputs")
    p.add_argument("-o", "--output", help="write every output into this .npz (default: print a summary)")
    p.set_defaults(handler=cmd_run)

    p = commands.add_parser("eval", help="accuracy and error against sparsity, per pruning method")
    p.add_argument("model", help="the dense .onnx or .mlir model")
    p.add_argument("--data", required=True, help=".npz of inputs by graph input name (and labels)")
    p.add_argument("--labels", help="name of the labels array in --data (enables accuracy)")
    p.add_argument("--calibration", help=".npz of calibration inputs, for wanda and sparsegpt")
    p.add_argument("--sweep", default="unstructured:0.5,0.75,0.9;nm:2:4;nm:3:4",
                   help="points: 'unstructured:S,S;nm:N:M;block:B:S' (default: %(default)s)")
    p.add_argument("--methods", default="magnitude", help="comma-separated: magnitude, wanda, sparsegpt")
    p.add_argument("--min-elements", type=int, default=2048, help="leave weights this small dense (default 2048)")
    p.add_argument("--threads", type=_positive, help="JIT threads (default: the CPUs this process may use)")
    p.add_argument("--json", action="store_true", help="print JSON rows")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--plot", metavar="FILE.png", help="plot accuracy (or error) against sparsity (needs matplotlib)")
    p.set_defaults(handler=cmd_eval)

    p = commands.add_parser("bench", help="latency of a compiled model against onnxruntime")
    p.add_argument("model", help="a .spx artifact")
    p.add_argument("--batch", type=_positive, nargs="+",
                   help="batch sizes (default: the batch the model's inputs fix, else 1)")
    p.add_argument("--shape", type=_input_shape, action="append", default=[], metavar="NAME=DIMS",
                   help="an input's shape, ? for each batch: x=?x128x768 for a transformer's sequence of 128 "
                        "(default: each batch for every dimension given at run time); repeat for more inputs")
    p.add_argument("--dim", type=_named_dim, action="append", default=[], metavar="NAME=SIZE",
                   help="every input dimension the dense original names NAME: sequence=128 for a transformer "
                        "exported with dynamic axes batch and sequence (--shape wins for its input); repeat for more")
    p.add_argument("--dense", help="the dense original .onnx (default: the model the artifact was compiled from)")
    p.add_argument("--threads", type=_positive, help="threads for sparsec and onnxruntime (default: the CPUs this process may use)")
    p.add_argument("--runs", type=_positive, default=20, help="timed runs at least (default 20)")
    p.add_argument("--seconds", type=_seconds, default=1.0, help="time each engine at least this long (default 1)")
    p.add_argument("--profile", type=_positive, nargs="?", const=15, metavar="N",
                   help="also time sparsec's run step by step and list its N slowest steps (default 15)")
    p.add_argument("--json", action="store_true", help='print JSON: {"timings": [...], "profile": [...], "profile_by_runs_as": [...]}')
    p.set_defaults(handler=cmd_bench)

    p = commands.add_parser("list-passes", help="list passes with their options and defaults")
    p.set_defaults(handler=cmd_list_passes)
    return parser


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"sparsec: {record.levelname.lower()}: {record.getMessage()}"


def _configure_logging() -> None:
    """Warnings and notes from passes appear as one `sparsec: warning: ...` line each."""
    logger = logging.getLogger("sparsec")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_OneLineFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging()
    try:
        return args.handler(args)
    except SparsecError as error:
        if args.debug:
            traceback.print_exc()
        print(f"sparsec: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        # The reader (e.g. `head`) went away; that is not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("sparsec: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the last line of defence for internal faults
        if args.debug:
            traceback.print_exc()
        print(f"sparsec: internal error: {type(error).__name__}: {error} (rerun with --debug for a traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
