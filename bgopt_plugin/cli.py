"""``bgopt`` command line: batch background extraction of FITS/XISF master frames."""

from __future__ import annotations

import argparse
import glob
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import io as bio
from ._version import __version__
from .config import ProgressEvent
from .io.atomic import atomic_output
from .options import add_engine_options, config_from_args
from .progress import TqdmProgress
from .provenance import history_line, keywords
from .sampling import missing_pixels

__all__ = ["main", "build_parser", "config_from_args", "output_paths"]

EXIT_OK, EXIT_FAILED = 0, 2
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bgopt",
        description="Remove the sky background (light pollution, gradients, vignetting) from "
                    "linear FITS/XISF master frames with a spline fitted by gradient descent. "
                    "Writes <stem>_bgSubtracted<ext> and <stem>_bgModel<ext>. "
                    "'bgopt demo [DIR]' runs the whole pipeline on a built-in sample.",
        epilog="Algorithm after bgoptimizer by Sergio Díaz.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="FITS/XISF files or glob patterns")
    p.add_argument("-o", "--output-dir", default=".", help="output directory (default: .)")
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


def _split_name(path: Path) -> tuple[str, str]:
    name = path.name
    lower = name.lower()
    for ext in (".fits.fz", ".fit.fz", ".fts.fz"):
        if lower.endswith(ext):
            return name[: -len(ext)], name[-len(ext):-3]
    if lower.endswith(".fz"):
        return name[:-3], ".fits"
    return path.stem, path.suffix


def output_paths(src: Path, out_dir: Path, fmt: str = "same") -> tuple[Path, Path]:
    """``<stem>_bgSubtracted<ext>`` and ``<stem>_bgModel<ext>`` in ``out_dir``.

    Examples
    --------
    >>> [p.name for p in output_paths(Path("m31.fit"), Path("."))]
    ['m31_bgSubtracted.fit', 'm31_bgModel.fit']
    >>> output_paths(Path("a.fits.fz"), Path("."))[0].name
    'a_bgSubtracted.fits'
    >>> output_paths(Path("a.fits"), Path("."), "xisf")[0].name
    'a_bgSubtracted.xisf'
    """
    stem, ext = _split_name(src)
    if fmt == "fits" and ext.lower() not in (".fit", ".fits", ".fts"):
        ext = ".fits"
    elif fmt == "xisf":
        ext = ".xisf"
    return out_dir / f"{stem}_bgSubtracted{ext}", out_dir / f"{stem}_bgModel{ext}"


class _Reporter:
    """Console output: tqdm bars for the fit and the evaluation, summaries, errors."""

    def __init__(self, quiet: bool, verbose: bool):
        self.quiet, self.verbose = quiet, verbose
        self.bars = TqdmProgress()

    def info(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def detail(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)

    def error(self, text: str) -> None:
        self.close()
        print(f"bgopt: error: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bars.close()

    def progress(self, ev: ProgressEvent) -> None:
        if not self.quiet:
            self.bars(ev)


def _stats(label: str, arr: np.ndarray) -> str:
    a = arr if arr.ndim == 3 else arr[..., None]
    flat = a.reshape(-1, a.shape[-1])
    fmt = lambda v: "[" + " ".join(f"{x:.4f}" for x in v) + "]"  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, med, hi = np.nanmin(flat, 0), np.nanmedian(flat, 0), np.nanmax(flat, 0)
    return f"  [{label:12s}] min / median / max = {fmt(lo)} / {fmt(med)} / {fmt(hi)}"


@dataclass
class _Job:
    src: Path
    out: Path
    model: Path


def _expand(inputs: list[str]) -> list[Path]:
    paths: list[Path] = []
    for item in inputs:
        if any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item))
            paths.extend(Path(m) for m in matches) if matches else paths.append(Path(item))
        else:
            paths.append(Path(item))
    return paths


