"""What users expect of the outputs and the command line: honest headers, reproducible
files, TIFF, --skip-existing, clear messages, durable writes. Real files throughout."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import tifffile
from astropy.io import fits

from bgopt_plugin.cli import main
from bgopt_plugin.data.synthetic import make_scene

FAST = ["-e", "40", "-qq"]


def run(tmp_path, *args) -> int:
    """The command on files in ``tmp_path``, its outputs there too."""
    return main([*map(str, args), "-o", str(tmp_path)])


def _counts(shape=(96, 144), rgb=False, scale=65535.0, dtype=np.uint16, seed=1):
    img = make_scene("dome" if rgb else "linear", shape=shape, seed=seed).image
    return np.rint(np.clip(img, 0, 1) * scale).astype(dtype)


def _err(capsys) -> list[str]:
    return [x for x in capsys.readouterr().err.splitlines() if x.strip()]


# ----------------------------------------------------------------------- headers
def test_headers_describe_the_output_values(tmp_path):
    # An int16 plate (as the DSS ones) with DATAMIN/DATAMAX, a uint16 frame in ADU.
    plate = _counts(scale=30000.0, dtype=np.int16)
    h = fits.Header({"DATAMIN": int(plate.min()), "DATAMAX": int(plate.max()), "BUNIT": "adu"})
    fits.PrimaryHDU(plate, h).writeto(tmp_path / "plate.fits")
    assert run(tmp_path, tmp_path / "plate.fits", *FAST) == 0
    with fits.open(tmp_path / "plate_bgSubtracted.fits") as hdul:
        out, header = hdul[0].data, hdul[0].header
    assert "DATAMIN" not in header and "DATAMAX" not in header and "BUNIT" not in header
    assert header["BITPIX"] == -32 and header["BGO_NORM"] == 32767.0   # signed 16-bit
    assert np.nanmax(np.abs(out)) < 1.5                              # normalised, not ADU
    model = fits.getheader(tmp_path / "plate_bgModel.fits")
    assert model["BGO_NORM"] == 32767.0 and "DATAMAX" not in model and "BUNIT" not in model


def test_sample_type_input_writes_the_input_integers(tmp_path, capsys):
    frame = _counts()
    fits.PrimaryHDU(frame, fits.Header({"BUNIT": "adu", "DATAMAX": 65535})).writeto(tmp_path / "f.fits")
    assert run(tmp_path, tmp_path / "f.fits", "--sample-type", "input", "-e", "40", "-q") == 0
    with fits.open(tmp_path / "f_bgSubtracted.fits") as hdul:
        out, header = hdul[0].data, hdul[0].header
    assert out.dtype == np.uint16 and header["BITPIX"] == 16 and header["BZERO"] == 32768
    assert header["BUNIT"] == "adu" and "BGO_NORM" not in header and "DATAMAX" not in header
    flat = np.median(out[:, :48]), np.median(out[:, -48:])
    assert abs(flat[0] - flat[1]) < 0.2 * abs(np.median(frame[:, :48]) - np.median(frame[:, -48:]))
    model = fits.getheader(tmp_path / "f_bgModel.fits")
    assert model["BITPIX"] == -32 and model["BGO_NORM"] == 65535.0
    # values pushed out of range are clipped and counted on the file's line
    frame[:, :8] = 65535
    fits.writeto(tmp_path / "g.fits", frame)
    assert run(tmp_path, tmp_path / "g.fits", "--sample-type", "input", "--pedestal", "0.9",
               "-e", "20", "-q") == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "g_bgSubtracted" in x)
    assert "values clipped to the output's range" in line
    assert fits.getdata(tmp_path / "g_bgSubtracted.fits").max() == 65535


# ------------------------------------------------------------------ reproducible
def test_two_default_runs_give_the_same_file_and_say_how(tmp_path):
    fits.writeto(tmp_path / "m.fits", make_scene("galaxy", shape=(96, 144)).image)
    for out in ("a", "b"):
        assert main([str(tmp_path / "m.fits"), "-o", str(tmp_path / out), "-e", "60", "-qq"]) == 0
    a, ha = fits.getdata(tmp_path / "a" / "m_bgSubtracted.fits", header=True)
    b, hb = fits.getdata(tmp_path / "b" / "m_bgSubtracted.fits", header=True)
    np.testing.assert_array_equal(a, b)
    assert ha["BGO_SEED"] == hb["BGO_SEED"] == 0
    first = str(ha["HISTORY"][0])
    assert first.startswith("bgopt 0.1.0 on 20") and " UTC from m.fits" in first
    assert "seed=0" in str(ha["HISTORY"][1])
    # 'random' draws a seed and records it, so that run can be repeated
    assert main([str(tmp_path / "m.fits"), "-o", str(tmp_path / "r"), "--seed", "random", "-e", "60",
                 "-qq"]) == 0
    seed = fits.getheader(tmp_path / "r" / "m_bgSubtracted.fits")["BGO_SEED"]
    assert main([str(tmp_path / "m.fits"), "-o", str(tmp_path / "r2"), "--seed", str(seed), "-e", "60",
                 "-qq"]) == 0
    np.testing.assert_array_equal(fits.getdata(tmp_path / "r" / "m_bgSubtracted.fits"),
                                  fits.getdata(tmp_path / "r2" / "m_bgSubtracted.fits"))


# --------------------------------------------------------------------------- CLI
def test_skip_existing_and_the_closing_line(tmp_path, capsys):
    for name in ("a", "b"):
        fits.writeto(tmp_path / f"{name}.fits", make_scene("linear", shape=(64, 96), seed=2).image)
    assert main([str(tmp_path / "a.fits"), "-e", "30", "-q", "-o", str(tmp_path)]) == 0
    pattern = str(tmp_path / "*.fits")
    assert main([pattern, "--skip-existing", "-e", "30", "-q", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "bgopt: 1 of 2 done, 1 skipped, 0 failed"
    assert sum("b_bgSubtracted" in x for x in out) == 1 and not any("a_bgSubtracted" in x for x in out[1:])
    # -qq: nothing on standard output, the closing line included
    assert main([pattern, "--skip-existing", "-qq", "-o", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""
    # without either: an existing output is refused, and the line says so
    assert main([str(tmp_path / "a.fits"), "-q", "-o", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    closing = f"bgopt: 0 of 1 done, 0 skipped, 1 failed: {tmp_path / 'a.fits'}"
    assert "output exists" in captured.err and captured.out.strip() == closing


def test_messages_say_what_is_wrong(tmp_path, capsys):
    fits.writeto(tmp_path / "in.fits", make_scene("linear", shape=(64, 96)).image)
    # a second argument that reads like an output name gets a hint
    assert main([str(tmp_path / "in.fits"), str(tmp_path / "out.fits"), "-e", "20", "-q",
                 "-o", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert f"{tmp_path / 'out.fits'}: file not found" in captured.err
    assert "hint: " in captured.out and "_bgSubtracted" in captured.out and "-o DIR" in captured.out
    # a pattern that matches nothing
    assert run(tmp_path, tmp_path / "*.fts", "-q") == 2
    assert _err(capsys) == [f"bgopt: error: {tmp_path / '*.fts'}: no file matches"]
    # --codec (or -c) with FITS output is an error, before any work
    assert main([str(tmp_path / "in.fits"), "--codec", "zstd", "-q", "-o", str(tmp_path), "--overwrite"]) == 2
    err = _err(capsys)
    assert len(err) == 1 and "--codec: compression applies to XISF output only" in err[0]
    assert not list(tmp_path.glob("in_bgSubtracted.xisf"))
    # the seed's messages read naturally (no "or None")
    assert run(tmp_path, tmp_path / "in.fits", "--seed", "-1", "-q") == 2
    assert _err(capsys) == ["bgopt: error: --seed: must be an integer >= 0 or 'random', got -1"]
    with pytest.raises(SystemExit):
        run(tmp_path, tmp_path / "in.fits", "--seed", "x", "-q")
    assert "--seed: expected an integer >= 0 or 'random', got 'x'" in capsys.readouterr().err


def test_a_fit_stopped_while_still_improving_is_flagged(tmp_path, capsys):
    fits.writeto(tmp_path / "s.fits", np.moveaxis(make_scene("dome", shape=(96, 144)).image, -1, 0))
    with pytest.warns(UserWarning, match=r"s.fits: the fit stopped at the epoch limit \(5\) with its "
                                         "loss still falling"):
        assert main([str(tmp_path / "s.fits"), "-e", "5", "-q", "-o", str(tmp_path)]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # a fit that converged: no warning
        assert main([str(tmp_path / "s.fits"), "-q", "-o", str(tmp_path), "--overwrite"]) == 0


def test_a_name_too_long_for_the_file_system_is_one_clean_line(tmp_path, capsys):
    long = tmp_path / ("m" * 240 + ".fits")
    fits.writeto(long, make_scene("linear", shape=(48, 64)).image)
    assert main([str(long), "-e", "10", "-q", "-o", str(tmp_path)]) == 2
    err = _err(capsys)
    assert len(err) == 1 and "is too long for the file system" in err[0] and "Traceback" not in err[0]


def test_default_jobs_fit_in_memory(monkeypatch, tmp_path):
    import bgopt_plugin.cli.job as job

    big = tmp_path / "big.fits"
    with open(big, "wb") as fh:       # a 24 MP float32 RGB master's size, sparse
        fh.truncate(288 << 20)
    monkeypatch.setattr(job.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(job, "available_memory", lambda: 64 << 30)
    assert job.default_jobs([big]) == 4
    monkeypatch.setattr(job, "available_memory", lambda: 3 << 30)
    assert job.default_jobs([big]) == 1        # ~2.1 GB a worker: one fits in 3 GB
    monkeypatch.setattr(job, "available_memory", lambda: None)
    assert job.default_jobs([big]) == 4        # unknown: the cores


# -------------------------------------------------------------------------- TIFF
@pytest.mark.parametrize("dtype, rgb", [(np.uint8, False), (np.uint16, True), (np.float32, True),
                                        (np.float32, False)])
def test_tiff_in_tiff_out(tmp_path, dtype, rgb):
    scale = {np.uint8: 255.0, np.uint16: 65535.0}.get(dtype)
    img = make_scene("dome" if rgb else "linear", shape=(96, 144)).image
    data = np.rint(np.clip(img, 0, 1) * scale).astype(dtype) if scale else img.astype(np.float32)
    src = tmp_path / "master.tif"
    tifffile.imwrite(src, data, photometric="rgb" if rgb else "minisblack",
                     resolution=(300, 300), resolutionunit="INCH")
    assert run(tmp_path, src, "-e", "40", "-qq", *(["--sample-type", "input"] if scale else [])) == 0
    with tifffile.TiffFile(tmp_path / "master_bgSubtracted.tif") as tif:   # read back independently
        out = tif.asarray()
        page = tif.pages[0]
        description = page.description
        assert page.tags["XResolution"].value == (300, 1)
    assert out.shape == data.shape and out.dtype == (dtype if scale else np.float32)
    assert "BGO_SEED = 0" in description and "from master.tif" in description
    before = np.ptp(np.median(np.atleast_3d(data)[:, :, 0].reshape(6, 16, 9, 16), axis=(1, 3)))
    after = np.ptp(np.median(np.atleast_3d(out)[:, :, 0].reshape(6, 16, 9, 16), axis=(1, 3)))
    assert after < 0.3 * before
    model = tifffile.imread(tmp_path / "master_bgModel.tif")
    assert model.dtype == np.float32 and model.shape == data.shape


def test_tiff_to_fits_and_fits_to_tiff_say_what_is_lost(tmp_path, capsys):
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, _counts(), photometric="minisblack")
    assert run(tmp_path, src, "--format", "fits", "-e", "20", "-qq") == 0
    assert fits.getheader(tmp_path / "a_bgSubtracted.fits")["BGO_NORM"] == 65535.0
    header = fits.Header({"OBJECT": "M 42", "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN"})
    fits.PrimaryHDU(make_scene("linear", shape=(64, 96)).image, header).writeto(tmp_path / "b.fits")
    with pytest.warns(UserWarning, match="not carried to the TIFF b_bgSubtracted.tif: the FITS header"):
        assert run(tmp_path, tmp_path / "b.fits", "--format", "tiff", "-e", "20", "-qq") == 0
    assert tifffile.imread(tmp_path / "b_bgSubtracted.tif").dtype == np.float32


# ------------------------------------------------------------------------ writes
def test_outputs_are_flushed_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    import bgopt_plugin.io.atomic as atomic

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        # os is one module: others' flushes (TensorFlow's compile cache) pass here too.
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.startswith(str(tmp_path)):
            events.append(("fsync", path))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    fits.writeto(tmp_path / "d.fits", make_scene("linear", shape=(48, 64)).image)
    out = tmp_path / "out"
    assert main([str(tmp_path / "d.fits"), "-o", str(out), "-e", "10", "-qq", "-j", "1"]) == 0
    kinds = [k for k, _ in events]
    renames = [i for i, k in enumerate(kinds) if k == "rename"]
    flushed = [p for k, p in events[:renames[0]] if k == "fsync"]
    assert len(renames) == 2 and len(flushed) == 2 and all(p.endswith(".part") for p in flushed), events
    assert events[renames[-1] + 1:] == [("fsync", str(out))]      # the folder, once


def test_a_temporary_flushed_by_its_writer_is_not_flushed_again(tmp_path, monkeypatch):
    # The CLI flushes each output in its writer thread (overlapping the other write);
    # the commit then flushes only what is left, and renames only after both.
    import bgopt_plugin.io.atomic as atomic

    flushed = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (flushed.append(
        os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))[1])   # no fit: only ours
    with atomic.OutputSet() as out:
        a, b = out.reserve(tmp_path / "a.txt"), out.reserve(tmp_path / "b.txt")
        a.write_text("A")
        out.flush(a)
        b.write_text("B")
        assert flushed == [str(a)] and not (tmp_path / "a.txt").exists()
        out.commit()
    assert flushed == [str(a), str(b), str(tmp_path)]
    assert (tmp_path / "a.txt").read_text() == "A" and (tmp_path / "b.txt").read_text() == "B"
