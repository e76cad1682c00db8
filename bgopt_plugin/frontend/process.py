"""Process-wide settings for the hosts that own their process: the ``bgopt`` command (and
its ``-j`` workers) and the Siril script.

The library never sets any of this: importing ``bgopt_plugin`` or calling its API leaves
the environment, TensorFlow's thread pools and loggers and the XLA flags as it found them.
A host calls :func:`own_process` once at its entry point, before TensorFlow is imported,
and imports TensorFlow with :func:`import_tensorflow_during`:

- a quiet TensorFlow: its C++ start-up lines (CUDA probing...) and Python warnings stay
  out of the user's console and Siril's log (``TF_CPP_MIN_LOG_LEVEL=3``; the file
  descriptor of standard error is silenced while it imports);
- oneDNN's custom operations off (``TF_ENABLE_ONEDNN_OPTS=0``), one intra-op and one
  inter-op TensorFlow thread and one BLAS thread for the numpy solves: the fit is small,
  a second thread gains ~10 % but changes how sums are split, and with one a seed gives
  the same model bit for bit on any machine and with any ``-j``, whose workers each get
  a core of their own (a library caller's results differ from these in the last bits
  only: benchmarks/README.md);
- TensorFlow's persistent XLA cache (``--tf_xla_persistent_cache_directory``, checked on
  TensorFlow 2.21 and later; an unknown flag aborts older ones): a new process loads the
  compiled training loop of a frame size it has seen instead of compiling it again, kept
  in ``$BGOPT_XLA_CACHE`` (default ``$XDG_CACHE_HOME/bgopt/xla``; empty turns it off),
  the :data:`CACHE_KEEP` most recently used programs. The figures are in
  benchmarks/README.md.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

__all__ = ["own_process", "import_tensorflow_during", "cache_directory", "prune_cache",
           "stderr_silenced", "CACHE_KEEP"]

#: The XLA flag of the persistent cache, and the first TensorFlow version it was checked on.
CACHE_FLAG = "--tf_xla_persistent_cache_directory"
CACHE_SINCE = (2, 21)
#: Compiled programs kept (~0.45 MB each, one per frame size and option set).
CACHE_KEEP = 64

T = TypeVar("T")


def own_process(xla_cache: bool = True) -> None:
    """Set what a host's process needs before TensorFlow is imported (see the module).

    Settings the user made (a ``TF_CPP_MIN_LOG_LEVEL`` of their own...) are kept.
    """
    from threadpoolctl import threadpool_limits

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    threadpool_limits(limits=1, user_api="blas")
    if xla_cache:
        _enable_compile_cache()


def import_tensorflow_during(task: Callable[[], T]) -> T:
    """Import TensorFlow, quietly, while ``task`` runs in a thread; return its result.

    The import is Python that holds the GIL; a task made of a few large calls that
    release it (reading a file, receiving Siril's pixels) runs meanwhile. File
    descriptor 2 is silenced during the import, so the task must not print to standard
    error. Then TensorFlow gets one intra-op and one inter-op thread and quiet loggers;
    where its runtime has already started (TensorFlow used before), its threads are
    left as they are. Where TensorFlow is imported already, ``task`` just runs.
    """
    from ..core import load_optimizer_during

    if "tensorflow" in sys.modules:    # imported before (an earlier file, the caller)
        result = task()
    else:
        with stderr_silenced():
            result = load_optimizer_during(task)
    _quiet_single_threaded()
    return result


def _quiet_single_threaded() -> None:
    import logging

    import tensorflow as tf

    with contextlib.suppress(RuntimeError):   # the runtime has started: keep its threads
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.get_logger().setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):    # absl is TensorFlow's logger (retracing notes)
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration (main thread use only)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr: nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def cache_directory() -> Path | None:
    """Where compiled XLA programs are kept, or None when the cache is off."""
    setting = os.environ.get("BGOPT_XLA_CACHE")
    if setting is not None:
        return Path(setting) if setting.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bgopt" / "xla"


def _tf_version() -> tuple[int, ...]:
    from importlib import metadata

    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            return tuple(int(p) for p in metadata.version(dist).split(".")[:2])
        except (metadata.PackageNotFoundError, ValueError):
            continue
    return (0,)


def _enable_compile_cache() -> None:
    flags = os.environ.get("TF_XLA_FLAGS", "")
    folder = cache_directory()
    if folder is None or CACHE_FLAG in flags or "tensorflow" in sys.modules or _tf_version() < CACHE_SINCE:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:      # a read-only home: compile every time, as without the cache
        return
    if os.access(folder, os.W_OK):
        prune_cache(folder)
        os.environ["TF_XLA_FLAGS"] = f"{flags} {CACHE_FLAG}={folder}".strip()


def prune_cache(folder: Path, keep: int = CACHE_KEEP) -> int:
    """Delete all but the ``keep`` most recently used programs in ``folder``.

    Each new frame size adds a program, so without a bound the cache grows for ever (a
    test run alone leaves hundreds). Recency is the later of the access and
    modification times. Returns the number of files removed; errors are ignored (the
    cache is an optimisation only).
    """
    try:
        entries = []
        for entry in os.scandir(folder):
            if entry.is_file() and entry.name.startswith("xla_compile_cache"):
                st = entry.stat()
                entries.append((max(st.st_atime, st.st_mtime), entry.path))
    except OSError:
        return 0
    entries.sort(reverse=True)
    removed = 0
    for _, path in entries[keep:]:
        with contextlib.suppress(OSError):
            os.remove(path)
            removed += 1
    return removed
