"""The CCDData front end: bgopt.subtract / model / fit."""

from __future__ import annotations

import copy
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, NDData, StdDevUncertainty, VarianceUncertainty
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS

import bgopt_plugin as bgopt
from bgopt_plugin.data.synthetic import make_scene, residual_score

FAST = dict(seed=1, epochs=150)


def _wcs(shape):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.2]
    w.wcs.crpix = [shape[-1] / 2, shape[-2] / 2]
    w.wcs.cdelt = [-0.0003, 0.0003]
    return w


def _ccd(rgb=False, shape=(128, 192), scale=1000.0):
    sc = make_scene("dome" if rgb else "linear", shape=shape)
    data = sc.image * scale
    truth = sc.background * scale
    if rgb:
        data, truth = np.moveaxis(data, -1, 0), np.moveaxis(truth, -1, 0)
    meta = fits.Header()
    meta["OBJECT"] = "NGC 2403"
    meta["EXPTIME"] = 300.0
    ccd = CCDData(data, unit="adu", wcs=_wcs(data.shape), meta=meta,
                  uncertainty=StdDevUncertainty(np.sqrt(np.abs(data)) * 0.1))
    return ccd, truth


def test_subtract_keeps_everything_and_leaves_input_alone():
    ccd, truth = _ccd()
    ccd.mask = np.zeros(ccd.shape, bool)
    ccd.mask[:4, :4] = True
    ccd.flags = np.zeros(ccd.shape, np.int16)
    before = copy.deepcopy(ccd)
    out = bgopt.subtract(ccd, **FAST)
    assert out is not ccd and isinstance(out, CCDData)
    np.testing.assert_array_equal(ccd.data, before.data)
    np.testing.assert_array_equal(ccd.mask, before.mask)
    assert ccd.meta == before.meta and "BGO_N" not in ccd.meta
    assert out.unit == u.adu
    # the WCS is a copy, like the mask: the same mapping, not the input's own object
    assert out.wcs is not ccd.wcs and out.wcs.wcs is not ccd.wcs.wcs
    corners = [(0, 0), (ccd.shape[1] - 1, ccd.shape[0] - 1)]
    np.testing.assert_allclose(out.wcs.wcs_pix2world(corners, 0), ccd.wcs.wcs_pix2world(corners, 0))
    np.testing.assert_array_equal(out.mask, ccd.mask)
    np.testing.assert_array_equal(out.flags, ccd.flags)
    # subtraction: the model is noiseless, the uncertainty is unchanged
    np.testing.assert_array_equal(out.uncertainty.array, ccd.uncertainty.array)
    assert isinstance(out.uncertainty, StdDevUncertainty)
    assert out.meta["OBJECT"] == "NGC 2403" and out.meta["BGO_N"] == 32
    assert any("bgopt" in h for h in out.meta["HISTORY"])
    bg = ccd.data - out.data  # the model up to the added-back median
    assert residual_score(bg, truth, np.ones(ccd.shape, bool)) < 0.03


def test_fits_round_trip_without_verify_warnings(tmp_path):
    ccd, _ = _ccd()
    out = bgopt.subtract(ccd, add_keyword="BGOPT", **FAST)
    path = tmp_path / "clean.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out.write(path)
    back = CCDData.read(path)
    np.testing.assert_array_equal(back.data, out.data)
    assert back.unit == u.adu
    corners = [(0, 0), (ccd.shape[1] - 1, ccd.shape[0] - 1)]
    np.testing.assert_allclose(back.wcs.wcs_pix2world(corners, 0), ccd.wcs.wcs_pix2world(corners, 0))
    assert back.header["BGOPT"].startswith("bgopt") and back.header["BGO_DX"] >= 1
    np.testing.assert_allclose(back.uncertainty.array, out.uncertainty.array, rtol=1e-6)


def test_mask_is_honoured():
    ccd, truth = _ccd(shape=(160, 240))
    yy, xx = np.mgrid[0:160, 0:240]
    blob = np.exp(-(((yy - 70) / 18.0) ** 2 + ((xx - 150) / 25.0) ** 2))
    ccd.data = ccd.data + 120 * blob
    sky = blob < 0.01
    plain = bgopt.model(ccd, protect=False, **FAST)
    ccd.mask = blob > 0.01
    masked = bgopt.model(ccd, protect=False, **FAST)
    assert residual_score(masked.data, truth, sky) < 0.5 * residual_score(plain.data, truth, sky)


