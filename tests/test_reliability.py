"""Hostile use of the command line, the engine and the astropy API: nothing lost,
nothing half-written, every bad value refused up front with one line."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from xisf import XISF

import bgopt_plugin as bgopt
from bgopt_plugin import io as bio
from bgopt_plugin.cli import main
from bgopt_plugin.core import ParameterError
from bgopt_plugin.data.synthetic import make_scene

FAST = ["-e", "30", "--seed", "1", "-qq"]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def _sky(shape=(64, 96), rgb=False, seed=0):
    return make_scene("dome" if rgb else "linear", shape=shape, seed=seed).image


def _fits(path: Path, img=None) -> Path:
    img = _sky() if img is None else img
    fits.PrimaryHDU(np.moveaxis(img, -1, 0) if img.ndim == 3 else img).writeto(path)
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _err_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("bgopt:")]


# --------------------------------------------------------------- 1-2: the batch plan
def test_a_batch_never_overwrites_its_own_inputs(tmp_path, capsys):
    a = _fits(tmp_path / "a.fits")
    b = _fits(tmp_path / "a_bgSubtracted.fits", _sky(seed=3))
    before = b.read_bytes()
    code = main([str(a), str(b), "-o", str(tmp_path), "--overwrite", *FAST])
    assert code == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "a.fits" in err[0] and "a_bgSubtracted.fits" in err[0]
    assert b.read_bytes() == before                       # the input survived
    assert (tmp_path / "a_bgSubtracted_bgSubtracted.fits").exists()  # the rest went on
    assert not (tmp_path / "a_bgModel.fits").exists()     # nothing of the refused file


def test_a_pattern_skips_bgopt_outputs_so_a_rerun_is_harmless(tmp_path, capsys):
    _fits(tmp_path / "m31.fits")
    pattern = str(tmp_path / "*.fits")
    assert main([pattern, "-o", str(tmp_path), "--overwrite", *FAST]) == 0
    first = _files(tmp_path)
    assert main([pattern, "-o", str(tmp_path), "--overwrite", "-e", "30", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 file(s) that bgopt wrote" in out
    assert set(_files(tmp_path)) == set(first)            # no m31_bgSubtracted_bgSubtracted
    # Named explicitly, an output is an input like any other.
    assert main([str(tmp_path / "m31_bgModel.fits"), "-o", str(tmp_path), *FAST]) == 0
    assert (tmp_path / "m31_bgModel_bgSubtracted.fits").exists()


def test_two_inputs_with_the_same_outputs_are_refused_up_front(tmp_path, capsys):
    _fits(tmp_path / "m42.fits")
    XISF.write(str(tmp_path / "m42.xisf"), _sky()[..., None])
    out = tmp_path / "out"
    code = main([str(tmp_path / "m42.fits"), str(tmp_path / "m42.xisf"), "-o", str(out),
                 "--format", "fits", *FAST])
    assert code == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "m42.xisf" in err[0] and "m42.fits" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["m42_bgModel.fits", "m42_bgSubtracted.fits"]
    # Same names, different formats: the PNG plots would collide.
    code = main([str(tmp_path / "m42.fits"), str(tmp_path / "m42.xisf"), "-o", str(tmp_path / "o2"),
                 "--plots", *FAST])
    assert code == 2 and "_before_after.png" in _err_lines(capsys)[0]


def test_a_name_with_glob_characters_is_that_file(tmp_path):
    _fits(tmp_path / "m[1].fits")
    _fits(tmp_path / "m1.fits")
    assert main([str(tmp_path / "m[1].fits"), "-o", str(tmp_path), *FAST]) == 0
    assert (tmp_path / "m[1]_bgSubtracted.fits").exists()
    assert not (tmp_path / "m1_bgSubtracted.fits").exists()


# --------------------------------------------------------------- 3-4: values refused
@pytest.mark.parametrize("option,value,name", [
    ("--pedestal", "nan", "--pedestal"), ("--pedestal", "inf", "--pedestal"),
    ("-lr", "inf", "--learning-rate"), ("-a", "inf", "--alpha"), ("-dq", "nan", "--delinearization-quantile"),
    ("--seed", "-1", "--seed"), ("-tM", "nan", "--threshold-max"),
])
def test_non_finite_and_out_of_range_options_are_refused_before_reading(tmp_path, capsys, option, value,
                                                                        name):
    code = main([str(tmp_path / "missing.fits"), "-o", str(tmp_path), option, value])
    assert code == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and err[0].startswith(f"bgopt: error: {name}: must be")
    assert "missing.fits" not in err[0]                   # no file was looked at
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("options", [{"pedestal": float("nan")}, {"alpha": float("inf")},
                                     {"learning_rate": float("nan")}, {"seed": -2},
                                     {"protect_sigma": float("inf")}, {"smoothing": -1.0}])
def test_engine_refuses_bad_values_naming_them(options):
    name = next(iter(options))
    with pytest.raises(ParameterError, match=f"^{name} must be") as info:
        bgopt.fit_background(_sky(), **options)
    assert info.value.name == name


def test_numpy_masked_arrays_are_honoured():
    img = _sky(shape=(96, 128))
    bad = np.zeros(img.shape, bool)
    bad[:, :40] = True
    garbage = img.copy()
    garbage[bad] = 0.5                                    # 10 x the sky under the mask
    opts = dict(seed=1, epochs=60, protect=False)
    clean = bgopt.fit_background(img, **opts).background
    masked = bgopt.fit_background(np.ma.array(garbage, mask=bad), **opts).background
    plain = bgopt.fit_background(garbage, **opts).background
    assert np.abs(masked - clean)[:, 40:].max() < 0.005 < np.abs(plain - clean)[:, 40:].max()


# --------------------------------------------------------------- 6-8: half-written sets
def test_existing_plot_png_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    src = _fits(tmp_path / "x.fits")
    (tmp_path / "x_bgSubtracted_loss.png").write_bytes(b"mine")
    import bgopt_plugin.cli.job as engine

    calls = []
    monkeypatch.setattr(engine, "fit_background", lambda *a, **k: calls.append(1))
    assert main([str(src), "-o", str(tmp_path), "--plots", *FAST]) == 2
    assert calls == [] and "x_bgSubtracted_loss.png: output exists" in _err_lines(capsys)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fits", "x_bgSubtracted_loss.png"]


@pytest.mark.parametrize("error,message", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
    (OSError("488000 requested and 11568 written"), "no space left on device"),
])
@pytest.mark.parametrize("failed,slow", [("x_bgModel", "x_bgSubtracted"),
                                         ("x_bgSubtracted", "x_bgModel")])
def test_a_failed_output_leaves_nothing_of_the_file(tmp_path, capsys, monkeypatch, error, message,
                                                     failed, slow):
    """The two outputs are written at once; when one fails, the other (made slow here)
    is waited for before the temporaries are removed, so none is left behind."""
    src = _fits(tmp_path / "x.fits")
    import bgopt_plugin.io.fits as fits_io

    real = fits_io._stream

    def failing(path, header, pixels, rows=512):
        name = Path(path).name
        if name.startswith(f".{failed}.fits."):
            Path(path).write_bytes(b"partial")
            raise error
        if name.startswith(f".{slow}.fits."):
            time.sleep(0.5)
        return real(path, header, pixels, rows)
    monkeypatch.setattr(fits_io, "_stream", failing)
    assert main([str(src), "-o", str(tmp_path), *FAST]) == 2
    time.sleep(0.8)   # a write still running after main() would recreate its temporary
    err = _err_lines(capsys)
    assert len(err) == 1 and f"{failed}.fits" in err[0] and message in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fits"]  # no output, no temporary


def test_ctrl_c_removes_temporaries_and_exits_130(tmp_path, capsys, monkeypatch):
    src = _fits(tmp_path / "x.fits")
    import bgopt_plugin.frontend.plots as plots

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(plots, "plot_loss", interrupted)
    assert main([str(src), "-o", str(tmp_path), "--plots", *FAST]) == 130
    assert _err_lines(capsys) == ["bgopt: error: interrupted; unfinished outputs removed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fits"]


def test_sigterm_removes_temporaries_and_exits_143(tmp_path):
    src = _fits(tmp_path / "big.fits", make_scene("dome", shape=(900, 1400)).image)
    proc = subprocess.Popen([sys.executable, "-m", "bgopt_plugin", str(src), "-o", str(tmp_path),
                             "-e", "5000", "--seed", "1", "-q"], stderr=subprocess.PIPE, text=True, env=ENV)
    # Wait until the run is busy (TensorFlow imported, fitting), then terminate it.
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        status = Path(f"/proc/{proc.pid}/status")
        if status.exists() and "VmRSS" in status.read_text():
            rss = int(status.read_text().split("VmRSS:")[1].split()[0])
            if rss > 400_000:
                break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "bgopt: error: terminated; unfinished outputs removed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.fits"]


def test_a_later_run_removes_stale_temporaries_of_dead_runs_only(tmp_path):
    src = _fits(tmp_path / "x.fits")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".x_bgSubtracted.fits.{dead}.k3j9a_1z.part"
    live = tmp_path / f".y_bgModel.fits.{os.getpid()}.abcdefgh.part"
    other = tmp_path / f".notes.txt.{dead}.abcdefgh.part"
    for p in (stale, live, other):
        p.write_bytes(b"left over")
    assert main([str(src), "-o", str(tmp_path), *FAST]) == 0
    assert not stale.exists() and live.exists() and other.exists()


def test_a_closed_stdout_does_not_fail_a_finished_file(tmp_path):
    src = _fits(tmp_path / "x.fits")
    proc = subprocess.Popen([sys.executable, "-m", "bgopt_plugin", str(src), str(src), "-o", str(tmp_path),
                             "-e", "30", "--seed", "1", "-v"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    proc.stdout.close()                                   # like `bgopt ... | head -0`
    err = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert proc.returncode == 0, err
    assert "error" not in err and "Exception ignored" not in err
    assert (tmp_path / "x_bgSubtracted.fits").exists()


# --------------------------------------------------------------- 9-13: clear messages
def test_output_option_naming_a_file_or_an_impossible_folder(tmp_path, capsys):
    src = _fits(tmp_path / "x.fits")
    assert main([str(src), "-o", str(src), *FAST]) == 2
    assert _err_lines(capsys) == [f"bgopt: error: {src}: not a directory"]
    assert main([str(src), "-o", str(src / "sub"), *FAST]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "cannot create the output directory (not a directory)" in err[0]
    assert main([str(src), "-o", str(tmp_path / "a" / "b"), *FAST]) == 0
    assert (tmp_path / "a" / "b" / "x_bgSubtracted.fits").exists()


def test_fifos_and_devices_are_refused_without_hanging(tmp_path):
    fifo = tmp_path / "x.fits"
    os.mkfifo(fifo)
    (tmp_path / "z.fits").symlink_to("/dev/zero")
    r = subprocess.run([sys.executable, "-m", "bgopt_plugin", str(fifo), str(tmp_path / "z.fits"),
                        "-o", str(tmp_path / "out"), "-q"], capture_output=True, text=True, env=ENV,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"bgopt: error: {fifo}: not a regular file",
                                             f"bgopt: error: {tmp_path / 'z.fits'}: not a regular file"]


def test_an_unwritable_folder_is_reported_before_any_fit(tmp_path, capsys, monkeypatch):
    src = _fits(tmp_path / "x.fits")
    import bgopt_plugin.cli.job as engine

    calls = []
    monkeypatch.setattr(engine, "fit_background", lambda *a, **k: calls.append(1))
    target = "/proc/self" if os.geteuid() == 0 else str(tmp_path / "ro")
    if target != "/proc/self":
        os.mkdir(target, 0o555)
    assert main([str(src), str(src), "-o", target, *FAST]) == 2
    assert calls == [] and len(_err_lines(capsys)) == 1


def test_xisf_clipping_is_a_warning_on_stderr_even_when_quiet(tmp_path):
    img = _sky()
    img[:, :10] += 0.97                                   # bright enough to leave [0, 1] after the pedestal
    XISF.write(str(tmp_path / "c.xisf"), np.clip(img, 0, 1)[..., None])
    r = subprocess.run([sys.executable, "-m", "bgopt_plugin", str(tmp_path / "c.xisf"), "-o", str(tmp_path),
                        "--pedestal", "0.5", *FAST], capture_output=True, text=True, env=ENV,
                       timeout=300)
    assert r.returncode == 0 and r.stdout == ""
    assert "bgopt: warning: c_bgSubtracted.xisf:" in r.stderr and "clipped" in r.stderr


def test_worker_warnings_keep_the_bgopt_format(tmp_path):
    # -j workers format warnings as the main process does (one "bgopt: warning:" line).
    img = _sky()
    img[:, :10] += 0.97
    for name in ("c", "d"):
        XISF.write(str(tmp_path / f"{name}.xisf"), np.clip(img, 0, 1)[..., None])
    r = subprocess.run([sys.executable, "-m", "bgopt_plugin", str(tmp_path / "c.xisf"),
                        str(tmp_path / "d.xisf"), "-o", str(tmp_path), "--pedestal", "0.5", "-j", "2",
                        *FAST], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    for name in ("c", "d"):
        assert f"bgopt: warning: {name}_bgSubtracted.xisf:" in r.stderr
    assert "UserWarning" not in r.stderr


def test_a_2d_mask_applies_to_every_channel_of_a_colour_nddata():
    from astropy.nddata import NDData

    cube = np.moveaxis(_sky(rgb=True), -1, 0)
    mask = np.zeros(cube.shape[1:], bool)
    mask[:, :20] = True
    clean = bgopt.subtract(NDData(cube, mask=mask, unit="adu"), seed=1, epochs=30)
    assert clean.data.shape == cube.shape and clean.mask.shape == cube.shape
    assert clean.mask[:, :, :20].all() and not clean.mask[:, :, 20:].any()


def test_read_errors_name_the_file_and_the_problem(tmp_path):
    good = _fits(tmp_path / "g.fits")
    (tmp_path / "t.fits").write_bytes(good.read_bytes()[:3500])
    with pytest.raises(bio.ImageIOError, match=r"t\.fits: truncated"):
        bio.read_image(tmp_path / "t.fits")
