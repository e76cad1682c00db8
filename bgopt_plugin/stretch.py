"""Delinearizing stretch: pedestal, quantile scaling and the midtones transfer function.

The stretch reveals the faint background so the loss sees it at a useful scale, and it
is exactly invertible so the fitted model can be brought back to linear units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Stretch", "mtf", "TARGET_MEDIAN"]

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
    """

    pedestal: np.ndarray
    scale: np.ndarray
    midtones: np.ndarray

    @classmethod
    def fit(cls, image: np.ndarray, quantile: float) -> Stretch:
        """Estimate the stretch of a channels-last image with NaN for missing pixels.

        Raises
        ------
        ValueError
            If a channel has no valid pixel or is constant.
        """
        n_chan = image.shape[-1]
        ped = np.empty(n_chan)
        scale = np.empty(n_chan)
        mid = np.empty(n_chan)
        for c in range(n_chan):
            values = image[..., c]
            values = values[np.isfinite(values)]
            if values.size == 0:
                raise ValueError(f"channel {c} has no valid pixel (all NaN, Inf or zero)")
            ped[c] = float(values.min())
            shifted = values.astype(np.float64) - ped[c]
            scale[c] = float(np.quantile(shifted, quantile))
            if not scale[c] > 0:
                scale[c] = float(shifted.max())
            if not scale[c] > 0:
                raise ValueError(f"channel {c} is constant: nothing to model")
            median = float(np.median(np.clip(shifted / scale[c], 0.0, 1.0)))
            median = min(max(median, _EPS), 1 - _EPS)
            mid[c] = float(mtf(np.float64(median), TARGET_MEDIAN))
        mid = np.clip(mid, _EPS, 1 - _EPS)
        return cls(ped, scale, mid)

    def forward(self, image: np.ndarray) -> np.ndarray:
        """Stretch linear data (channels last) into [0, 1]; NaN stays NaN."""
        out = (image.astype(np.float32) - self.pedestal.astype(np.float32)) / self.scale.astype(np.float32)
        np.clip(out, 0.0, 1.0, out=out)
        return mtf(out, self.midtones.astype(np.float32))

    def inverse(self, stretched: np.ndarray) -> np.ndarray:
        """Map stretched values in [0, 1] back to linear units (float32).

        Values outside [0, 1] are clipped first: the inverse transfer function has a
        pole just outside that range.
        """
        y = np.clip(np.asarray(stretched, dtype=np.float32), 0.0, 1.0)
        lin = mtf(y, (1 - self.midtones).astype(np.float32))
        lin *= self.scale.astype(np.float32)
        lin += self.pedestal.astype(np.float32)
        return lin
