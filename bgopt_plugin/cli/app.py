"""``bgopt`` command line: batch background extraction of FITS/XISF master frames."""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import io as bio
from .._version import __version__
from ..core import (
    ParameterError,
    ProgressEvent,
    find_objects,
    fit_background,
    missing_pixels,
    prepare,
)
from ..frontend.options import add_engine_options, config_from_args, option_name
from ..frontend.process import import_tensorflow_during, own_process
from ..frontend.progress import TqdmProgress
from ..io.atomic import remove_stale_parts
from ..io.layout import reusable
from ..io.provenance import MODEL_KIND, history_line, result_keywords
from .batch import Job, is_own_output, plan_batch

__all__ = ["main", "build_parser", "run"]

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 2, 130, 143


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every temporary file is removed."""
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bgopt",
        description="Remove the sky background (light pollution, gradients, vignetting) from "
                    "linear FITS/XISF master frames with a spline fitted by gradient descent. "
                    "Writes <stem>_bgSubtracted<ext> and <stem>_bgModel<ext>. "
                    "'bgopt demo [DIR]' runs the whole pipeline on a built-in sample.",
        epilog="Algorithm after bgoptimizer by Sergio Díaz.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="FITS/XISF files or glob patterns; a last argument that is a folder, or "
                        "a new name without an extension, is the output folder (bgoptimizer's "
                        "'input_file [output_path]')")
    p.add_argument("-o", "--output-dir", help="output directory (default: .)")
    p.add_argument("-m", "--mask", help="mask file (FITS or XISF): 1 = use, 0 = ignore")
    p.add_argument("-p", "--preview", action="store_true",
                   help="write PNG previews of the delinearized, downscaled, masked image and "
                        "its histogram, then stop without fitting")
    p.add_argument("-c", "--compress", action="store_true",
                   help="compress XISF output with lz4hc and byte shuffling")
    p.add_argument("--codec", choices=["lz4hc", "zstd"], help="XISF compression codec")
    p.add_argument("-B", type=int, default=1, metavar="B",
                   help="accepted for compatibility only: batches repeated one image and "
                        "changed nothing")
    add_engine_options(p)
    p.add_argument("--format", choices=["same", "fits", "xisf"], default="same",
                   help="output format (default: same as the input)")
    p.add_argument("-j", "--jobs", type=int, default=default_jobs(), metavar="N",
                   help="files processed at once, each by its own worker process that holds "
                        "one file in memory (default: the number of cores, here %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-model", action="store_true", help="do not write the background model")
    p.add_argument("--plots", action="store_true",
                   help="write PNGs: before/after, model with control points, loss curve")
    verb = p.add_mutually_exclusive_group()
    verb.add_argument("-q", "--quiet", action="store_true", help="only errors")
    verb.add_argument("-v", "--verbose", action="store_true",
                      help="per-stage statistics and tracebacks")
    p.add_argument("--version", action="version", version=f"bgopt {__version__}")
    return p


def default_jobs() -> int:
    """The number of cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class _Reporter:
    """Console output: tqdm bars for the fit and the evaluation, summaries, errors."""

    def __init__(self, quiet: bool, verbose: bool):
        self.quiet, self.verbose = quiet, verbose
        self.bars = TqdmProgress()

    def _out(self, text: str) -> None:
        # A closed or broken stdout (``| head``) must never turn finished work into a
        # failure: from then on, standard output is dropped.
        try:
            print(text, flush=True)
        except (OSError, ValueError):
            _silence_stdout()
            self.quiet, self.verbose = True, False

    def info(self, text: str) -> None:
        if not self.quiet:
            self._out(text)

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