def _read_mask(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    mask = bio.read_image(path).data
    if mask.shape[:2] != shape[:2]:
        raise bio.ImageIOError(path, f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                                     f"{shape[1]}x{shape[0]}")
    if mask.shape[2] not in (1, shape[2]):
        raise bio.ImageIOError(path, f"mask has {mask.shape[2]} channels, the image {shape[2]}")
    return mask


def _write_png(target: Path, overwrite: bool, plot, *data) -> None:
    with atomic_output(target, overwrite) as tmp:
        plot(tmp, *data)


def _process(job: _Job, args, rep: _Reporter) -> None:
    from .engine import fit_background, prepare

    t0 = time.perf_counter()
    image = bio.read_image(job.src)
    t_read = time.perf_counter() - t0
    mask = _read_mask(Path(args.mask), image.shape) if args.mask else None
    config = config_from_args(args, progress=rep.progress)
    rep.detail(_stats("Original", image.data))
    if args.preview:
        from . import plots

        prep = prepare(image.data, mask, config)
        rep.detail(_stats("Delinearized", prep.stretch.forward(
            np.where(missing_pixels(prep.data), np.float32(np.nan), prep.data))))
        rep.detail(_stats("Downscaled", prep.working))
        stem, _ = _split_name(job.src)
        target = Path(args.output_dir) / f"{stem}_preview.png"
        if target.exists() and not args.overwrite:
            raise bio.ImageIOError(target, "output exists (use --overwrite to replace it)")
        _write_png(target, args.overwrite, plots.plot_preview, prep.working, prep.weights)
        rep.info(f"{job.src} -> {target} (preview, factor {prep.factor}, "
                 f"{int(prep.usable.sum())}/{prep.usable.size} working pixels used)")
        return
    for target in (job.out, job.model):
        if target.exists() and not args.overwrite and not (target == job.model and args.no_model):
            raise bio.ImageIOError(target, "output exists (use --overwrite to replace it)")
    res = fit_background(image.data, mask, config)
    rep.close()
    if args.verbose:
        rep.detail(_stats("Delinearized", res.model.stretch.forward(
            np.where(missing_pixels(image.data), np.float32(np.nan), image.data))))
        rep.detail(_stats("Downscaled", res.working_image))
        rep.detail(_stats("Bg (linear)", res.background))
        rep.detail(_stats("Corrected", res.corrected))
    cards = keywords(res.config, res.downscaling_factor, res.epochs_run)
    hist = history_line(res.config, res.downscaling_factor)
    codec = args.codec or ("lz4hc" if args.compress else None)
    t1 = time.perf_counter()
    clipped = bio.write_image(job.out, image, res.corrected, cards=cards, history=hist,
                              overwrite=args.overwrite, codec=codec)
    if not args.no_model:
        bio.write_image(job.model, image, res.background, cards=cards + [
            ("BGO_KIND", "model", "this file is the bgopt background model")], history=hist,
            overwrite=args.overwrite, codec=codec)
    t_write = time.perf_counter() - t1
    if args.plots:
        from . import plots

        stem = job.out.name[: -len(job.out.suffix)]
        _write_png(job.out.with_name(stem + "_before_after.png"), args.overwrite,
                   plots.plot_before_after, image.data, res.corrected)
        _write_png(job.model.with_name(job.model.name[: -len(job.model.suffix)] + ".png"),
                   args.overwrite, plots.plot_model, res.background, res.control_points)
        _write_png(job.out.with_name(stem + "_loss.png"), args.overwrite, plots.plot_loss,
                   res.loss_history)
    oor = res.out_of_range
    notes = []
    if oor["below"] or oor["above"]:
        notes.append(f"{oor['below']} px below 0, {oor['above']} above the input max")
    if clipped:
        notes.append(f"{clipped} values clipped to [0, 1] for XISF")
    total = time.perf_counter() - t0
    rep.info(f"{job.src} -> {job.out} (factor {res.downscaling_factor}, {res.epochs_run} epochs, "
             f"read {t_read:.1f}s fit {res.timings['fit']:.1f}s eval {res.timings['evaluate']:.1f}s "
             f"write {t_write:.1f}s total {total:.1f}s"
             + (f"; {'; '.join(notes)}" if notes else "") + ")")


def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rep = _Reporter(args.quiet, args.verbose)
    try:
        config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    out_dir = Path(args.output_dir)
    if not out_dir.is_dir():
        rep.error(f"{out_dir}: output directory does not exist")
        return EXIT_FAILED
    if args.mask and not Path(args.mask).exists():
        rep.error(f"{args.mask}: mask file not found")
        return EXIT_FAILED
    failures: list[str] = []
    paths = _expand(args.inputs)
    for src in paths:
        try:
            bio.format_of(src)
            out, model = output_paths(src, out_dir, args.format)
            _process(_Job(src, out, model), args, rep)
        except (ValueError, OSError) as exc:
            message = str(exc) if isinstance(exc, bio.ImageIOError) else f"{src}: {exc}"
            rep.error(message)
            if args.verbose:
                traceback.print_exc()
            failures.append(str(src))
        except KeyboardInterrupt:
            rep.error("interrupted")
            return 130
    if len(paths) > 1 and not args.quiet:
        print(f"bgopt: {len(paths) - len(failures)} of {len(paths)} files done"
              + (f"; failed: {', '.join(failures)}" if failures else ""), flush=True)
    return EXIT_FAILED if failures else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bgopt`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        from .demo import run_demo

        return run_demo(argv[1:])
    original = warnings.formatwarning
    warnings.formatwarning = lambda m, c, *a, **k: f"bgopt: warning: {m}\n"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return run(argv)
    finally:
        warnings.formatwarning = original


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
