"""``bgopt -j N``: a batch processed by N worker processes, one file each at a time.

Each worker imports TensorFlow once and keeps its compiled training loop for every file
of the same size; one worker's reading and writing overlaps another's fit. The fit runs
on one TensorFlow thread in every process (see ``bgopt_plugin.frontend.process``), so workers do
not compete for the cores and ``-j N`` gives the same result as ``-j 1``, bit for bit.
Workers hold one file each in memory and send their report lines back, so the console
shows one line per finished file. A file's outputs still appear together or not at all:
on Ctrl-C or SIGTERM every worker removes its temporaries before it exits.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import sys
import warnings
from contextlib import contextmanager

from ..frontend.process import own_process
from .job import Reporter, Terminated, default_jobs, failure_message, process_job, quick_exit

__all__ = ["run_parallel"]


class _Buffered(Reporter):
    """A worker's reporter: lines are kept for the parent, progress bars are off."""

    def __init__(self, quiet: bool, verbose: bool):
        super().__init__(quiet, verbose)
        self.lines: list[tuple[str, str]] = []

    def _out(self, text: str) -> None:
        self.lines.append(("out", text))

    def error(self, text: str) -> None:
        self.lines.append(("err", text))

    def progress(self, ev) -> None:
        pass


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _init_worker() -> None:
    own_process()
    signal.signal(signal.SIGTERM, _raise_terminated)
    warnings.formatwarning = lambda m, c, *a, **k: f"bgopt: warning: {m}\n"
    warnings.simplefilter("default")
    # A worker's results are all delivered (outputs renamed) before it exits: skip
    # TensorFlow's teardown (see cli.job.quick_exit). atexit runs before it.
    atexit.register(_exit_fast)


def _exit_fast() -> None:
    if "tensorflow" in sys.modules:
        quick_exit(0)


def _work(item):
    """Process one job in a worker: (source, report lines, failed, stopped)."""
    job, args = item
    rep = _Buffered(args.quiet, args.verbose)
    try:
        process_job(job, args, rep)
        return str(job.src), rep.lines, False, False
    except (ValueError, OSError) as exc:
        rep.error(failure_message(job, exc))
        return str(job.src), rep.lines, True, False
    except (KeyboardInterrupt, Terminated):
        return str(job.src), rep.lines, True, True


@contextmanager
def _blas_threads(n: int):
    """Give each worker its share of BLAS threads (spawned children read the environment).

    OpenBLAS threads busy-wait: two workers with a full set each were slower than one
    process (benchmarks/README.md). Each worker then pins one BLAS thread for the solves
    (frontend.process), so -j 1 and -j N give the same models (tests/test_parallel.py).
    """
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in names}
    for k in names:
        os.environ.setdefault(k, str(n))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_parallel(jobs, args, rep: Reporter, workers: int) -> list[str]:
    """Run ``jobs`` on ``workers`` processes; report as files finish; return the failures.

    KeyboardInterrupt and :class:`Terminated` are raised again once every worker has
    stopped and removed its temporaries.
    """
    failures: list[str] = []
    ctx = multiprocessing.get_context("spawn")   # never fork a process that may hold TF
    with _blas_threads(max(1, default_jobs() // workers)):
        pool = ctx.Pool(workers, initializer=_init_worker)
    try:
        for src, lines, failed, stopped in pool.imap_unordered(_work, [(j, args) for j in jobs]):
            for kind, text in lines:
                if kind == "out":
                    rep._out(text)  # noqa: SLF001 - the worker already applied -q / -v
                else:
                    rep.error(text)
            if failed and not stopped:
                failures.append(src)
        pool.close()
    except BaseException:
        pool.terminate()   # SIGTERM: each worker discards its unfinished output set
        raise
    finally:
        pool.join()
    return failures
