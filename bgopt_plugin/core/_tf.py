"""Lazy, quiet TensorFlow import (only the optimizer uses it), with a persistent XLA cache.

Compiling the training loop takes 1.5-3 s on a laptop CPU, once per frame size and
process. TensorFlow 2.21 can keep compiled programs on disk
(``--tf_xla_persistent_cache_directory``): the next process with a frame of that size
loads the program instead (measured: cold fit 3.1 s, next process 1.7 s). bgopt turns the
cache on in ``$BGOPT_XLA_CACHE`` (default ``$XDG_CACHE_HOME/bgopt/xla``, about 0.5 MB per
frame size; set it empty to turn it off), only for the TensorFlow versions it was checked
on: an unknown flag in ``TF_XLA_FLAGS`` aborts TensorFlow. The :data:`CACHE_KEEP` most
recently used programs are kept.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

_tf: ModuleType | None = None


def loaded() -> bool:
    """Whether TensorFlow has been imported (by :func:`tf`)."""
    return _tf is not None


def tf() -> ModuleType:
    """Import TensorFlow once, with its start-up logging silenced."""
    global _tf
    if _tf is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        _enable_compile_cache()
        import logging

        # C++ start-up lines (CUDA probing...) ignore the env vars.
        with _stderr_silenced(), _keras_left_out(), _unused_api_deferred():
            import tensorflow

        # One thread: the fit is small (~6 000 pixels x 32 centres), so a second thread
        # gains ~10 % (1.5 vs 1.6 ms/epoch on 2 cores) but changes how sums are split, and
        # with it the last bits of the result. With one thread a seed gives the same model
        # on any machine, and a batch's workers (-j) each get a core of their own.
        tensorflow.config.threading.set_intra_op_parallelism_threads(1)
        tensorflow.config.threading.set_inter_op_parallelism_threads(1)
        tensorflow.get_logger().setLevel(logging.ERROR)
        try:  # absl is TensorFlow's logger; keep warnings about retracing out of user logs
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
        except ImportError:  # pragma: no cover - absl ships with TensorFlow
            pass
        _tf = tensorflow
    return _tf


#: The flag was checked on these TensorFlow versions and later.
_CACHE_FLAG = "--tf_xla_persistent_cache_directory"
_CACHE_SINCE = (2, 21)


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
    if folder is None or _CACHE_FLAG in flags or _tf_version() < _CACHE_SINCE:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:      # a read-only home: compile every time, as without the cache
        return
    if os.access(folder, os.W_OK):
        prune_cache(folder)
        os.environ["TF_XLA_FLAGS"] = f"{flags} {_CACHE_FLAG}={folder}".strip()


#: Compiled programs kept (~0.45 MB each, one per frame size and option set).
CACHE_KEEP = 64


def prune_cache(folder: Path, keep: int = CACHE_KEEP) -> int:
    """Delete all but the ``keep`` most recently used programs in ``folder``.

    Each new frame size adds a program, so without a bound the cache grows for ever
    (a test run alone leaves hundreds). Recency is the later of the access and
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


#: Packages TensorFlow imports with itself for its ``tf.keras`` aliases, which bgopt never uses.
_KERAS = ("keras", "tf_keras")


@contextlib.contextmanager
def _keras_left_out():
    """Keep Keras out of TensorFlow's import.

    TensorFlow loads Keras eagerly (to register its optimizers), inside a ``try`` that
    lets an ImportError pass. Keras is 0.7 s of the 2.9 s import on the benchmark machine
    (medians: 2.89 s with it, 2.20 s without), and it pulls in ``matplotlib.pyplot`` too.
    bgopt writes its own Adam (:class:`bgopt_plugin.core.optimize.Adam`), so the import is
    made to fail there; ``import keras`` and ``tf.keras`` work as usual afterwards. Nothing
    changes when Keras is already loaded.
    """
    held = [name for name in _KERAS if name not in sys.modules]
    for name in held:
        sys.modules[name] = None     # makes ``import keras`` fail
    try:
        yield
    finally:
        for name in held:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


