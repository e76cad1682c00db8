"""Robust statistics shared by the pipeline stages (astropy.stats underneath)."""

from __future__ import annotations

import numpy as np
from astropy.stats import mad_std

__all__ = ["robust_sigma", "pixel_noise"]


def robust_sigma(values: np.ndarray) -> float:
    """Standard deviation from the median absolute deviation, ignoring NaN and Inf.

    Returns 0.0 when no finite value is left.

    Examples
    --------
    >>> import numpy as np
    >>> round(robust_sigma(np.random.default_rng(0).normal(size=100_000)), 2)
    1.0
    """
    values = np.asarray(values)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0
    return float(mad_std(values))


def pixel_noise(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-channel noise of single pixels from differences of valid neighbours.

    Differences of horizontal and vertical neighbours cancel smooth signal (gradients,
    nebulae), so this follows the noise, not the objects.

    Parameters
    ----------
    image : ndarray (h, w, C)
    valid : ndarray (h, w) bool
        Pixels that hold data.

    Returns
    -------
    ndarray (C,)
        Noise sigma per channel (a tiny positive floor where it cannot be measured).

    Examples
    --------
    >>> import numpy as np
    >>> img = np.random.default_rng(1).normal(0, 0.5, (200, 200, 1)) + np.linspace(0, 9, 200)
    >>> round(float(pixel_noise(img, np.ones((200, 200), bool))[0]), 1)
    0.5
    """
    out = np.empty(image.shape[-1])
    both_x = valid[:, 1:] & valid[:, :-1]
    both_y = valid[1:] & valid[:-1]
    for c in range(image.shape[-1]):
        x = image[..., c]
        d = np.concatenate([np.diff(x, axis=1)[both_x], np.diff(x, axis=0)[both_y]])
        out[c] = robust_sigma(d) / np.sqrt(2)
    scale = float(np.nanmax(np.abs(image))) if np.isfinite(image).any() else 1.0
    return np.maximum(out, 1e-9 * max(scale, 1e-30))
