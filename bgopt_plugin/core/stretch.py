"""Delinearizing stretch: pedestal, quantile scaling and the midtones transfer function.

The stretch reveals the faint background so the loss sees it at a useful scale. It is
the midtones transfer function on [0, 1], continued by straight lines with the same
slope below 0 and above 1, so it is monotonic and invertible on the whole real line:
sky brighter than the quantile is modelled and removed like any other, nothing is
capped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sampling import missing_pixels

__all__ = ["Stretch", "mtf", "extended_mtf", "TARGET_MEDIAN"]

#: The stretched median of every channel.
TARGET_MEDIAN = 0.25
_EPS = 1e-6


def mtf(x: np.ndarray, m: np.ndarray | float) -> np.ndarray:
    """Midtones transfer function: maps 0 -> 0, ``m`` -> 0.5 and 1 -> 1.

    Its inverse is ``mtf(y, 1 - m)``.

    Parameters
    ----------
    x : ndarray
        Values in [0, 1].
    m : float or ndarray
        Midtones balance in (0, 1), broadcast against ``x``.

    Returns
    -------
    ndarray
        Transformed values, same dtype as ``x``.

    Examples
    --------
    >>> round(float(mtf(0.2, 0.2)), 6)
    0.5
    """
    x = np.asarray(x)
    m = np.asarray(m, dtype=x.dtype if x.dtype.kind == "f" else np.float64)
    return ((m - 1) * x) / ((2 * m - 1) * x - m)


def extended_mtf(x: np.ndarray, m: np.ndarray | float) -> np.ndarray:
    """:func:`mtf` on [0, 1], continued linearly with its end slopes outside.

    The slopes are ``(1 - m) / m`` at 0 and ``m / (1 - m)`` at 1, so the function is
    continuous with a continuous derivative, increasing, and ``extended_mtf(., 1 - m)``
    is its inverse everywhere.

    Examples
    --------
    >>> y = extended_mtf(np.array([-0.5, 0.3, 2.0]), 0.1)
    >>> np.allclose(extended_mtf(y, 0.9), [-0.5, 0.3, 2.0])
    True
    """
    x = np.asarray(x)
    m = np.asarray(m, dtype=x.dtype if x.dtype.kind == "f" else np.float64)
    inside = mtf(np.clip(x, 0, 1), m)
    below = x * ((1 - m) / m)
    above = 1 + (x - 1) * (m / (1 - m))
    return np.where(x < 0, below, np.where(x > 1, above, inside)).astype(inside.dtype)


#: Statistics of large images are taken on a regular subsample of about this many pixels.
STATS_SAMPLE = 2_000_000
_ROWS = 256  # rows per chunk when mapping full-resolution arrays


def _valid_range(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel minimum and maximum of the valid pixels (inf, -inf when there is none),
    in row chunks of a few MB so that the image's memory is read once."""
    n_chan = image.shape[-1]
    low, high = np.full(n_chan, np.inf), np.full(n_chan, -np.inf)
    rows = max(1, (2 << 20) // max(1, image[0].nbytes))
    for start in range(0, image.shape[0], rows):
        block = image[start:start + rows]
        valid = ~missing_pixels(block)
        for c in range(n_chan):   # per channel: numpy reduces a strided view in cache fast
            low[c] = min(low[c], np.min(block[..., c], where=valid[..., c], initial=np.inf))
            high[c] = max(high[c], np.max(block[..., c], where=valid[..., c], initial=-np.inf))
    return low, high


def _quantile_and_median(sample: np.ndarray, quantile: float,
                         offset: float = 0.0) -> tuple[float, float]:
    """``np.quantile(s, quantile)`` and ``np.median(s)`` of ``s = sample - offset`` in float64,
    from one partition of the (1-D) sample instead of two.

    The sample is partitioned as it is (float32 needs no float64 copy): subtracting the
    offset keeps the order, and only the few values picked are converted and shifted, so
    the result is what numpy gives on the float64 difference.
    """
    n = sample.size
    at = quantile * (n - 1)          # numpy's default ("linear") method
    below = int(np.floor(at))
    above = min(below + 1, n - 1)
    part = np.partition(sample, sorted({below, above, (n - 1) // 2, n // 2}))
    a, b, lo, hi = (np.float64(part[i]) - offset for i in (below, above, (n - 1) // 2, n // 2))
    t = at - below
    q = b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t
    return float(q), float(0.5 * (lo + hi))


@dataclass(frozen=True)
class Stretch:
    """Per-channel delinearizing stretch fitted on an image.

    ``forward`` subtracts the pedestal (minimum of the valid pixels), divides by the
    ``quantile`` of what remains, clips to [0, 1] and applies the midtones transfer
    function that maps the median to :data:`TARGET_MEDIAN`. ``inverse`` undoes it.

    Attributes
    ----------
    pedestal, scale, midtones : ndarray, shape (C,)
        Per-channel parameters (float64).
    maximum : ndarray, shape (C,)
        Largest valid input value per channel (for out-of-range reports).
    """

    pedestal: np.ndarray
    scale: np.ndarray
    midtones: np.ndarray
    maximum: np.ndarray

    @classmethod
    def fit(cls, image: np.ndarray, quantile: float,
            value_range: np.ndarray | None = None) -> Stretch:
        """Estimate the stretch of a channels-last image.

        Zero, NaN and Inf pixels are ignored. The minimum and maximum are exact; the
        quantile and median come from a regular subsample of at most
        :data:`STATS_SAMPLE` pixels (all pixels for images no larger). ``value_range``,
        the per-channel minimum and maximum of the valid pixels as
        :func:`~bgopt_plugin.core.sampling.downscale` finds them, saves the pass that
        finds them here.

        Raises
        ------
        ValueError
            If a channel has no valid pixel or is constant.
        """
        h, w, n_chan = image.shape
        # Rounded up, so the sample never exceeds STATS_SAMPLE (rounded down, a 6 MP frame
        # was sampled whole).
        step = max(1, int(np.ceil(np.sqrt(h * w / STATS_SAMPLE))))
        scale, mid = np.empty(n_chan), np.empty(n_chan)
        ped, top = _valid_range(image) if value_range is None else np.array(value_range, np.float64)
        for c in range(n_chan):
            x = image[..., c]
            if not np.isfinite(ped[c]):
                raise ValueError(f"channel {c} has no valid pixel (all NaN, Inf or zero)")
            valid = ~missing_pixels(x[::step, ::step])
            if not top[c] > ped[c]:
                raise ValueError(f"channel {c} is constant: nothing to model")
            sample = x[::step, ::step][valid]
            if sample.size < 16:
                sample = x[~missing_pixels(x)]
            q, middle = _quantile_and_median(sample, quantile, ped[c])
            scale[c] = q if q > 0 else top[c] - ped[c]
            # The median of the scaled, clipped sample (the clip and the scale are
            # monotonic, so it is the scaled median, clipped).
            median = min(max(middle / scale[c], 0.0), 1.0)
            median = min(max(median, _EPS), 1 - _EPS)
            mid[c] = float(mtf(np.float64(median), TARGET_MEDIAN))
        mid = np.clip(mid, _EPS, 1 - _EPS)
        return cls(ped, scale, mid, top)

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """Linear data to normalised linear units: ``(image - pedestal) / scale`` (float32).

        The pedestal maps to 0 and the delinearization quantile to 1; the spline is
        fitted in these units.
        """
        return ((np.asarray(image, dtype=np.float32) - self.pedestal.astype(np.float32))
                / self.scale.astype(np.float32))

    def denormalize(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Normalised linear units back to data units, chunk by chunk (float32).

        ``out`` may be ``values`` itself (in place).
        """
        x = np.asarray(values, dtype=np.float32)
        out = np.empty_like(x) if out is None else out
        sc, pe = self.scale.astype(np.float32), self.pedestal.astype(np.float32)
        for start in range(0, max(len(x), 1), _ROWS):
            block = x[start:start + _ROWS] * sc
            block += pe
            out[start:start + _ROWS] = block
        return out

    def forward(self, image: np.ndarray) -> np.ndarray:
        """Stretch linear data (channels last); [pedestal, pedestal + scale] maps onto
        [0, 1], values outside continue linearly. NaN stays NaN."""
        return extended_mtf(self.normalize(image), self.midtones.astype(np.float32))

    def unstretch(self, stretched: np.ndarray) -> np.ndarray:
        """Stretched values to normalised linear units (the inverse transfer function)."""
        y = np.asarray(stretched, dtype=np.float32)
        return extended_mtf(y, (1 - self.midtones).astype(np.float32))

    def inverse(self, stretched: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Map stretched values back to linear units (float32), chunk by chunk.

        The exact inverse of :meth:`forward` for every finite value. ``out`` may be
        ``stretched`` itself (in place).
        """
        y = np.asarray(stretched, dtype=np.float32)
        out = np.empty_like(y) if out is None else out
        for start in range(0, max(len(y), 1), _ROWS):
            out[start:start + _ROWS] = self.unstretch(y[start:start + _ROWS])
        return self.denormalize(out, out=out)
