"""The first stage: validate the input, stretch, downscale and mask (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .parameters import Config
from .sampling import auto_factor, downscale, threshold_mask
from .stretch import Stretch

__all__ = ["prepare", "Prepared", "as_channels_last", "unmask", "working_factor"]


def as_channels_last(image: Any) -> tuple[np.ndarray, bool]:
    arr = np.asarray(image)
    if arr.dtype.kind not in "fiub" or arr.dtype.kind == "b":
        raise ValueError(f"image must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr, squeeze = arr[..., None], True
    elif arr.ndim == 3 and arr.shape[-1] in (1, 3):
        squeeze = False
    else:
        raise ValueError(
            f"image must be (H, W) or (H, W, C) with C in (1, 3), got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError("image is empty")
    return arr, squeeze


def unmask(image: Any, mask: Any) -> tuple[Any, Any]:
    """Fold numpy masked arrays into plain data and weights (masked, True = bad -> 0)."""
    if np.ma.isMaskedArray(mask):
        mask = np.ma.filled(mask.astype(np.float32), 0.0)
    if not np.ma.isMaskedArray(image):
        return image, mask
    keep = (~np.ma.getmaskarray(image)).astype(np.float32)
    image = np.ma.getdata(image)
    if mask is None:
        return image, keep
    weights = np.asarray(mask, dtype=np.float32)
    if weights.ndim == 2 and keep.ndim == 3:
        weights = weights[..., None]
    elif keep.ndim == 2 and weights.ndim == 3:
        keep = keep[..., None]
    try:
        return image, weights * keep
    except ValueError as exc:
        raise ValueError(f"mask shape {np.shape(mask)} does not match image shape {np.shape(image)}") from exc


def _as_weights(mask: Any, shape: tuple[int, int, int]) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask, dtype=np.float32)
    if m.ndim == 2:
        m = m[..., None]
    if m.shape[:2] != shape[:2] or m.shape[2] not in (1, shape[2]):
        raise ValueError(f"mask shape {np.shape(mask)} does not match image shape {shape[:2]}"
                         + ("" if shape[2] == 1 else f" (x{shape[2]} channels)"))
    m = np.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(np.broadcast_to(m, shape), 0.0, 1.0)


def working_factor(shape: tuple[int, ...], config: Config) -> int:
    """The downscaling factor ``prepare`` uses for a frame of ``shape`` (H, W, ...)."""
    if config.downscaling_factor == "auto":
        return auto_factor(shape[:2])
    return config.downscaling_factor


@dataclass
class Prepared:
    """The working image and what it was made from (see :func:`prepare`).

    The derived arrays (``valid``, ``linear``, ``query``) are made at their first use and
    shared by the stages after it; the fields are not changed after :func:`prepare`.

    Attributes
    ----------
    data : ndarray (H, W, C) float32
        The input (the caller's array when it is float32 already).
    stretch : Stretch
        The per-channel stretch fitted to it.
    factor : int
        The downscaling factor.
    working : ndarray (h, w, C)
        Stretched, downscaled image; NaN where no data.
    weights : ndarray (h, w, C)
        Loss weights in [0, 1] (thresholds and the user's mask).
    usable : ndarray (h, w) bool
        Pixels with a non-zero weight in some channel.
    """

    data: np.ndarray
    stretch: Stretch
    factor: int
    working: np.ndarray
    weights: np.ndarray
    usable: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the full-resolution image."""
        return self.data.shape[:2]

    @property
    def extent(self) -> tuple[float, float]:
        """Height and width of the image in normalised units (the long side is 1)."""
        h, w = self.shape
        return h / max(h, w), w / max(h, w)

    @cached_property
    def valid(self) -> np.ndarray:
        """(h, w) bool: working pixels with data in every channel."""
        return _shared(np.isfinite(self.working).all(axis=-1))

    @cached_property
    def linear(self) -> np.ndarray:
        """The working image in normalised linear units (NaN where no data)."""
        return _shared(self.stretch.unstretch(self.working))

    @cached_property
    def query(self) -> np.ndarray:
        """(h * w, 2) normalised (y, x) coordinates of the working pixels, row-major."""
        hw, ww = self.working.shape[:2]
        unit = self.factor / float(max(self.shape))
        iy, ix = np.mgrid[0:hw, 0:ww]
        return _shared(np.stack([(iy + 0.5) * unit, (ix + 0.5) * unit], axis=-1).reshape(-1, 2))


def _shared(a: np.ndarray) -> np.ndarray:
    """``a`` made read-only: one array serves every stage, none may change it."""
    a.setflags(write=False)
    return a


def prepare(image: Any, mask: Any = None, config: Config | None = None) -> Prepared:
    """Validate, stretch, downscale and mask: everything before the fit.

    Used by :func:`fit_background` and by previews (no TensorFlow involved).

    Parameters
    ----------
    image : array_like, (H, W) or (H, W, C)
    mask : array_like, optional
        Weights in [0, 1] (1 = use).
    config : Config, optional

    Returns
    -------
    Prepared

    Raises
    ------
    ValueError
        See :func:`fit_background`.
    """
    config = config or Config()
    arr, _ = as_channels_last(image)
    h, w, n_chan = arr.shape
    user_weights = _as_weights(mask, arr.shape)
    # Read-only from here on: the caller's float32 array is used without a copy.
    data = arr if arr.dtype == np.float32 else arr.astype(np.float32)
    if user_weights is not None and not (user_weights > 0).any():
        raise ValueError("the mask excludes every pixel")
    factor = working_factor(arr.shape, config)
    if factor > min(h, w):
        raise ValueError(f"image ({h}x{w}) is smaller than the downscaling factor {factor}")
    if config.downscaling_func == "median":
        # Stretch the small working image instead of the full frame. The stretch is
        # monotonic, so this equals the median of the stretched block exactly when the
        # block holds an odd number of valid pixels. For an even number (the default
        # factors are often even) the median averages the two middle values and the two
        # differ, far below the working image's noise (measured on real and synthetic
        # frames: benchmarks/README.md).
        # The stretch's minimum and maximum come from the downscale's strips (a pass of
        # their own over the frame cost more).
        value_range = np.empty((2, n_chan))
        small = downscale(data, factor, "median", value_range=value_range)
        stretch = Stretch.fit(data, config.delinearization_quantile, value_range)
        working = stretch.forward(small)
    else:
        stretch = Stretch.fit(data, config.delinearization_quantile)
        working = downscale(data, factor, "mean", transform=stretch.forward)
    weights = threshold_mask(working, config.threshold_min, config.threshold_max)
    if user_weights is not None:
        weights *= downscale(user_weights, factor, "mean", missing_as_nan=False)
    weights[~np.isfinite(working)] = 0.0
    usable = weights.max(axis=-1) > 0
    n_usable = int(usable.sum())
    if n_usable == 0:
        raise ValueError("every working pixel is masked (check the mask and the thresholds)")
    if n_usable < config.n_control_points:
        raise ValueError(f"only {n_usable} valid working pixels for {config.n_control_points} "
                         "control points: lower the downscaling factor or the number of points")
    return Prepared(data, stretch, factor, working, weights, usable)

