"""bgopt against the tools users already have, on a randomised family of skies.

Every draw of :mod:`bgopt_plugin.data.family` (a seed gives the whole sky: size, colour,
noise, background, content) is corrected by:

* ``bgopt``: the engine at its defaults, with the options the user would set for the
  draw (a threshold above a dark foreground, ``correction="divide"`` for vignetting);
* ``init``: the engine's numpy initial solve alone (``epochs=0``), to see what the
  gradient descent adds;
* ``oracle``: the engine with the true object footprint (``|signal| >= 1 %`` of its
  peak) as the mask and protection off: how good the spline is once detection is perfect;
* ``unprotected``: the engine with protection off, to see what protection costs where
  there is nothing to protect (star fields) and what it buys elsewhere;
* ``photutils``: ``Background2D`` (box = long side / 24, 3x3 filter, 3-sigma clip,
  median), the dark foreground masked;
* ``siril-rbf``, ``siril-1``, ``siril-2``, ``siril-4``: the real Siril 1.4.4 ``subsky``
  (``-rbf`` or that polynomial degree) run by ``siril-cli``; its model is input - output.

Scores per draw, over every known pixel: ``residual`` (RMS of model - truth, offset
removed, / peak-to-peak of the truth, worst channel) and ``kept`` (the objects' flux left
in the corrected image); for bgopt the share of working pixels it protected. The table
gives the median, 90th percentile and worst per content class and overall.

Usage::

    python benchmarks/family.py --set dev -j 2                  # all methods, 200 draws
    python benchmarks/family.py --set validation --methods bgopt oracle
    python benchmarks/family.py --set dev --max-long-side 900 --methods bgopt init
    python benchmarks/family.py --results out.jsonl --reuse earlier.jsonl   # anchors reused

Per-draw results go to a JSON-lines file (``--results``); ``--reuse`` takes the rows of
the methods that do not depend on bgopt's code (photutils and Siril) from an earlier file;
``--summary-only --results a.jsonl b.jsonl`` prints the tables of earlier runs together.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ANCHORS = ("photutils", "siril-rbf", "siril-1", "siril-2", "siril-4")
METHODS = ("bgopt", "init", "oracle", "unprotected", *ANCHORS)
SIRIL_ARGS = {"siril-rbf": "-rbf", "siril-1": "1", "siril-2": "2", "siril-4": "4"}


def _draw(seed: int, max_long_side: int | None):
    from bgopt_plugin.data.family import draw_sky

    if max_long_side:
        from bgopt_plugin.data.family import _shape

        h, w = _shape(np.random.default_rng([seed, 0]))
        k = min(1.0, max_long_side / max(h, w))
        return draw_sky(seed, shape=(max(32, int(round(h * k))), max(32, int(round(w * k)))))
    return draw_sky(seed)


def _scores(scene, model: np.ndarray, corrected: np.ndarray | None) -> dict:
    from bgopt_plugin.data.synthetic import flux_kept, residual_score

    out = {"residual": residual_score(model, scene.background, scene.known)}
    if corrected is not None and scene.signal is not None:
        out["kept"] = flux_kept(corrected, scene)
    return out


def _bgopt(scene, **options) -> dict:
    import bgopt_plugin as bgopt

    t = time.perf_counter()
    res = bgopt.fit_background(scene.image, seed=1, **{**scene.options, **options})
    seconds = time.perf_counter() - t
    usable = res.working_mask.max(axis=-1) > 0 if res.working_mask.ndim == 3 else res.working_mask > 0
    valid = np.isfinite(res.working_image).all(axis=-1) if res.working_image.ndim == 3 \
        else np.isfinite(res.working_image)
    protected = float(res.protected.sum() / max(1, valid.sum()))
    row = {**_scores(scene, res.background, res.corrected), "seconds": seconds,
           "epochs": res.epochs_run, "protected": protected, "usable": float(usable.mean())}
    return row


def _corrected(scene, model: np.ndarray) -> np.ndarray:
    image = scene.image.astype(np.float64)
    if scene.options.get("correction") == "divide":
        return image * (np.median(model) / np.maximum(model, 1e-6))
    return image - model


def _photutils(scene) -> dict:
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground

    image = scene.image if scene.image.ndim == 3 else scene.image[..., None]
    h, w = image.shape[:2]
    box = max(8, max(h, w) // 24)
    mask = ~scene.known if "threshold_min" in scene.options else None
    t = time.perf_counter()
    model = np.empty(image.shape, np.float64)
    for k in range(image.shape[-1]):
        b2d = Background2D(image[..., k], box, filter_size=3, sigma_clip=SigmaClip(sigma=3.0),
                           bkg_estimator=MedianBackground(), mask=mask)
        model[..., k] = b2d.background
    model = model if scene.image.ndim == 3 else model[..., 0]
    return {**_scores(scene, model, _corrected(scene, model)), "seconds": time.perf_counter() - t}


def _siril(scene, methods: list[str]) -> dict:
    """Run siril-cli once over the draw with every ``subsky`` variant asked for."""
    from astropy.io import fits

    rows = {}
    with tempfile.TemporaryDirectory(prefix="bgopt-family-") as tmp:
        work = Path(tmp)
        image = scene.image
        planes = np.moveaxis(image, -1, 0) if image.ndim == 3 else image
        fits.writeto(work / "in.fit", np.ascontiguousarray(planes, np.float32))
        lines = ["requires 1.4.0"]
        for m in methods:
            lines += ["load in.fit", f"subsky {SIRIL_ARGS[m]}", f"save {m}"]
        (work / "run.ssf").write_text("\n".join(lines) + "\n")
        t = time.perf_counter()
        done = subprocess.run(["siril-cli", "-d", str(work), "-s", str(work / "run.ssf")],
                              capture_output=True, text=True,
                              env={**os.environ, "XDG_CONFIG_HOME": str(work / "cfg")})
        seconds = (time.perf_counter() - t) / max(1, len(methods))
        for m in methods:
            path = work / f"{m}.fit"
            if done.returncode != 0 or not path.exists():
                rows[m] = {"error": (done.stdout + done.stderr)[-300:]}
                continue
            out = fits.getdata(path).astype(np.float64)
            out = np.moveaxis(out, 0, -1) if out.ndim == 3 else out
            model = scene.image.astype(np.float64) - out
            rows[m] = {**_scores(scene, model, out), "seconds": seconds}
    return rows


def score_draw(seed: int, methods: list[str], max_long_side: int | None) -> list[dict]:
    """Every method's row for one draw."""
    d = _draw(seed, max_long_side)
    scene = d.scene
    base = {"seed": seed, "content": d.content, "shape": list(d.shape),
            "rgb": scene.image.ndim == 3, "background": list(d.background)}
    rows = []
    for m in [m for m in methods if not m.startswith("siril")]:
        try:
            rows.append({**base, "method": m, **_method(m, scene)})
        except Exception as exc:  # noqa: BLE001 - a failed method is a row of its own
            rows.append({**base, "method": m, "error": f"{type(exc).__name__}: {exc}"})
    siril = [m for m in methods if m.startswith("siril")]
    if siril and shutil.which("siril-cli"):
        for m, row in _siril(scene, siril).items():
            rows.append({**base, "method": m, **row})
    return rows


