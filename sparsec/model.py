"""The Python API: a model is a module plus its weights.

    import sparsec
    model = sparsec.load("model.onnx")            # or a .mlir file
    model.apply("strip-identity,cse")             # the same text pipelines as the CLI
    outputs = model.run({"input": x})             # by input name; .spx artifacts run JIT kernels
    model.save("out.spx")                         # or .mlir, .onnx
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from sparsec import reference
from sparsec.artifact import read_spx, source_of, write_spx
from sparsec.context import SparsecContext, make_context
from sparsec.errors import SparsecError
from sparsec.export.coreml import write_mlpackage
from sparsec.fileio import check_output_path
from sparsec.irfile import INLINE_WEIGHT_LIMIT, module_text, read_mlir, write_mlir
from sparsec.pipeline import Instrumentation, PassTiming, parse_pipeline, run_pipeline
from sparsec.weights import WeightStore

INPUT_KINDS = (".onnx", ".mlir", ".spx")
OUTPUT_KINDS = (".mlir", ".onnx", ".spx", ".mlpackage")


ENGINES = ("jit", "reference")


class Model:
    """An IR module together with the weight store its `nn.weight` ops refer to.

    `run` uses the JIT engine (generated kernels for layers lowered by `lower-kernels`,
    numpy for the rest) or the reference interpreter; artifacts default to the JIT.
    """

    def __init__(self, module: ModuleOp, ctx: SparsecContext, engine: str = "reference", threads: int | None = None):
        if engine not in ENGINES:
            raise SparsecError(f"engine '{engine}' is not one of {', '.join(ENGINES)}")
        self.module = module
        self.ctx = ctx
        self.engine = engine
        self.threads = threads
        self.source_model: Path | None = None
        """The ONNX model this one was imported from, when known (kept in .spx artifacts)."""
        self._executor = None

    @property
    def weights(self) -> WeightStore:
        return self.ctx.weights

    def apply(
        self,
        pipeline: str | tuple[ModulePass, ...],
        instrumentation: Instrumentation | None = None,
    ) -> list[PassTiming]:
        """Run a pass pipeline (text or parsed passes) over the model, in place."""
        passes = parse_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
        self._executor = None
        return run_pipeline(self.module, self.ctx, passes, instrumentation)

    def compiled(self):
        """The JIT executor for the module as it is now (built on first use)."""
        if self._executor is None:
            from sparsec.runtime.executor import Executor

            self._executor = Executor(self.module, self.weights, threads=self.threads)
        return self._executor

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name, from the model's engine."""
        if self.engine == "jit":
            return self.compiled().run(feeds)
        return reference.run(self.module, self.weights, feeds)

    def text(self, inline_limit: int = INLINE_WEIGHT_LIMIT) -> str:
        return module_text(self.module, self.weights, inline_limit)

    def save(self, path: str | Path, inline_limit: int = INLINE_WEIGHT_LIMIT, debuginfo: bool = False) -> None:
        """Write the model; the extension of `path` picks the format."""
        path = check_output_path(path)
        match path.suffix:
            case ".mlir":
                write_mlir(self.module, self.weights, path, inline_limit=inline_limit, debuginfo=debuginfo)
            case ".onnx":
                from sparsec.export.onnx import write_onnx  # imports onnx: only what reads or writes ONNX pays for it

                write_onnx(self.module, self.weights, path)
            case ".spx":
                write_spx(self.module, self.weights, path, self.source_model)
            case ".mlpackage":
                write_mlpackage(self.module, self.weights, path)
            case other:
                raise SparsecError(
                    f"output '{path}': unknown extension '{other}' (supported: {', '.join(OUTPUT_KINDS)})"
                )

    def clone(self) -> Model:
        clone = Model(self.module.clone(), self.ctx.clone(), self.engine, self.threads)
        clone.source_model = self.source_model
        return clone


def load(path: str | Path, threads: int | None = None, engine: str | None = None, verify: bool = True) -> Model:
    """Load a model from `.onnx`, `.mlir` or a `.spx` artifact (memory-mapped;
    `verify=False` skips its checksums). `engine` defaults to "jit" for artifacts and
    "reference" otherwise; `threads` (default: the CPUs this process may use) is the JIT's thread count."""
    path = Path(path)
    ctx = make_context()
    match path.suffix:
        case ".onnx":
            from sparsec.frontend.onnx import import_onnx  # imports onnx: only what reads or writes ONNX pays for it

            module = import_onnx(path, ctx)
        case ".spx":
            module = read_spx(path, ctx, verify=verify)
        case ".mlir":
            if not path.is_file():
                raise SparsecError(f"'{path}': no such file")
            module = read_mlir(path, ctx)
        case other:
            raise SparsecError(
                f"'{path}': unknown model kind '{other}' (supported: {', '.join(INPUT_KINDS)})"
            )
    model = Model(module, ctx, engine or ("jit" if path.suffix == ".spx" else "reference"), threads)
    model.source_model = path.resolve() if path.suffix == ".onnx" else source_of(path) if path.suffix == ".spx" else None
    return model
