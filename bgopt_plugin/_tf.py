"""Lazy, quiet TensorFlow import (only spline and optimize use it)."""

from __future__ import annotations

import os
from types import ModuleType

_tf: ModuleType | None = None


def tf() -> ModuleType:
    """Import TensorFlow once, with its start-up logging silenced."""
    global _tf
    if _tf is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        import logging

        import tensorflow

        tensorflow.get_logger().setLevel(logging.ERROR)
        try:  # absl is TensorFlow's logger; keep warnings about retracing out of user logs
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
        except ImportError:  # pragma: no cover - absl ships with TensorFlow
            pass
        _tf = tensorflow
    return _tf


def device_name() -> str:
    """``"GPU"`` when TensorFlow sees one (it is then used automatically), else ``"CPU"``."""
    return "GPU" if tf().config.list_physical_devices("GPU") else "CPU"
