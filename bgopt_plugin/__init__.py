"""bgopt: astrophotography background extraction by spline gradient-descent optimisation.

Import as ``import bgopt_plugin as bgopt``. The layout is one core, IO adapters and
three hosts:

- :mod:`bgopt_plugin.core`: the pipeline (:func:`fit_background`), numpy in and out;
- :mod:`bgopt_plugin.io`: FITS and XISF files to one ``Image`` type, atomic writes,
  header provenance;
- hosts: :mod:`bgopt_plugin.cli` (the ``bgopt`` command), :mod:`bgopt_plugin.astropy_api`
  (``subtract``, ``model``, ``fit`` on CCDData) and ``siril_script/BGOptimizer.py``.
"""

from ._version import __version__
from .core import (
    PARAMETERS,
    BackgroundModel,
    BackgroundResult,
    Config,
    ParameterError,
    ProgressEvent,
    fit_background,
)

__all__ = [
    "__version__",
    "Config",
    "PARAMETERS",
    "ParameterError",
    "ProgressEvent",
    "BackgroundModel",
    "BackgroundResult",
    "fit_background",
    "subtract",
    "model",
    "fit",
    "CCDFit",
]

_ASTROPY_API = ("subtract", "model", "fit", "CCDFit")


def __getattr__(name: str):
    # The astropy host is imported on first use so that the core stays light.
    if name in _ASTROPY_API:
        from . import astropy_api

        return getattr(astropy_api, name)
    raise AttributeError(f"module 'bgopt_plugin' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API, the lazily loaded astropy functions included (tab completion)."""
    return sorted({*__all__, "core", "io"})
