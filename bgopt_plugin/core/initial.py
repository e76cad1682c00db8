"""The initial solve: the spline the gradient descent starts from (numpy only).

In: the working image, the protection and the config. Out: an :class:`InitialFit`, the
starting :class:`~bgopt_plugin.core.spline.SplineParams` in normalised linear units and,
under protected bright objects, the ceiling the model may not rise above (the sky is
never brighter than the image).

``init_solve="lstsq"`` (default) is a robust least-squares fit of every weighted
working pixel with the control points fixed on a grid (or at random) and a
bending-energy penalty (``smoothing``) that decides how the model bridges masked
objects; ``"interpolate"`` is the regularised interpolation through the working image
at the control points, as bgoptimizer did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .parameters import Config
from .prepare import Prepared
from .protect import Protection, smooth_valid
from .sampling import initial_points, initial_values
from .spline import SplineParams, robust_fit, solve

__all__ = ["InitialFit", "initial_solve", "CEILING_SCALE"]

#: Smoothing scale (working pixels) of the image that bounds the model under objects.
CEILING_SCALE = 1.0


@dataclass
class InitialFit:
    """Outcome of :func:`initial_solve`.

    Attributes
    ----------
    params : SplineParams
        The starting spline (normalised linear units).
    ceiling : (ndarray (Q, 2), ndarray (Q, C)) or None
        Coordinates of the protected bright working pixels and the linear values the
        model may not exceed there; None when nothing bright is protected.
    under : ndarray (h * w,) bool or None
        Which working pixels the ceiling's rows belong to (row-major).
    """

    params: SplineParams
    ceiling: tuple[np.ndarray, np.ndarray] | None = None
    under: np.ndarray | None = None


def ceiling(prep: Prepared, protection: Protection
            ) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray] | None:
    """Upper bounds for the model on protected bright pixels: the lightly smoothed image
    plus two noise sigmas of that smoothed image, and the pixels they belong to."""
    under = protection.bright & prep.valid
    if not under.any() or protection.noise is None:
        return None
    linear, valid = prep.linear, prep.valid
    bound = np.empty(linear.shape, dtype=np.float64)
    for c in range(linear.shape[-1]):
        bound[..., c] = (smooth_valid(linear[..., c], valid, CEILING_SCALE, truncate=4.0)
                         + 2.0 * protection.noise[c] / (2 * np.sqrt(np.pi) * CEILING_SCALE))
    where = under.reshape(-1)
    return (prep.query[where], bound.reshape(-1, linear.shape[-1])[where]), where


def initial_solve(prep: Prepared, protection: Protection, config: Config) -> InitialFit:
    """The starting spline for the gradient descent.

    Parameters
    ----------
    prep : Prepared
    protection : Protection
        Its weights are the fit's; its bright pixels get the ceiling.
    config : Config
        ``n_control_points``, ``initializer``, ``seed``, ``order``, ``init_solve``,
        ``smoothing``, ``regularization`` and ``protect`` are used.

    Returns
    -------
    InitialFit
    """
    n_chan = prep.working.shape[-1]
    rng = np.random.default_rng(config.seed)
    points = initial_points(config.n_control_points, prep.extent, config.initializer, rng)
    points = points.astype(np.float64)
    bounds = ceiling(prep, protection)
    cap, under = (None, None) if bounds is None else bounds
    if config.init_solve == "lstsq":
        wt = protection.weights.reshape(-1, n_chan)
        sel = wt.max(axis=1) > 0
        values = np.nan_to_num(prep.linear).reshape(-1, n_chan)
        params = robust_fit(points, prep.query[sel], values[sel], wt[sel], config.order,
                            smoothing=config.smoothing, two_sided=config.protect, ceiling=cap)
    else:
        hw, ww = prep.working.shape[:2]
        vals = initial_values(prep.working, protection.weights, points, float(max(hw, ww)))
        w_, v_ = solve(points, prep.stretch.unstretch(vals), config.order, config.regularization)
        params = SplineParams(points, w_, v_, config.order)
    return InitialFit(params, cap, under)
