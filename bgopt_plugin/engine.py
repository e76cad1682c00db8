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
from .protect import protection_mask, robust_sigma
from .sampling import auto_factor, downscale, initial_points, initial_values, missing_pixels, threshold_mask
from .stretch import Stretch

__all__ = ["fit_background", "prepare", "Prepared", "BackgroundResult", "BackgroundModel",
           "evaluation_step"]

#: Evaluate exactly on every ``step``-th pixel (then bicubic) when the long side exceeds this.
EXACT_EVAL_LONG_SIDE = 256
_IRLS_ROUNDS = 4
# Epoch budget of the first fit when protection refits follow, and of each refit, as
# shares of ``Config.epochs`` (measured in benchmarks/README.md).
_FIRST_SHARE = 1.0
_REFIT_SHARE = 0.25
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
    """A fitted background: the spline in stretched units plus the stretch to undo.

    Call :meth:`evaluate` to get the linear background at any resolution with the
    same aspect ratio as the fitted image.
    """

    spline: Any  # bgopt_plugin.spline.SplineParams
    stretch: Stretch
    shape: tuple[int, int]

    def evaluate_stretched(self, shape: tuple[int, int] | None = None, step: int | None = None,
                           on_chunk=None) -> np.ndarray:
        """Model in stretched [0, 1] units, (H, W, C) float32."""
        from .spline import evaluate_image

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
        return self.stretch.inverse(self.evaluate_stretched(shape, step, on_chunk))


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


def _spline_init(points, working, weights, q, y, wt, config: Config):
    from .spline import SplineParams, solve, solve_lstsq

    if config.init_solve == "lstsq":
        # Robust, asymmetric least squares: positive outliers (stars, objects) lose
        # weight over a few reweighting rounds, as the asymmetric loss would do.
        rw = wt.copy()
        for _ in range(_IRLS_ROUNDS):
            w, v = solve_lstsq(points, q, y, rw, config.order)
            r = y - SplineParams(points.astype(np.float32), w, v, config.order)(q)
            for k in range(r.shape[1]):
                used = wt[:, k] > 0
                centre = np.median(r[used, k])
                s = robust_sigma(r[used, k]) + 1e-9
                excess = np.maximum(r[:, k] - centre, 0) / (2 * s)
                rw[:, k] = wt[:, k] / (1 + excess**2)
    else:
        unit = float(max(working.shape[:2]))
        vals = initial_values(working, weights, points, unit)
        w, v = solve(points, vals, config.order, config.regularization)
    return SplineParams(points.astype(np.float32), w, v, config.order)


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
        Weights in [0, 1], (H, W) or (H, W, C): 1 = use, 0 = ignore.
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
    arr, squeeze = _as_channels_last(image)
    h, w, n_chan = arr.shape
    _emit(config, "prepare", message="stretching and downscaling")
    prep = prepare(arr, mask, config)
    data, stretch, factor = prep.data, prep.stretch, prep.factor
    working, weights, usable = prep.working, prep.weights, prep.usable
    n_usable = int(usable.sum())
    timings["prepare"] = time.perf_counter() - t0

    # --- fit -------------------------------------------------------------------------
    from .optimize import fit_spline, make_trainer

    t1 = time.perf_counter()
    long_side = float(max(h, w))
    hw_, ww_ = working.shape[:2]
    iy, ix = np.mgrid[0:hw_, 0:ww_]
    q_all = np.stack([(iy + 0.5) * factor / long_side, (ix + 0.5) * factor / long_side],
                     axis=-1).reshape(-1, 2).astype(np.float32)
    y_all = np.nan_to_num(working, nan=0.0).reshape(-1, n_chan)
    rng = np.random.default_rng(config.seed)
    points = initial_points(config.n_control_points, (h / long_side, w / long_side),
                            config.initializer, rng)

    def on_block(stage: str, total: int, message: str):
        def cb(done: int, loss: float) -> None:
            _emit(config, stage, done, total, loss, message)
        return cb

    history: list[float] = []
    protected = np.zeros((hw_, ww_), dtype=bool)
    # Every pixel with data enters the sample set once; protection only zeroes weights,
    # so the compiled training step is built once.
    sel = usable.reshape(-1)
    q, y = q_all[sel], y_all[sel]
    rounds = 1 + (config.protect_iterations if config.protect else 0)
    params = None
    trainer = None
    for round_ in range(rounds):
        wt = weights.reshape(-1, n_chan)[sel]
        init = _spline_init(points if params is None else params.centers,
                            working, weights, q, y, wt, config)
        if trainer is None and config.epochs > 0:
            trainer = make_trainer(q, y, wt, init, alpha=config.alpha,
                                   learning_rate=config.learning_rate)
        stage = "fit" if round_ == 0 else "protect"
        share = (_FIRST_SHARE if rounds > 1 else 1.0) if round_ == 0 else _REFIT_SHARE
        n_epochs = int(config.epochs * share)
        fit = fit_spline(q, y, wt, init, alpha=config.alpha, learning_rate=config.learning_rate,
                         epochs=n_epochs, trainer=trainer,
                         on_block=on_block(stage, n_epochs, "fit" if round_ == 0 else f"refit {round_}"))
        params = fit.params
        history.extend(fit.loss_history)
        if round_ == rounds - 1:
            break
        model_w = params(q_all).reshape(hw_, ww_, n_chan)
        residual = np.where(np.isfinite(working), working - model_w, np.nan)
        flags = protection_mask(residual, working, weights, config.protect_sigma,
                                config.protect_grow)
        new = flags & ~protected & usable
        remaining = usable & ~(protected | flags)
        if not new.any() or remaining.sum() < max(config.n_control_points, 0.25 * n_usable):
            break
        protected |= flags
        weights = weights * ~protected[..., None]
    jit = bool(trainer is not None and trainer.jit)
    timings["fit"] = time.perf_counter() - t1

    # --- full resolution ---------------------------------------------------------------
    t2 = time.perf_counter()
    model = BackgroundModel(params, stretch, (h, w))
    background = model.evaluate_stretched(
        (h, w), on_chunk=lambda k, n: _emit(config, "evaluate", k, n, message="full resolution"))
    stretch.inverse(background, out=background)
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
        info={"jit_compiled": jit, "valid_working_pixels": n_usable,
              "protected_pixels": int(protected.sum())},
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
