"""Write-then-rename, so an output is either complete or absent."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .image import ImageIOError

__all__ = ["atomic_output"]


@contextlib.contextmanager
def atomic_output(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Raises
    ------
    ImageIOError
        If ``path`` exists and ``overwrite`` is false, or the directory is not writable.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ImageIOError(path, "output exists (use --overwrite to replace it)")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ImageIOError(directory, "output directory does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
    except OSError as exc:
        raise ImageIOError(directory, f"output directory is not writable ({exc.strerror})") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the output the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        if path.exists() and not overwrite:
            raise ImageIOError(path, "output exists (use --overwrite to replace it)")
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
