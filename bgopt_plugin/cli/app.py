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
            silence_stdout()


def console_main() -> None:
    """The ``bgopt`` console script: :func:`main`, then :func:`quick_exit`."""
    quick_exit(main())


if __name__ == "__main__":  # pragma: no cover
    console_main()
