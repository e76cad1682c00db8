"""Object protection: find nebulae, galaxies and bright regions before the spline is fitted.

Objects add to the sky in linear units, so detection works on the linear working image.
A stiff robust spline (few control points) cannot bend into an extended object; what it
leaves above the noise, at several smoothing scales, is a candidate. Strong candidates
(seeds) claim the connected region of weaker excess around them (hysteresis), the
region is grown, and the fit is repeated with more control points on what is left, the
flags being found afresh each time. Last, each large flagged region is put back and
the spline refitted with the final number of control points: a region that the smooth
sky model then follows almost entirely (a bright corner of light pollution) is sky.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .robust import pixel_noise, robust_sigma
from .sampling import grid_points
from .spline import robust_fit

__all__ = ["ObjectMask", "object_mask", "smooth_valid", "LEVELS", "SCALES"]

#: Grid cells along the long side of the detection fits, stiff to flexible.
LEVELS = (3, 4, 5)
#: Gaussian smoothing scales (working pixels) at which residual significance is tested.
SCALES = (1.0, 2.0, 4.0)
#: Deviation (in the residual's own spread) that lets a weaker pixel join a seed's region.
WEAK_SIGMA = 2.5
#: A seed must also stand out by this share of the sky model's peak-to-peak.
SEED_AMPLITUDE = 0.1
#: Fits per level (the flags are found afresh after each).
ROUNDS_PER_LEVEL = 2
#: A flagged region that the final sky model follows to this share of its excess is sky.
SKY_SHARE = 0.85
#: Only regions of at least this share of the working image are checked that way.
CHECK_MIN_AREA = 0.01
#: Bending-energy weight of the fits that check flagged regions.
CHECK_SMOOTHING = 1e-3


@dataclass(frozen=True)
class ObjectMask:
    """Outcome of :func:`object_mask`.

    Attributes
    ----------
    flags : ndarray (h, w) bool
        Working pixels that belong to objects.
    noise : ndarray (C,)
        Pixel noise of the linear working image per channel, as measured for detection.
    cleared : int
        Flagged regions returned to the sky by the final check.
    """

    flags: np.ndarray
    noise: np.ndarray
    cleared: int = 0


def smooth_valid(z: np.ndarray, valid: np.ndarray, scale: float, truncate: float = 3.0) -> np.ndarray:
    """Gaussian mean of ``z`` (h, w) over valid pixels only (normalised convolution).

    The kernel is cut at ``truncate`` sigmas; 0 where no valid pixel is within reach.
    """
    num = ndimage.gaussian_filter(np.where(valid, z, 0.0), scale, mode="nearest", truncate=truncate)
    den = ndimage.gaussian_filter(valid.astype(np.float64), scale, mode="nearest", truncate=truncate)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0)


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (yy**2 + xx**2) <= radius * radius


def _detect(z: np.ndarray, valid: np.ndarray, reference: np.ndarray, seed_sigma: float,
            min_amplitude: float, grow: int) -> np.ndarray:
    """Flags from a residual map ``z`` in noise units (h, w).

    At each scale, the smoothed residual is measured in units of its own robust spread
    over ``reference`` pixels (at least the noise). Seeds exceed ``seed_sigma`` there
    and ``min_amplitude`` noise units per pixel; their connected regions above
    :data:`WEAK_SIGMA` are flagged, then grown by ``grow`` pixels.
    """
    dev = np.full(z.shape, -np.inf)
    amplitude = np.full(z.shape, -np.inf)
    for s in SCALES:
        mean = smooth_valid(z, valid, s)
        t = mean * (2 * np.sqrt(np.pi) * s)  # unit variance for white noise
        ref = t[reference]
        centre = float(np.median(ref)) if ref.size else 0.0
        spread = max(robust_sigma(ref), 1.0)
        dev = np.maximum(dev, (t - centre) / spread)
        amplitude = np.maximum(amplitude, mean)
    seeds = (dev > seed_sigma) & (amplitude > min_amplitude) & valid
    if not seeds.any():
        return np.zeros_like(valid)
    labels, _ = ndimage.label((dev > WEAK_SIGMA) & valid)
    keep = np.unique(labels[seeds])
    flags = np.isin(labels, keep[keep > 0])
    if grow > 0:
        flags = ndimage.binary_dilation(flags, structure=_disk(grow))
    return flags & valid


def object_mask(linear: np.ndarray, valid: np.ndarray, weights: np.ndarray, query: np.ndarray,
                extent: tuple[float, float], *, n_final: int, seed_sigma: float = 5.0, grow: int = 2,
                order: int = 2) -> ObjectMask:
    """Flag the working pixels that belong to objects rather than to the sky.

    Parameters
    ----------
    linear : ndarray (h, w, C)
        The working image in linear units (any per-channel scale); NaN where no data.
    valid : ndarray (h, w) bool
        Pixels with data in every channel: detection looks at all of them, masked or not.
    weights : ndarray (h, w, C)
        Loss weights in [0, 1] (thresholds, user mask): only weighted pixels are fitted.
    query : ndarray (h * w, 2)
        Normalised coordinates of the working pixels, row-major.
    extent : (float, float)
        Height and width of the image in normalised units.
    n_final : int
        Control points of the final fit (the flexibility the sky check allows).
    seed_sigma : float
        Significance of a seed, in robust sigmas of the residual (``Config.protect_sigma``).
    grow : int
        Dilation of every flagged region, in working pixels (``Config.protect_grow``).
    order : int
        Spline order of the detection fits.

    Returns
    -------
    ObjectMask
    """
    h, w, n_chan = linear.shape
    y = np.nan_to_num(linear).reshape(-1, n_chan)
    wt0 = weights.reshape(-1, n_chan)
    noise = pixel_noise(np.where(valid[..., None], linear, np.nan), valid)

    def fit(flags: np.ndarray, centers: np.ndarray, smoothing: float = 0.0) -> np.ndarray:
        wt = wt0 * ~flags.reshape(-1, 1)
        sel = wt.max(axis=1) > 0
        params = robust_fit(centers, query[sel], y[sel], wt[sel], order, smoothing=smoothing)
        return params(query).reshape(h, w, n_chan)

    def z_map(model: np.ndarray) -> np.ndarray:
        z = np.where(valid[..., None], (linear - model) / noise, 0.0).mean(axis=-1)
        return z * np.sqrt(n_chan)

    flags = np.zeros((h, w), dtype=bool)
    # The final flexibility as a full grid of about ``n_final`` points.
    aspect = min(extent) / max(extent)
    final_cells = max(2, int(round(np.sqrt(n_final / aspect))))
    for cells in LEVELS:
        if cells >= final_cells:
            break
        centers = grid_points(cells, extent)
        for _ in range(ROUNDS_PER_LEVEL):
            if (wt0 * ~flags.reshape(-1, 1)).max(axis=1).sum() < 3 * (len(centers) + 3):
                break  # too little sky left to fit this level
            model = fit(flags, centers)
            span = float(np.ptp((model / noise).mean(axis=-1)[valid]) * np.sqrt(n_chan))
            flags = _detect(z_map(model), valid, valid & ~flags, seed_sigma,
                            SEED_AMPLITUDE * span, grow)

    cleared = 0
    labels, n_regions = ndimage.label(flags)
    if n_regions:
        centers = grid_points(final_cells, extent)
        sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n_regions + 1))
        without = fit(flags, centers, CHECK_SMOOTHING)
        for i in np.argsort(-sizes):
            if sizes[i] < CHECK_MIN_AREA * valid.sum():
                break
            region = (labels == i + 1) & valid
            trial = flags & ~region
            excess = float(z_map(without)[region].mean())
            if excess <= 0:
                # Not above the sky fitted without it: nothing marks it as an object
                # (a runaway of the detection rounds, the fit bending away from a hole).
                flags, cleared = trial, cleared + 1
                continue
            lifted = fit(trial, centers, CHECK_SMOOTHING)
            lift = float(((lifted - without) / noise).mean(axis=-1)[region].mean() * np.sqrt(n_chan))
            if lift > SKY_SHARE * excess:
                flags, cleared = trial, cleared + 1
    return ObjectMask(flags, noise, cleared)
