"""The last stage: remove a full-resolution model from the data (numpy only)."""

from __future__ import annotations

import numpy as np

from .parameters import Config
from .sampling import missing_pixels

__all__ = ["correct", "correction_factor", "sky_level"]


def correct(data: np.ndarray, background: np.ndarray, config: Config,
            level: np.ndarray | None = None, missing: np.ndarray | None = None) -> np.ndarray:
    """Remove a linear background from channels-last data (see ``Config.correction``).

    Zero, NaN and Inf pixels of ``data`` (missing data) are returned unchanged.

    Parameters
    ----------
    data, background : ndarray (..., C)
    config : Config
        ``correction`` and ``pedestal`` are used.
    level : ndarray (C,), optional
        The model median used by ``pedestal="median"`` (computed from ``background``
        when not given; pass it when correcting an image in chunks).
    missing : ndarray of bool, optional
        Pixels to return unchanged (default: zero, NaN and Inf pixels of ``data``).

    Returns
    -------
    ndarray, float32
    """
    data = np.asarray(data, dtype=np.float32)
    level = sky_level(background) if level is None else level
    if config.correction == "divide":
        out = data * correction_factor(background, config, level)
    else:
        out = np.subtract(data, background, dtype=np.float32)
        if config.pedestal == "median":
            out += level
    if config.pedestal not in ("median", "none"):
        out += np.float32(config.pedestal)
    if missing is None:
        missing = missing_pixels(data)
    np.copyto(out, data, where=missing)
    return out


def sky_level(background: np.ndarray) -> np.ndarray:
    """Per-channel median of a (..., C) model."""
    return np.median(background.reshape(-1, background.shape[-1]), axis=0).astype(np.float32)


def correction_factor(background: np.ndarray, config: Config,
                      level: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel multiplier of a ``divide`` correction (``median(model) / model``)."""
    if not (background > 0).all():
        raise ValueError("correction='divide' needs a positive background model; "
                         "use correction='subtract' for data with a pedestal at or below 0")
    if config.pedestal == "median":
        numerator = sky_level(background) if level is None else level
    else:
        numerator = np.float32(1.0)
    return (numerator / background).astype(np.float32)
