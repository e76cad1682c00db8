"""Object protection: find what is not sky before the spline is fitted.

In: the prepared working image (:class:`~bgopt_plugin.core.prepare.Prepared`) and the
config. Out: a :class:`Protection`, the working pixels left out of the fit (nebulae,
galaxies, bands, dark lanes) and the loss weights without them.

The sky comes first, and stiff. Objects add to the sky in linear units, so detection
works on the linear working image, with isolated bright pixels (stars the block median
kept) replaced by their neighbourhood's median. A smooth spline with few control points
is fitted with iterative clipping of the pixels far above or below it, at growing
flexibility (3, 4, then 5 cells along the long side), so large objects cannot pull it
up. What stands ``protect_sigma`` robust sigmas above that sky at some smoothing scale
(1, 2 or 4 working pixels) seeds a region that takes in the connected, weaker excess
around it (the faint outskirts); what stands as far below it (dark lanes) likewise.
Pixels the user's threshold or mask left out that are bright against the sky seed a
region too, so a threshold over a nebula's core protects its outskirts as well.

Light pollution comes from beyond the frame: a region that touches the frame's border
(or missing data, or dark pixels the user masked, such as a foreground) and whose
excess is strongest right at that border is sky; every other region is an object.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .parameters import Config
from .prepare import Prepared
from .robust import pixel_noise, robust_sigma
from .sampling import grid_points
from .spline import SplineParams, solve_lstsq

__all__ = ["Protection", "ObjectMask", "find_objects", "object_mask", "smooth_valid",
           "despike", "SCALES", "LEVELS"]

#: Grid cells along the long side of the clipped sky fits, stiff to flexible.
LEVELS = (3, 4, 5)
#: Gaussian smoothing scales (working pixels) at which residual significance is tested.
SCALES = (1.0, 2.0, 4.0)
#: Smoothing scale of the residual whose amplitude a seed must have (and that tells where
#: a region's excess peaks).
AMPLITUDE_SCALE = 2.0
#: Clipping of the sky fits: pixels beyond this many robust sigmas above or below the
#: fit are left out of the next round.
CLIP_SIGMA = 2.0
#: Clipping rounds per level (fewer when nothing changes).
CLIP_ROUNDS = 10
#: Light from beyond the border: the sky fits also have control points on a ring this far
#: outside the frame, and as far inside dark masked or missing areas (a foreground),
#: about this far apart (normalised units: the long side is 1).
BEYOND_DISTANCE = 0.3
BEYOND_SPACING = 0.4
#: Regions of fewer working pixels (before growing) are left to the fit's robust
#: weights: star clumps the block median kept.
MIN_PIXELS = 12
#: A seed must also stand out by this share of the sky fit's peak-to-peak: at a high
#: signal-to-noise ratio (a large frame's working image averages many pixels) what a
#: stiff fit misses of the sky is significant too, while objects are as bright as the
#: gradient or brighter.
SEED_AMPLITUDE = 0.03
#: Deviation (in the residual's own spread) that lets a weaker pixel join a seed's region.
WEAK_SIGMA = 2.5
#: Regions smaller than this share of the working image are objects without a check.
CHECK_MIN_AREA = 0.01
#: A region is sky when its strongest excess lies this close to the border, in units of
#: the region's size (the square root of its area)...
BORDER_PEAK = 0.1
#: ...and that excess stays below this share of the sky model's peak-to-peak (objects
#: are as bright as the gradient or brighter; what a stiff fit leaves of a steep glow at
#: the border is a small part of it).
BORDER_EXCESS = 0.15
#: ...or when the final flexibility follows it: refitted with the region included, the
#: model rises by at least this share of the region's excess (bending-energy weight
#: :data:`CHECK_SMOOTHING`).
SKY_SHARE = 0.85
CHECK_SMOOTHING = 1e-3
#: Protection is dropped if it would leave fewer usable working pixels than this share.
MIN_SKY_SHARE = 0.05
#: Outskirts: rings around a region join it while their mean excess exceeds this many
#: standard errors and the sky fit's own spread at large scales; at most this many rings,
#: and never below this share of sky left.
RING_SIGMA = 3.0
RING_MAX = 30
RING_ROUNDS = 3
RING_MIN_SKY = 0.15


@dataclass(frozen=True)
class ObjectMask:
    """Outcome of :func:`object_mask`.

    Attributes
    ----------
    bright : ndarray (h, w) bool
        Working pixels of objects brighter than the sky (emission, galaxies, stars' halos).
    dark : ndarray (h, w) bool
        Working pixels of objects darker than the sky (dust lanes).
    noise : ndarray (C,)
        Pixel noise of the linear working image per channel.
    cleared : int
        Candidate regions found to be sky (light from beyond the border).
    """

    bright: np.ndarray
    dark: np.ndarray
    noise: np.ndarray
    cleared: int = 0

    @property
    def flags(self) -> np.ndarray:
        """Every object pixel, bright or dark."""
        return self.bright | self.dark


@dataclass
class Protection:
    """What :func:`find_objects` hands to the fit.

    Attributes
    ----------
    protected : ndarray (h, w) bool
        Usable working pixels left out of the fit.
    bright : ndarray (h, w) bool
        Pixels of objects brighter than the sky, protected or left out by the user's
        threshold or mask: the sky may not be brighter than the image there (the fit's
        ceiling).
    weights : ndarray (h, w, C)
        The loss weights with the protected pixels at 0.
    noise : ndarray (C,) or None
        Pixel noise of the linear working image per channel (None without protection).
    info : dict
        ``regions_returned_to_sky`` and, when it was dropped, ``protection_skipped``.
    fraction : float
        Share of the usable working pixels (data, not masked by the user) protected.
    """

    protected: np.ndarray
    bright: np.ndarray
    weights: np.ndarray
    noise: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    fraction: float = 0.0


def find_objects(prep: Prepared, config: Config) -> Protection:
    """The protection stage: the objects of ``prep`` to leave out of the fit.

    Parameters
    ----------
    prep : Prepared
        The working image.
    config : Config
        ``protect``, ``protect_sigma``, ``protect_grow``, ``n_control_points`` and
        ``order`` are used.

    Returns
    -------
    Protection
        Nothing is protected with ``protect=False``, or when the objects would leave
        too little sky to fit (``info["protection_skipped"]``).
    """
    none = np.zeros(prep.usable.shape, bool)
    if not config.protect:
        return Protection(none, none, prep.weights)
    found = object_mask(prep.linear, prep.valid, prep.weights, prep.query, prep.extent,
                        n_final=config.n_control_points, seed_sigma=config.protect_sigma,
                        grow=config.protect_grow, order=config.order)
    info: dict[str, Any] = {"regions_returned_to_sky": found.cleared}
    flags = found.flags & prep.usable
    left = prep.weights * ~flags[..., None]
    n_left = int((left.max(axis=-1) > 0).sum())
    if n_left < max(MIN_SKY_SHARE * prep.usable.sum(), 3 * (config.n_control_points + 3)):
        info["protection_skipped"] = "objects would leave too little sky"
        return Protection(none, none, prep.weights, found.noise, info)
    fraction = float(flags.sum()) / max(1, int(prep.usable.sum()))
    # The ceiling holds under every bright object pixel, those a threshold masked included.
    return Protection(flags, found.bright & prep.valid, left, found.noise, info, fraction)


def smooth_valid(z: np.ndarray, valid: np.ndarray, scale: float, truncate: float = 3.0) -> np.ndarray:
    """Gaussian mean of ``z`` (h, w) over valid pixels only (normalised convolution).

    The kernel is cut at ``truncate`` sigmas; 0 where no valid pixel is within reach.
    """
    num = ndimage.gaussian_filter(np.where(valid, z, 0.0), scale, mode="nearest", truncate=truncate)
    den = ndimage.gaussian_filter(valid.astype(np.float64), scale, mode="nearest", truncate=truncate)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0)


def despike(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Every valid pixel of ``image`` (h, w, C) replaced by the median of its valid 3x3
    neighbourhood: a star that survived the block median is one bright pixel, which this
    removes, while extended structure stays."""
    h, w = valid.shape
    out = image.copy()
    for c in range(image.shape[-1]):
        padded = np.pad(np.where(valid, image[..., c], np.nan), 1, mode="edge")
        stack = np.stack([padded[i:i + h, j:j + w] for i in range(3) for j in range(3)])
        with warnings.catch_warnings():   # all-NaN neighbourhoods stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(stack, axis=0)
        out[..., c] = np.where(valid & np.isfinite(med), med, image[..., c])
    return out


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (yy**2 + xx**2) <= radius * radius


def _smoothed(r: np.ndarray, valid: np.ndarray) -> dict[float, np.ndarray]:
    """``r`` smoothed over valid pixels at each scale of :data:`SCALES` and at
    :data:`AMPLITUDE_SCALE`: made once, for both signs and every reference."""
    return {s: smooth_valid(r, valid, s) for s in dict.fromkeys((*SCALES, AMPLITUDE_SCALE))}


def _significance(smoothed: dict[float, np.ndarray], reference: np.ndarray,
                  sign: float = 1.0) -> np.ndarray:
    """Largest deviation of ``sign`` times the residual over the scales in :data:`SCALES`
    (``smoothed``: :func:`_smoothed`), each in units of the smoothed residual's own
    robust spread over ``reference`` (at least the noise)."""
    dev = np.full(reference.shape, -np.inf)
    for s in SCALES:
        t = (sign * smoothed[s]) * (2 * np.sqrt(np.pi) * s)  # unit variance for white noise
        ref = t[reference]
        centre = float(np.median(ref)) if ref.size else 0.0
        dev = np.maximum(dev, (t - centre) / max(robust_sigma(ref), 1.0))
    return dev


def _regions(dev: np.ndarray, valid: np.ndarray, seeds: np.ndarray, grow: int,
             min_pixels: int = 0) -> np.ndarray:
    """The connected regions above :data:`WEAK_SIGMA` that hold a seed and at least
    ``min_pixels`` pixels, grown by ``grow``."""
    if not seeds.any():
        return np.zeros_like(valid)
    labels, _ = ndimage.label(((dev > WEAK_SIGMA) & valid) | seeds)
    keep = np.unique(labels[seeds])
    keep = keep[keep > 0]
    if min_pixels > 0 and keep.size:
        sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=keep)
        keep = keep[sizes >= min_pixels]
    flags = np.isin(labels, keep)
    if grow > 0:
        flags = ndimage.binary_dilation(flags, structure=_disk(grow))
    return flags & valid


