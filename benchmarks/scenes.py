"""Accuracy of bgopt on the synthetic scenes, printed as a table.

Each scene of :data:`bgopt_plugin.data.synthetic.SCENES` is fitted with the options a user
would set for it (``Scene.options``) and scored on every pixel where the true
background is known, object pixels included:

* ``residual``: RMS(model - truth, median offset removed) / peak-to-peak(truth), worst
  channel (for the flat negative control: the model's peak-to-peak / the sky level);
* ``kept``: the share of the objects' integrated flux left in the corrected image;
* ``sky``: the residual on object-free pixels only (what the earlier suite measured).

Usage::

    python benchmarks/scenes.py                        # defaults, protection on and off
    python benchmarks/scenes.py --seeds 4              # mean and worst over 4 noise draws
    python benchmarks/scenes.py --scenes dust flat --option alpha=5
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def run(names, seeds: int, options: dict) -> list[dict]:
    import bgopt_plugin as bgopt
    from bgopt_plugin.data.synthetic import make_scene, score

    rows = []
    for name in names:
        for protect in (True, False):
            scores, times = [], []
            for k in range(seeds):
                scene = make_scene(name) if seeds == 1 else make_scene(name, seed=100 + k)
                t = time.perf_counter()
                res = bgopt.fit_background(scene.image, seed=1, **{**scene.options, "protect": protect,
                                                                  **options})
                times.append(time.perf_counter() - t)
                s = score(scene, res.background, res.corrected)
                if name == "flat":
                    s["residual"] = s["flatness"]
                scores.append(s)
            rows.append({"scene": name, "protect": protect, "time": float(np.mean(times)),
                         **{key: (float(np.mean([s[key] for s in scores])),
                                  float(max(s[key] for s in scores)))
                            for key in ("residual", "sky_residual")},
                         "kept": float(min(s["flux_kept"] for s in scores))})
            print(_line(rows[-1], seeds), flush=True)
    return rows


def _line(r: dict, seeds: int) -> str:
    res, sky = r["residual"], r["sky_residual"]
    worst = f" (worst {100 * res[1]:.2f})" if seeds > 1 else ""
    kept = "" if np.isnan(r["kept"]) else f"{100 * r['kept']:.1f}%"
    return (f"| {r['scene']} | {'on' if r['protect'] else 'off'} | {100 * res[0]:.2f}%{worst} | "
            f"{100 * sky[0]:.2f}% | {kept} | {r['time']:.1f} |")


def main(argv=None) -> int:
    from bgopt_plugin.data.synthetic import SCENES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    p.add_argument("--seeds", type=int, default=1, help="noise draws per scene (default 1)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a Config option for every fit, e.g. alpha=5")
    args = p.parse_args(argv)
    options = dict((k, _value(v)) for k, v in (o.split("=", 1) for o in args.option))
    print("| scene | protection | residual, all pixels | residual, sky only | flux kept | fit s |")
    print("|---|---|---|---|---|---|")
    run(args.scenes, args.seeds, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
