"""bgopt: astrophotography background extraction by spline gradient-descent optimisation.

Import as ``import bgopt_plugin as bgopt``. The core is :func:`fit_background`;
``subtract``, ``model`` and ``fit`` are the astropy (CCDData) front end.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .config import Config, ProgressEvent
from .engine import BackgroundModel, BackgroundResult, fit_background

__all__ = [
    "__version__",
    "Config",
    "ProgressEvent",
    "BackgroundModel",
    "BackgroundResult",
    "fit_background",
    "subtract",
    "model",
    "fit",
]

_ASTROPY_API = ("subtract", "model", "fit", "CCDFit")


def __getattr__(name: str) -> Any:
    # The astropy front end is imported on first use so the core stays light.
    if name in _ASTROPY_API:
        from . import astropy_api

        return getattr(astropy_api, name)
    raise AttributeError(f"module 'bgopt_plugin' has no attribute {name!r}")