def _silence_stdout() -> None:
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
    one size: writing into pages already touched costs a fraction of new ones (24 MP:
    ~0.8 s less per array on the benchmark machine)."""
    _BUFFERS[role] = reusable(_BUFFERS.get(role), shape)
    return _BUFFERS[role]


def _timed_read(src: Path, roles: tuple[str, ...] = ()) -> tuple[bio.Image, float]:
    """Read ``src``; then touch every page of the buffers for ``roles`` (a new array's
    pages cost their first write, 0.3-0.8 s for a 24 MP frame on the benchmark machine)."""
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


def _write_at_once(writes: list[Callable[[], object]]) -> None:
    """Run ``writes`` together: the first in this thread, each other one in a thread.

    A write is mostly the kernel filling new page-cache pages, which the calls do with
    the GIL released: on the benchmark machine, a single 24 MP file's command took
    4.52 s against 5.10 s with the writes one after the other (medians of eight). Every
    write has ended when this returns or raises, so an output set discards only
    finished temporaries. The writers' own
    ``catch_warnings`` blocks may interleave across the threads; the outer block puts
    the filters back whatever their order.
    """
    with warnings.catch_warnings(), ThreadPoolExecutor(max(1, len(writes) - 1)) as pool:
        others = [pool.submit(write) for write in writes[1:]]
        writes[0]()
        for other in others:
            other.result()


def _process(job: Job, args, rep: _Reporter) -> None:
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
        rep.info(f"{job.src} -> {target} (preview, factor {prep.factor}, "
                 f"{int(prep.usable.sum())}/{prep.usable.size} working pixels used, "
                 f"{100 * protection.fraction:.0f}% protected)")
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
    cards = result_keywords(res, image.scale)
    hist = history_line(res.config, res.downscaling_factor)
    codec = args.codec or ("lz4hc" if args.compress else None)
    t1 = time.perf_counter()
    targets = job.targets
    with bio.OutputSet(args.overwrite) as out:
        outputs = [(targets["corrected"], res.corrected, cards)]
        if "model" in targets:
            outputs.append((targets["model"], res.background, cards + [MODEL_KIND]))
        _write_at_once([functools.partial(bio.write_image, target, image, data, cards=c,
                                          history=hist, codec=codec, into=out.reserve(target))
                        for target, data, c in outputs])
        if "before_after" in targets:
            from ..frontend import plots

            plots.plot_before_after(out.reserve(targets["before_after"]), image.data, res.corrected)
            plots.plot_model(out.reserve(targets["model_png"]), res.background, res.control_points)
            plots.plot_loss(out.reserve(targets["loss"]), res.loss_history)
            plots.plot_preview(out.reserve(targets["mask_png"]), res.working_image, res.working_mask,
                               res.protected)
        out.commit()
    t_write = time.perf_counter() - t1
    oor = res.out_of_range
    notes = []
    if oor["below"] or oor["above"]:
        notes.append(f"{oor['below']} px below 0, {oor['above']} above the input max")
    total = time.perf_counter() - t0
    rep.info(f"{job.src} -> {targets['corrected']} (factor {res.downscaling_factor}, "
             f"{res.epochs_run} epochs, {100 * res.protected_fraction:.0f}% protected, "
             f"read {t_read:.1f}s fit {res.timings['fit']:.1f}s eval {res.timings['evaluate']:.1f}s "
             f"write {t_write:.1f}s total {total:.1f}s"
             + (f"; {'; '.join(notes)}" if notes else "") + ")")


def _positional_output(args: argparse.Namespace) -> str | None:
    """bgoptimizer's form ``INPUT OUTPUT_PATH``: take a last argument that is a folder as -o.

    Returns an error message, or None.
    """
    if len(args.inputs) < 2:
        args.output_dir = args.output_dir or "."
        return None
    last = args.inputs[-1]
    # An existing folder, or a new name without any extension (a typo such as
    # "m42.fitz" stays an input and gets "unknown extension").
    is_folder = Path(last).is_dir() or last.endswith(("/", os.sep)) or (
        not Path(last).exists() and not glob.has_magic(last) and not Path(last).suffix)
    if not is_folder:
        args.output_dir = args.output_dir or "."
        return None
    if args.output_dir is not None:
        return f"{last}: an output folder is given twice (here and as -o {args.output_dir})"
    args.output_dir, args.inputs = last, args.inputs[:-1]
    return None


def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rep = _Reporter(args.quiet, args.verbose)
    problem = _positional_output(args)
    if problem:
        rep.error(problem)
        return EXIT_FAILED
    try:
        config_from_args(args)
    except ParameterError as exc:
        rep.error(f"{option_name(exc.name)}: {exc.problem}")
        return EXIT_FAILED
    if args.jobs < 1:
        rep.error(f"--jobs: must be an integer >= 1, got {args.jobs}")
        return EXIT_FAILED
    try:
        out_dir = bio.check_output_dir(args.output_dir)
        if args.mask:
            bio.check_regular_file(args.mask)
    except bio.ImageIOError as exc:
        message = str(exc) if not args.mask or exc.path != args.mask else f"{args.mask}: mask: {exc.problem}"
        rep.error(message)
        return EXIT_FAILED
    remove_stale_parts(out_dir, owns=is_own_output)
    plan = plan_batch(args.inputs, out_dir, args.format, model=not args.no_model,
                      plots=args.plots, preview=args.preview, overwrite=args.overwrite)
    for note in plan.notes:
        rep.info(f"bgopt: {note}")
    failures = [src for src, _ in plan.refused]
    for _, message in plan.refused:
        rep.error(message)
    workers = min(args.jobs, len(plan.jobs))
    try:
        if workers > 1:
            from .parallel import run_parallel

            failures += run_parallel(plan.jobs, args, rep, workers)
        for job in plan.jobs if workers <= 1 else ():
            try:
                _process(job, args, rep)
            except (ValueError, OSError) as exc:
                rep.error(failure_message(job, exc))
                if args.verbose:
                    traceback.print_exc()
                failures.append(str(job.src))
    except KeyboardInterrupt:
        rep.error("interrupted; unfinished outputs removed")
        return EXIT_INTERRUPTED
    except Terminated:
        rep.error("terminated; unfinished outputs removed")
        return EXIT_TERMINATED
    total = len(plan.jobs) + len(plan.refused)
    if total > 1:
        rep.info(f"bgopt: {total - len(failures)} of {total} files done"
                 + (f"; failed: {', '.join(failures)}" if failures else ""))
    return EXIT_FAILED if failures else EXIT_OK


def run_demo(argv: list[str]) -> int:
    """``bgopt demo [DIR]``: write the sample, run the batch on it with plots, score it."""
    from . import demo

    args = demo.parse_args(argv)
    out = Path(args.directory)
    src, scene = demo.write_sample(out)
    if not args.quiet:
        print(f"bgopt demo: wrote the sample master {src}")
    code = main([str(src), "-o", str(out), "--plots", "--overwrite", "--seed", "1"]
                + (["-q"] if args.quiet else []))
    if code == 0 and not args.quiet:
        print(demo.report(scene, out)[1])
    return code


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bgopt`` console script.

    The command owns its process: it sets TensorFlow's quiet logs, its single thread
    and the XLA cache for it (:func:`~bgopt_plugin.frontend.process.own_process`), also
    when another program calls this function.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    own_process()
    if argv and argv[0] == "demo":
        return run_demo(argv[1:])
    original = warnings.formatwarning
    warnings.formatwarning = lambda m, c, *a, **k: f"bgopt: warning: {m}\n"
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return run(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)
        warnings.formatwarning = original
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            _silence_stdout()


def quick_exit(code: int) -> None:
    """End this process now, skipping the interpreter's teardown when TensorFlow is loaded.

    Unloading TensorFlow's modules and libraries takes ~0.9 s at exit on the benchmark
    machine (3.3 s import, 4.2 s wall for a bare ``import tensorflow``); every output is
    closed and renamed by then, so only the standard streams and logging are flushed.
    Used by the console script and the ``-j`` workers, never by :func:`main` itself
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


def console_main() -> None:
    """The ``bgopt`` console script: :func:`main`, then :func:`quick_exit`."""
    quick_exit(main())


if __name__ == "__main__":  # pragma: no cover
    console_main()
