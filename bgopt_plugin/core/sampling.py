"""Working image: validity, NaN-aware block downscaling, masks and control-point seeding."""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "AUTO_LONG_SIDE",
    "missing_pixels",
    "auto_factor",
    "block_reduce",
    "downscale",
    "threshold_mask",
    "initial_points",
    "grid_points",
    "initial_values",
]

#: Long side (pixels) that ``downscaling_factor="auto"`` aims for.
AUTO_LONG_SIDE = 96


def missing_pixels(image: np.ndarray) -> np.ndarray:
    """True where a pixel holds no data: zero (registration borders), NaN or Inf.

    Examples
    --------
    >>> missing_pixels(np.array([0.0, 0.1, np.nan, np.inf]))
    array([ True, False,  True,  True])
    """
    return ~np.isfinite(image) | (image == 0)


def auto_factor(shape: tuple[int, ...], long_side: int = AUTO_LONG_SIDE) -> int:
    """Downscaling factor that brings the long side of ``shape`` near ``long_side``.

    Examples
    --------
    >>> auto_factor((4000, 6000))
    62
    >>> auto_factor((120, 100))
    1
    """
    return max(1, int(round(max(shape[:2]) / long_side)))


def _blocks(image: np.ndarray, factor: int) -> np.ndarray:
    """View (h, w, C) padded with NaN as (h/f, w/f, C, f*f) blocks."""
    h, w, c = image.shape
    hb, wb = math.ceil(h / factor), math.ceil(w / factor)
    if hb * factor != h or wb * factor != w:
        padded = np.full((hb * factor, wb * factor, c), np.nan, dtype=image.dtype)
        padded[:h, :w] = image
        image = padded
    return _block_view(image, factor).reshape(hb, wb, c, factor * factor)


