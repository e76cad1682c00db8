"""The Siril script inside the real Siril 1.4 (``siril-cli``), as a first-time user runs it.

Runs where ``siril-cli`` is on PATH (``../shared/tools/install_siril.sh`` installs Siril
1.4.4; ``.ci/run`` does); skips elsewhere, except with ``CI=true``, where a skip fails.
The module starts from an empty ``XDG_DATA_HOME``: Siril creates its own Python venv
there and installs sirilpy into it, and the script installs bgopt from this checkout with
the dependencies its pyproject.toml declares, with nothing pre-filled or installed by
hand. The later runs (a repeat, a failing run, the dialog) use that same venv, as a
user's next runs do. pip's own cache keeps repeat test sessions fast.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from bgopt_plugin.data.synthetic import make_scene

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "siril_script" / "BGOptimizer.py"
DRIVER = Path(__file__).resolve().parent / "siril_gui_driver.py"
SIRIL = shutil.which("siril-cli")
FIT = "-e 150 --seed 1"

CASES = {  # name: (scene, colour, 16-bit)
    "mono": ("linear", False, False),
    "rgb": ("dome", True, False),
    "mono16": ("linear", False, True),
}


@pytest.fixture(scope="module")
def siril_home(tmp_path_factory):
    """A working folder and the environment of a Siril that has never run a script."""
    if SIRIL is None:
        pytest.skip("siril-cli is not on PATH (../shared/tools/install_siril.sh installs it)")
    work = tmp_path_factory.mktemp("siril")
    env = {**os.environ, "XDG_DATA_HOME": str(work / "xdg"),
           "XDG_CONFIG_HOME": str(work / "cfg"), "QT_QPA_PLATFORM": "offscreen"}
    for name, (scene, rgb, sixteen) in CASES.items():
        img = make_scene(scene, shape=(120, 180)).image
        planes = np.moveaxis(img, -1, 0) if rgb else np.squeeze(img)
        if sixteen:
            planes = np.rint(np.clip(planes, 0, 1) * 65535).astype(np.uint16)
        hdu = fits.PrimaryHDU(planes.astype(np.float32) if not sixteen else planes)
        hdu.header["OBJECT"] = ("NGC 0001", "kept through Siril")
        hdu.writeto(work / f"{name}.fit")
    return work, env


def run_ssf(home, name: str, lines: list[str]) -> tuple[int, str, float]:
    """Run a Siril script file; return siril-cli's exit code, its output and the seconds."""
    work, env = home
    (work / f"{name}.ssf").write_text("\n".join(["requires 1.4.0", *lines]) + "\n")
    start = time.perf_counter()
    done = subprocess.run([SIRIL, "-d", str(work), "-s", str(work / f"{name}.ssf")], env=env,
                          capture_output=True, text=True, timeout=900)
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - start


def _bad_lines(log: str) -> list[str]:
    return [ln for ln in log.splitlines() if "Traceback" in ln or "WARNING" in ln]


@pytest.fixture(scope="module")
def first_run(siril_home):
    """load / pyscript / save for every case, the first script Siril's venv ever runs."""
    lines = []
    for name in CASES:
        lines += [f"load {name}.fit", f"pyscript {SCRIPT} {FIT}", f"save {name}_bg"]
    code, log, seconds = run_ssf(siril_home, "first", lines)
    print(f"\nfirst run in a new Siril venv (install included): {seconds:.1f} s for "
          f"{len(CASES)} images")
    assert code == 0, log[-4000:]
    return log


def test_first_run_installs_the_checkout_and_logs_clean(first_run):
    assert first_run.count(f"BGOptimizer: installing bgopt from {REPO}") == 1, first_run[-4000:]
    assert first_run.count("BGOptimizer: background removed") == len(CASES), first_run[-4000:]
    assert not _bad_lines(first_run), _bad_lines(first_run)
    assert "Script execution finished successfully" in first_run


def _spread(planes: np.ndarray) -> float:
    p = planes.astype(np.float64)
    p = p[0] if p.ndim == 3 else p
    return float(np.ptp(np.median(p.reshape(6, 20, 9, 20), axis=(1, 3))))


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_removed_layout_depth_and_header_kept(siril_home, first_run, name):
    work, _ = siril_home
    with fits.open(work / f"{name}.fit") as hdul:
        source = hdul[0].data
    with fits.open(work / f"{name}_bg.fit") as hdul:
        out, header = hdul[0].data, hdul[0].header
    assert out.shape == source.shape
    assert out.dtype.kind == source.dtype.kind and out.dtype.itemsize == source.dtype.itemsize
    assert _spread(out) < 0.3 * _spread(source)
    # the image's own header is kept, bgopt's parameters are recorded as on the CLI
    assert header["OBJECT"] == "NGC 0001"
    assert header["BGO_N"] == 32 and header["BGOPTVER"] and header["BGO_RUN"] > 0
    assert any("bgopt" in str(c) for c in header.get("COMMENT", []))


