"""What an exact block median costs in numpy, against the ≤ 2 passes target for prepare.

Prepare's downscale is a per-channel median of every factor × factor block. With numpy it
takes two steps that no other stage pays: gathering each block's pixels into one
contiguous row per channel (channels-last data is interleaved), and selecting the middle
value of every row (``ndarray.partition``, introselect). This script times each step on
its own, one strip of blocks at a time as bgopt does (the buffer stays in cache), on
memory already touched, and prints them in passes over the image: the time of
``numpy.copyto`` of the whole image into an array already touched.

Usage::

    python benchmarks/median_floor.py                   # 1.5, 6, 24 and 60 MP masters
    python benchmarks/median_floor.py --sizes 24mp --repeat 5
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from run_benchmarks import SIZES, make_master  # noqa: E402

from bgopt_plugin.core import Config, prepare  # noqa: E402
from bgopt_plugin.core.sampling import _fill_blocks, auto_factor, downscale  # noqa: E402


def _best(func, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        func()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(name: str, repeat: int) -> dict:
    image, _ = make_master(SIZES[name])
    h, w, c = image.shape
    factor = auto_factor((h, w))
    hb, wb = math.ceil(h / factor), math.ceil(w / factor)
    blocks = np.empty((wb, c, factor, factor), np.float32)
    flat = blocks.reshape(wb, c, factor * factor)
    k = factor * factor // 2
    target = np.empty_like(image)
    np.copyto(target, image)

    def gather():
        for i in range(hb):
            _fill_blocks(blocks, image[i * factor:(i + 1) * factor])

    def select():   # the partition alone: each strip gathered first, outside the clock
        spent = 0.0
        for i in range(hb):
            _fill_blocks(blocks, image[i * factor:(i + 1) * factor])
            t = time.perf_counter()
            flat.partition(k, axis=-1)
            spent += time.perf_counter() - t
        return spent

    copy = _best(lambda: np.copyto(target, image), repeat)
    gathered = _best(gather, repeat)
    selected = min(select() for _ in range(repeat))
    whole = _best(lambda: downscale(image, factor, "median", value_range=np.empty((2, c))), repeat)
    config = Config()
    prepared = _best(lambda: prepare(image, None, config), repeat)
    return {"name": name, "shape": (h, w, c), "factor": factor, "copy": copy,
            "gather": gathered / copy, "select": selected / copy,
            "downscale": whole / copy, "prepare": prepared / copy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)
    print("| case | factor | copy (s) | gather | partition | gather + partition "
          "| downscale | prepare |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.sizes:
        r = measure(name, args.repeat)
        h, w, c = r["shape"]
        print(f"| {name} ({h}x{w}x{c}) | {r['factor']} | {r['copy']:.3f} | {r['gather']:.1f} "
              f"| {r['select']:.1f} | {r['gather'] + r['select']:.1f} | {r['downscale']:.1f} "
              f"| {r['prepare']:.1f} |")
    print("\nAll but the copy column in passes over the image (copies); the target is ≤ 2.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
