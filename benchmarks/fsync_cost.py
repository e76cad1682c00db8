"""What the durable writes cost: the CLI with and without its ``fsync`` calls.

Every output is written to a temporary, flushed to the disk (``fsync``), renamed, and the
folder flushed after the renames of a set (``io/atomic.py``). This script runs the same
``bgopt`` command on a set of copies of one master, alternately as shipped and with the
two flush helpers replaced by no-ops, and prints the wall times.

Usage::

    python benchmarks/fsync_cost.py                    # 24 MP RGB, 4 files, 3 rounds
    python benchmarks/fsync_cost.py --size 6mp --files 2 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

# The command as shipped, or with the flushes switched off; either way the real CLI.
_RUN = """
import sys
if sys.argv[1] == "off":
    import bgopt_plugin.io.atomic as atomic
    atomic._fsync = lambda path, target: None
    atomic._fsync_folder = lambda folder: None
from bgopt_plugin.cli.app import main
sys.exit(main(sys.argv[2:]))
"""


def _one(mode: str, files: list[str], out: Path, jobs: int) -> float:
    for f in out.glob("*"):
        f.unlink()
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", _RUN, mode, *files, "-o", str(out), "-q", "-q",
                    "-j", str(jobs)], check=True, env=env)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    from run_benchmarks import SIZES, write_case

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="24mp", choices=list(SIZES))
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("-j", "--jobs", type=int, default=1)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bgopt-fsync-") as tmp:
        folder = Path(tmp)
        src = Path(write_case(args.size, folder)["src"])
        files = []
        for k in range(args.files):
            dst = folder / f"copy{k}.fits"
            os.link(src, dst)
            files.append(str(dst))
        out = folder / "out"
        out.mkdir()
        times: dict[str, list[float]] = {"on": [], "off": []}
        _one("on", files[:1], out, 1)  # warm the XLA cache and the page cache
        for _ in range(args.rounds):
            for mode in ("on", "off"):
                times[mode].append(_one(mode, files, out, args.jobs))
    print(f"{args.size}, {args.files} files, -j {args.jobs}, {args.rounds} alternating rounds")
    print("| fsync | wall per set (s), each round | median | per file |")
    print("|---|---|---|---|")
    for mode in ("on", "off"):
        v = times[mode]
        print(f"| {mode} | {' / '.join(f'{x:.2f}' for x in v)} | {np.median(v):.2f} "
              f"| {np.median(v) / args.files:.2f} |")
    cost = np.median(times["on"]) - np.median(times["off"])
    print(f"cost: {cost:+.2f} s per set, {cost / args.files:+.2f} s per file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
