"""The Siril script inside the real Siril 1.4 (``siril-cli``), headless.

Runs only where ``siril-cli`` is on PATH (``../shared/tools/build_siril.sh`` builds Siril
1.4.4 from source in about 4 minutes); skips otherwise. Siril runs the script with its own
Python venv, which it creates under ``$XDG_DATA_HOME/siril/venv``; the test points
XDG_DATA_HOME at a temporary folder and pre-creates that venv with a ``.pth`` file onto
this interpreter's packages, so Siril installs sirilpy itself but nothing has to be
downloaded for bgopt.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from bgopt_plugin.data.synthetic import make_scene

SCRIPT = Path(__file__).resolve().parents[1] / "siril_script" / "BGOptimizer.py"
SIRIL = shutil.which("siril-cli")

pytestmark = pytest.mark.skipif(SIRIL is None, reason="siril-cli is not on PATH")

CASES = {  # name: (scene, colour, 16-bit)
    "mono": ("linear", False, False),
    "rgb": ("dome", True, False),
    "rgb16": ("dome", True, True),
}


def _python_for_siril() -> str:
    """The interpreter Siril will build its venv from: the first python3 on PATH."""
    found = shutil.which("python3")
    if found is None:
        pytest.skip("no python3 on PATH for Siril's venv")
    version = subprocess.run([found, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if version != str(tuple(sys.version_info[:2])):
        pytest.skip(f"Siril's python3 is {version}, the tests run {sys.version_info[:2]}")
    return found


@pytest.fixture(scope="module")
def siril_run(tmp_path_factory):
    """Run one .ssf over the three inputs; return (folder, log text, inputs)."""
    work = tmp_path_factory.mktemp("siril")
    xdg = work / "xdg"
    venv = xdg / "siril" / "venv"
    subprocess.run([_python_for_siril(), "-m", "venv", str(venv)], check=True)
    packages = next(venv.glob("lib/python3*/site-packages"))
    (packages / "bgopt_test.pth").write_text(
        "\n".join([*site.getsitepackages(), str(SCRIPT.parents[1])]) + "\n")
    inputs, lines = {}, ["requires 1.4.0"]
    for name, (scene, rgb, sixteen) in CASES.items():
        img = make_scene(scene, shape=(120, 180)).image
        planes = np.moveaxis(img, -1, 0) if rgb else np.squeeze(img)
        if sixteen:
            planes = np.rint(np.clip(planes, 0, 1) * 65535).astype(np.uint16)
        else:
            planes = planes.astype(np.float32)
        fits.writeto(work / f"{name}.fit", planes)
        inputs[name] = planes
        lines += [f"load {name}.fit", f"pyscript {SCRIPT} -e 150 --seed 1", f"save {name}_bg"]
    (work / "run.ssf").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "XDG_DATA_HOME": str(xdg), "XDG_CONFIG_HOME": str(work / "cfg")}
    done = subprocess.run([SIRIL, "-d", str(work), "-s", str(work / "run.ssf")], env=env,
                          capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    return work, log, inputs


def _spread(planes: np.ndarray) -> float:
    p = planes.astype(np.float64)
    p = p[0] if p.ndim == 3 else p
    return float(np.ptp(np.median(p.reshape(6, 20, 9, 20), axis=(1, 3))))


def test_log_is_clean(siril_run):
    _, log, _ = siril_run
    assert log.count("BGOptimizer: background removed") == len(CASES), log[-3000:]
    for bad in ("Traceback", "WARNING", "rror"):
        assert bad not in log, log[log.index(bad) - 500:log.index(bad) + 500]


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_removed_layout_and_depth_kept(siril_run, name):
    work, _, inputs = siril_run
    with fits.open(work / f"{name}_bg.fit") as hdul:
        out, header = hdul[0].data, hdul[0].header
    source = inputs[name]
    assert out.shape == source.shape
    assert out.dtype.kind == source.dtype.kind and out.dtype.itemsize == source.dtype.itemsize
    assert _spread(out) < 0.3 * _spread(source)
    # the parameters are recorded as on the command line's outputs
    assert header["BGO_N"] == 32 and header["BGOPTVER"] and header["BGO_RUN"] > 0
    assert any("bgopt" in str(c) for c in header.get("COMMENT", []))
