"""TensorFlow, imported on first use: only the gradient-descent fit needs it.

A plain ``import tensorflow``: the library sets no environment variable, thread count or
logger level of its own (the hosts that own their process do, see
:mod:`bgopt_plugin.frontend.process`).
"""

from __future__ import annotations

from types import ModuleType

_tf: ModuleType | None = None


def loaded() -> bool:
    """Whether TensorFlow has been imported through :func:`tf`."""
    return _tf is not None


def tf() -> ModuleType:
    """TensorFlow, imported on the first call."""
    global _tf
    if _tf is None:
        import tensorflow

        _tf = tensorflow
    return _tf


def device_name() -> str:
    """``"GPU"`` when TensorFlow sees one (it is then used automatically), else ``"CPU"``."""
    return "GPU" if tf().config.list_physical_devices("GPU") else "CPU"
