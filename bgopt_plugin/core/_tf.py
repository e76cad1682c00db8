"""Lazy, quiet TensorFlow import (only spline and optimize use it)."""

from __future__ import annotations

import contextlib
import os
import sys
from types import ModuleType

_tf: ModuleType | None = None


def tf() -> ModuleType:
    """Import TensorFlow once, with its start-up logging silenced."""
    global _tf
    if _tf is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        import logging

        with _stderr_silenced():  # C++ start-up lines (CUDA probing...) ignore the env vars
            import tensorflow

        tensorflow.get_logger().setLevel(logging.ERROR)
        try:  # absl is TensorFlow's logger; keep warnings about retracing out of user logs
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
        except ImportError:  # pragma: no cover - absl ships with TensorFlow
            pass
        _tf = tensorflow
    return _tf


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