def test_extra_mask_argument_and_nan_are_masked():
    ccd, truth = _ccd()
    ccd.data = ccd.data.copy()
    ccd.data[10:14, 10:14] = np.nan
    extra = np.zeros(ccd.shape, bool)
    extra[:, -20:] = True
    fitted = bgopt.fit(ccd, mask=extra, **FAST)
    np.testing.assert_array_equal(fitted.corrected.mask, extra)
    assert np.isnan(fitted.corrected.data[11, 11])
    assert (fitted.result.working_mask[:, -3:] == 0).all()


def test_divide_scales_uncertainty():
    ccd, _ = _ccd()
    fitted = bgopt.fit(ccd, correction="divide", **FAST)
    bg = fitted.background.data
    factor = np.median(bg) / bg
    np.testing.assert_allclose(fitted.corrected.uncertainty.array,
                               ccd.uncertainty.array * factor, rtol=1e-5)
    var = CCDData(ccd.data, unit="adu", uncertainty=VarianceUncertainty(ccd.uncertainty.array ** 2))
    out = bgopt.subtract(var, correction="divide", **FAST)
    assert isinstance(out.uncertainty, VarianceUncertainty)
    np.testing.assert_allclose(out.uncertainty.array, var.uncertainty.array * factor**2, rtol=2e-3)


def test_units():
    ccd, _ = _ccd()
    with pytest.raises(u.UnitsError):
        bgopt.subtract(ccd, unit="electron", **FAST)
    with pytest.raises(u.UnitsError):
        bgopt.subtract(ccd, pedestal=5 * u.electron, **FAST)
    with pytest.warns(AstropyUserWarning, match="below 0"):
        out = bgopt.subtract(ccd, pedestal=5 * u.adu, **FAST)
    assert out.meta["BGO_PED"] == 5.0
    q = bgopt.subtract(ccd.data * u.electron, **FAST)
    assert q.unit == u.electron
    with pytest.warns(AstropyUserWarning, match="dimensionless"):
        plain = bgopt.subtract(np.asarray(ccd.data), **FAST)
    assert plain.unit == u.dimensionless_unscaled
    nd = bgopt.subtract(NDData(ccd.data, unit="adu"), **FAST)
    assert nd.unit == u.adu


def test_colour_cube_and_model_access():
    ccd, truth = _ccd(rgb=True)
    fitted = bgopt.fit(ccd, **FAST)
    assert fitted.corrected.shape == (3, 128, 192) and fitted.background.shape == (3, 128, 192)
    assert fitted.background.unit == u.adu and fitted.background.wcs is not None
    assert residual_score(np.moveaxis(fitted.background.data, 0, -1), np.moveaxis(truth, 0, -1),
                          np.ones((128, 192), bool)) < 0.05
    np.testing.assert_allclose(fitted.evaluate(), fitted.background.data, rtol=1e-5)
    half = fitted.evaluate((64, 96))
    assert half.shape == (3, 64, 96)
    assert fitted.control_points.shape == (32, 2)
    again = fitted.apply(ccd)
    np.testing.assert_allclose(again.data, fitted.corrected.data, rtol=1e-5, atol=1e-3)
    with pytest.raises(u.UnitsError):
        fitted.apply(CCDData(ccd.data, unit="electron"))


def test_meta_logging_switch_and_dict_meta():
    ccd, _ = _ccd()
    off = bgopt.subtract(ccd, add_keyword=False, **FAST)
    assert "BGO_N" not in off.meta and "HISTORY" not in off.meta
    plain = CCDData(ccd.data, unit="adu", meta={"OBJECT": "x"})
    out = bgopt.subtract(plain, **FAST)
    # a dict meta gets plain values (the comments belong in a FITS header) and one
    # HISTORY line with the version, the date and the parameters
    assert out.meta["BGO_N"] == 32 and out.meta["BGO_SEED"] == 1
    assert out.meta["HISTORY"].startswith("bgopt ") and " UTC; " in out.meta["HISTORY"]
    assert plain.meta == {"OBJECT": "x"}
    header = bgopt.subtract(CCDData(ccd.data, unit="adu", meta=fits.Header({"OBJECT": "x"})),
                            **FAST).meta
    assert header["BGO_N"] == 32 and header.comments["BGO_N"] == "spline control points"
    assert len(header["HISTORY"]) == 2 and " UTC" in header["HISTORY"][0]