def test_later_run_installs_nothing(siril_home, first_run):
    code, log, seconds = run_ssf(siril_home, "later", [
        "load mono.fit", f"pyscript {SCRIPT} {FIT}", "save mono_later"])
    print(f"\nlater run, one 120x180 image: {seconds:.1f} s")
    assert code == 0, log[-4000:]
    assert "installing bgopt" not in log and "background removed" in log
    assert not _bad_lines(log), _bad_lines(log)


def test_failing_run_stops_the_siril_script(siril_home, first_run):
    # An invalid option: the .ssf must not go on to save the unchanged image.
    work, _ = siril_home
    code, log, _ = run_ssf(siril_home, "failing", [
        "load mono.fit", f"pyscript {SCRIPT} -O 9", "save mono_failed"])
    assert code != 0, log[-3000:]
    assert "BGOptimizer: bad option: --order" in log
    assert "Script execution failed" in log
    assert not (work / "mono_failed.fit").exists()
    assert not _bad_lines(log), _bad_lines(log)


def test_dialog_preview_and_apply_with_the_real_sirilpy(siril_home, first_run):
    # The PyQt6 dialog, built off-screen inside Siril's venv against the real sirilpy
    # and a real loaded image: Preview, then Apply, on the dialog's own code path.
    work, _ = siril_home
    code, log, _ = run_ssf(siril_home, "dialog", [
        "load rgb.fit", f"pyscript {DRIVER} {SCRIPT}", "save rgb_dialog"])
    assert code == 0, log[-4000:]
    found = re.search(r"GUI-DRIVER (\{.*\})", log)
    assert found, log[-4000:]
    report = json.loads(found.group(1))
    assert report["preview_pixels"] > 0
    assert report["undo"] == [report["undo"][0]] and report["undo"][0].startswith("bgopt ")
    assert report["pixels_set"] == 1 and report["result"] and report["errors"] == []
    with fits.open(work / "rgb.fit") as a, fits.open(work / "rgb_dialog.fit") as b:
        assert _spread(b[0].data) < 0.3 * _spread(a[0].data)
    assert not _bad_lines(log), _bad_lines(log)


def test_standin_matches_the_real_sirilpy(siril_home, first_run):
    # Every sirilpy function and SirilInterface method the script calls has the same
    # parameters (names, order, defaults) in the stand-in the fast tests use.
    import ast
    import inspect

    import tests.sirilpy_standin as standin

    work, env = siril_home
    tree = ast.parse(SCRIPT.read_text())
    methods = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call)
               and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
               and n.func.value.id == "siril"}
    functions = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                 and isinstance(n.value, ast.Name) and n.value.id in ("sirilpy", "s")
                 and n.attr[0].islower()}
    assert {"get_image_pixeldata", "set_image_pixeldata", "image_lock", "cmd"} <= methods
    python = next((work / "xdg" / "siril" / "venv" / "bin").glob("python3"))
    probe = (
        "import inspect, json, sys, sirilpy\n"
        "m, f = json.loads(sys.argv[1]), json.loads(sys.argv[2])\n"
        "sig = lambda o: [[p.name, repr(p.default)] for p in inspect.signature(o).parameters.values()]\n"
        "print(json.dumps({'methods': {k: sig(getattr(sirilpy.SirilInterface, k)) for k in m},\n"
        "                  'functions': {k: sig(getattr(sirilpy, k)) for k in f}}))\n")
    done = subprocess.run([str(python), "-c", probe, json.dumps(sorted(methods)),
                           json.dumps(sorted(functions))], capture_output=True, text=True,
                          env=env, check=True)
    real = json.loads(done.stdout)

    def sig(obj):
        return [[p.name, repr(p.default)] for p in inspect.signature(obj).parameters.values()]

    for name in sorted(methods):
        assert sig(getattr(standin.SirilInterface, name)) == real["methods"][name], name
    for name in sorted(functions):
        assert sig(getattr(standin, name)) == real["functions"][name], name
