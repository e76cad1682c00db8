"""Write-then-rename, for one file or a set: outputs are complete or absent.

Temporary files sit beside their target as ``.<name>.<pid>.<random>.part``; the pid lets
a later run remove the leftovers of a process that was killed (SIGKILL cannot be
caught), without touching those of a run still in progress.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .image import ImageIOError

__all__ = ["OutputSet", "atomic_output", "write_file", "check_regular_file", "check_output_dir",
           "remove_stale_parts", "os_reason", "disk_full", "MAX_TARGET_NAME"]

_PART = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.part$")
#: The longest target name whose temporary still fits the 255 bytes most file systems
#: allow: the temporary adds ".", ".<pid>." (at most 10 digits), mkstemp's 8 characters
#: and ".part".
MAX_TARGET_NAME = 255 - len(".") - len(".4294967295.") - 8 - len(".part")


def os_reason(exc: OSError) -> str:
    """A short reason for an OS error ("no space left on device", "permission denied"...)."""
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def check_regular_file(path: str | Path) -> Path:
    """Return ``path`` if it is a regular file (after resolving links), else ImageIOError.

    Looked at before opening, so a FIFO or a device named like an image cannot hang a run.

    Examples
    --------
    >>> check_regular_file("/dev/null")
    Traceback (most recent call last):
    ...
    bgopt_plugin.io.image.ImageIOError: /dev/null: not a regular file
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        problem = "broken link" if path.is_symlink() else "file not found"
        raise ImageIOError(path, problem) from exc
    except PermissionError as exc:
        raise ImageIOError(path, "permission denied") from exc
    except OSError as exc:
        raise ImageIOError(path, os_reason(exc)) from exc
    if stat.S_ISDIR(mode):
        raise ImageIOError(path, "is a directory")
    if not stat.S_ISREG(mode):
        raise ImageIOError(path, "not a regular file")
    return path


def check_output_dir(directory: str | Path, create: bool = True) -> Path:
    """Make sure ``directory`` exists (created if asked) and accepts new files.

    Raises
    ------
    ImageIOError
        Not a directory, cannot be created, or not writable (with the OS reason).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ImageIOError(directory, "not a directory")
    if not directory.exists():
        if not create:
            raise ImageIOError(directory, "output directory does not exist")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ImageIOError(directory, f"cannot create the output directory ({os_reason(exc)})") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".bgopt-write-test.", dir=directory)
    except OSError as exc:
        raise ImageIOError(directory, f"output directory is not writable ({os_reason(exc)})") from exc
    os.close(fd)
    os.unlink(probe)
    return directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def remove_stale_parts(directory: str | Path, owns=lambda name: True) -> list[Path]:
    """Remove temporaries of dead processes in ``directory`` whose target ``owns`` claims.

    Returns the removed paths.
    """
    removed = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _PART.match(entry.name)
        if not m or not owns(m.group("name")) or _alive(int(m.group("pid"))):
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed


class OutputSet:
    """Temporary files for a set of outputs, renamed onto their targets together.

    Use as a context manager: :meth:`reserve` a temporary path per target and write to
    it; :meth:`commit` renames them all. Leaving the block without a commit (an error,
    KeyboardInterrupt, a signal turned into an exception) removes every temporary.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with OutputSet() as out:
    ...     _ = out.reserve(d / "a.txt").write_text("A")
    ...     _ = out.reserve(d / "b.txt").write_text("B")
    ...     _ = out.commit()
    >>> sorted(p.name for p in d.iterdir())
    ['a.txt', 'b.txt']
    """

    def __init__(self, overwrite: bool = False):
        self.overwrite = overwrite
        self._pending: list[tuple[Path, Path]] = []
        self._flushed: set[Path] = set()

    def reserve(self, target: str | Path) -> Path:
        """A new temporary file beside ``target`` (same permissions as a plain open)."""
        target = Path(target)
        if target.exists() and not self.overwrite:
            raise ImageIOError(target, "output exists (use --overwrite to replace it)")
        directory = target.parent if str(target.parent) else Path(".")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".part",
                                       dir=directory)
        except FileNotFoundError as exc:
            raise ImageIOError(directory, "output directory does not exist") from exc
        except OSError as exc:
            raise ImageIOError(directory, f"output directory is not writable ({os_reason(exc)})") from exc
        os.close(fd)
        tmp_path = Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        self._pending.append((tmp_path, target))
        return tmp_path

    def flush(self, tmp: Path) -> None:
        """Flush a finished temporary to the disk now rather than at :meth:`commit`.

        A writer thread that calls this right after its write overlaps the flush with
        the other outputs' writes (thread-safe: each thread flushes its own file).
        """
        target = next(t for p, t in self._pending if p == tmp)
        _fsync(tmp, target)
        self._flushed.add(tmp)

    def commit(self) -> list[Path]:
        """Rename every temporary onto its target; returns the targets.

        Durable, as git and SQLite do it: each temporary is flushed to the disk before
        the renames, and each folder once after them, so a power cut leaves the old file
        or the new one, never an empty one. If a rename fails, the targets already
        renamed in this set are removed again, so the set stays all or nothing (a
        replaced older output is not restored).
        """
        for _, target in self._pending:
            if target.exists() and not self.overwrite:
                raise ImageIOError(target, "output exists (use --overwrite to replace it)")
        for tmp, target in self._pending:
            if tmp not in self._flushed:
                _fsync(tmp, target)
        renamed: list[Path] = []
        try:
            for tmp, target in self._pending:
                try:
                    os.replace(tmp, target)
                except OSError as exc:
                    raise ImageIOError(target, f"cannot write ({os_reason(exc)})") from exc
                renamed.append(target)
        except BaseException:
            for target in renamed:
                with contextlib.suppress(OSError):
                    target.unlink()
            raise
        for folder in dict.fromkeys(target.parent for target in renamed):
            _fsync_folder(folder)
        self._pending, self._flushed = [], set()
        return renamed

    def discard(self) -> None:
        """Remove every temporary that is left."""
        for tmp, _ in self._pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._pending, self._flushed = [], set()

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def _fsync(path: Path, target: Path) -> None:
    """Flush a written temporary to the disk (ImageIOError naming ``target`` on failure)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ImageIOError(target, f"cannot write ({os_reason(exc)})") from exc


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (the renames); where a file system cannot, nothing more
    can be done, so that is not an error."""
    with contextlib.suppress(OSError):
        fd = os.open(folder if str(folder) else ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Raises
    ------
    ImageIOError
        If ``path`` exists and ``overwrite`` is false, or the directory is not writable.
    """
    with OutputSet(overwrite) as out:
        tmp = out.reserve(path)
        yield tmp
        out.commit()


def write_file(path: str | Path, write: Callable[[Path], None], overwrite: bool = False,
               into: str | Path | None = None) -> None:
    """Run ``write(tmp)`` on ``into`` (a temporary the caller renames) or on an atomic
    temporary of ``path``; an OSError becomes an ImageIOError naming ``path``."""
    def guarded(tmp: Path) -> None:
        try:
            write(tmp)
        except OSError as exc:
            reason = "no space left on device" if disk_full(exc) else os_reason(exc)
            raise ImageIOError(path, f"cannot write ({reason})") from exc

    if into is not None:
        guarded(Path(into))
    else:
        with atomic_output(path, overwrite) as tmp:
            guarded(tmp)


def disk_full(exc: BaseException) -> bool:
    """Whether an exception from a writer means the device is full."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    return "requested and" in text and "written" in text  # astropy's short-write message
