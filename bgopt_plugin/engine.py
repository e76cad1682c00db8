"""The pipeline: validate, stretch, downscale, mask, fit, protect, evaluate, correct.

Host-agnostic: numpy in, numpy out. Front ends convert their layouts to channels-last
arrays and call :func:`fit_background`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import Config, ProgressEvent
from .protect import object_mask, smooth_valid
from .sampling import auto_factor, downscale, initial_points, initial_values, missing_pixels, threshold_mask
from .spline import SplineParams, evaluate_image, robust_fit, solve
from .stretch import Stretch, extended_mtf

__all__ = ["fit_background", "prepare", "Prepared", "BackgroundResult", "BackgroundModel",
           "evaluation_step"]

#: Evaluate exactly on every ``step``-th pixel (then bicubic) when the long side exceeds this.
EXACT_EVAL_LONG_SIDE = 256
#: Object protection is dropped if it would leave fewer usable working pixels than this share.
MIN_SKY_SHARE = 0.05
#: Smoothing scale (working pixels) of the image that bounds the model under objects.
CEILING_SCALE = 1.0
_ROWS = 256  # rows per chunk for full-resolution passes


def evaluation_step(shape: tuple[int, int]) -> int:
    """Grid step used for the full-resolution evaluation of an image of ``shape``.

    Examples
    --------
    >>> evaluation_step((200, 250)), evaluation_step((4000, 6000))
    (1, 23)
    """
    return max(1, int(max(shape) // EXACT_EVAL_LONG_SIDE))


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
        shape = tuple(shape or self.shape)[:2]
        step = evaluation_step(shape) if step is None else int(step)
        return evaluate_image(self.spline, shape, step=step, on_chunk=on_chunk)

    def evaluate(self, shape: tuple[int, int] | None = None, step: int | None = None,
                 on_chunk=None) -> np.ndarray:
        """Linear background, (H, W, C) float32.

        Parameters
        ----------
        shape : (int, int), optional
            Output size; defaults to the fitted image size.
        step : int, optional
            Exact-evaluation grid step (see :func:`evaluation_step`).
        """
        out = self.evaluate_normalized(shape, step, on_chunk)
        return self.stretch.denormalize(out, out=out)


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
    info: dict[str, Any] = field(default_factory=dict)

    def evaluate(self, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Linear background at ``shape`` (same rank convention as ``background``)."""
        out = self.model.evaluate(shape)
        return out[..., 0] if self.background.ndim == 2 else out


def _as_channels_last(image: Any) -> tuple[np.ndarray, bool]:
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


def _unmask(image: Any, mask: Any) -> tuple[Any, Any]:
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


def _emit(config: Config, stage: str, step: int = 0, total: int = 0,
          loss: float | None = None, message: str = "") -> None:
    if config.progress is not None:
        config.progress(ProgressEvent(stage, step, total, loss, message))


def _ceiling(linear: np.ndarray, protected: np.ndarray, query: np.ndarray, noise: np.ndarray):
    """Upper bounds for the model on protected pixels: the lightly smoothed image plus
    two noise sigmas of that smoothed image (the sky is never brighter than the image).

    ``noise`` is the per-channel pixel noise of ``linear`` (as object detection measured it).
    """
    valid = np.isfinite(linear).all(axis=-1)
    bound = np.empty_like(linear, dtype=np.float64)
    for c in range(linear.shape[-1]):
        bound[..., c] = (smooth_valid(linear[..., c], valid, CEILING_SCALE, truncate=4.0)
                         + 2.0 * noise[c] / (2 * np.sqrt(np.pi) * CEILING_SCALE))
    where = (protected & valid).reshape(-1)
    return query[where], bound.reshape(-1, linear.shape[-1])[where]


