"""FITS and XISF adapters: real files written and read back with astropy and xisf."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from xisf import XISF

from bgopt_plugin import io as bio
from bgopt_plugin.io.keywords import header_to_keywords, keywords_to_header

ADDED = {"BGOPTVER", "BGO_N", "HISTORY"}


def _header() -> fits.Header:
    h = fits.Header()
    h["OBJECT"] = ("M 31 'Andromeda'", "target with quotes")
    h["EXPTIME"] = (300.0, "[s]")
    h["DATE-OBS"] = "2025-10-01T21:00:00.123"
    h["ROWORDER"] = ("TOP-DOWN", "Order of the rows in image array")
    h["BAYERPAT"] = "RGGB"
    h["GAIN"] = 120
    h["COOLED"] = True
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    h["CRVAL1"], h["CRVAL2"] = 10.6847083, 41.26875
    h["CRPIX1"], h["CRPIX2"] = 40.5, 30.5
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -2.1e-4, 1.0e-6, 1.1e-6, 2.1e-4
    h["A_ORDER"], h["B_ORDER"] = 2, 2
    h["A_0_2"], h["B_2_0"] = 1.5e-7, -2.5e-7
    h["HIERARCH LONG KEYWORD NAME"] = 1.5
    h.add_history("stacked with Siril")
    h.add_comment("calibrated")
    return h


def _cards(header):
    return [(c.keyword, c.value, c.comment) for c in header.cards
            if c.keyword not in ("SIMPLE", "BITPIX", "EXTEND") and not c.keyword.startswith("NAXIS")]


def _write_rgb_fits(path, data=None, with_icc=True):
    data = np.random.default_rng(0).uniform(0.01, 0.5, (3, 60, 80)).astype(np.float32) \
        if data is None else data
    hdus = [fits.PrimaryHDU(data, _header())]
    if with_icc:
        icc = fits.ImageHDU(np.arange(200, dtype=np.uint8))
        icc.header["EXTNAME"] = "ICCProfile"
        hdus.append(icc)
    fits.HDUList(hdus).writeto(path)
    return data


def test_fits_rgb_round_trip_keeps_header_and_icc(tmp_path):
    src = tmp_path / "in.fits"
    data = _write_rgb_fits(src)
    img = bio.read_image(src)
    assert img.data.shape == (60, 80, 3) and img.data.dtype == np.float32
    np.testing.assert_array_equal(img.data, np.moveaxis(data, 0, -1))
    out = tmp_path / "out.fits"
    bio.write_image(out, img, img.data * 0.5, cards=[("BGOPTVER", "0.1.0", "v"), ("BGO_N", 32, "n")],
                    history="bgopt test")
    with fits.open(out) as hdul:
        assert hdul[0].header["BITPIX"] == -32 and hdul[0].data.shape == (3, 60, 80)
        got = [c for c in _cards(hdul[0].header) if c[0] not in ADDED]
        want = [c for c in _cards(_header()) if c[0] != "HISTORY"]
        assert got == want
        assert hdul[0].header["BGO_N"] == 32
        assert list(hdul[0].header["HISTORY"]) == ["stacked with Siril", "bgopt test"]
        assert hdul[1].header["EXTNAME"] == "ICCProfile"
        np.testing.assert_array_equal(hdul[1].data, np.arange(200, dtype=np.uint8))
        np.testing.assert_allclose(hdul[0].data, data * 0.5)
    assert not list(tmp_path.glob("*.part"))


def test_fits_uint16_and_mono(tmp_path):
    raw = np.random.default_rng(1).integers(0, 65535, (40, 50)).astype(np.uint16)
    src = tmp_path / "u16.fit"
    fits.PrimaryHDU(raw).writeto(src)
    assert fits.getheader(src)["BZERO"] == 32768
    img = bio.read_image(src)
    assert img.mono and img.scale == 65535.0 and img.source_dtype == np.uint16
    np.testing.assert_allclose(img.data[..., 0], raw / 65535.0, rtol=1e-6)
    out = tmp_path / "u16_out.fit"
    bio.write_image(out, img)
    with fits.open(out) as hdul:
        assert hdul[0].data.ndim == 2 and hdul[0].header["BITPIX"] == -32
        assert "BZERO" not in hdul[0].header


@pytest.mark.parametrize("ext", [".fits", ".xisf"])
@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_read_into_a_reused_array(tmp_path, ext, dtype):
    # A batch reads every frame of a size into one array; another size gets a new one.
    rng = np.random.default_rng(5)
    paths = []
    for name, shape in (("a", (30, 40, 3)), ("b", (30, 40, 3)), ("c", (20, 40, 3))):
        data = (rng.uniform(0, 1, shape) * (65535 if dtype == np.uint16 else 1)).astype(dtype)
        path = tmp_path / f"{name}{ext}"
        if ext == ".fits":
            fits.PrimaryHDU(np.moveaxis(data, -1, 0)).writeto(path)
        else:
            XISF.write(str(path), data)
        paths.append(path)
    plain = [bio.read_image(p).data for p in paths]
    buf = np.full((30, 40, 3), -1, np.float32)
    first = bio.read_image(paths[0], out=buf)
    assert first.data is buf
    np.testing.assert_array_equal(buf, plain[0])
    second = bio.read_image(paths[1], out=buf)
    assert second.data is buf
    np.testing.assert_array_equal(buf, plain[1])
    third = bio.read_image(paths[2], out=buf)
    assert third.data is not buf and third.data.shape == (20, 40, 3)
    np.testing.assert_array_equal(third.data, plain[2])
    np.testing.assert_array_equal(buf, plain[1])   # a misfit leaves the array alone


def _planes_whole(data, ndim, dtype, clip):
    """channels_last_to_planes written on whole arrays, as the reference."""
    arr = np.asarray(data, np.float32)
    arr = np.moveaxis(arr if arr.ndim == 3 else arr[..., None], -1, 0) if ndim == 3 else (
        arr[..., 0] if arr.ndim == 3 else arr)
    integer = np.dtype(dtype).kind in "iu"
    if not (integer or clip):
        return np.ascontiguousarray(arr), 0
    bad = ~np.isfinite(arr)
    n = int(np.count_nonzero(bad | (arr < 0) | (arr > 1)))
    out = np.clip(np.where(bad, np.float32(0), arr), 0.0, 1.0)
    if integer:
        out = np.rint(out * np.float32(65535)).astype(dtype)
    return out, n


@pytest.mark.parametrize("channels,ndim", [(3, 3), (1, 3), (1, 2), (0, 2)])
@pytest.mark.parametrize("dtype,clip", [(np.float32, True), (np.float32, False), (np.uint16, True)])
def test_channels_last_to_planes_in_row_blocks_equals_whole_arrays(channels, ndim, dtype, clip):
    # 1000 rows of 700: three row blocks; NaN, infinities and out-of-range values in
    # some blocks only, so both the quick path and the counting path run.
    rng = np.random.default_rng(5)
    shape = (1000, 700) + ((channels,) if channels else ())
    data = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    flat = data.reshape(-1)
    spots = rng.integers(0, 300 * 700 * max(1, channels), 40)   # first block only
    flat[spots[:10]] = np.nan
    flat[spots[10:15]] = np.inf
    flat[spots[15:20]] = -np.inf
    flat[spots[20:30]] = -0.25
    flat[spots[30:]] = 1.5
    data[-1, -1] = 2.0                                           # and one in the last
    got, n_got = bio.channels_last_to_planes(data, ndim, dtype, clip=clip)
    want, n_want = _planes_whole(data, ndim, dtype, clip)
    assert got.dtype == np.dtype(dtype) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    assert n_got == n_want and (n_got > 0) == (clip or dtype == np.uint16)


@pytest.mark.parametrize("ndim,shape", [(3, (3, 40, 30)), (2, (40, 30))])
def test_channels_last_to_planes_into_the_hosts_array(ndim, shape):
    data = np.random.default_rng(2).uniform(-0.1, 1.1, (40, 30, shape[0] if ndim == 3 else 1))
    want, n = bio.channels_last_to_planes(data, ndim, np.uint16)
    into = np.zeros(shape, np.uint16)
    got, n_into = bio.channels_last_to_planes(data, ndim, np.uint16, out=into)
    assert got is into and n_into == n > 0
    np.testing.assert_array_equal(into, want)
    other = np.zeros(shape, np.float32)          # a misfit (dtype) is left alone
    got, _ = bio.channels_last_to_planes(data, ndim, np.uint16, out=other)
    assert got is not other and not other.any()


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float64])
def test_fits_bitpix_variants(tmp_path, dtype):
    raw = (np.arange(20 * 30).reshape(20, 30) % 100 + 1).astype(dtype)
    src = tmp_path / "v.fts"
    fits.PrimaryHDU(raw).writeto(src)
    img = bio.read_image(src)
    scale = float(np.iinfo(dtype).max) if np.dtype(dtype).kind in "iu" else 1.0
    np.testing.assert_allclose(img.data[..., 0], raw / scale, rtol=1e-6)


def test_fz_input(tmp_path):
    raw = np.random.default_rng(2).uniform(0, 1, (3, 32, 48)).astype(np.float32)
    src = tmp_path / "c.fits.fz"
    hdu = fits.CompImageHDU(raw, _header(), compression_type="GZIP_2", quantize_level=0.0)
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(src)
    img = bio.read_image(src)
    np.testing.assert_array_equal(img.data, np.moveaxis(raw, 0, -1))
    assert img.meta["header"]["OBJECT"] == _header()["OBJECT"]


def test_fits_bad_dimensionality(tmp_path):
    src = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.ones((4, 8, 8), np.float32)).writeto(src)
    with pytest.raises(bio.ImageIOError, match="cube.fits: unsupported dimensionality"):
        bio.read_image(src)


def _xisf_meta():
    props = {
        "PCL:AstrometricSolution:ReferenceImageCoordinates": {
            "id": "PCL:AstrometricSolution:ReferenceImageCoordinates", "type": "F64Vector",
            "value": np.array([40.5, 30.5])},
        "PCL:AstrometricSolution:LinearTransformationMatrix": {
            "id": "PCL:AstrometricSolution:LinearTransformationMatrix", "type": "F64Matrix",
            "value": np.array([[-2.1e-4, 1e-6], [1.1e-6, 2.1e-4]])},
        "PCL:AstrometricSolution:ProjectionSystem": {
            "id": "PCL:AstrometricSolution:ProjectionSystem", "type": "String", "value": "Gnomonic"},
        "Observation:Time:Start": {"id": "Observation:Time:Start", "type": "TimePoint",
                                   "value": "2025-10-01T21:00:00.123Z"},
        "Instrument:Sensor:Temperature": {"id": "Instrument:Sensor:Temperature", "type": "Float32",
                                          "value": -10.0},
        # Boolean as PixInsight writes it (the xisf package writes "True", which it reads as false)
        "Instrument:Camera:Cooled": {"id": "Instrument:Camera:Cooled", "type": "Boolean",
                                     "value": "true"},
    }
    kws = {"OBJECT": [{"value": "'M 31'", "comment": "target"}],
           "EXPTIME": [{"value": "300.", "comment": "[s]"}],
           "COOLED": [{"value": "T", "comment": ""}],
           "HISTORY": [{"value": "", "comment": "stacked"}]}
    return {"FITSKeywords": kws, "XISFProperties": props}


def _raw_keyword_attrs(path):
    from bgopt_plugin.io.xisf import _raw_keywords

    return _raw_keywords(XISF(str(path)))[0]


@pytest.mark.parametrize("channels", [1, 3])
def test_xisf_round_trip_keeps_keywords_and_properties(tmp_path, channels):
    data = np.random.default_rng(3).uniform(0, 1, (40, 50, channels)).astype(np.float32)
    src = tmp_path / "in.xisf"
    XISF.write(str(src), data, image_metadata=_xisf_meta())
    before = src.read_bytes()
    img = bio.read_image(src)
    assert img.data.shape == (40, 50, channels) and img.data.flags.writeable
    img.data[0, 0, 0] = 0.5  # our copy is writeable and separate from the file
    out = tmp_path / "out.xisf"
    bio.write_image(out, img, data, cards=[("BGOPTVER", "0.1.0", "bgopt version")], history="bgopt")
    assert src.read_bytes() == before
    kin, kout = _raw_keyword_attrs(src), _raw_keyword_attrs(out)
    for key, entries in kin.items():
        if key != "HISTORY":
            assert kout[key] == entries, key
    assert kout["OBJECT"][0]["value"] == "'M 31'"  # string quoting kept
    assert kout["BGOPTVER"][0]["value"] == "'0.1.0'"
    assert [e["comment"] for e in kout["HISTORY"]] == ["stacked", "bgopt"]
    pin = XISF(str(src)).get_images_metadata()[0]["XISFProperties"]
    pout = XISF(str(out)).get_images_metadata()[0]["XISFProperties"]
    assert set(pin) == set(pout)
    for pid, p in pin.items():
        assert pout[pid]["type"] == p["type"]
        np.testing.assert_array_equal(np.asarray(pout[pid]["value"]), np.asarray(p["value"]))
    assert pout["Instrument:Camera:Cooled"]["value"] is True
    np.testing.assert_array_equal(XISF.read(str(out)), data)


@pytest.mark.parametrize("codec", ["lz4hc", "zstd"])
def test_xisf_compression(tmp_path, codec):
    yy, xx = np.mgrid[0:64, 0:64]
    data = ((yy + xx) / 200.0).astype(np.float32)[..., None]
    src = tmp_path / "in.xisf"
    XISF.write(str(src), data)
    img = bio.read_image(src)
    plain, packed = tmp_path / "plain.xisf", tmp_path / "packed.xisf"
    bio.write_image(plain, img)
    bio.write_image(packed, img, codec=codec)
    assert packed.stat().st_size < plain.stat().st_size
    meta = XISF(str(packed)).get_images_metadata()[0]
    assert meta["compression"][0].startswith(codec)
    np.testing.assert_array_equal(bio.read_image(packed).data, data)


def test_xisf_clips_to_declared_bounds(tmp_path):
    data = np.array([[-0.1, 0.5], [1.5, 0.2]], np.float32)[..., None]
    img = bio.Image(data=data, format="xisf")
    with pytest.warns(UserWarning, match=r"c\.xisf: 2 values outside \[0, 1\] clipped"):
        clipped = bio.write_image(tmp_path / "c.xisf", img)
    assert clipped == 2
    np.testing.assert_array_equal(bio.read_image(tmp_path / "c.xisf").data[..., 0],
                                  np.array([[0.0, 0.5], [1.0, 0.2]], np.float32))


def test_fits_to_xisf_conversion_warns_about_icc_and_keeps_keywords(tmp_path):
    src = tmp_path / "in.fits"
    _write_rgb_fits(src)
    img = bio.read_image(src)
    with pytest.warns(UserWarning, match="ICCProfile"):
        bio.write_image(tmp_path / "out.xisf", img)
    kout = _raw_keyword_attrs(tmp_path / "out.xisf")
    assert kout["OBJECT"][0]["value"] == "'M 31 ''Andromeda'''"
    back = keywords_to_header(kout)
    assert back["OBJECT"] == _header()["OBJECT"] and back["CD1_2"] == _header()["CD1_2"]
    assert back["COOLED"] is True


def test_xisf_to_fits_conversion(tmp_path):
    src = tmp_path / "in.xisf"
    XISF.write(str(src), np.full((20, 30, 1), 0.3, np.float32), image_metadata=_xisf_meta())
    img = bio.read_image(src)
    with pytest.warns(UserWarning, match="PCL:AstrometricSolution"):
        bio.write_image(tmp_path / "out.fits", img)
    h = fits.getheader(tmp_path / "out.fits")
    assert h["OBJECT"] == "M 31" and h["EXPTIME"] == 300.0 and h["COOLED"] is True


def test_keyword_conversion_round_trip():
    h = _header()
    back = keywords_to_header(header_to_keywords(h))
    assert [(c.keyword, c.value) for c in back.cards] == [(c.keyword, c.value) for c in h.cards]


def _damaged_fits(folder):
    """Damaged files and the one problem each must be reported as."""
    data = np.random.default_rng(0).uniform(0.1, 0.2, (3, 64, 96)).astype(np.float32)
    fits.PrimaryHDU(data).writeto(folder / "good.fits")
    raw = (folder / "good.fits").read_bytes()
    ints = np.arange(64 * 96, dtype=np.int16).reshape(64, 96)
    fits.PrimaryHDU(ints).writeto(folder / "int.fits")
    irow = (folder / "int.fits").read_bytes()
    fits.CompImageHDU(data[0]).writeto(folder / "comp.fits.fz")
    comp = bytearray((folder / "comp.fits.fz").read_bytes())
    comp[-4000:-3000] = b"\x00" * 1000
    hdu = fits.PrimaryHDU(ints)
    hdu.header["BSCALE"] = "abc"
    hdu.writeto(folder / "bscale.fits")
    cases = {
        "header_only.fits": (b"SIMPLE  =                    T" + b" " * 50, "header is truncated"),
        "garbage.fits": (b"\x00\x01garbage" * 100, "not a"),
        "trunc.fits": (raw[:2880 + 5000], "truncated: the file holds less data"),
        "no_end.fits": (raw[:2880].replace(b"END     ", b"XND     ") + raw[2880:], "no END card"),
        "bitpix.fits": (irow.replace(b"BITPIX  =                   16", b"BITPIX  =                   17"),
                        "unsupported BITPIX 17"),
        "comp_bad.fits.fz": (bytes(comp), "corrupt compressed data"),
    }
    for name, (content, _) in cases.items():
        (folder / name).write_bytes(content)
    return {**{name: match for name, (_, match) in cases.items()},
            "bscale.fits": "unsupported BSCALE/BZERO scaling"}


def test_damaged_fits_files_say_what_is_wrong(tmp_path):
    for name, match in _damaged_fits(tmp_path).items():
        with pytest.raises(bio.ImageIOError) as info:
            bio.read_image(tmp_path / name)
        message = str(info.value)
        assert message.startswith(str(tmp_path / name) + ": ") and match in message, message
        assert "ufunc" not in message and "buffer" not in message and "reshape" not in message


@pytest.mark.parametrize("content,match", [
    (b"SIMPLE  =                    T" + b" " * 50, "not a FITS file"),
    (b"\x00\x01garbage" * 100, "not a readable FITS|not a FITS file"),
])
def test_corrupt_fits(tmp_path, content, match):
    p = tmp_path / "bad.fits"
    p.write_bytes(content)
    with pytest.raises(bio.ImageIOError, match=f"bad.fits: ({match}|no image)"):
        bio.read_image(p)


def test_truncated_fits_and_xisf(tmp_path):
    src = tmp_path / "t.fits"
    _write_rgb_fits(src, with_icc=False)
    src.write_bytes(src.read_bytes()[:10000])
    with pytest.raises(bio.ImageIOError, match="t.fits"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bio.read_image(src)
    x = tmp_path / "t.xisf"
    XISF.write(str(x), np.ones((50, 50, 1), np.float32) * 0.2)
    x.write_bytes(x.read_bytes()[:5000])
    with pytest.raises(bio.ImageIOError, match="t.xisf: not a readable XISF"):
        bio.read_image(x)


def test_unknown_extension_and_missing(tmp_path):
    with pytest.raises(bio.ImageIOError, match="unknown extension '.png'"):
        bio.read_image(tmp_path / "x.png")
    with pytest.raises(bio.ImageIOError, match="file not found"):
        bio.read_image(tmp_path / "x.xisf")


def test_refuses_overwrite(tmp_path):
    img = bio.Image(data=np.full((8, 8, 1), 0.2, np.float32), format="fits")
    out = tmp_path / "o.fits"
    bio.write_image(out, img)
    before = out.read_bytes()
    with pytest.raises(bio.ImageIOError, match="output exists"):
        bio.write_image(out, img, img.data * 2)
    assert out.read_bytes() == before
    bio.write_image(out, img, img.data * 2, overwrite=True)
    assert out.read_bytes() != before


def test_real_fits_files_read(real_data):
    for name, shape in [("dslr_lp_widefield_rgb_linear.fits", (400, 600, 3)),
                        ("dss2_horsehead.fits", (893, 891, 1))]:
        img = bio.read_image(real_data / name)
        assert img.data.shape == shape
        assert np.isfinite(img.data).all()
    horse = bio.read_image(real_data / "dss2_horsehead.fits")
    assert horse.scale == 32767.0 and "CTYPE1" in horse.meta["header"]
