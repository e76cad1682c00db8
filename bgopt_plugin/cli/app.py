"""``bgopt`` command line: batch background extraction of FITS/XISF master frames."""

from __future__ import annotations

import argparse
import glob
import os
import signal
import sys
import traceback
import warnings
from pathlib import Path

from .. import io as bio
from .._version import __version__
from ..core import ParameterError
from ..frontend.options import add_engine_options, config_from_args, option_name
from ..frontend.process import own_process
from ..io import remove_stale_parts
from .batch import is_own_output, plan_batch
from .job import (
    Reporter,
    Terminated,
    default_jobs,
    failure_message,
    process_job,
    quick_exit,
    silence_stdout,
)

__all__ = ["main", "build_parser", "run"]

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 2, 130, 143


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bgopt",
        description="Remove the sky background (light pollution, gradients, vignetting) from "
                    "linear FITS/XISF/TIFF master frames with a spline fitted by gradient "
                    "descent. Writes <stem>_bgSubtracted<ext> and <stem>_bgModel<ext>. "
                    "'bgopt demo [DIR]' runs the whole pipeline on a built-in sample.",
        epilog="Algorithm after bgoptimizer by Sergio Díaz.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="FITS/XISF/TIFF files or glob patterns; a last argument that is a folder, or "
                        "a new name without an extension, is the output folder (bgoptimizer's "
                        "'input_file [output_path]')")
    p.add_argument("-o", "--output-dir", help="output directory (default: .)")
    p.add_argument("-m", "--mask", help="mask file (FITS, XISF or TIFF): 1 = use, 0 = ignore")
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
    p.add_argument("--format", choices=["same", "fits", "xisf", "tiff"], default="same",
                   help="output format (default: same as the input)")
    p.add_argument("--sample-type", choices=["float32", "input"], default="float32",
                   help="sample type of the corrected image: 32-bit float (default), or the "
                        "input's own 8/16-bit integers (values clipped to their range and "
                        "counted); the model is always float32")
    p.add_argument("-j", "--jobs", type=int, default=None, metavar="N",
                   help="files processed at once, each by its own worker process that holds "
                        "one file in memory (default: the number of cores, but no more "
                        "workers than the available memory holds for the largest input)")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    existing.add_argument("--skip-existing", action="store_true",
                          help="leave inputs whose outputs all exist (process only what is new)")
    p.add_argument("--no-model", action="store_true", help="do not write the background model")
    p.add_argument("--plots", action="store_true",
                   help="write PNGs: before/after, model with control points, loss curve, "
                        "the mask with the protected objects")
    verb = p.add_mutually_exclusive_group()
    verb.add_argument("-q", "--quiet", action="count", default=0,
                      help="no progress bars or notes (-q), only errors and warnings (-qq)")
    verb.add_argument("-v", "--verbose", action="store_true",
                      help="per-stage statistics and tracebacks")
    p.add_argument("--version", action="version", version=f"bgopt {__version__}")
    return p


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
    rep = Reporter(args.quiet, args.verbose)
    problem = _positional_output(args) or _check_options(args)
    if problem:
        rep.error(problem)
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
                      plots=args.plots, preview=args.preview, overwrite=args.overwrite,
                      skip_existing=args.skip_existing)
    problem = _codec_problem(args, plan)
    if problem:
        rep.error(problem)
        return EXIT_FAILED
    for note in plan.notes:
        rep.info(f"bgopt: {note}")
    failures = [src for src, _ in plan.refused]
    for _, message in plan.refused:
        rep.error(message)
    hint = _output_name_hint(args, plan)
    if hint:
        rep.result(hint)
    workers = min(args.jobs or default_jobs([j.src for j in plan.jobs]), len(plan.jobs))
    try:
        if workers > 1:
            from .parallel import run_parallel

            failures += run_parallel(plan.jobs, args, rep, workers)
        for job in plan.jobs if workers <= 1 else ():
            try:
                process_job(job, args, rep)
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
    rep.summary(_final_line(plan, failures))
    return EXIT_FAILED if failures else EXIT_OK


def _check_options(args: argparse.Namespace) -> str | None:
    """The first bad option value, as one line; None when all are good."""
    try:
        config_from_args(args)
    except ParameterError as exc:
        return f"{option_name(exc.name)}: {exc.problem}"
    if args.jobs is not None and args.jobs < 1:
        return f"--jobs: must be an integer >= 1, got {args.jobs}"
    return None


def _codec_problem(args: argparse.Namespace, plan) -> str | None:
    """--codec (or -c) with an output that is not XISF is an error, not ignored."""
    if not (args.codec or args.compress) or args.preview:
        return None
    for job in plan.jobs:
        target = job.targets["corrected"]
        if bio.format_of(target) != "xisf":
            flag = "--codec" if args.codec else "-c"
            return (f"{flag}: compression applies to XISF output only, and {target.name} is "
                    f"{bio.format_of(target).upper()} (add --format xisf)")
    return None


def _output_name_hint(args: argparse.Namespace, plan) -> str | None:
    """A hint when the last of two arguments, refused as not found, reads like an output."""
    if len(args.inputs) != 2 or not plan.refused:
        return None
    last = args.inputs[-1]
    refused = dict(plan.refused)
    if last in refused and "file not found" in refused[last] and Path(last).suffix.lower() in bio.SUPPORTED:
        return (f"bgopt: hint: {last} was read as a second input. Outputs are named "
                f"<stem>_bgSubtracted<ext> and <stem>_bgModel<ext> in the output folder: give "
                f"one with -o DIR, or as the last argument ('bgopt {args.inputs[0]} DIR').")
    return None


def _final_line(plan, failures: list[str]) -> str:
    """``bgopt: N of M done, K skipped, F failed`` (the failures named)."""
    total = len(plan.jobs) + len(plan.refused) + len(plan.skipped)
    done = total - len(failures) - len(plan.skipped)
    line = f"bgopt: {done} of {total} done, {len(plan.skipped)} skipped, {len(failures)} failed"
    return line + (f": {', '.join(failures)}" if failures else "")


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
            silence_stdout()


def console_main() -> None:
    """The ``bgopt`` console script: :func:`main`, then :func:`quick_exit`."""
    quick_exit(main())


if __name__ == "__main__":  # pragma: no cover
    console_main()