def _method(m: str, scene) -> dict:
    """One in-process method's row (bgopt, init, oracle, photutils)."""
    from bgopt_plugin.data.family import footprint

    if m == "bgopt":
        return _bgopt(scene)
    if m == "init":
        return _bgopt(scene, epochs=0)
    if m == "oracle":
        return _bgopt(scene, mask=(~footprint(scene)).astype(np.float32), protect=False)
    if m == "unprotected":
        return _bgopt(scene, protect=False)
    if m == "photutils":
        return _photutils(scene)
    raise ValueError(f"unknown method {m!r}")


def _seeds(name: str) -> list[int]:
    from bgopt_plugin.data.family import DEV_SEEDS, VALIDATION_SEEDS

    if name == "dev":
        return list(DEV_SEEDS)
    if name == "validation":
        return list(VALIDATION_SEEDS)
    lo, hi = (int(v) for v in name.split(":"))
    return list(range(lo, hi))


def _worker_init() -> None:
    # The benchmark owns its worker processes: quiet TensorFlow, one thread each.
    from bgopt_plugin.frontend.process import own_process

    own_process()


def run(seeds: list[int], methods: list[str], max_long_side: int | None, jobs: int,
        results: Path, reuse: list[dict]) -> list[dict]:
    reused = {(r["seed"], r["method"]): r for r in reuse if r["method"] in ANCHORS}
    rows = [reused[(s, m)] for s in seeds for m in methods if (s, m) in reused]
    todo = {s: [m for m in methods if (s, m) not in reused] for s in seeds}
    todo = {s: ms for s, ms in todo.items() if ms}
    with results.open("w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
        with ProcessPoolExecutor(jobs, initializer=_worker_init) as pool:
            futures = {pool.submit(score_draw, s, ms, max_long_side): s for s, ms in todo.items()}
            for k, fut in enumerate(futures, 1):
                for r in fut.result():
                    rows.append(r)
                    fh.write(json.dumps(r) + "\n")
                fh.flush()
                mine = [r for r in rows if r["seed"] == futures[fut] and "residual" in r]
                text = " ".join(f"{r['method']}={100 * r['residual']:.2f}%" for r in mine)
                print(f"[{k}/{len(futures)}] #{futures[fut]} {mine[0]['content'] if mine else ''}"
                      f" {mine[0]['shape'] if mine else ''} {text}", file=sys.stderr, flush=True)
    return rows


def summarise(rows: list[dict], methods: list[str]) -> str:
    """Markdown tables: residual median / p90 / worst per class and method, then flux kept
    and the protected share."""
    from bgopt_plugin.data.family import CONTENTS

    def stats(values):
        v = np.asarray(values, float)
        return (np.median(v), np.percentile(v, 90), v.max()) if v.size else (np.nan,) * 3

    def fmt(t):
        return " / ".join(f"{100 * x:.1f}" for x in t)

    present = [m for m in methods if any(r["method"] == m and "residual" in r for r in rows)]
    lines = ["| class | draws | " + " | ".join(present) + " |",
             "|---|---|" + "---|" * len(present)]
    for cls in (*CONTENTS, "all"):
        sel = [r for r in rows if cls == "all" or r["content"] == cls]
        n = len({r["seed"] for r in sel})
        cells = [fmt(stats([r["residual"] for r in sel if r["method"] == m and "residual" in r]))
                 for m in present]
        lines.append(f"| {cls} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "Flux kept, median (worst) per class; bgopt's protected share of working "
              "pixels, median (largest):", "",
              "| class | " + " | ".join(present) + " | bgopt protected |",
              "|---|" + "---|" * (len(present) + 1)]
    for cls in CONTENTS:
        sel = [r for r in rows if r["content"] == cls]
        cells = []
        for m in present:
            kept = [r["kept"] for r in sel if r["method"] == m and "kept" in r]
            cells.append(f"{100 * np.median(kept):.1f} ({100 * min(kept, key=lambda k: -abs(k - 1)):.1f})"
                         if kept else "")
        prot = [r["protected"] for r in sel if r["method"] == "bgopt" and "protected" in r]
        cells.append(f"{100 * np.median(prot):.1f} ({100 * max(prot):.1f})" if prot else "")
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    pairs = {}
    for r in rows:
        pairs.setdefault(r["seed"], {})[r["method"]] = r.get("residual")
    both = [(p["bgopt"], p["init"]) for p in pairs.values() if "bgopt" in p and "init" in p]
    if both:
        wins = sum(b <= i for b, i in both)
        lines += ["", f"Gradient descent at least as good as its initial solve on {wins} of "
                  f"{len(both)} draws."]
    stars = {r["seed"] for r in rows if r["content"] == "stars"}
    cost = [p["bgopt"] - p["unprotected"] for s, p in pairs.items()
            if s in stars and p.get("bgopt") is not None and p.get("unprotected") is not None]
    if cost:
        lines += [f"Star fields, protection on minus off: median {100 * np.median(cost):+.2f}, "
                  f"largest {100 * max(cost):+.2f} points ({sum(c > 0.003 for c in cost)} of "
                  f"{len(cost)} draws above +0.3)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", default="dev", help="dev, validation, or A:B (a seed range)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--max-long-side", type=int, default=None,
                   help="draw every sky at most this long (a quicker laboratory run)")
    p.add_argument("-j", "--jobs", type=int, default=2)
    p.add_argument("--results", type=Path, nargs="+", default=[Path("family-results.jsonl")],
                   help="where a run writes its rows (one file); with --summary-only, the "
                        "files to read")
    p.add_argument("--reuse", type=Path, default=None,
                   help="take photutils and Siril rows from this earlier results file")
    p.add_argument("--summary-only", action="store_true",
                   help="only print the tables of --results")
    args = p.parse_args(argv)
    if args.summary_only:
        rows = [json.loads(x) for f in args.results for x in f.read_text().splitlines()
                if x.strip()]
    else:
        if len(args.results) != 1:
            p.error("a run writes one --results file")
        reuse = []
        if args.reuse and args.reuse.exists():
            reuse = [json.loads(x) for x in args.reuse.read_text().splitlines() if x.strip()]
        rows = run(_seeds(args.set), args.methods, args.max_long_side, args.jobs, args.results[0],
                   reuse)
    print(summarise(rows, args.methods))
    return 0


if __name__ == "__main__":
    sys.exit(main())
