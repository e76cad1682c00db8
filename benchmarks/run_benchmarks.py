"""Speed, memory and accuracy of bgopt on synthetic masters, printed as a table.

Each measurement runs in a fresh child process so its peak RSS is its own (the
master is generated in a child as well: Linux carries a parent's peak RSS across exec):

* ``floor``: read and write the same FITS file with astropy alone;
* ``tf``: a plain ``import tensorflow`` after bgopt's imports, as a user's own import
  costs (the engine times the host's quiet import of the same TensorFlow);
* ``engine``: bgopt's stages in one process set up as the command sets its own
  (``frontend.process.own_process``: one thread, the XLA cache): read, prepare =
  stretch + downscale, fit, full-resolution evaluation, correction, write, with the
  TensorFlow import timed apart;
* ``cli``: the ``bgopt`` command end to end, FITS in, FITS out;
* ``photutils``: a photutils ``Background2D`` baseline on the same image.

Accuracy is the engine tests' residual: RMS(model - truth, median offset removed) /
peak-to-peak(truth) over every pixel (the galaxy's included), worst channel.
``benchmarks/scenes.py`` scores the synthetic scenes (objects, flux kept).

Usage::

    python benchmarks/run_benchmarks.py                 # all sizes
    python benchmarks/run_benchmarks.py --sizes 1.5mp 6mp --repeat 1
    python benchmarks/run_benchmarks.py --write         # also update benchmarks/README.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

SIZES = {  # name: (height, width, channels)
    "1.5mp": (1000, 1500, 1),
    "6mp": (2000, 3000, 3),
    "24mp": (4000, 6000, 3),
    "60mp": (6336, 9504, 1),
}


# --------------------------------------------------------------------------- data
def make_master(shape: tuple[int, int, int], seed: int = 11):
    """A linear master: coloured light-pollution dome + tilt, a galaxy, stars, noise."""
    from bgopt_plugin.data.synthetic import add_stars

    h, w, c = shape
    rng = np.random.default_rng(seed)
    long_side = max(h, w)
    y = (np.arange(h, dtype=np.float32) / long_side)[:, None]
    x = (np.arange(w, dtype=np.float32) / long_side)[None, :]
    hh = h / long_side
    dome = np.exp(-((x - 0.2) ** 2 + (y - hh - 0.1) ** 2) / np.float32(0.3))
    galaxy = np.float32(0.2) * np.exp(-np.sqrt(((x - 0.55) / 1.0) ** 2 + ((y - 0.3 * hh) / 0.6) ** 2)
                                      / np.float32(0.03))
    stars = add_stars((h, w), rng, density=1e-4, fwhm=3.0)
    image = np.empty((h, w, c), np.float32)
    truth = np.empty((h, w, c), np.float32)
    colour = [(0.05, 0.012), (0.032, 0.010), (0.012, 0.014)]
    for k in range(c):
        a, b = colour[k]
        truth[..., k] = 0.04 + a * dome + b * x + 0.005 * y
        clean = truth[..., k] + galaxy + stars
        noise = rng.standard_normal((h, w), dtype=np.float32) * np.sqrt(clean / 20000 + 0.0008**2)
        image[..., k] = np.clip(clean + noise, 1e-5, 1.0)
    return image, truth


def write_case(name: str, folder: Path) -> dict:
    from astropy.io import fits

    h, w, c = SIZES[name]
    image, truth = make_master((h, w, c))
    src = folder / f"{name}.fits"
    planes = np.moveaxis(image, -1, 0) if c == 3 else image[..., 0]
    fits.PrimaryHDU(planes).writeto(src, overwrite=True)
    np.save(folder / f"{name}_truth.npy", truth)
    return {"src": str(src), "bytes": int(image.nbytes), "shape": [h, w, c]}


# --------------------------------------------------------------------------- children
def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _score(background: np.ndarray, folder: Path, name: str) -> float:
    from bgopt_plugin.data.synthetic import residual_score

    truth = np.load(folder / f"{name}_truth.npy", mmap_mode="r")
    step = 4  # a regular subsample is plenty for an RMS of a smooth difference
    sub = np.asarray(truth[::step, ::step])
    # Every pixel counts, the galaxy's included: a model that rises under it is penalised.
    return residual_score(np.asarray(background[::step, ::step]), sub, np.ones(sub.shape[:2], bool))


def child_floor(folder: Path, name: str) -> dict:
    """A fresh process that only reads the input and writes two outputs with astropy."""
    code = ("import sys; from astropy.io import fits; d = fits.getdata(sys.argv[1]); "
            "fits.PrimaryHDU(d).writeto(sys.argv[2], overwrite=True); "
            "fits.PrimaryHDU(d).writeto(sys.argv[3], overwrite=True)")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(folder / f"{name}.fits"),
                    str(folder / f"{name}_floor1.fits"), str(folder / f"{name}_floor2.fits")],
                   check=True)
    wall = time.perf_counter() - t
    return {"total": wall, "rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0}


def child_tf(folder: Path, name: str) -> dict:
    """A fresh process that imports bgopt, then TensorFlow as a plain ``import tensorflow``
    does (Keras and every API module included, none of bgopt's trimming)."""
    import bgopt_plugin  # noqa: F401  (the modules loaded before, as in the engine's figure)

    t = time.perf_counter()
    import tensorflow  # noqa: F401

    return {"tf_import": time.perf_counter() - t}


def _upsample_error(res) -> float:
    """Largest difference between the evaluated model and the exact spline, / its range."""
    from bgopt_plugin.core import evaluation_step

    h, w = res.background.shape[:2]
    if evaluation_step((h, w)) == 1:
        return 0.0
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, h, 20000), rng.integers(0, w, 20000)
    long_side = float(max(h, w))
    q = np.stack([(rows + 0.5) / long_side, (cols + 0.5) / long_side], -1).astype(np.float32)
    exact = res.model.stretch.denormalize(res.model.spline(q).astype(np.float32))
    got = res.background.reshape(h, w, -1)[rows, cols]
    span = np.ptp(res.background.reshape(-1, got.shape[-1])[::97], axis=0).max()
    return float(np.abs(got - exact).max() / span)


