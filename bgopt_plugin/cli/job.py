"""One file's work for the bgopt command: read, fit, write, report.

Shared by the batch loop (:mod:`.app`) and the ``-j`` workers (:mod:`.parallel`), which
therefore import this module and never each other.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from .. import io as bio
from ..core import ProgressEvent, find_objects, fit_background, missing_pixels, prepare
from ..frontend.options import config_from_args
from ..frontend.process import import_tensorflow_during
from ..frontend.progress import TqdmProgress
from ..io import MODEL_KIND, history_lines, result_keywords, reusable
from .batch import Job

__all__ = ["Terminated", "Reporter", "process_job", "failure_message", "default_jobs",
           "quick_exit", "silence_stdout", "available_memory"]

T = TypeVar("T")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every temporary file is removed."""


#: What a worker holds besides its frame (TensorFlow's runtime and the compiled loop),
#: and per byte of its frame as float32: a 24 MP RGB frame's worker peaked at 1.2-1.3 GB
#: (benchmarks/README.md).
WORKER_BASE = 450 << 20
WORKER_PER_FRAME_BYTE = 3.0


def default_jobs(sources: list[Path] = ()) -> int:
    """Workers for a batch: the cores this process may use, but no more than the available
    memory holds at a worker's peak for the largest of ``sources``.

    A file's frame is estimated from its size, as 16-bit samples (a float32 file then
    counts double: the estimate errs on the safe side).
    """
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        cores = max(1, os.cpu_count() or 1)
    sizes = []
    for src in sources:
        with contextlib.suppress(OSError):
            sizes.append(os.stat(src).st_size)
    available = available_memory()
    if not sizes or available is None:
        return cores
    peak = WORKER_BASE + WORKER_PER_FRAME_BYTE * 2 * max(sizes)
    return max(1, min(cores, int(available // peak)))


def available_memory() -> int | None:
    """Bytes of memory available to new work (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class Reporter:
    """Console output: tqdm bars for the fit and the evaluation, summaries, errors.

    ``quiet`` 0 shows everything; 1 (``-q``) drops the progress bars and notes but keeps
    each file's line and the batch's closing line; 2 (``-qq``) shows errors and warnings
    only.
    """

    def __init__(self, quiet: int, verbose: bool):
        self.quiet, self.verbose = int(quiet), verbose
        self.bars = TqdmProgress()

    def _out(self, text: str) -> None:
        # A closed or broken stdout (``| head``) must never turn finished work into a
        # failure: from then on, standard output is dropped.
        try:
            print(text, flush=True)
        except (OSError, ValueError):
            silence_stdout()
            self.quiet, self.verbose = 2, False

    def info(self, text: str) -> None:
        """A note (skipped files, hints): hidden by ``-q``."""
        if not self.quiet:
            self._out(text)

    def result(self, text: str) -> None:
        """A file's outcome: hidden by ``-qq`` only."""
        if self.quiet < 2:
            self._out(text)

    summary = result

    def detail(self, text: Callable[[], str]) -> None:
        """Print ``text()`` in verbose mode; it is not computed otherwise (image
        statistics cost seconds on a large frame)."""
        if self.verbose:
            self._out(text())

    def error(self, text: str) -> None:
        self.close()
        print(f"bgopt: error: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bars.close()

    def progress(self, ev: ProgressEvent) -> None:
        if not self.quiet:
            with contextlib.suppress(OSError, ValueError):
                self.bars(ev)


def silence_stdout() -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _stats(label: str, arr: np.ndarray) -> str:
    """Per-channel min / median / max; the median of a regular ~1 MP subsample."""
    a = arr if arr.ndim == 3 else arr[..., None]
    step = max(1, int(np.sqrt(a.shape[0] * a.shape[1] / 1e6)))
    fmt = lambda v: "[" + " ".join(f"{x:.4f}" for x in v) + "]"  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        chans = [a[..., c] for c in range(a.shape[-1])]
        lo = [np.nanmin(x) for x in chans]
        med = [np.nanmedian(x[::step, ::step]) for x in chans]
        hi = [np.nanmax(x) for x in chans]
    return f"  [{label:12s}] min / median / max = {fmt(lo)} / {fmt(med)} / {fmt(hi)}"


def _read_mask(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    mask = bio.read_image(path).data
    if mask.shape[:2] != shape[:2]:
        raise bio.ImageIOError(path, f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                                     f"{shape[1]}x{shape[0]}")
    if mask.shape[2] not in (1, shape[2]):
        raise bio.ImageIOError(path, f"mask has {mask.shape[2]} channels, the image {shape[2]}")
    return mask


def failure_message(job: Job, exc: Exception) -> str:
    """The one line a failed file gets: IO errors already name the file."""
    return str(exc) if isinstance(exc, bio.ImageIOError) else f"{job.src}: {exc}"


_BUFFERS: dict[str, np.ndarray] = {}


def _buffer(role: str, shape: tuple[int, int, int]) -> np.ndarray:
    """This process's array for ``role`` ("model", "corrected"), reused by every file of
    one size: writing into pages already touched costs a fraction of new ones
    (benchmarks/README.md)."""
    _BUFFERS[role] = reusable(_BUFFERS.get(role), shape)
    return _BUFFERS[role]


def _timed_read(src: Path, roles: tuple[str, ...] = ()) -> tuple[bio.Image, float]:
    """Read ``src``; then touch every page of the buffers for ``roles`` (a new array's
    pages cost their first write; overlapped with the TensorFlow import here)."""
    t0 = time.perf_counter()
    image = bio.read_image(src, out=_BUFFERS.get("image"))
    seconds = time.perf_counter() - t0
    for role in roles:
        _buffer(role, image.shape).fill(0)
    return image, seconds


def _read(src: Path, fit_follows: bool, roles: tuple[str, ...]) -> tuple[bio.Image, float]:
    """Read ``src`` into this process's frame buffer; returns the image and the read time.

    When a fit will follow and TensorFlow is not loaded yet (a process's first file),
    the file is read, and the new output buffers (``roles``) touched, while TensorFlow
    is imported (see :func:`~bgopt_plugin.frontend.process.import_tensorflow_during`).
    The read prints nothing, and the only warnings it can raise are astropy's, which the
    FITS reader ignores.
    """
    if not fit_follows or "tensorflow" in sys.modules:
        return _timed_read(src)
    return import_tensorflow_during(functools.partial(_timed_read, src, roles))


def _write_at_once(writes: list[Callable[[], T]]) -> list[T]:
    """Run ``writes`` together: the first in this thread, each other one in a thread.

    A write is mostly the kernel filling new page-cache pages, which the calls do with
    the GIL released, so two writes take little more than one (benchmarks/README.md).
    Every write has ended when this returns or raises, so an output set discards only
    finished temporaries. The writers' own
    ``catch_warnings`` blocks may interleave across the threads; the outer block puts
    the filters back whatever their order.
    """
    with warnings.catch_warnings(), ThreadPoolExecutor(max(1, len(writes) - 1)) as pool:
        others = [pool.submit(write) for write in writes[1:]]
        first = writes[0]()
        return [first, *(other.result() for other in others)]


def process_job(job: Job, args, rep: Reporter) -> None:
    """Read, fit and write one file; its outputs appear together or not at all."""
    t0 = time.perf_counter()
    config = config_from_args(args, progress=rep.progress)
    # The frame is our own copy of the file, so it is corrected in place (one frame less
    # in memory) unless the plots or the statistics still need the original.
    in_place = not (args.plots or args.verbose)
    image, t_read = _read(job.src, fit_follows=not args.preview and config.epochs > 0,
                          roles=("model",) if in_place else ("model", "corrected"))
    _BUFFERS["image"] = image.data      # the next file of this size is read into it
    mask = _read_mask(Path(args.mask), image.shape) if args.mask else None
    rep.detail(lambda: _stats("Original", image.data))
    if args.preview:
        _preview(job, image, mask, config, args, rep)
        return
    res = fit_background(image.data, mask, config, out=(
        _buffer("model", image.shape), image.data if in_place else _buffer("corrected", image.shape)))
    rep.close()
    if args.verbose:
        rep.detail(lambda: _stats("Delinearized", res.model.stretch.forward(
            np.where(missing_pixels(image.data), np.float32(np.nan), image.data))))
        rep.detail(lambda: _stats("Downscaled", res.working_image))
        rep.detail(lambda: _stats("Bg (linear)", res.background))
        rep.detail(lambda: _stats("Corrected", res.corrected))
    if res.info.get("still_improving"):
        warnings.warn(f"{job.src}: the fit stopped at the epoch limit ({config.epochs}) with its "
                      "loss still falling: more epochs (-e) may improve the model", UserWarning,
                      stacklevel=1)
    t1 = time.perf_counter()
    clipped = _write_outputs(job, image, res, args)
    t_write = time.perf_counter() - t1
    oor = res.out_of_range
    notes = []
    if oor["below"] or oor["above"]:
        notes.append(f"{oor['below']} px below 0, {oor['above']} above the input max")
    if clipped:
        notes.append(f"{clipped} values clipped to the output's range")
    total = time.perf_counter() - t0
    rep.result(f"{job.src} -> {job.targets['corrected']} (factor {res.downscaling_factor}, "
               f"{res.epochs_run} epochs, {100 * res.protected_fraction:.0f}% protected, "
               f"read {t_read:.1f}s fit {res.timings['fit']:.1f}s eval {res.timings['evaluate']:.1f}s "
               f"write {t_write:.1f}s total {total:.1f}s"
               + (f"; {'; '.join(notes)}" if notes else "") + ")")


def _preview(job: Job, image: bio.Image, mask, config, args, rep: Reporter) -> None:
    """``-p``: the working image, the mask and the protected objects as a PNG."""
    from ..frontend import plots

    prep = prepare(image.data, mask, config)
    protection = find_objects(prep, config)
    rep.detail(lambda: _stats("Delinearized", prep.stretch.forward(
        np.where(missing_pixels(prep.data), np.float32(np.nan), prep.data))))
    rep.detail(lambda: _stats("Downscaled", prep.working))
    target = job.targets["preview"]
    with bio.OutputSet(args.overwrite) as out:
        plots.plot_preview(out.reserve(target), prep.working, prep.weights,
                           protection.protected if config.protect else None)
        out.commit()
    rep.result(f"{job.src} -> {target} (preview, factor {prep.factor}, "
               f"{int(prep.usable.sum())}/{prep.usable.size} working pixels used, "
               f"{100 * protection.fraction:.0f}% protected)")


def _write_outputs(job: Job, image: bio.Image, res, args) -> int:
    """The corrected image, the model and the plots, as one output set; returns the
    values clipped to the corrected image's sample type.

    With ``--sample-type input`` an integer input's corrected image goes back to its own
    integers (its unit again: no BGO_NORM, BUNIT kept); the model stays float32 in the
    normalised units, with BGO_NORM.
    """
    integer = args.sample_type == "input" and image.source_dtype.kind in "iu"
    dtype = image.source_dtype if integer else None
    history = history_lines(res.config, res.downscaling_factor, job.src)
    codec = args.codec or ("lz4hc" if args.compress else None)
    targets = job.targets
    with bio.OutputSet(args.overwrite) as out:
        outputs = [(targets["corrected"], res.corrected,
                    result_keywords(res, 1.0 if integer else image.scale), dtype)]
        if "model" in targets:
            outputs.append((targets["model"], res.background,
                            result_keywords(res, image.scale) + [MODEL_KIND], None))
        def write(target, tmp, data, cards, kind):
            # Each output is flushed by its own writer thread as soon as it is written,
            # so its flush overlaps the other one's write (benchmarks/fsync_cost.py).
            clipped = bio.write_image(target, image, data, cards=cards, history=history,
                                      codec=codec, into=tmp, dtype=kind)
            out.flush(tmp)
            return clipped

        clipped = _write_at_once([functools.partial(write, target, out.reserve(target), *rest)
                                  for target, *rest in outputs])[0]
        if "before_after" in targets:
            from ..frontend import plots

            plots.plot_before_after(out.reserve(targets["before_after"]), image.data, res.corrected)
            plots.plot_model(out.reserve(targets["model_png"]), res.background, res.control_points)
            plots.plot_loss(out.reserve(targets["loss"]), res.loss_history)
            plots.plot_preview(out.reserve(targets["mask_png"]), res.working_image, res.working_mask,
                               res.protected)
        out.commit()
    return clipped


def quick_exit(code: int) -> None:
    """End this process now, skipping the interpreter's teardown when TensorFlow is loaded.

    Unloading TensorFlow's modules and libraries takes most of a second at exit
    (benchmarks/README.md); every output is closed and renamed by then, so only the
    standard streams and logging are flushed.
    Used by the console script and the ``-j`` workers, never by :func:`~.app.main`
    (which tests and other programs call in-process).
    """
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(code)
