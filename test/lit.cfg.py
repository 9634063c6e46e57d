"""lit configuration: sparsec's FileCheck tests (test/lit/**.mlir, **.test).

RUN lines may use:
  %models NAME OUT.onnx   build one of test/models.py's small ONNX models
  %expect-exit CODE CMD   run CMD and fail unless it exits with CODE
  %python                 the Python interpreter running lit
"""

import os
import sys

import lit.formats

config.name = "sparsec"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.excludes = ["Inputs", "Output", "unit", "__pycache__", "compare_engines.py"]

config.substitutions.append(("%models", f"{sys.executable} {os.path.join(os.path.dirname(__file__), 'models.py')}"))
config.substitutions.append(("%expect-exit", f"{sys.executable} {os.path.join(os.path.dirname(__file__), 'expect_exit.py')}"))
config.substitutions.append(("%python", sys.executable))

# Tests of the vector kernels check what sparsec generates for an AVX-512 host.
from sparsec.runtime.jit import Target  # noqa: E402

if Target.host().avx512:
    config.available_features.add("avx512")
if Target.host().vbmi2:
    config.available_features.add("avx512-vbmi2")

config.environment["PATH"] = os.environ.get("PATH", "")
for variable in ("HOME", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR"):
    if variable in os.environ:
        config.environment[variable] = os.environ[variable]