def child_engine(folder: Path, name: str) -> dict:
    import bgopt_plugin as bgopt
    from bgopt_plugin import io as bio
    from bgopt_plugin.core._tf import device_name

    try:   # as the command sets up its process (earlier rounds: in the library itself)
        from bgopt_plugin.frontend.process import import_tensorflow_during, own_process
    except ImportError:
        from bgopt_plugin.core._tf import tf

        own_process, import_tensorflow_during = (lambda: None), (lambda task: (tf(), task())[1])
    own_process()
    t = time.perf_counter()
    import_tensorflow_during(lambda: None)
    t_import = time.perf_counter() - t
    t = time.perf_counter()
    image = bio.read_image(folder / f"{name}.fits")
    t_read = time.perf_counter() - t
    res = bgopt.fit_background(image.data, seed=1)
    t = time.perf_counter()
    bio.write_image(folder / f"{name}_bgSubtracted.fits", image, res.corrected, overwrite=True)
    bio.write_image(folder / f"{name}_bgModel.fits", image, res.background, overwrite=True)
    t_write = time.perf_counter() - t
    rss = _peak_mb()  # before the accuracy checks below, which are not part of a run
    again = bgopt.fit_background(image.data, seed=1)   # compiled loop reused, new arrays
    warm = again.timings["fit"]
    # As a batch runs after its first file: output arrays already touched (the CLI's).
    bufs = (np.empty_like(image.data), np.empty_like(image.data))
    bgopt.fit_background(image.data, seed=1, out=bufs)
    reused = bgopt.fit_background(image.data, seed=1, out=bufs)
    # One pass over the image's memory: a copy into a new array (as a first run pays
    # it), and into an array already touched (as the reused run pays it).
    copies, touched = [], []
    for _ in range(3):
        t = time.perf_counter()
        np.copyto(np.empty_like(image.data), image.data)
        copies.append(time.perf_counter() - t)
        t = time.perf_counter()
        np.copyto(bufs[1], image.data)
        touched.append(time.perf_counter() - t)
    out = {"tf_import": t_import, "read": t_read, "write": t_write, "epochs": res.epochs_run,
           "residual": _score(res.background, folder, name), "rss": rss, "fit_warm": warm,
           "device": device_name(), "factor": res.downscaling_factor,
           "upsample_error": _upsample_error(res), "copy": min(copies), "copy_touched": min(touched),
           "warm_stages": {k: again.timings[k] for k in ("evaluate", "correct", "prepare")},
           "reused_stages": {k: reused.timings[k] for k in ("evaluate", "correct", "prepare")}}
    out.update({k: v for k, v in res.timings.items()})
    return out


