"""Safe file output: outputs appear whole or not at all, inputs are never touched."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from sparsec.errors import SparsecError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str | Path, target: Path) -> None:
    """Give the temporary file ordinary permissions and move it into place."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, target)


def check_output_path(output: str | os.PathLike[str], *inputs: str | os.PathLike[str]) -> Path:
    """Refuse an output in a missing directory or one that would overwrite an input."""
    path = Path(output)
    if not path.parent.resolve().is_dir():
        raise SparsecError(f"output '{path}': directory '{path.parent}' does not exist")
    for source in inputs:
        if Path(source).exists() and path.exists() and path.resolve().samefile(source):
            raise SparsecError(f"output '{path}' is the input file; choose another -o path")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO]:
    """Write to a temporary file beside `path`, then rename it over `path`.

    If the body raises, the temporary file is removed and `path` is left as it was.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode) as stream:
            yield stream
        _publish(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside `path` for a library that writes files itself."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _publish(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
