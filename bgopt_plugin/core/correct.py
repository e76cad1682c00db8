"""The last stage: remove a full-resolution model from the data (numpy only)."""

from __future__ import annotations

import numpy as np

from .parameters import Config, emit

__all__ = ["correct", "correct_image", "correction_factor", "sky_level", "per_channel",
           "require_positive", "CHUNK_BYTES"]

#: Rows are corrected in chunks of about this size, so that each chunk's passes (correct,
#: restore zeros, count) run in cache (benchmarks/README.md: 256 KB to 8 MB were slower).
CHUNK_BYTES = 2 << 20

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
    out : ndarray of float32 (float64 for float64 data), optional
        Where to write the result; ``data`` itself corrects in place.

    Returns
    -------
    ndarray
        float64 for float64 data (the model, float32, is exact enough for it), else
        float32.

    Examples
    --------
    >>> import numpy as np
    >>> from bgopt_plugin.core import Config
    >>> data = np.array([[0.5], [0.0], [np.nan]], np.float32)
    >>> correct(data, np.full((3, 1), 0.2, np.float32), Config(), level=np.float32([0.1]))[:, 0]
    array([0.4, 0. , nan], dtype=float32)
    """
    data = np.asarray(data)
    dtype = np.float64 if data.dtype == np.float64 else np.float32
    data = data.astype(dtype, copy=False)
    level = sky_level(background) if level is None else level
    if out is None:
        out = np.empty(np.broadcast_shapes(data.shape, background.shape), dtype=dtype)
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
        np.divide(data, background, out=out, dtype=out.dtype)
        if config.pedestal == "median":
            per_channel(np.multiply, out, level)
    else:
        np.subtract(data, background, out=out, dtype=out.dtype)
        if config.pedestal == "median":
            per_channel(np.add, out, level)
    if config.pedestal not in ("median", "none"):
        out += out.dtype.type(config.pedestal)
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


def correct_image(data: np.ndarray, background: np.ndarray, config: Config, maximum: np.ndarray,
                  out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The correction stage: remove the full-resolution model and count what leaves range.

    Parameters
    ----------
    data, background : ndarray (H, W, C) float32
        The input and its model.
    config : Config
        ``correction`` and ``pedestal`` are used; progress goes to ``config.progress``.
    maximum : ndarray (C,)
        The input's maximum per channel: corrected pixels above it are counted.
    out : ndarray (H, W, C) float32, optional
        Where to write the result (``data`` itself corrects in place).

    Returns
    -------
    corrected : ndarray (H, W, C) float32
    level : ndarray (C,) float32
        The model's sky level (see ``BackgroundResult.sky_level``).
    out_of_range : dict
        ``{"below": n, "above": n}``: valid corrected pixels below 0 or above ``maximum``
        (infinite inputs, which stay infinite, are not counted). Nothing is clipped.
    """
    h, w = background.shape[:2]
    # The sky level of the model; a regular subsample is exact enough for a smooth model.
    sub = max(1, max(h, w) // 512)
    level = sky_level(background[::sub, ::sub])
    corrected = np.empty_like(background) if out is None else out
    if config.correction == "divide":
        # Checked on the whole model first: a chunk failing half-way would leave an
        # image corrected in place half done.
        require_positive(background)
    top_row = np.tile(np.asarray(maximum, np.float32), w)   # one row of per-channel maxima
    top_min = np.float32(np.min(maximum))
    below = above = 0
    rows = max(1, CHUNK_BYTES // max(1, background[0].nbytes))
    n_chunks = -(-h // rows)
    emit(config, "correct", 0, n_chunks, message="correction")
    for k, start in enumerate(range(0, h, rows)):
        part = slice(start, start + rows)
        done = correct(data[part], background[part], config, level=level, out=corrected[part])
        low, high = _out_of_range(done, top_row, top_min)
        below, above = below + low, above + high
        if (k + 1) % 16 == 0 or k + 1 == n_chunks:
            emit(config, "correct", k + 1, n_chunks, message="correction")
    return corrected, level, {"below": below, "above": above}


def _out_of_range(done: np.ndarray, top_row: np.ndarray, top_min: np.float32) -> tuple[int, int]:
    """Pixels of a corrected chunk below 0 and above the per-channel maxima.

    Counted only where the chunk's minimum or maximum says there is something to count
    (two reductions instead of two comparisons and counts). A NaN minimum or maximum
    means counting; NaN compares False, and an infinite input stays infinite and is not
    a valid pixel.
    """
    flat = done.reshape(done.shape[0], -1)
    lowest, highest = done.min(), done.max()
    low = 0 if lowest >= 0 else int(np.count_nonzero(flat < 0))
    high = 0 if highest <= top_min else int(np.count_nonzero(flat > top_row))
    if low and not np.isfinite(lowest):
        low -= int(np.count_nonzero(np.isneginf(done)))
    if high:
        high -= int(np.count_nonzero(np.isposinf(done)))
    return low, high
