"""The pipeline: :func:`fit_background`, bgopt's stages in order, numpy in and out.

Host-agnostic: front ends convert their layouts to channels-last arrays and call
:func:`fit_background`. Each stage is a function of its own module:

1. :func:`~.prepare.prepare`: validate, stretch, downscale and mask;
2. :func:`~.protect.find_objects`: the objects to leave out of the fit;
3. :func:`~.initial.initial_solve`: the robust numpy fit the descent starts from;
4. :func:`~.optimize.descend`: the gradient-descent fit (TensorFlow, imported there only);
5. :meth:`~.model.BackgroundModel.evaluate`: the model at full resolution;
6. :func:`~.correct.correct_image`: remove it and count what leaves range.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from . import _tf
from .correct import correct_image
from .initial import initial_solve
from .model import BackgroundModel, BackgroundResult
from .parameters import Config, document_options, emit
from .prepare import as_channels_last, prepare, unmask, working_factor
from .protect import find_objects

__all__ = ["fit_background"]

T = TypeVar("T")


@contextlib.contextmanager
def _trainer_meanwhile(shape: tuple[int, int, int], config: Config) -> Iterator[None]:
    """Build the fit's compiled trainer in a thread while the block runs.

    Only the problem's size is needed (every working pixel is a sample), and the numpy
    stages before the fit release the GIL in their large calls. The fit waits for the
    build (see ``optimize.build_trainer``); a build that fails leaves the fit to build
    its own, which reports the error. Only once TensorFlow is loaded.
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


def _check_out(out, arr: np.ndarray, squeeze: bool):
    """``out`` as two float32 C-contiguous (H, W, C) arrays, or None; the background may
    not overlap the image, the corrected array may only be the image itself."""
    if out is None:
        return None
    if squeeze:   # a 2-D image may come with 2-D outputs
        out = tuple(o[..., None] if np.ndim(o) == 2 else o for o in out)
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
    return out


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
    if config.seed in (None, "random"):   # drawn now, and recorded in the result
        config = config.replace(seed=int(np.random.SeedSequence().entropy % 2**31))
    t0 = time.perf_counter()
    image, mask = unmask(image, mask)
    arr, squeeze = as_channels_last(image)
    h, w, _ = arr.shape
    out = _check_out(out, arr, squeeze)
    timings: dict[str, float] = {}
    stage = functools.partial(_run_stage, config, timings)
    # The compiled trainer is built meanwhile, where TensorFlow is loaded.
    with _trainer_meanwhile(arr.shape, config):
        prep = stage("prepare", "stretching and downscaling", prepare, arr, mask, config)
        protection = stage("protect", "finding objects", find_objects, prep, config)
        init = stage("initial", None, initial_solve, prep, protection, config)
        from .optimize import descend

        fit = stage("fit", None, descend, prep, protection, init, config)
    model = BackgroundModel(fit.params, prep.stretch, (h, w))
    background = stage("evaluate", None, lambda: model.evaluate(
        (h, w), on_chunk=lambda k, n: emit(config, "evaluate", k, n, message="full resolution"),
        out=None if out is None else out[0]))
    corrected, level, out_of_range = stage(
        "correct", None, correct_image, prep.data, background, config, prep.stretch.maximum,
        None if out is None else out[1])
    timings["total"] = time.perf_counter() - t0
    emit(config, "done", 1, 1, message="done")
    shaped = (lambda a: a[..., 0]) if squeeze else (lambda a: a)
    cp = fit.params.centers.astype(np.float64) * max(h, w) - 0.5
    return BackgroundResult(
        background=shaped(background), corrected=shaped(corrected),
        working_image=shaped(prep.working), working_mask=shaped(protection.weights),
        protected=protection.protected, control_points=np.stack([cp[:, 1], cp[:, 0]], axis=1),
        loss_history=fit.loss_history, epochs_run=fit.epochs_run, timings=timings,
        out_of_range=out_of_range, config=config, model=model, downscaling_factor=prep.factor,
        sky_level=level, protected_fraction=protection.fraction,
        info={"jit_compiled": fit.jit_compiled, "still_improving": fit.still_improving,
              "valid_working_pixels": int(prep.usable.sum()),
              "protected_pixels": int(protection.protected.sum()), **protection.info},
    )


def _run_stage(config: Config, timings: dict[str, float], name: str, message: str | None,
               run: Callable[..., T], *args: Any) -> T:
    """Run one stage, timed; stages without a progress of their own get a start and an
    end event named ``message``."""
    start = time.perf_counter()
    if message:
        emit(config, name, 0, 1, message=message)
    result = run(*args)
    if message:
        emit(config, name, 1, 1, message=message)
    timings[name] = time.perf_counter() - start
    return result
