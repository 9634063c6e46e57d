"""Errors a user can cause.

Every error that bad input can trigger is a `SparsecError`: the driver prints its
message on one line and exits with code 2, without a traceback. Anything else that
escapes is an internal fault (exit code 1).
"""


class SparsecError(Exception):
    """Base class of user-facing errors; the message is shown as is."""


class ModelImportError(SparsecError):
    """The input model cannot be imported (bad file, unsupported op, bad shapes)."""


class IRError(SparsecError):
    """A `.mlir` file cannot be read or a module does not verify."""


class PipelineError(SparsecError):
    """A pass pipeline cannot be parsed or one of its options is invalid."""


class PassFailure(SparsecError):
    """A pass refused the module it was given."""


class WeightStoreError(SparsecError):
    """A weight is missing, or its bytes do not match its declared type."""


class ExecutionError(SparsecError):
    """Inputs given to `run` do not fit the model."""
