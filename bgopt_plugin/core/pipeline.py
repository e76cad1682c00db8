"""The pipeline: prepare, protect, fit, evaluate, correct; one function, numpy in and out.

Host-agnostic: front ends convert their layouts to channels-last arrays and call
:func:`fit_background`. Each stage is its own module; TensorFlow is imported by the fit
stage (:mod:`.optimize`) alone.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from . import _tf
from .correct import correct, require_positive, sky_level
from .model import BackgroundModel, BackgroundResult
from .parameters import Config, ProgressEvent, document_options
from .prepare import as_channels_last, prepare, unmask, working_factor
from .protect import object_mask, smooth_valid
from .sampling import initial_points, initial_values
from .spline import SplineParams, robust_fit, solve
from .stretch import extended_mtf

__all__ = ["fit_background"]

#: Object protection is dropped if it would leave fewer usable working pixels than this share.
MIN_SKY_SHARE = 0.05
#: Smoothing scale (working pixels) of the image that bounds the model under objects.
CEILING_SCALE = 1.0


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


@contextlib.contextmanager
def _trainer_meanwhile(shape: tuple[int, int, int], config: Config) -> Iterator[None]:
    """Build the fit's compiled trainer in a thread while the block runs.

    Only the problem's size is needed (every working pixel is a sample), and the numpy
    stages before the fit release the GIL in their large calls. The fit waits for the
    build (see ``optimize.build_trainer``); a build that fails leaves the fit to build
    its own, which reports the error. Only once TensorFlow is loaded: its import prints
    to the process's stderr, which it silences meanwhile.
    """
    h, w, n_chan = shape
    factor = working_factor(shape, config)
    if not _tf.loaded() or config.epochs == 0 or factor > min(h, w):
        yield
        return
    from .optimize import build_trainer

    n_pixels = math.ceil(h / factor) * math.ceil(w / factor)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(build_trainer, n_pixels, n_chan, config.n_control_points, config.order,
                    config.alpha)
        yield


def _check_out(out, arr: np.ndarray) -> None:
    """``out`` is two float32 C-contiguous (H, W, C) arrays; the background may not
    overlap the image, the corrected array may only be the image itself."""
    if (len(out) != 2 or any(
            np.shape(o) != arr.shape or getattr(o, "dtype", None) != np.float32
            or not o.flags.c_contiguous or not o.flags.writeable for o in out)):
        raise ValueError(f"out must be two writeable C-contiguous float32 arrays of shape {arr.shape}")
    model, corrected = out
    same = (corrected.__array_interface__["data"][0] == arr.__array_interface__["data"][0]
            and arr.dtype == np.float32 and arr.flags.c_contiguous)
    if (np.shares_memory(model, corrected) or np.shares_memory(model, arr)
            or (np.shares_memory(corrected, arr) and not same)):
        raise ValueError("out: the background array overlaps the image or the corrected "
                         "array, or the corrected array overlaps the image without being it")


@document_options
def fit_background(image: Any, mask: Any = None, config: Config | None = None, *,
                   out: tuple[np.ndarray, np.ndarray] | None = None,
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
    out : (ndarray, ndarray), optional
        Two C-contiguous float32 arrays of the image's shape ((H, W), or channels-last
        (H, W, C)) that receive the background and the corrected image, in that order.
        A batch that passes the same two for every frame of a size writes into memory it
        has already touched instead of new pages (see benchmarks/README.md). The second
        may be ``image`` itself (a float32 array): it is then corrected in place, which
        saves a copy of the frame in memory; everything that can fail is checked before
        the first pixel is overwritten.
    **options
        Any :class:`Config` field, e.g. ``n_control_points=16, seed=1``:

        <the bgopt options>

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
    image, mask = unmask(image, mask)
    arr, squeeze = as_channels_last(image)
    h, w, n_chan = arr.shape
    if out is not None:
        if squeeze:   # a 2-D image may come with 2-D outputs
            out = tuple(o[..., None] if np.ndim(o) == 2 else o for o in out)
        _check_out(out, arr)
    # The compiled trainer is built meanwhile, where TensorFlow is loaded. One BLAS thread
    # for the solves: a thread count changes how LAPACK splits its sums, so with it the
    # same seed gives the same model on any machine and in any worker.
    with _trainer_meanwhile(arr.shape, config), threadpool_limits(limits=1, user_api="blas"):
        _emit(config, "prepare", 0, 1, message="stretching and downscaling")
        prep = prepare(arr, mask, config)
        _emit(config, "prepare", 1, 1, message="stretching and downscaling")
        data, stretch, factor = prep.data, prep.stretch, prep.factor
        working, weights, usable = prep.working, prep.weights, prep.usable
        n_usable = int(usable.sum())
        timings["prepare"] = time.perf_counter() - t0

        # --- objects, then the fit ---------------------------------------------------
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
        _emit(config, "fit", 0, config.epochs, message="fit")
        fit = fit_spline(q_all, y_st, wt, stretch.midtones, init,
                         alpha=config.alpha, learning_rate=config.learning_rate, epochs=config.epochs,
                         bound=bound, cap=cap, on_block=on_block)
        params = fit.params
        history = fit.loss_history
        if fit.epochs_run < config.epochs:   # stopped early (plateau or settled): stage complete
            _emit(config, "fit", config.epochs, config.epochs, fit.best_loss,
                  f"converged at epoch {fit.epochs_run}")
        timings["fit"] = time.perf_counter() - t1

    # --- full resolution ---------------------------------------------------------------
    t2 = time.perf_counter()
    model = BackgroundModel(params, stretch, (h, w))
    background = model.evaluate(
        (h, w), on_chunk=lambda k, n: _emit(config, "evaluate", k, n, message="full resolution"),
        out=None if out is None else out[0])
    timings["evaluate"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    # The sky level of the model; a regular subsample is exact enough for a smooth model.
    sub = max(1, max(h, w) // 512)
    level = sky_level(background[::sub, ::sub])
    corrected = np.empty_like(background) if out is None else out[1]
    if config.correction == "divide":
        # Checked on the whole model first: a chunk failing half-way would leave an
        # image corrected in place half done.
        require_positive(background)
    top_row = np.tile(stretch.maximum.astype(np.float32), w)   # one row of per-channel maxima
    top_min = np.float32(stretch.maximum.min())
    below = above = 0
    # Chunks of 2 MB (256 KB to 8 MB measured: all slower): each chunk's passes (correct,
    # restore zeros, count) then run in cache and the image's memory is crossed about once.
    rows = max(1, (2 << 20) // max(1, background[0].nbytes))
    n_chunks = -(-h // rows)
    _emit(config, "correct", 0, n_chunks, message="correction")
    for k, start in enumerate(range(0, h, rows)):
        part = slice(start, start + rows)
        done = correct(data[part], background[part], config, level=level, out=corrected[part])
        # Counted only where the chunk's minimum or maximum says there is something to
        # count (two reductions instead of two comparisons and counts: the correction went
        # from 3.9 to 2.7 copies of the frame). A NaN minimum or maximum means counting.
        # NaN compares False; an infinite input stays infinite and is not a valid pixel.
        flat = done.reshape(done.shape[0], -1)
        lowest, highest = done.min(), done.max()
        low = 0 if lowest >= 0 else int(np.count_nonzero(flat < 0))
        high = 0 if highest <= top_min else int(np.count_nonzero(flat > top_row))
        if low and not np.isfinite(lowest):
            low -= int(np.count_nonzero(np.isneginf(done)))
        if high:
            high -= int(np.count_nonzero(np.isposinf(done)))
        below, above = below + low, above + high
        if (k + 1) % 16 == 0 or k + 1 == n_chunks:
            _emit(config, "correct", k + 1, n_chunks, message="correction")
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
        control_points=control_points, loss_history=history, epochs_run=fit.epochs_run,
        timings=timings, out_of_range=out_of_range, config=config, model=model,
        downscaling_factor=factor, sky_level=level,
        info={"jit_compiled": fit.jit_compiled, "valid_working_pixels": n_usable,
              "protected_pixels": int(protected.sum()), **info},
    )