@dataclass
class Prepared:
    """The working image and what it was made from (see :func:`prepare`)."""

    data: np.ndarray       # (H, W, C) float32 input (the caller's array when already float32)
    stretch: Stretch
    factor: int
    working: np.ndarray    # (h, w, C) stretched, downscaled; NaN where no data
    weights: np.ndarray    # (h, w, C) loss weights in [0, 1]
    usable: np.ndarray     # (h, w) bool: pixels with a non-zero weight in some channel


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
    arr, _ = _as_channels_last(image)
    h, w, n_chan = arr.shape
    user_weights = _as_weights(mask, arr.shape)
    # Read-only from here on: the caller's float32 array is used without a copy.
    data = arr if arr.dtype == np.float32 else arr.astype(np.float32)
    if user_weights is not None and not (user_weights > 0).any():
        raise ValueError("the mask excludes every pixel")
    stretch = Stretch.fit(data, config.delinearization_quantile)
    factor = auto_factor((h, w)) if config.downscaling_factor == "auto" else config.downscaling_factor
    if factor > min(h, w):
        raise ValueError(f"image ({h}x{w}) is smaller than the downscaling factor {factor}")
    if config.downscaling_func == "median":
        # The stretch is monotonic, so it commutes with the block median (exactly for odd
        # counts): stretch the small working image instead of the full frame.
        working = stretch.forward(downscale(data, factor, "median"))
    else:
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


