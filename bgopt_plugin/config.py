"""The one definition of bgopt's parameters, their defaults and their validation.

Every front end (Python API, CLI, astropy API, Siril script) maps its options onto
:class:`Config`; no other module holds a default value for these parameters.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Union

__all__ = ["Config", "ProgressEvent", "PARAMETER_HELP", "ParameterError"]

DownscalingFactor = Union[int, Literal["auto"]]


@dataclass(frozen=True)
class ProgressEvent:
    """One progress update sent to ``Config.progress``.

    Attributes
    ----------
    stage : str
        ``"prepare"``, ``"fit"``, ``"protect"``, ``"evaluate"`` or ``"done"``.
    step : int
        Steps completed within the stage (epochs for ``"fit"``, chunks for ``"evaluate"``).
    total : int
        Total steps of the stage (an upper bound for ``"fit"``, which may stop early).
    loss : float or None
        Current loss during ``"fit"``.
    message : str
        Short description (``"refit 1"``, ``"refit 2"``... for the protection refits).
    """

    stage: str
    step: int = 0
    total: int = 0
    loss: float | None = None
    message: str = ""


#: One-line help for each parameter, shared by the CLI, the Siril script and docstrings.
PARAMETER_HELP: dict[str, str] = {
    "downscaling_factor": "block size for the working image, or 'auto' (long side near 96 px)",
    "downscaling_func": "block statistic used to downscale: 'median' or 'mean'",
    "delinearization_quantile": "quantile mapped to 1.0 by the delinearizing stretch",
    "n_control_points": "number of spline control points",
    "order": "spline order: 1=r, 2=thin plate, 3=r^3, 4=r^4 log r",
    "threshold_min": "working pixels below this (stretched) value are masked",
    "threshold_max": "working pixels above this (stretched) value are masked",
    "initializer": "initial control point layout: 'random' or 'grid'",
    "epochs": "maximum number of optimisation epochs",
    "alpha": "weight of the overshoot and negative-background penalties",
    "learning_rate": "Adam learning rate",
    "correction": "'subtract' the model (additive gradients) or 'divide' by it (vignetting)",
    "pedestal": "'median' keeps the sky level (adds back the model median), 'none' or a number",
    "protect": "automatic object protection: find nebulae and galaxies before fitting",
    "protect_sigma": "object protection threshold in robust sigmas",
    "protect_grow": "object protection mask dilation radius, in working pixels",
    "smoothing": "bending-energy weight of the initial spline fit (0 = none)",
    "regularization": "regularisation of the initial spline solve",
    "init_solve": "initial weights: 'interpolate' the control-point values or 'lstsq' fit all pixels",
    "seed": "random seed for reproducible results",
}


class ParameterError(ValueError):
    """An invalid parameter value; ``name`` is the Config field, ``problem`` the reason.

    ``str(error)`` is ``"<name> <problem>"``; front ends print the option as they spell
    it (``--pedestal: must be a finite number``).
    """

    def __init__(self, name: str, problem: str):
        self.name, self.problem = name, problem
        super().__init__(f"{name} {problem}")


def _check(cond: bool, name: str, problem: str) -> None:
    if not cond:
        raise ParameterError(name, problem)


def _finite(name: str, value: Any, low: float | None = None, high: float | None = None,
            low_open: bool = False) -> float:
    """``value`` as a finite float within the bounds, else ParameterError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(name, f"must be a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ParameterError(name, f"must be a finite number, got {value!r}")
    if low is not None and (x <= low if low_open else x < low):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        if high is not None:
            bound = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
        raise ParameterError(name, f"must be {bound}, got {value!r}")
    if high is not None and x > high:
        raise ParameterError(name, f"must be in {'(' if low_open else '['}{low:g}, {high:g}], got {value!r}")
    return x


@dataclass
class Config:
    """Parameters of a background fit, with validated defaults.

    Parameters
    ----------
    downscaling_factor : int or "auto"
        Block size used to build the working image. ``"auto"`` picks the factor
        that makes the long side of the working image close to 96 pixels.
    downscaling_func : {"median", "mean"}
        NaN-aware block statistic. The median rejects most stars.
    delinearization_quantile : float
        Quantile of the (pedestal-subtracted) data mapped to 1.0 before the midtones
        transfer function. Lower values stretch harder.
    n_control_points : int
        Number of spline control points (shared by all channels).
    order : {1, 2, 3, 4}
        Polyharmonic order: 1 = r, 2 = r^2 log r (thin plate), 3 = r^3, 4 = r^4 log r.
    threshold_min, threshold_max : float
        Working pixels outside ``[threshold_min, threshold_max]`` (in the stretched
        [0, 1] scale) are masked.
    initializer : {"grid", "random"}
        Initial layout of the control points: a near-square grid over the image
        (default; more accurate in the benchmarks) or uniform random points.
    epochs : int
        Maximum number of Adam epochs. Training stops early on a plateau.
    alpha : float
        Weight of the overshoot and negative-background penalties of the loss. The
        original bgoptimizer used 5 (a lower envelope of the data); with objects masked
        before the fit, 0.3 is more accurate on every synthetic scene but two
        (benchmarks/README.md).
    learning_rate : float
        Initial Adam learning rate; halved on plateaus.
    correction : {"subtract", "divide"}
        How the model is removed.
    pedestal : {"median", "none"} or float
        What is added back after the correction. ``"median"`` keeps the sky level:
        the per-channel median of the model is added back (subtract) or multiplied
        back (divide). ``"none"`` applies the bare correction. A number is added to
        every channel after a bare subtraction.
    protect : bool
        Automatic object protection: before the fit, stiff-to-flexible robust fits of
        the linear working image find extended excess (nebulae, galaxies, a Milky Way
        band) standing ``protect_sigma`` robust sigmas above the sky at several scales;
        it is masked, grown by ``protect_grow`` pixels, and left out of the fit.
    protect_sigma : float
        Significance of an object, in robust sigmas of the smoothed residual.
    protect_grow : int
        Dilation radius of the protection mask, in working pixels.
    smoothing : float
        Bending-energy weight of the robust initial fit: larger is stiffer; it decides
        how the model bridges masked objects.
    regularization : float
        Regularisation of the interpolation solve that gives the initial weights.
    init_solve : {"interpolate", "lstsq"}
        Initial spline weights: ``"interpolate"`` solves the regularised interpolation
        through the working-image values at the control points (masked points blended
        toward the masked median); ``"lstsq"`` fits all weighted working pixels by least
        squares with the control points fixed.
    seed : int or None
        Random seed; the same seed gives identical results.
    progress : callable or None
        Called with a :class:`ProgressEvent` for each stage and during the fit.

    Examples
    --------
    >>> from bgopt_plugin import Config
    >>> Config(n_control_points=16).order
    2
    >>> Config(order=7)
    Traceback (most recent call last):
    ...
    bgopt_plugin.config.ParameterError: order must be 1, 2, 3 or 4, got 7
    """

    downscaling_factor: DownscalingFactor = "auto"
    downscaling_func: str = "median"
    delinearization_quantile: float = 0.95
    n_control_points: int = 32
    order: int = 2
    threshold_min: float = 0.001
    threshold_max: float = 1.0
    initializer: str = "grid"
    epochs: int = 1000
    alpha: float = 0.3
    learning_rate: float = 0.001
    correction: str = "subtract"
    pedestal: str | float = "median"
    protect: bool = True
    protect_sigma: float = 5.0
    protect_grow: int = 2
    smoothing: float = 0.01
    regularization: float = 0.1
    init_solve: str = "lstsq"
    seed: int | None = None
    progress: Callable[[ProgressEvent], Any] | None = field(
        default=None, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ParameterError` naming the first invalid parameter."""
        dx = self.downscaling_factor
        _check(dx == "auto" if isinstance(dx, str) else _is_int(dx) and dx >= 1,
               "downscaling_factor", f"must be a positive integer or 'auto', got {dx!r}")
        _check(self.downscaling_func in ("median", "mean"), "downscaling_func",
               f"must be 'median' or 'mean', got {self.downscaling_func!r}")
        _finite("delinearization_quantile", self.delinearization_quantile, 0.5, 1.0)
        _check(_is_int(self.n_control_points) and self.n_control_points >= 3, "n_control_points",
               f"must be an integer >= 3, got {self.n_control_points!r}")
        _check(self.order in (1, 2, 3, 4) and not isinstance(self.order, bool), "order",
               f"must be 1, 2, 3 or 4, got {self.order!r}")
        tmin = _finite("threshold_min", self.threshold_min)
        tmax = _finite("threshold_max", self.threshold_max)
        _check(tmin < tmax, "threshold_min", f"must be below threshold_max ({tmax:g}), got {tmin:g}")
        _check(self.initializer in ("random", "grid"), "initializer",
               f"must be 'random' or 'grid', got {self.initializer!r}")
        _check(_is_int(self.epochs) and self.epochs >= 0, "epochs",
               f"must be an integer >= 0, got {self.epochs!r}")
        _finite("alpha", self.alpha, 0.0)
        _finite("learning_rate", self.learning_rate, 0.0, low_open=True)
        _check(self.correction in ("subtract", "divide"), "correction",
               f"must be 'subtract' or 'divide', got {self.correction!r}")
        if isinstance(self.pedestal, str):
            _check(self.pedestal in ("median", "none"), "pedestal",
                   f"must be 'median', 'none' or a number, got {self.pedestal!r}")
        else:
            _finite("pedestal", self.pedestal)
        _check(isinstance(self.protect, bool), "protect", f"must be True or False, got {self.protect!r}")
        _finite("protect_sigma", self.protect_sigma, 0.0, low_open=True)
        _check(_is_int(self.protect_grow) and self.protect_grow >= 0, "protect_grow",
               f"must be an integer >= 0, got {self.protect_grow!r}")
        _finite("smoothing", self.smoothing, 0.0)
        _finite("regularization", self.regularization, 0.0)
        _check(self.init_solve in ("interpolate", "lstsq"), "init_solve",
               f"must be 'interpolate' or 'lstsq', got {self.init_solve!r}")
        _check(self.seed is None or (_is_int(self.seed) and self.seed >= 0), "seed",
               f"must be a non-negative integer or None, got {self.seed!r}")
        _check(self.progress is None or callable(self.progress), "progress", "must be callable or None")

    @classmethod
    def from_options(cls, **options: Any) -> Config:
        """Build a config from keyword options, rejecting unknown names."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(unknown)}")
        return cls(**options)

    def replace(self, **changes: Any) -> Config:
        """Return a validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Parameters as a plain dict (without the progress callable)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "progress"}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The default value of every parameter (for front ends and help texts)."""
        return cls().to_dict()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