def _clipped_sky(z: np.ndarray, usable: np.ndarray, query: np.ndarray, extent: tuple[float, float],
                 n_final: int, order: int, beyond: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stiff-to-flexible spline fits of ``z`` with iterative two-sided clipping.

    Returns the last model (h, w) and the pixels it was fitted to.
    """
    final_cells = _final_cells(n_final, extent)
    accept, model = usable.copy(), np.zeros_like(z)
    for cells in LEVELS:
        if cells >= final_cells and cells != LEVELS[0]:
            break
        centers = grid_points(cells, extent)
        if beyond is not None:
            centers = np.concatenate([centers, beyond])
        for _ in range(CLIP_ROUNDS):
            sel = accept.reshape(-1)
            if sel.sum() < 3 * (len(centers) + 3):
                break
            model = _fit(z, accept, query, centers, order)
            r = z - model
            centre = float(np.median(r[accept]))
            spread = max(robust_sigma(r[accept]), 1e-9)
            new = usable & (np.abs(r - centre) < CLIP_SIGMA * spread)
            changed = int((new != accept).sum())
            accept = new
            if changed <= 0.002 * usable.sum():
                break
    return model, accept


def _fit(z: np.ndarray, fitted: np.ndarray, query: np.ndarray, centers: np.ndarray,
         order: int, smoothing: float = 0.0) -> np.ndarray:
    """Least-squares spline of ``z`` (h, w) through the pixels ``fitted``, everywhere."""
    sel = fitted.reshape(-1)
    wv, vv = solve_lstsq(centers, query[sel], z.reshape(-1, 1)[sel], np.ones((int(sel.sum()), 1)),
                         order, smoothing=smoothing)
    return SplineParams(centers, wv, vv, order)(query).reshape(z.shape)


def _outskirts(flags: np.ndarray, z: np.ndarray, usable: np.ndarray, valid: np.ndarray,
               query: np.ndarray, centers: np.ndarray, order: int) -> np.ndarray:
    """Grow every large region ring by ring (one working pixel each) into its faint outskirts.

    The sky is refitted without the regions; a ring joins its region while its mean
    excess over that sky is significant (:data:`RING_SIGMA` standard errors) and above
    the fit's own spread at large scales (what a misfit of the sky looks like). The
    faint outskirts of a large nebula are invisible pixel by pixel but pull a fit up
    when left in it.
    """
    n_valid = int(valid.sum())
    for _ in range(RING_ROUNDS):
        sky = usable & ~flags
        if sky.sum() < max(RING_MIN_SKY * n_valid, 3 * (len(centers) + 3)):
            break
        r = z - _fit(z, sky, query, centers, order)
        noise = max(robust_sigma(r[sky]), 1e-9)
        misfit = robust_sigma(smooth_valid(r, valid, 3.0)[sky])
        labels, n = ndimage.label(flags)
        distance, (iy, ix) = ndimage.distance_transform_edt(~flags, return_indices=True)
        owner, ring = labels[iy, ix], np.ceil(distance).astype(int)
        sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
        added = np.zeros_like(flags)
        for i in range(1, n + 1):
            if sizes[i - 1] < CHECK_MIN_AREA * n_valid:
                continue   # a star or a small galaxy: its outskirts hardly move the fit
            mine = (owner == i) & sky
            for k in range(1, RING_MAX + 1):
                band = mine & (ring == k)
                m = int(band.sum())
                mean = float(r[band].mean()) if m >= 4 else 0.0
                if m < 4 or mean <= RING_SIGMA * noise / np.sqrt(m) or mean <= misfit:
                    break
                added |= band
        if not added.any() or (usable & ~(flags | added)).sum() < RING_MIN_SKY * n_valid:
            break
        flags = flags | added
    return flags


def _peaks_at_border(region: np.ndarray, excess: np.ndarray, to_border: np.ndarray) -> bool:
    """Whether the strongest tenth of ``excess`` over ``region`` lies at the border."""
    values = excess[region]
    top = values >= np.quantile(values, 0.9)
    return float(np.median(to_border[region][top])) < BORDER_PEAK * np.sqrt(region.sum())


def _outside_points(extent: tuple[float, float], spacing: float, distance: float) -> np.ndarray:
    """Points on a ring ``distance`` outside the frame, about ``spacing`` apart: centres
    for light that comes from beyond the border."""
    ey, ex = extent
    top, right = -distance, ex + distance
    bottom, left = ey + distance, -distance
    pts = []
    for (y0, x0), (y1, x1) in (((top, left), (top, right)), ((top, right), (bottom, right)),
                               ((bottom, right), (bottom, left)), ((bottom, left), (top, left))):
        n = max(1, int(round(np.hypot(y1 - y0, x1 - x0) / spacing)))
        t = np.arange(n) / n
        pts.append(np.stack([y0 + (y1 - y0) * t, x0 + (x1 - x0) * t], axis=1))
    return np.concatenate(pts)


def _inside_dark_points(outside: np.ndarray, query: np.ndarray, unit: float, spacing: float,
                        distance: float) -> np.ndarray:
    """Points in masked or missing areas inside the frame (a dark foreground, registration
    borders), ``distance`` from the sky and about ``spacing`` apart (normalised units)."""
    if not outside.any():
        return np.zeros((0, 2))
    depth = ndimage.distance_transform_edt(outside) * unit
    near = outside & (np.abs(depth - distance) <= unit)
    if not near.any():   # a thin mask: its deepest pixels
        near = outside & (depth >= depth.max() - unit)
    candidates = query[near.reshape(-1)]
    chosen: list[np.ndarray] = []
    for pt in candidates:
        if all(np.hypot(*(pt - c)) >= spacing for c in chosen):
            chosen.append(pt)
    return np.array(chosen).reshape(-1, 2)


def _hugs_border(region: np.ndarray, to_border: np.ndarray) -> bool:
    """Whether most of ``region`` lies along the border (within a quarter of its size)."""
    return float(np.mean(to_border[region] < 0.25 * np.sqrt(region.sum()))) > 0.5


def _final_cells(n_final: int, extent: tuple[float, float]) -> int:
    """Grid cells along the long side that give about ``n_final`` points over ``extent``."""
    aspect = min(extent) / max(extent)
    return max(2, int(round(np.sqrt(n_final / aspect))))


def object_mask(linear: np.ndarray, valid: np.ndarray, weights: np.ndarray, query: np.ndarray,
                extent: tuple[float, float], *, n_final: int, seed_sigma: float, grow: int,
                order: int) -> ObjectMask:
    """Flag the working pixels that belong to objects rather than to the sky.

    Parameters
    ----------
    linear : ndarray (h, w, C)
        The working image in linear units (any per-channel scale); NaN where no data.
    valid : ndarray (h, w) bool
        Pixels with data in every channel: detection looks at all of them, masked or not.
    weights : ndarray (h, w, C)
        Loss weights in [0, 1] (thresholds, user mask): only weighted pixels are fitted;
        bright pixels left out seed regions.
    query : ndarray (h * w, 2)
        Normalised coordinates of the working pixels, row-major.
    extent : (float, float)
        Height and width of the image in normalised units.
    n_final : int
        Control points of the final fit (the sky fits stay stiffer).
    seed_sigma : float
        Significance of a seed, in robust sigmas of the residual (``Config.protect_sigma``).
    grow : int
        Dilation of every flagged region, in working pixels (``Config.protect_grow``).
    order : int
        Spline order of the sky fits.

    Returns
    -------
    ObjectMask
    """
    n_chan = linear.shape[-1]
    noise = pixel_noise(np.where(valid[..., None], linear, np.nan), valid)
    usable = valid & (weights.max(axis=-1) > 0)
    z = np.where(valid[..., None], despike(linear, valid) / noise, 0.0).mean(axis=-1) * np.sqrt(n_chan)
    if usable.sum() < 3 * (len(grid_points(LEVELS[0], extent)) + 3):
        return ObjectMask(np.zeros_like(valid), np.zeros_like(valid), noise)
    # Dark masked pixels (a foreground under a threshold) and missing data are beyond the
    # sky as the frame's outside is: light can come from there too (a horizon's glow).
    dark_mask = ~valid | (valid & ~usable & (z < np.median(z[usable])))
    unit = float(np.abs(query[1] - query[0]).max()) if query.shape[0] > 1 else 1.0
    beyond = np.concatenate([
        _outside_points(extent, BEYOND_SPACING, BEYOND_DISTANCE),
        _inside_dark_points(dark_mask, query, unit, BEYOND_SPACING, BEYOND_DISTANCE)])
    sky, accept = _clipped_sky(z, usable, query, extent, n_final, order, beyond)
    r = np.where(valid, z - sky, 0.0)
    # Seeds stand out against every usable pixel's spread (star clumps are part of it)
    # and by a share of the sky's peak-to-peak (at a high signal-to-noise ratio a stiff
    # fit's misfit is significant too); their regions then grow through what stands out
    # against the sky fit's own pixels.
    span = float(np.ptp(sky[valid]))
    smoothed = _smoothed(r, valid)
    amplitude = smoothed[AMPLITUDE_SCALE]
    dev = _significance(smoothed, accept)
    bright = _regions(dev, valid, (_significance(smoothed, usable) > seed_sigma)
                      & (amplitude > SEED_AMPLITUDE * span), grow, MIN_PIXELS)
    # The user's threshold or mask over an object: its bright pixels seed regions too. A
    # dark masked foreground is not an object, whatever the sky fit guesses under it.
    spread = max(robust_sigma(r[accept]), 1.0)
    user = valid & ~usable & ~dark_mask & (r > seed_sigma * spread)
    bright |= _regions(dev, valid, user, grow)
    low = _significance(smoothed, accept, -1.0)
    dark = _regions(low, valid, (_significance(smoothed, usable, -1.0) > seed_sigma)
                    & (-amplitude > SEED_AMPLITUDE * span), grow, MIN_PIXELS) & ~bright
    border = np.zeros_like(valid)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    border |= ndimage.binary_dilation(~valid | (valid & ~usable & ~bright), iterations=1)
    to_border = ndimage.distance_transform_edt(~border)
    final = np.concatenate([grid_points(_final_cells(n_final, extent), extent), beyond])
    without = _fit(z, usable & ~(bright | dark), query, final, order, CHECK_SMOOTHING)
    cleared = 0
    for flags, sign in ((bright, 1.0), (dark, -1.0)):
        labels, n = ndimage.label(flags)
        for i in range(1, n + 1):
            region = (labels == i) & usable
            if region.sum() < CHECK_MIN_AREA * valid.sum() or not (
                    ndimage.binary_dilation(region) & border).any():
                continue
            if not _peaks_at_border(region, sign * amplitude, to_border):
                continue
            excess = sign * float((z - without)[region].mean())
            small = float(np.quantile(sign * amplitude[region], 0.95)) < BORDER_EXCESS * span
            if not small and excess > 0 and (sign > 0 or _hugs_border(region, to_border)):
                lifted = _fit(z, usable & ~((bright | dark) & ~region), query, final, order,
                              CHECK_SMOOTHING)
                small = sign * float((lifted - without)[region].mean()) >= SKY_SHARE * excess
            if small or excess <= 0:
                flags &= ~(labels == i)
                cleared += 1
    if bright.any():
        centers = grid_points(LEVELS[-1], extent)
        bright = _outskirts(bright, z, usable, valid, query, centers, order)
    # No ceiling over a dark masked foreground: the sky behind it is not seen there.
    return ObjectMask(bright & valid & ~dark_mask, dark & valid & ~bright, noise, cleared)