def fit_background(image: Any, mask: Any = None, config: Config | None = None,
                   **options: Any) -> BackgroundResult:
    """Fit a smooth background to a linear image and remove it.

    Parameters
    ----------
    image : array_like, (H, W) or (H, W, C) with C in {1, 3}
        Linear data of any real dtype (integers are used as they are, not rescaled).
        Zero, NaN and Inf pixels are treated as missing.
    mask : array_like, optional
        Weights in [0, 1], (H, W) or (H, W, C): 1 = use, 0 = ignore. A numpy masked
        array's own mask (True = bad) is honoured as well, in either argument.
    config : Config, optional
        Parameters; keyword ``options`` override its fields.
    **options
        Any :class:`Config` field, e.g. ``n_control_points=16, seed=1``.

    Returns
    -------
    BackgroundResult

    Raises
    ------
    ValueError
        For a constant, empty or fully masked image, too few valid working pixels,
        an image smaller than the downscaling factor, a mask of the wrong shape, an
        all-NaN channel, or a wrong shape or dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from bgopt_plugin import fit_background
    >>> yy, xx = np.mgrid[0:96, 0:128]
    >>> sky = 0.1 + 0.001 * xx + np.random.default_rng(0).normal(0, 0.002, (96, 128))
    >>> res = fit_background(sky, seed=1, epochs=100, protect=False)
    >>> res.background.shape, res.corrected.dtype
    ((96, 128), dtype('float32'))
    """
    config = config or Config()
    if options:
        config = Config.from_options(**{**config.to_dict(), "progress": config.progress, **options})
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    image, mask = _unmask(image, mask)
    arr, squeeze = _as_channels_last(image)
    h, w, n_chan = arr.shape
    _emit(config, "prepare", message="stretching and downscaling")
    prep = prepare(arr, mask, config)
    data, stretch, factor = prep.data, prep.stretch, prep.factor
    working, weights, usable = prep.working, prep.weights, prep.usable
    n_usable = int(usable.sum())
    timings["prepare"] = time.perf_counter() - t0

    # --- objects, then the fit -------------------------------------------------------
    t1 = time.perf_counter()
    long_side = float(max(h, w))
    hw_, ww_ = working.shape[:2]
    extent = (h / long_side, w / long_side)
    iy, ix = np.mgrid[0:hw_, 0:ww_]
    q_all = np.stack([(iy + 0.5) * factor / long_side, (ix + 0.5) * factor / long_side],
                     axis=-1).reshape(-1, 2)
    linear = stretch.unstretch(working)       # normalised linear units, NaN where no data
    protected = np.zeros((hw_, ww_), dtype=bool)
    found = None
    info: dict[str, Any] = {}
    if config.protect:
        _emit(config, "protect", 0, 1, message="finding objects")
        found = object_mask(linear, np.isfinite(working).all(axis=-1), weights, q_all, extent,
                            n_final=config.n_control_points, seed_sigma=config.protect_sigma,
                            grow=config.protect_grow, order=config.order)
        left = weights * ~found.flags[..., None]
        n_left = int((left.max(axis=-1) > 0).sum())
        if n_left >= max(MIN_SKY_SHARE * n_usable, 3 * (config.n_control_points + 3)):
            protected = found.flags & usable
            weights = left
        else:
            info["protection_skipped"] = "objects would leave too little sky"
        info["regions_returned_to_sky"] = found.cleared
        _emit(config, "protect", 1, 1, message="finding objects")
    timings["protect"] = time.perf_counter() - t1

    from .optimize import fit_spline

    t1 = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    points = initial_points(config.n_control_points, extent, config.initializer, rng).astype(np.float64)
    wt = weights.reshape(-1, n_chan)
    y_lin = np.nan_to_num(linear).reshape(-1, n_chan)
    ceiling = _ceiling(linear, protected, q_all, found.noise) if protected.any() else None
    if config.init_solve == "lstsq":
        sel = wt.max(axis=1) > 0
        init = robust_fit(points, q_all[sel], y_lin[sel], wt[sel], config.order,
                          smoothing=config.smoothing, two_sided=config.protect, ceiling=ceiling)
    else:
        vals = initial_values(working, weights, points, float(max(hw_, ww_)))
        w_, v_ = solve(points, stretch.unstretch(vals), config.order, config.regularization)
        init = SplineParams(points, w_, v_, config.order)

    def on_block(done: int, loss: float) -> None:
        _emit(config, "fit", done, config.epochs, loss, "fit")

    y_st = np.nan_to_num(working).reshape(-1, n_chan)
    bound = cap = None
    if ceiling is not None:
        bound = np.zeros_like(y_st)
        cap = np.zeros_like(y_st)
        under = (protected & np.isfinite(working).all(axis=-1)).reshape(-1)
        bound[under] = extended_mtf(ceiling[1].astype(np.float32), stretch.midtones.astype(np.float32))
        cap[under] = 1.0
    fit = fit_spline(q_all, y_st, wt, stretch.midtones, init,
                     alpha=config.alpha, learning_rate=config.learning_rate, epochs=config.epochs,
                     bound=bound, cap=cap, on_block=on_block)
    params = fit.params
    history = fit.loss_history
    timings["fit"] = time.perf_counter() - t1

    # --- full resolution ---------------------------------------------------------------
    t2 = time.perf_counter()
    model = BackgroundModel(params, stretch, (h, w))
    background = model.evaluate(
        (h, w), on_chunk=lambda k, n: _emit(config, "evaluate", k, n, message="full resolution"))
    timings["evaluate"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    # The sky level of the model; a regular subsample is exact enough for a smooth model.
    sub = max(1, evaluation_step((h, w)) // 2)
    level = _level(background[::sub, ::sub])
    corrected = np.empty_like(background)
    top = stretch.maximum.astype(np.float32)
    below = above = 0
    for start in range(0, h, _ROWS):
        rows = slice(start, start + _ROWS)
        d = data[rows]
        missing = missing_pixels(d)
        out = corrected[rows]
        out[...] = correct(d, background[rows], config, level=level, missing=missing)
        valid = ~missing
        below += int(np.count_nonzero((out < 0) & valid))
        above += int(np.count_nonzero((out > top) & valid))
    out_of_range = {"below": below, "above": above}
    timings["correct"] = time.perf_counter() - t3
    timings["total"] = time.perf_counter() - t0

    cp = params.centers.astype(np.float64) * long_side - 0.5
    control_points = np.stack([cp[:, 1], cp[:, 0]], axis=1)
    _emit(config, "done", 1, 1, message="done")

    def shaped(a: np.ndarray) -> np.ndarray:
        return a[..., 0] if squeeze else a

    return BackgroundResult(
        background=shaped(background), corrected=shaped(corrected),
        working_image=shaped(working), working_mask=shaped(weights), protected=protected,
        control_points=control_points, loss_history=history, epochs_run=len(history),
        timings=timings, out_of_range=out_of_range, config=config, model=model,
        downscaling_factor=factor,
        info={"jit_compiled": fit.jit_compiled, "valid_working_pixels": n_usable,
              "protected_pixels": int(protected.sum()), **info},
    )


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
    level = _level(background) if level is None else level
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


def _level(background: np.ndarray) -> np.ndarray:
    """Per-channel median of a (..., C) model."""
    return np.median(background.reshape(-1, background.shape[-1]), axis=0).astype(np.float32)


def correction_factor(background: np.ndarray, config: Config,
                      level: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel multiplier of a ``divide`` correction (``median(model) / model``)."""
    if not (background > 0).all():
        raise ValueError("correction='divide' needs a positive background model; "
                         "use correction='subtract' for data with a pedestal at or below 0")
    if config.pedestal == "median":
        numerator = _level(background) if level is None else level
    else:
        numerator = np.float32(1.0)
    return (numerator / background).astype(np.float32)
