"""The fitted model and the result of a fit (numpy only: re-evaluation needs no TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .parameters import Config
from .spline import SplineParams, evaluate_image
from .stretch import Stretch

__all__ = ["BackgroundModel", "BackgroundResult", "evaluation_step"]

#: The spline is evaluated exactly on a grid of about this many points along the long
#: side, then brought to every pixel by cubic convolution. Measured on the benchmark
#: masters (largest difference from the exact spline at 20 000 pixels, / the model's
#: range; bound 1e-3): 256 points 1e-6 at 2.0 copies of the frame (24 MP) and 7.4
#: copies (6 MP, where the fixed grid cost dominates); 64 points 5e-5 at 1.1 and 2.1.
COARSE_GRID_LONG_SIDE = 64


def evaluation_step(shape: tuple[int, int]) -> int:
    """Grid step used for the full-resolution evaluation of an image of ``shape``.

    Examples
    --------
    >>> evaluation_step((40, 60)), evaluation_step((4000, 6000))
    (1, 93)
    """
    return max(1, int(max(shape) // COARSE_GRID_LONG_SIDE))


@dataclass
class BackgroundModel:
    """A fitted background: the spline in normalised linear units plus the stretch that
    holds the units (pedestal and scale per channel).

    Call :meth:`evaluate` to get the linear background at any resolution with the
    same aspect ratio as the fitted image. Needs numpy only.
    """

    spline: SplineParams
    stretch: Stretch
    shape: tuple[int, int]

    def evaluate_normalized(self, shape: tuple[int, int] | None = None, step: int | None = None,
                            on_chunk=None) -> np.ndarray:
        """Model in normalised linear units (pedestal 0, quantile 1), (H, W, C) float32."""
        return self._evaluate(shape, step, on_chunk, None)

    def evaluate(self, shape: tuple[int, int] | None = None, step: int | None = None,
                 on_chunk=None, out: np.ndarray | None = None) -> np.ndarray:
        """Linear background, (H, W, C) float32.

        Parameters
        ----------
        shape : (int, int), optional
            Output size; defaults to the fitted image size.
        step : int, optional
            Exact-evaluation grid step (see :func:`evaluation_step`).
        out : ndarray, optional
            C-contiguous (H, W, C) float32 array to write into.
        """
        return self._evaluate(shape, step, on_chunk, (self.stretch.scale, self.stretch.pedestal),
                              out)

    def _evaluate(self, shape, step, on_chunk, affine, out=None) -> np.ndarray:
        shape = tuple(shape or self.shape)[:2]
        step = evaluation_step(shape) if step is None else int(step)
        return evaluate_image(self.spline, shape, step=step, on_chunk=on_chunk, affine=affine,
                              out=out)


@dataclass
class BackgroundResult:
    """What :func:`fit_background` returns.

    Arrays have the rank of the input: (H, W) for a 2-D input, else (H, W, C).

    Attributes
    ----------
    background : ndarray, float32
        Linear background model at full resolution.
    corrected : ndarray, float32
        Input with the background removed (see ``Config.correction`` and ``pedestal``).
        Pixels that were missing in the input (0, NaN, Inf) are returned unchanged.
    working_image : ndarray, float32
        Stretched, downscaled image the spline was fitted to.
    working_mask : ndarray, float32
        Loss weights of the working pixels in [0, 1], protection included.
    protected : ndarray, bool
        Working pixels masked by automatic object protection, (h, w).
    protected_fraction : float
        Share of the usable working pixels (with data, not masked by the user) that
        protection left out of the fit.
    control_points : ndarray, (N, 2)
        Fitted control points as (x, y) full-resolution pixel coordinates.
    loss_history : list of float
        Loss per epoch, protection refits appended.
    epochs_run : int
        Epochs run in total.
    timings : dict
        Seconds per stage.
    out_of_range : dict
        ``{"below": n, "above": n}``: valid pixels of ``corrected`` below 0 or above the
        input's maximum. Nothing is clipped.
    config : Config
        The parameters used.
    model : BackgroundModel
        The fitted model, for re-evaluation.
    downscaling_factor : int
        The factor actually used.
    sky_level : ndarray (C,), float32
        Per-channel median of the model: what ``pedestal="median"`` added back
        (subtract) or multiplied back (divide). Pass it to :func:`correct` and
        :func:`correction_factor` to repeat this correction exactly.
    info : dict
        Diagnostics: whether XLA compiled the step, whether the fit stopped at its epoch
        limit with the loss still falling (``still_improving``), usable and protected
        working pixels.
    """

    background: np.ndarray
    corrected: np.ndarray
    working_image: np.ndarray
    working_mask: np.ndarray
    protected: np.ndarray
    control_points: np.ndarray
    loss_history: list[float]
    epochs_run: int
    timings: dict[str, float]
    out_of_range: dict[str, int]
    config: Config
    model: BackgroundModel
    downscaling_factor: int
    sky_level: np.ndarray
    protected_fraction: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def evaluate(self, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Linear background at ``shape`` (same rank convention as ``background``)."""
        out = self.model.evaluate(shape)
        return out[..., 0] if self.background.ndim == 2 else out