@pytest.mark.parametrize("bad,exc", [
    ("a string", TypeError), (np.ones((2, 8, 8)), ValueError), ({"a": 1}, TypeError),
])
def test_bad_inputs(bad, exc):
    with pytest.raises(exc):
        bgopt.subtract(bad, unit="adu")


def test_bad_options():
    ccd, _ = _ccd()
    with pytest.raises(TypeError, match="unknown option"):
        bgopt.subtract(ccd, n_points=3)
    with pytest.raises(ValueError, match="order"):
        bgopt.subtract(ccd, order=9)
    with pytest.raises(ValueError, match="mask shape"):
        bgopt.subtract(ccd, mask=np.zeros((3, 3), bool))


def test_progress_true_and_callable(capsys):
    ccd, _ = _ccd()
    events = []
    bgopt.subtract(ccd, progress=events.append, **FAST)
    stages = [e.stage for e in events]
    # every stage in order, the fit's steps counting up to its total, then "done"
    assert stages[-1] == "done" and stages.index("prepare") < stages.index("protect") \
        < stages.index("fit") < stages.index("evaluate") < stages.index("correct")
    fit = [e for e in events if e.stage == "fit"]
    assert fit[0].step == 0 and fit[-1].step == fit[-1].total == FAST["epochs"]
    assert all(a.step <= b.step for a, b in zip(fit, fit[1:]))
    assert all(e.loss is not None for e in fit[1:])
    assert not capsys.readouterr().err
    bgopt.subtract(ccd, progress=True, **FAST)
    err = capsys.readouterr().err      # a tqdm bar per stage, on standard error
    assert f"/{FAST['epochs']}" in err and "epoch" in err and "fit" in err


def test_ccdproc_image_collection_loop(tmp_path):
    ccdproc = pytest.importorskip("ccdproc")
    for i in range(2):
        ccd, _ = _ccd()
        ccd.meta["IMAGETYP"] = "LIGHT"
        ccd.write(tmp_path / f"master_{i}.fits")
    out_dir = tmp_path / "clean"
    out_dir.mkdir()
    ifc = ccdproc.ImageFileCollection(tmp_path, keywords="*")
    for ccd, name in ifc.ccds(imagetyp="LIGHT", return_fname=True):
        bgopt.subtract(ccd, **FAST).write(out_dir / name)
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["master_0.fits", "master_1.fits"]
    assert fits.getheader(out_dir / "master_0.fits")["BGOPTVER"] == bgopt.__version__


def test_float64_stays_float64():
    # What ccdproc.combine returns: the correction keeps the data's precision.
    ccd, _ = _ccd()
    double = CCDData(ccd.data.astype(np.float64) + 1e6, unit="adu")   # a large offset
    fitted = bgopt.fit(double, **FAST)
    out = fitted.corrected
    assert out.data.dtype == np.float64 and fitted.background.data.dtype == np.float64
    # small differences on a large level survive (float32 would round them to 0.06 adu)
    step = out.data[10, 11] - out.data[10, 10]
    expected = double.data[10, 11] - double.data[10, 10] - (fitted.background.data[10, 11]
                                                            - fitted.background.data[10, 10])
    assert step == pytest.approx(expected, abs=1e-6)
    assert bgopt.subtract(ccd, **FAST).data.dtype == np.float32      # float32 stays float32


def test_the_missing_unit_warning_comes_from_bgopt_and_dir_lists_the_api():
    with pytest.warns(AstropyUserWarning, match="bgopt: no unit given") as record:
        bgopt.subtract(np.full((48, 64), 100.0) + np.arange(64), **FAST)
    assert record[0].filename.endswith("astropy_api.py")
    names = dir(bgopt)
    assert {"subtract", "model", "fit", "CCDFit", "fit_background", "Config"} <= set(names)
    assert "Any" not in names and "annotations" not in names
