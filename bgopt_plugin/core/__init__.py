"""The core: bgopt's pipeline and its stages, numpy in and numpy out.

Every host (the ``bgopt`` command line, the astropy functions, the Siril script) imports
from here only, and only the names in ``__all__``. The stages are modules of their own:

========================  ==========================================================
``parameters``            the one parameter table and the frozen :class:`Config`
``prepare``               validate, stretch (``stretch``), downscale and mask (``sampling``)
``protect``               find objects before the fit
``initial``               the robust numpy solve the descent starts from
``spline``                polyharmonic spline, solves, robust initial fit (numpy)
``optimize``              gradient-descent fit (the only TensorFlow module)
``model``                 the fitted model and the result
``correct``               remove the model at full resolution
``robust``                robust statistics shared by the stages
``pipeline``              :func:`fit_background`, all of the above in order
========================  ==========================================================
"""

from __future__ import annotations

from .correct import correct, correction_factor, sky_level
from .model import BackgroundModel, BackgroundResult, evaluation_step
from .optimize import load_optimizer, load_optimizer_during
from .parameters import (
    PARAMETERS,
    Config,
    Parameter,
    ParameterError,
    ProgressEvent,
    document_options,
    parameter,
)
from .pipeline import fit_background
from .prepare import Prepared, prepare
from .protect import Protection, find_objects
from .robust import robust_sigma
from .sampling import missing_pixels
from .stretch import mtf

__all__ = [
    "Config", "Parameter", "PARAMETERS", "ParameterError", "ProgressEvent", "parameter",
    "fit_background", "prepare", "Prepared", "find_objects", "Protection",
    "load_optimizer", "load_optimizer_during",
    "BackgroundModel", "BackgroundResult", "evaluation_step",
    "correct", "correction_factor", "sky_level", "missing_pixels",
    "robust_sigma", "mtf", "document_options",
]