def child_cli(folder: Path, name: str) -> dict:
    out_dir = folder / "cli"
    out_dir.mkdir(exist_ok=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bgopt_plugin", str(folder / f"{name}.fits"), "-o",
                    str(out_dir), "--seed", "1", "-q", "--overwrite"], check=True)
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"total": wall, "rss": rss}


BATCH = 4   # files in the batch measurement


def child_batch(folder: Path, name: str) -> dict:
    """``bgopt`` on BATCH copies of the master, with -j 1 and -j 2: wall time per file."""
    src = folder / f"{name}.fits"
    inputs = []
    for k in range(BATCH):
        dst = folder / f"{name}_copy{k}.fits"
        if not dst.exists():
            os.link(src, dst)
        inputs.append(str(dst))
    out: dict = {}
    walls = {}
    for label, files, jobs in (("one", inputs[:1], 1), ("j1", inputs, 1), ("two", inputs[:2], 2),
                               ("j2", inputs, 2)):
        out_dir = folder / f"batch_{label}"
        out_dir.mkdir(exist_ok=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bgopt_plugin", *files, "-o", str(out_dir), "--seed",
                        "1", "-q", "--overwrite", "-j", str(jobs)], check=True)
        walls[label] = time.perf_counter() - t
        for f in out_dir.glob("*"):
            f.unlink()
    out["j1"], out["j2"] = walls["j1"] / BATCH, walls["j2"] / BATCH
    # What one more file adds to a batch, TensorFlow's import and the compile paid: with
    # -j 1, (4 files - 1 file) / 3; with -j 2, (4 files - 2 files) / 2.
    out["marginal"] = (walls["j1"] - walls["one"]) / (BATCH - 1)
    out["marginal_j2"] = (walls["j2"] - walls["two"]) / (BATCH - 2)
    for path in inputs:
        Path(path).unlink()
    return out


