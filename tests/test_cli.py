"""The bgopt command line end to end on real files."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from astropy.io import fits
from xisf import XISF

from bgopt_plugin import io as bio
from bgopt_plugin.cli import main
from bgopt_plugin.data.synthetic import demo_scene, make_scene

FAST = ["-e", "80", "--seed", "1", "-q"]


def _sky(shape=(96, 128), rgb=True):
    sc = make_scene("dome" if rgb else "linear", shape=shape)
    return sc.image


def _write_fits(path, img):
    planes = np.moveaxis(img, -1, 0) if img.ndim == 3 else img
    h = fits.Header()
    h["OBJECT"] = "test field"
    h["EXPTIME"] = 120.0
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 10.0, 20.0
    fits.PrimaryHDU(planes.astype(np.float32), h).writeto(path)
    return path


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_single_fits_end_to_end(tmp_path, capsys):
    src = _write_fits(tmp_path / "m42.fit", _sky())
    out = tmp_path / "out"
    out.mkdir()
    assert main([str(src), "-o", str(out), "-e", "80", "--seed", "1"]) == 0
    corrected, model = out / "m42_bgSubtracted.fit", out / "m42_bgModel.fit"
    assert corrected.exists() and model.exists()
    with fits.open(corrected) as hdul:
        h = hdul[0].header
        assert h["BITPIX"] == -32 and hdul[0].data.shape == (3, 96, 128)
        assert h["OBJECT"] == "test field" and h["CRVAL2"] == 20.0
        assert h["BGOPTVER"] and h["BGO_N"] == 32 and "bgopt" in str(h["HISTORY"])
    assert fits.getheader(model)["BGO_KIND"] == "model"
    img = bio.read_image(src).data
    res = bio.read_image(corrected).data
    # the gradient is gone: the spread of block medians shrinks a lot
    def spread(a):
        return np.ptp(np.median(a[:96, :128, 0].reshape(6, 16, 8, 16), axis=(1, 3)))
    assert spread(res) < 0.3 * spread(img)
    assert "m42_bgSubtracted.fit" in capsys.readouterr().out


def test_xisf_in_xisf_out_and_format_conversion(tmp_path):
    src = tmp_path / "lum.xisf"
    XISF.write(str(src), _sky(rgb=False)[..., None],
               image_metadata={"FITSKeywords": {"OBJECT": [{"value": "'NGC 7000'", "comment": ""}]}})
    assert main([str(src), "-o", str(tmp_path), "-c", *FAST]) == 0
    out = tmp_path / "lum_bgSubtracted.xisf"
    meta = XISF(str(out)).get_images_metadata()[0]
    assert meta["compression"][0].startswith("lz4hc")
    assert meta["FITSKeywords"]["OBJECT"][0]["value"] == "NGC 7000"
    assert main([str(src), "-o", str(tmp_path), "--format", "fits", "--no-model", *FAST]) == 0
    conv = tmp_path / "lum_bgSubtracted.fits"
    assert fits.getheader(conv)["OBJECT"] == "NGC 7000"
    assert not (tmp_path / "lum_bgModel.fits").exists()


def test_mask_file(tmp_path):
    # A bright glow over the left 40 columns that is not sky: masked out, the model follows
    # the true gradient there; without the mask (and without protection) it is pulled up.
    scene = make_scene("linear", shape=(96, 128))
    img = scene.image.copy()
    img[:, :40] += float(np.ptp(scene.background))
    src = _write_fits(tmp_path / "a.fits", img)
    mask = np.ones(img.shape[:2], np.float32)
    mask[:, :40] = 0
    _write_fits(tmp_path / "mask.fits", mask)
    args = [str(src), "--no-protect", "--overwrite", "-e", "300", "--seed", "1", "-q"]
    assert main([*args, "-o", str(tmp_path / "masked"), "-m", str(tmp_path / "mask.fits")]) == 0
    assert main([*args, "-o", str(tmp_path / "plain")]) == 0
    truth = np.squeeze(scene.background)
    err = {k: np.abs(np.squeeze(bio.read_image(tmp_path / k / "a_bgModel.fits").data) - truth)
           [:, 40:].mean() / np.ptp(truth) for k in ("masked", "plain")}
    assert err["masked"] < 0.5 * err["plain"], err
    bad = _write_fits(tmp_path / "small.fits", mask[:50, :50])
    before = _snapshot(tmp_path)
    assert main([str(src), "-o", str(tmp_path), "-m", str(bad), "--overwrite", *FAST]) == 2
    assert _snapshot(tmp_path) == before


def test_positional_output_folder_as_in_bgoptimizer(tmp_path, capsys):
    src = _write_fits(tmp_path / "m42.fits", _sky())
    assert main([str(src), str(tmp_path / "results"), *FAST]) == 0
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "m42_bgModel.fits", "m42_bgSubtracted.fits"]
    assert main([str(src), str(tmp_path / "results"), "-o", str(tmp_path), *FAST]) == 2
    assert "output folder is given twice" in capsys.readouterr().err
    # a misspelt input is still an input, not a folder
    assert main([str(src), str(tmp_path / "m43.fitz"), "-o", str(tmp_path / "x"), *FAST]) == 2
    assert "unknown extension '.fitz'" in capsys.readouterr().err


def test_16_bit_input_records_its_normalisation(tmp_path):
    planes = np.rint(np.moveaxis(_sky(), -1, 0) * 65535).astype(np.uint16)
    fits.PrimaryHDU(planes).writeto(tmp_path / "i16.fits")
    assert main([str(tmp_path / "i16.fits"), "-o", str(tmp_path), *FAST]) == 0
    with fits.open(tmp_path / "i16_bgSubtracted.fits") as hdul:
        assert hdul[0].header["BITPIX"] == -32 and hdul[0].header["BGO_NORM"] == 65535.0
        level = np.median(hdul[0].data)
    assert abs(level * 65535 - np.median(planes)) < 0.05 * np.median(planes)


def _tints(png) -> tuple[int, int, tuple[int, int]]:
    """Pixels of a PNG tinted as masked (red) and as protected (cyan), and its size."""
    from matplotlib.image import imread

    rgb = imread(png)[..., :3].astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    red = (r > g + 0.15) & (r > b + 0.15)
    cyan = (g > r + 0.15) & (b > r + 0.15)
    return int(red.sum()), int(cyan.sum()), rgb.shape[:2]


def test_preview_shows_the_mask_and_the_protected_objects(tmp_path, capsys):
    # A galaxy on a gradient, with -tM masking the galaxy's core: the preview shows the
    # masked core in red and the protected object around it in cyan, and says how much.
    src = _write_fits(tmp_path / "p.fits", make_scene("galaxy").image)
    assert main([str(src), "-o", str(tmp_path), "-p", "-tM", "0.9"]) == 0
    line = capsys.readouterr().out
    assert "% protected" in line and " 0% protected" not in line
    red, cyan, size = _tints(tmp_path / "p_preview.png")
    assert size[0] >= 400 and size[1] >= 400
    assert red > 50 and cyan > 200, (red, cyan)
    assert not list(tmp_path.glob("*_bg*"))
    # No threshold, no protection: neither tint.
    assert main([str(src), "-o", str(tmp_path), "-p", "--no-protect", "--overwrite", "-q"]) == 0
    red, cyan, _ = _tints(tmp_path / "p_preview.png")
    assert red == 0 and cyan == 0


def test_plots_and_verbose_stats(tmp_path, capsys):
    src = _write_fits(tmp_path / "v.fits", make_scene("galaxy").image)
    assert main([str(src), "-o", str(tmp_path), "--plots", "-v", "-e", "60", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    for label in ("Original", "Delinearized", "Downscaled", "Bg (linear)", "Corrected"):
        assert label in out
    for name in ("v_bgSubtracted_before_after.png", "v_bgModel.png", "v_bgSubtracted_loss.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    # the mask plot: the protected galaxy in cyan; the header records its share
    red, cyan, _ = _tints(tmp_path / "v_bgSubtracted_mask.png")
    assert cyan > 200 and red == 0
    share = fits.getheader(tmp_path / "v_bgSubtracted.fits")["BGO_PFRC"]
    assert 0.02 < share < 0.6 and f"{round(100 * share)}% protected" in out


def test_statistics_only_computed_when_verbose(tmp_path, capsys, monkeypatch):
    # The per-stage statistics cost seconds on a large frame: a normal run must not
    # compute them only to throw the text away.
    import bgopt_plugin.cli.job as app

    def boom(label, arr):
        raise AssertionError(f"statistics of {label} computed without -v")

    src = _write_fits(tmp_path / "s.fits", _sky())
    monkeypatch.setattr(app, "_stats", boom)
    assert main([str(src), "-o", str(tmp_path), *FAST]) == 0
    assert main([str(src), "-o", str(tmp_path), "-p", "--overwrite"]) == 0
    monkeypatch.undo()
    assert main([str(src), "-o", str(tmp_path), "-e", "80", "--seed", "1", "-v", "--overwrite"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "[Original" in x)
    data = fits.getdata(src).astype(np.float64)
    assert f"{data.min():.4f}" in line and f"{data.max():.4f}" in line


def test_batch_reuses_memory_without_mixing_frames(tmp_path):
    # Frames of one size are read into one array and corrected in place there: each
    # output must still equal a run on that file alone, and no input may change.
    srcs = [_write_fits(tmp_path / f"{name}.fits", make_scene(scene, shape=(96, 128)).image)
            for name, scene in (("a", "dome"), ("b", "saddle"), ("c", "linear"))]
    before = [p.read_bytes() for p in srcs]
    assert main([*map(str, srcs), "-o", str(tmp_path / "batch"), "-j", "1", *FAST]) == 0
    for src, raw in zip(srcs, before):
        assert src.read_bytes() == raw
        assert main([str(src), "-o", str(tmp_path / "alone"), *FAST]) == 0
        for kind in ("bgSubtracted", "bgModel"):
            name = f"{src.stem}_{kind}.fits"
            np.testing.assert_array_equal(fits.getdata(tmp_path / "batch" / name),
                                          fits.getdata(tmp_path / "alone" / name))


def test_refuses_overwrite_unless_asked(tmp_path, capsys):
    src = _write_fits(tmp_path / "o.fits", _sky())
    assert main([str(src), "-o", str(tmp_path), *FAST]) == 0
    out = tmp_path / "o_bgSubtracted.fits"
    first = out.read_bytes()
    assert main([str(src), "-o", str(tmp_path), *FAST]) == 2
    assert "output exists" in capsys.readouterr().err
    assert out.read_bytes() == first
    assert main([str(src), "-o", str(tmp_path), "--overwrite", "--seed", "2", "-e", "80", "-q"]) == 0


def _bad_inputs(tmp_path):
    good = _write_fits(tmp_path / "good.fits", _sky())
    corrupt = tmp_path / "corrupt.fits"
    corrupt.write_bytes(b"NOT A FITS FILE" * 300)
    truncated = tmp_path / "trunc.fits"
    truncated.write_bytes(good.read_bytes()[:12000])
    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.ones((2, 3, 8, 8), np.float32)).writeto(cube)
    badx = tmp_path / "bad.xisf"
    badx.write_bytes(b"XISF0100" + b"\xff" * 100)
    unknown = tmp_path / "img.png"
    unknown.write_bytes(b"\x89PNG\r\n")
    badtiff = tmp_path / "img.tif"
    badtiff.write_bytes(b"II*\x00")
    return {
        "missing.fits": "file not found",
        str(corrupt): "not a readable FITS",
        str(truncated): "trunc.fits",
        str(cube): "unsupported dimensionality",
        str(badx): "not a readable XISF",
        str(unknown): "unknown extension",
        str(badtiff): "not a readable TIFF",
    }


def test_bad_inputs_fail_cleanly(tmp_path, capsys):
    cases = _bad_inputs(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    for path, message in cases.items():
        before = _snapshot(tmp_path)
        code = main([path if os.sep in path else str(tmp_path / path), "-o", str(out), *FAST])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, path
        assert len(err) == 1 and message in err[0] and os.path.basename(path) in err[0], err
        assert "Traceback" not in err[0]
        assert _snapshot(tmp_path) == before  # inputs untouched
        assert not any(out.iterdir())


def test_unwritable_output_dir(tmp_path, capsys):
    src = _write_fits(tmp_path / "w.fits", _sky())
    target = "/proc/self" if os.geteuid() == 0 else str(tmp_path / "ro")
    if target != "/proc/self":
        os.mkdir(target, 0o555)
    assert main([str(src), "-o", target, *FAST]) == 2
    err = capsys.readouterr().err
    assert "not writable" in err and len(err.strip().splitlines()) == 1
    assert main([str(src), "-o", str(tmp_path / "new" / "dir"), *FAST]) == 0  # created, as mkdir -p
    assert (tmp_path / "new" / "dir" / "w_bgSubtracted.fits").is_file()


def test_batch_continues_past_a_bad_file(tmp_path, capsys):
    for name in ("a.fits", "c.fits"):
        _write_fits(tmp_path / name, _sky())
    (tmp_path / "b.fits").write_bytes(b"junk" * 1000)
    out = tmp_path / "out"
    out.mkdir()
    code = main([str(tmp_path / "*.fits"), "-o", str(out), "-e", "60", "--seed", "1", "-B", "4"])
    assert code == 2
    assert (out / "a_bgSubtracted.fits").exists() and (out / "c_bgSubtracted.fits").exists()
    assert not (out / "b_bgSubtracted.fits").exists()
    captured = capsys.readouterr()
    assert "bgopt: 2 of 3 done, 0 skipped, 1 failed: " in captured.out and "b.fits" in captured.err


def test_console_script_and_module(tmp_path):
    src = _write_fits(tmp_path / "s.fits", _sky(rgb=False))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # With TensorFlow loaded the process ends by os._exit (no teardown): what it printed
    # must still arrive, and the exit code must be the run's.
    r = subprocess.run([sys.executable, "-m", "bgopt_plugin", str(src), "-o", str(tmp_path), "-e", "80",
                        "--seed", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{src} -> " in r.stdout and (tmp_path / "s_bgModel.fits").exists()
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  = T" + b" " * 100)
    # The bad file first: a process's first file is read while TensorFlow loads, and its
    # read error must still be reported as one line, then the next file processed.
    r = subprocess.run([sys.executable, "-m", "bgopt_plugin", str(bad), str(src), "-o", str(tmp_path / "o"),
                        *FAST, "-j", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and f"bgopt: error: {bad}: " in r.stderr
    assert (tmp_path / "o" / "s_bgSubtracted.fits").exists()
    r = subprocess.run([sys.executable, "-m", "bgopt_plugin", str(tmp_path / "none.xisf")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and r.stderr.strip() == f"bgopt: error: {tmp_path / 'none.xisf'}: file not found"
    r = subprocess.run([sys.executable, "-m", "bgopt_plugin", "--help"], capture_output=True, text=True)
    assert "-dq" in r.stdout and "compatibility" in r.stdout


def test_demo_runs(tmp_path):
    from bgopt_plugin.cli import demo, run_demo

    assert run_demo([str(tmp_path / "demo"), "-q"]) == 0
    names = {p.name for p in (tmp_path / "demo").iterdir()}
    assert {"bgopt_demo_master.fits", "bgopt_demo_master_bgSubtracted.fits",
            "bgopt_demo_master_bgModel.fits", "bgopt_demo_master_bgModel.png"} <= names
    # the figures the demo prints, as the README quotes them
    scores, line = demo.report(demo_scene(), tmp_path / "demo")
    assert scores["residual"] < 0.015 and scores["flux_kept"] > 0.95, line
    assert "residual" in line and "flux kept" in line


def _block_medians(a, n=8):
    """(n, n, C) grid of block medians of a channels-last image."""
    h, w = a.shape[:2]
    return np.array([[np.median(a[i * h // n:(i + 1) * h // n, j * w // n:(j + 1) * w // n]
                                .reshape(-1, a.shape[-1]), axis=0) for j in range(n)] for i in range(n)])


def test_real_light_pollution_frame_is_flat(real_data, tmp_path):
    # The light-polluted corner of this real DSLR frame is its brightest sky: after the
    # correction every block median must sit within 2 % of the sky level.
    src = real_data / "dslr_lp_widefield_rgb_linear.fits"
    assert main([str(src), "-o", str(tmp_path), "--seed", "1", "-q"]) == 0
    out = bio.read_image(tmp_path / "dslr_lp_widefield_rgb_linear_bgSubtracted.fits").data
    grid = _block_medians(out)
    level = np.median(grid.reshape(-1, 3), axis=0)
    assert np.abs(grid / level - 1).max() < 0.02
    before = _block_medians(bio.read_image(src).data)
    assert np.abs(before / np.median(before.reshape(-1, 3), axis=0) - 1).max() > 0.3


def test_real_light_pollution_frame(real_data, tmp_path):
    src = real_data / "dslr_lp_widefield_rgb_linear.fits"
    before = src.read_bytes()
    assert main([str(src), "-o", str(tmp_path), "--seed", "1", "-q"]) == 0
    assert src.read_bytes() == before
    img = bio.read_image(src).data
    out = bio.read_image(tmp_path / "dslr_lp_widefield_rgb_linear_bgSubtracted.fits").data

    def gradient(a):  # peak-to-peak of 50x50 block medians, per channel, worst
        blocks = a[:400, :600].reshape(8, 50, 12, 50, 3)
        return np.ptp(np.median(blocks, axis=(1, 3)).reshape(-1, 3), axis=0).max()
    assert gradient(out) < 0.35 * gradient(img)
    with fits.open(tmp_path / "dslr_lp_widefield_rgb_linear_bgSubtracted.fits") as hdul:
        assert hdul[0].header["BGO_PROT"] is True