def _block_view(image: np.ndarray, factor: int) -> np.ndarray:
    """An (H, W, C) image whose sides are multiples of ``factor``, viewed as
    (H/f, W/f, C, f, f) blocks (no copy)."""
    h, w, c = image.shape
    return image.reshape(h // factor, factor, w // factor, factor, c).transpose(0, 2, 4, 1, 3)


def block_reduce(image: np.ndarray, factor: int, func: str = "median") -> np.ndarray:
    """NaN-aware block median or mean of a channels-last image.

    Blocks at the right and bottom edges may be partial; all-NaN blocks give NaN.

    Parameters
    ----------
    image : ndarray, shape (H, W, C)
    factor : int
        Block size.
    func : {"median", "mean"}

    Returns
    -------
    ndarray, shape (ceil(H/factor), ceil(W/factor), C), float32

    Examples
    --------
    >>> import numpy as np
    >>> block_reduce(np.arange(16.0).reshape(4, 4, 1), 2, "mean")[..., 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]], dtype=float32)
    """
    image = np.asarray(image, dtype=np.float32)
    if factor == 1:
        return image.copy()
    blocks = _blocks(image, factor)
    if np.may_share_memory(blocks, image):   # a view when one block spans the width
        blocks = blocks.copy()               # the reductions below work in place
    return _reduce_blocks(blocks, func)


def _reduce_blocks(blocks: np.ndarray, func: str) -> np.ndarray:
    """Median or mean over the last axis of ``blocks``, ignoring NaN; ``blocks`` is a
    temporary of the caller's, reordered in place by the median."""
    if func == "mean":
        valid = np.isfinite(blocks)
        count = valid.sum(axis=-1)
        total = np.where(valid, blocks, 0).sum(axis=-1, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (total / count).astype(np.float32)
    if func != "median":
        raise ValueError(f"downscaling_func must be 'median' or 'mean', got {func!r}")
    return _median_of_blocks(blocks, missing_as_nan=False, value_range=None)


def _median(blocks: np.ndarray) -> np.ndarray:
    """Median over the last axis by one partition, in place (a block holding NaN gets a
    meaningless value: see :func:`_nan_median`).

    ``np.median`` partitions at both middle elements and at the last one (its NaN
    check): several times this on large blocks. Same values: for an even count the mean
    of the two middle ones, the lower being the largest of the left part. ``blocks`` (a
    temporary of the caller's) is partitioned where it is: a partitioned copy lands on
    fresh pages, whose first touch made the partition several times slower.
    """
    n = blocks.shape[-1]
    k = n // 2
    part = blocks
    part.partition(k, axis=-1)
    upper = part[..., k]
    if n % 2:
        return upper.astype(np.float32)
    return (0.5 * (part[..., :k].max(axis=-1) + upper)).astype(np.float32)


def _nan_median(blocks: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN (NaN where a row has no value); sorts
    ``blocks`` (a temporary of the caller's) in place."""
    # Sort once, in place (NaN sorts last) and pick the middle of the valid values of each block.
    ordered = blocks
    ordered.sort(axis=-1)
    count = np.isfinite(ordered).sum(axis=-1)
    lo = np.maximum((count - 1) // 2, 0)[..., None]
    hi = np.maximum(count // 2, 0)[..., None]
    med = 0.5 * (np.take_along_axis(ordered, lo, -1) + np.take_along_axis(ordered, hi, -1))[..., 0]
    med[count == 0] = np.nan
    return med.astype(np.float32)


def _fill_blocks(blocks: np.ndarray, rows: np.ndarray) -> None:
    """Copy one strip of image rows (r <= f, W, C), any real dtype, into ``blocks``
    (W/f, C, f, f) as float32, with NaN where the strip does not reach (its right edge,
    a short last strip)."""
    r, w, c = rows.shape
    wb, factor = blocks.shape[0], blocks.shape[-1]
    full = w // factor
    if full:
        whole = rows[:, :full * factor].reshape(r, full, factor, c).transpose(1, 3, 0, 2)
        np.copyto(blocks[:full, :, :r], whole, casting="unsafe")
    if full < wb:
        edge = blocks[full]
        edge.fill(np.nan)
        np.copyto(edge[:, :r, :w - full * factor], rows[:, full * factor:].transpose(2, 0, 1),
                  casting="unsafe")
    if r < factor:
        blocks[:, :, r:] = np.nan


def _median_of_blocks(flat: np.ndarray, missing_as_nan: bool,
                      value_range: np.ndarray | None) -> np.ndarray:
    """Median over the last axis of ``flat`` (blocks, (..., C, f*f), a temporary of the
    caller's, reordered in place), leaving out NaN (and, with ``missing_as_nan``, zero
    and Inf), and the blocks' share of ``value_range`` (reduced over the first axis).

    Every block is partitioned where it is (no copy: the common case, no missing pixel,
    needs nothing more). Each block's minimum and maximum decide whether it can hold a
    missing pixel (a minimum above 0 and a finite maximum rule out zeros, NaN and Inf) in
    two cheap reductions, instead of a test of every pixel. Only the blocks that may (the
    NaN padding of the right edge, registration borders, negative data) are looked at
    pixel by pixel, on a copy of just those, and those with a missing pixel take the sort.
    """
    low, high = flat.min(axis=-1), flat.max(axis=-1)       # NaN where a block holds NaN
    with np.errstate(invalid="ignore"):
        maybe = ~((low > 0) & (high < np.inf)) if missing_as_nan else np.isnan(low)
    med = _median(flat)
    if maybe.any():
        where = np.nonzero(maybe)
        suspects = flat[where]                              # a copy
        if missing_as_nan:
            np.copyto(suspects, np.nan, where=missing_pixels(suspects))
        holed = np.isnan(suspects).any(axis=-1)
        if holed.any():
            at = tuple(index[holed] for index in where)
            low[at] = np.fmin.reduce(suspects[holed], axis=-1)
            high[at] = np.fmax.reduce(suspects[holed], axis=-1)
            med[at] = _nan_median(suspects[holed])
    if value_range is not None:
        value_range[0] = np.fmin(value_range[0], np.fmin.reduce(low, axis=0))
        value_range[1] = np.fmax(value_range[1], np.fmax.reduce(high, axis=0))
    return med


def downscale(image: np.ndarray, factor: int, func: str = "median", transform=None,
              missing_as_nan: bool = True, value_range: np.ndarray | None = None) -> np.ndarray:
    """Block-reduce a full-resolution image one strip of ``factor`` rows at a time.

    Memory stays at one strip of temporaries whatever the image size.

    Parameters
    ----------
    image : ndarray (H, W, C)
        Any real dtype; not modified.
    factor : int
    func : {"median", "mean"}
    transform : callable, optional
        Applied to each float32 strip (channels last) before reducing (e.g. a stretch).
    missing_as_nan : bool
        Treat zero and non-finite pixels as missing (NaN), as the engine does.
    value_range : ndarray (2, C), optional
        Receives the per-channel minimum and maximum of the pixels that are not NaN
        after the above (inf and -inf for a channel without any), taken while each strip
        is in cache instead of in a pass of its own; not with ``transform``.

    Returns
    -------
    ndarray (ceil(H/factor), ceil(W/factor), C), float32
    """
    if value_range is not None:
        if transform is not None:
            raise ValueError("value_range is taken before the reduction, not with a transform")
        value_range[0], value_range[1] = np.inf, -np.inf
    h, w, c = image.shape
    hb, wb = math.ceil(h / factor), math.ceil(w / factor)
    out = np.empty((hb, wb, c), dtype=np.float32)
    # One block buffer (and strip, for a transform) serves every strip: a few MB of fresh
    # temporaries per strip meant first touches of new pages, which took as long as the
    # medians. Without a transform the rows go straight into the blocks.
    blocks = np.empty((wb, c, factor, factor), dtype=np.float32)
    flat = blocks.reshape(wb, c, factor * factor)
    strip = None if transform is None else np.full((factor, wb * factor, c), np.nan, np.float32)
    find_missing = missing_as_nan and strip is None     # else the strip had them set to NaN
    for i in range(hb):
        rows = image[i * factor:(i + 1) * factor]
        if strip is None:
            _fill_blocks(blocks, rows)
        else:   # missing pixels are found before the transform can hide them
            part = strip[:len(rows), :w]
            np.copyto(part, rows, casting="unsafe")
            strip[len(rows):] = np.nan
            if missing_as_nan:
                np.copyto(part, np.nan, where=missing_pixels(part))
            np.copyto(blocks, _block_view(transform(strip), factor)[0])
        if func == "median":
            out[i] = _median_of_blocks(flat, find_missing, value_range)
            continue
        if find_missing:
            np.copyto(flat, np.nan, where=missing_pixels(flat))
        if value_range is not None:
            value_range[0] = np.fmin(value_range[0], np.fmin.reduce(flat, axis=(0, 2)))
            value_range[1] = np.fmax(value_range[1], np.fmax.reduce(flat, axis=(0, 2)))
        out[i] = _reduce_blocks(flat, func)
    return out


def threshold_mask(working: np.ndarray, tmin: float, tmax: float) -> np.ndarray:
    """1.0 where ``tmin <= working <= tmax`` (NaN counts as outside), else 0.0.

    Stretched values above 1 (brighter than the delinearization quantile) count as 1,
    so the default ``tmax = 1`` masks nothing.

    Examples
    --------
    >>> threshold_mask(np.array([0.0, 0.5, 1.7, np.nan]), 0.001, 1.0)
    array([0., 1., 1., 0.], dtype=float32)
    """
    with np.errstate(invalid="ignore"):
        return ((working >= tmin) & (np.minimum(working, 1.0) <= tmax)).astype(np.float32)


def initial_points(n: int, extent: tuple[float, float], how: str, rng: np.random.Generator) -> np.ndarray:
    """Initial control points in normalised (y, x) coordinates.

    Parameters
    ----------
    n : int
        Number of points.
    extent : (float, float)
        Height and width of the image in normalised units (long side = 1).
    how : {"random", "grid"}
        Uniform random points, or a near-square grid filled up with random points
        where ``n`` is not a grid size.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, shape (n, 2), float32
    """
    ey, ex = extent
    if how == "random":
        pts = rng.uniform(0.0, 1.0, size=(n, 2)) * np.array([ey, ex])
        return pts.astype(np.float32)
    if how != "grid":
        raise ValueError(f"initializer must be 'random' or 'grid', got {how!r}")
    # Grid with roughly square cells over the image extent.
    ny = max(1, int(round(math.sqrt(n * ey / ex))))
    nx = max(1, n // ny)
    gy = (np.arange(ny) + 0.5) / ny * ey
    gx = (np.arange(nx) + 0.5) / nx * ex
    pts = np.stack(np.meshgrid(gy, gx, indexing="ij"), axis=-1).reshape(-1, 2)
    extra = n - len(pts)
    if extra > 0:
        pts = np.concatenate([pts, rng.uniform(0.0, 1.0, size=(extra, 2)) * np.array([ey, ex])])
    return pts[:n].astype(np.float32)


def grid_points(per_long_side: int, extent: tuple[float, float]) -> np.ndarray:
    """A regular grid of cell centres with ``per_long_side`` cells along the long side.

    The short side gets the number of cells that keeps them closest to square.

    Examples
    --------
    >>> grid_points(3, (0.5, 1.0)).shape
    (6, 2)
    """
    ey, ex = extent
    long_, short = max(ey, ex), min(ey, ex)
    n_long = max(1, int(per_long_side))
    n_short = max(1, int(round(n_long * short / long_)))
    ny, nx = (n_short, n_long) if ey <= ex else (n_long, n_short)
    gy = (np.arange(ny) + 0.5) / ny * ey
    gx = (np.arange(nx) + 0.5) / nx * ex
    return np.stack(np.meshgrid(gy, gx, indexing="ij"), axis=-1).reshape(-1, 2)


def initial_values(
    working: np.ndarray, weights: np.ndarray, points: np.ndarray, unit: float
) -> np.ndarray:
    """Working-image values at the control points, blended toward the masked median.

    A point on a pixel of weight ``w`` starts at ``w * pixel + (1 - w) * median``, where
    ``median`` is the per-channel median of the pixels with non-zero weight.

    Parameters
    ----------
    working : ndarray, shape (h, w, C)
        Stretched, downscaled image (NaN allowed where the weight is zero).
    weights : ndarray, shape (h, w, C)
        Loss weights in [0, 1].
    points : ndarray, shape (N, 2)
        Normalised (y, x) control points.
    unit : float
        Working pixels per normalised unit (the long side in working pixels).

    Returns
    -------
    ndarray, shape (N, C), float32
    """
    h, w, c = working.shape
    median = np.array([np.median(working[..., k][weights[..., k] > 0]) for k in range(c)])
    iy = np.clip((points[:, 0] * unit).astype(int), 0, h - 1)
    ix = np.clip((points[:, 1] * unit).astype(int), 0, w - 1)
    pix = np.nan_to_num(working[iy, ix, :], nan=0.0)
    wt = weights[iy, ix, :]
    return (wt * pix + (1 - wt) * median).astype(np.float32)