def child_siril(folder: Path, name: str) -> dict:
    """The Siril script inside the real Siril (siril-cli), headless: the whole processing
    its log reports (pixel transfers, conversions, fit and header) and fit_background's
    part of it."""
    import re
    import shutil

    siril = shutil.which("siril-cli")
    if siril is None:
        return {}
    xdg = folder / "siril-xdg"
    script = folder / "bench.ssf"
    script.write_text(f"requires 1.4.0\nload {name}.fits\n"
                      f"pyscript {REPO / 'siril_script' / 'BGOptimizer.py'} --seed 1\n"
                      f"save {name}_siril\n")
    env = {**os.environ, "XDG_DATA_HOME": str(xdg), "XDG_CONFIG_HOME": str(folder / "siril-cfg")}
    # The first run in a new Siril venv installs bgopt (the script does it, as for a new
    # user); the second is the one measured.
    for _ in range(2):
        t = time.perf_counter()
        done = subprocess.run([siril, "-d", str(folder), "-s", str(script)], env=env,
                              capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - t
    found = re.search(r"background removed \(.*total ([0-9.]+)s, with Siril's transfers ([0-9.]+)s",
                      done.stdout)
    return {"script": float(found.group(2)) if found else None,
            "fit_background": float(found.group(1)) if found else None, "siril_wall": wall}


def child_photutils(folder: Path, name: str) -> dict:
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground

    from bgopt_plugin import io as bio

    image = bio.read_image(folder / f"{name}.fits").data
    h, w, c = image.shape
    box = max(32, max(h, w) // 24)
    t = time.perf_counter()
    bg = np.empty_like(image)
    for k in range(c):
        b2d = Background2D(image[..., k], box, filter_size=3, sigma_clip=SigmaClip(sigma=3.0),
                           bkg_estimator=MedianBackground())
        bg[..., k] = b2d.background
    elapsed = time.perf_counter() - t
    return {"total": elapsed, "residual": _score(bg, folder, name), "rss": _peak_mb(), "box": box}


def child_make(folder: Path, name: str) -> dict:
    return write_case(name, folder)


CHILDREN = {"floor": child_floor, "tf": child_tf, "engine": child_engine, "cli": child_cli,
            "batch": child_batch, "siril": child_siril, "photutils": child_photutils}


def run_child(kind: str, folder: Path, name: str, timeout: int = 1800) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(folder), name],
                          capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:80]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report
def machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import tensorflow as tf

    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB; Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, numpy {np.__version__}")


def fmt(v, spec=".1f", suffix=""):
    return "-" if v is None else f"{v:{spec}}{suffix}"


def table(rows: list[dict]) -> str:
    head = ("| case | read | prepare | fit (warm) | eval | correct | write "
            "| TF import: bgopt's / plain | epochs | "
            "CLI e2e | floor | CLI/floor | peak RSS engine / CLI | RSS limit | residual | upsample err | "
            "photutils time | photutils residual | photutils RSS |")
    sep = "|" + "---|" * (head.count("|") - 1)
    lines = [head, sep]
    for r in rows:
        e, c, f, p = r["engine"], r["cli"], r["floor"], r["photutils"]
        limit = (4 * r["bytes"] + 2**30) / 2**20
        ratio = c.get("total") / f.get("total") if c.get("total") and f.get("total") else None
        lines.append(
            f"| {r['name']} ({r['shape'][1]}x{r['shape'][0]}x{r['shape'][2]}) "
            f"| {fmt(e.get('read'))} | {fmt(e.get('prepare'))} | {fmt(e.get('fit'))} "
            f"({fmt(e.get('fit_warm'))}) "
            f"| {fmt(e.get('evaluate'))} | {fmt(e.get('correct'))} | {fmt(e.get('write'))} "
            f"| {fmt(e.get('tf_import'))} / {fmt(r.get('tf', {}).get('tf_import'))} "
            f"| {e.get('epochs', '-')} | {fmt(c.get('total'))} "
            f"| {fmt(f.get('total'))} | {fmt(ratio, '.1f', 'x')} "
            f"| {fmt(e.get('rss'), '.0f')} / {fmt(c.get('rss'), '.0f')} MB | {limit:.0f} MB "
            f"| {fmt(100 * e['residual'] if 'residual' in e else None, '.2f', '%')} "
            f"| {fmt(100 * e['upsample_error'] if 'upsample_error' in e else None, '.4f', '%')} "
            f"| {fmt(p.get('total'))} | {fmt(100 * p['residual'] if 'residual' in p else None, '.2f', '%')} "
            f"| {fmt(p.get('rss'), '.0f')} MB |")
        for part in (e, c, f, p):
            if "error" in part:
                lines.append(f"|  error: {part['error']} |")
    return "\n".join(lines)