#: Parts of TensorFlow's public API (under ``tensorflow._api.v2``) that the fit never
#: uses. TensorFlow's ``__init__`` runs every one of them, and they pull in most of its
#: Python code (``tf.compat`` alone 0.6 s, ``tf.nn`` with TensorFlow's legacy Keras
#: 0.4 s). ``tf.math``, ``tf.config``, ``tf.raw_ops`` (the fit's relu) and the rest of
#: ``tf.__internal__`` are used by the fit and stay, as do ``tf.distribute`` and
#: ``tf.lite``, which share their names with packages on disk (see below).
_UNUSED_API = (
    "audio", "autodiff", "autograph", "bitwise", "compat", "data", "debugging",
    "experimental", "feature_column", "graph_util", "image", "io", "linalg", "lookup",
    "mlir", "nest", "nn", "profiler", "quantization", "queue", "ragged",
    "random", "saved_model", "sets", "signal", "sparse", "strings", "summary",
    "sysconfig", "test", "tpu", "train", "types", "version", "xla",
    "__internal__.distribute", "__internal__.feature_column", "__internal__.graph_util",
    "__internal__.mixed_precision", "__internal__.monitoring", "__internal__.saved_model",
    "__internal__.test", "__internal__.tracking", "__internal__.train",
)
#: The TensorFlow versions whose import was checked with the deferral (its layout, and
#: that its own code reaches no deferred part while it imports). Any other version is
#: imported whole: a layout that changed could break the import, which costs more than
#: the ~0.6 s the deferral saves.
DEFERRAL_CHECKED = ((2, 21),)


def deferral_applies() -> bool:
    """Whether the installed TensorFlow is one the deferral was checked on."""
    return _tf_version()[:2] in DEFERRAL_CHECKED


def _deferred(spec: importlib.machinery.ModuleSpec) -> ModuleType:
    """A module for ``spec`` that runs at its first attribute lookup or ``dir()``.

    As with an import, another thread that looks into it while it runs waits for the
    end, and the thread running it sees it partly initialised (AttributeError).
    """
    module = importlib.util.module_from_spec(spec)
    lock = threading.RLock()
    running = threading.local()

    def run() -> None:
        with lock:
            if getattr(running, "now", False):
                raise AttributeError(f"partially initialized module {spec.name!r}")
            if vars(module).get("__getattr__") is not __getattr__:
                return                          # already run
            running.now = True
            try:
                spec.loader.exec_module(module)
            finally:
                running.now = False
                for name, hook in (("__getattr__", __getattr__), ("__dir__", __dir__)):
                    if vars(module).get(name) is hook:
                        delattr(module, name)

    def __getattr__(name: str):
        run()
        return getattr(module, name)

    def __dir__() -> list[str]:
        run()
        return dir(module)

    module.__getattr__, module.__dir__ = __getattr__, __dir__
    return module


@contextlib.contextmanager
def _unused_api_deferred():
    """Defer the parts of TensorFlow's API in :data:`_UNUSED_API` during its import.

    Each gets a module object that runs the first time anything looks into it, so
    ``tf.data.Dataset`` or ``import tensorflow.compat.v1`` work as usual afterwards, only
    later, and a fit runs none of them. On the benchmark machine, against bgopt's import
    with Keras alone left out, alternating runs: the import 2.39 -> 1.80 s (means of
    five), a single 24 MP file from the command line 5.06 -> 4.28 s (medians of six).
    Only for the TensorFlow versions the layout was checked on, and only when TensorFlow
    is not loaded yet.
    """
    found = importlib.util.find_spec("tensorflow") if "tensorflow" not in sys.modules else None
    if found is None or found.origin is None or not deferral_applies():
        yield
        return
    root = Path(found.origin).parent
    made = {}
    for name in _UNUSED_API:
        full = "tensorflow._api.v2." + name
        parent = root.joinpath("_api", "v2", *name.split(".")[:-1])
        if (root / name).is_dir():
            # A package on disk of the same name (``tensorflow/distribute/``,
            # ``tensorflow/lite/``): TensorFlow's own code reaches it through
            # ``tf.distribute...`` while it imports, so the API part must run then too.
            continue
        spec = importlib.machinery.PathFinder.find_spec(full, [str(parent)])
        if spec is not None and full not in sys.modules:
            made[full] = sys.modules[full] = _deferred(spec)
    try:
        yield
    except BaseException:
        for full, module in made.items():   # a failed import leaves nothing behind
            if sys.modules.get(full) is module:
                del sys.modules[full]
        raise
    for full, module in made.items():       # as an import would: an attribute of the parent
        parent_name, _, child = full.rpartition(".")
        parent = sys.modules.get(parent_name)
        if parent is not None and child not in vars(parent):
            setattr(parent, child, module)


@contextlib.contextmanager
def _stderr_silenced():
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


def device_name() -> str:
    """``"GPU"`` when TensorFlow sees one (it is then used automatically), else ``"CPU"``."""
    return "GPU" if tf().config.list_physical_devices("GPU") else "CPU"
