"""The last stage: remove a full-resolution model from the data (numpy only)."""

from __future__ import annotations

import numpy as np

from .parameters import Config

__all__ = ["correct", "correction_factor", "sky_level", "per_channel", "require_positive"]

_DIVIDE_NEEDS_POSITIVE = ("correction='divide' needs a positive background model; "
                          "use correction='subtract' for data with a pedestal at or below 0")


def correct(data: np.ndarray, background: np.ndarray, config: Config,
            level: np.ndarray | None = None, missing: np.ndarray | None = None,
            out: np.ndarray | None = None) -> np.ndarray:
    """Remove a linear background from channels-last data (see ``Config.correction``).

    Zero, NaN and Inf pixels of ``data`` (missing data) are returned unchanged.

    Parameters
    ----------
    data, background : ndarray (..., C)
        ``background`` must be finite (and positive for ``divide``), as a fitted model is.
    config : Config
        ``correction`` and ``pedestal`` are used.
    level : ndarray (C,), optional
        The model median used by ``pedestal="median"`` (computed from ``background``
        when not given; pass ``BackgroundResult.sky_level`` to repeat a correction, or
        when correcting an image in chunks).
    missing : ndarray of bool, optional
        Pixels to return unchanged (default: zero, NaN and Inf pixels of ``data``).
    out : ndarray of float32, optional
        Where to write the result; ``data`` itself (a float32 array) corrects in place.

    Returns
    -------
    ndarray, float32

    Examples
    --------
    >>> import numpy as np
    >>> from bgopt_plugin.core import Config
    >>> data = np.array([[0.5], [0.0], [np.nan]], np.float32)
    >>> correct(data, np.full((3, 1), 0.2, np.float32), Config(), level=np.float32([0.1]))[:, 0]
    array([0.4, 0. , nan], dtype=float32)
    """
    data = np.asarray(data, dtype=np.float32)
    level = sky_level(background) if level is None else level
    if out is None:
        out = np.empty(np.broadcast_shapes(data.shape, background.shape), dtype=np.float32)
    # What must come back unchanged, taken before ``out`` (possibly ``data``) is written.
    # NaN and Inf pass through a finite model unchanged, so without an explicit
    # ``missing`` only zeros are restored.
    if missing is not None:
        keep = np.broadcast_to(missing, out.shape)
        kept = np.broadcast_to(data, out.shape)[keep]
    elif ((config.correction == "subtract" or config.pedestal not in ("median", "none"))
          and not data.min() > 0):   # a minimum > 0 rules zeros out at a third of the cost
        keep, kept = data == 0, np.float32(0)
    else:
        keep = None
    if config.correction == "divide":
        require_positive(background)
        np.divide(data, background, out=out, dtype=np.float32)
        if config.pedestal == "median":
            per_channel(np.multiply, out, level)
    else:
        np.subtract(data, background, out=out, dtype=np.float32)
        if config.pedestal == "median":
            per_channel(np.add, out, level)
    if config.pedestal not in ("median", "none"):
        out += np.float32(config.pedestal)
    if keep is not None and np.ndim(kept) == 0:
        np.copyto(out, kept, where=keep)
    elif keep is not None:
        out[keep] = kept
    return out


def require_positive(background: np.ndarray) -> None:
    """Raise ValueError unless every value of ``background`` is positive, as a
    ``divide`` correction needs."""
    if not (background > 0).all():
        raise ValueError(_DIVIDE_NEEDS_POSITIVE)


def per_channel(ufunc, out: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``ufunc(out, values, out=out)`` with one value per channel (the last axis).

    numpy broadcasts a (C,) operand with an inner loop of C elements, ten times slower
    than a loop over a whole row; a row of the values repeated across the width is used
    instead when ``out`` is C-contiguous.
    """
    values = np.asarray(values, dtype=out.dtype)
    if out.ndim >= 3 and out.flags.c_contiguous and values.shape == out.shape[-1:]:
        rows = out.reshape(-1, out.shape[-2] * out.shape[-1])
        ufunc(rows, np.tile(values, out.shape[-2]), out=rows)
    else:
        ufunc(out, values, out=out)
    return out


def sky_level(background: np.ndarray) -> np.ndarray:
    """Per-channel median of a (..., C) model."""
    return np.median(background.reshape(-1, background.shape[-1]), axis=0).astype(np.float32)


def correction_factor(background: np.ndarray, config: Config,
                      level: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel multiplier of a ``divide`` correction (``median(model) / model``)."""
    require_positive(background)
    if config.pedestal == "median":
        numerator = sky_level(background) if level is None else level
    else:
        numerator = np.float32(1.0)
    return (numerator / background).astype(np.float32)