def speed_table(rows: list[dict]) -> str:
    """The speed targets: per-file batch cost and single-file wall time against the
    read+write floor, warm fit, and the full-resolution stages in copies of the image."""
    head = ("| case | floor | batch per file -j 1 / -j 2 | one more file, -j 1 / -j 2 | target 3 x floor "
            "| single file CLI "
            "| target TF import + 3 x floor: bgopt's import / plain import | warm fit "
            "| eval / correct / prepare in copies: first run; reused arrays "
            "| peak RSS / limit | Siril script: whole / fit_background (in Siril) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        e, c, f, b, s = r["engine"], r["cli"], r["floor"], r.get("batch", {}), r.get("siril", {})
        floor, copy = f.get("total"), e.get("copy")
        limit = (4 * r["bytes"] + 2**30) / 2**20
        reused, touched = e.get("reused_stages", {}), e.get("copy_touched")
        passes = (" / ".join(fmt(e[k] / copy if copy and k in e else None, ".1f")
                             for k in ("evaluate", "correct", "prepare"))
                  + " (copy " + fmt(copy, ".3f") + " s); "
                  + " / ".join(fmt(reused[k] / touched if touched and k in reused else None, ".1f")
                               for k in ("evaluate", "correct", "prepare"))
                  + " (copy " + fmt(touched, ".3f") + " s)")
        plain = r.get("tf", {}).get("tf_import")
        target2 = e["tf_import"] + 3 * floor if floor and "tf_import" in e else None
        target2_plain = plain + 3 * floor if floor and plain else None
        lines.append(
            f"| {r['name']} | {fmt(floor)} | {fmt(b.get('j1'))} / {fmt(b.get('j2'))} "
            f"| {fmt(b.get('marginal'))} / {fmt(b.get('marginal_j2'))} "
            f"| {fmt(3 * floor if floor else None)} | {fmt(c.get('total'))} "
            f"| {fmt(target2)} / {fmt(target2_plain)} "
            f"| {fmt(e.get('fit_warm'), '.2f')} | {passes} "
            f"| {fmt(max(e.get('rss', 0), c.get('rss', 0)), '.0f')} / {limit:.0f} MB "
            f"| {fmt(s.get('script'))} / {fmt(s.get('fit_background'))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--skip", nargs="*", default=[], choices=list(CHILDREN),
                   help="measurements to leave out")
    p.add_argument("--write", action="store_true", help="write the table to benchmarks/README.md")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        kind, folder, name = args.child
        fn = child_make if kind == "make" else CHILDREN[kind]
        print(json.dumps(fn(Path(folder), name)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="bgopt-bench-") as tmp:
        folder = Path(tmp)
        for name in args.sizes:
            # Linux keeps a process's peak RSS across exec, so the parent stays small:
            # the master is made in a child too, and each child's peak is its own.
            case = run_child("make", folder, name)
            row = {"name": name, "bytes": case["bytes"], "shape": case["shape"]}
            for kind in CHILDREN:
                row[kind] = {} if kind in args.skip else run_child(kind, folder, name)
                print(f"  {name:6s} {kind:10s} {json.dumps(row[kind])}", file=sys.stderr, flush=True)
            rows.append(row)
            for f in folder.glob(f"{name}*"):
                f.unlink()
            for f in (folder / "cli").glob("*"):
                f.unlink()
    text = table(rows) + "\n\nSpeed targets (seconds unless noted):\n\n" + speed_table(rows)
    info = machine()
    device = next((r["engine"].get("device") for r in rows if "device" in r["engine"]), "CPU")
    print(f"Machine: {info}; TensorFlow device: {device}\n")
    print(text)
    if args.write:
        readme = HERE / "README.md"
        intro = readme.read_text().split("<!-- table -->")[0] if readme.exists() else ""
        readme.write_text(f"{intro}<!-- table -->\nMachine: {info}; TensorFlow device: {device}. "
                          f"Run on {time.strftime('%Y-%m-%d')}.\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
