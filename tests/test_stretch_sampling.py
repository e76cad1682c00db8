"""Delinearizing stretch and working-image construction."""

import warnings

import numpy as np
import pytest

from bgopt_plugin.core import Config
from bgopt_plugin.core.sampling import (
    auto_factor,
    block_reduce,
    downscale,
    initial_points,
    threshold_mask,
)
from bgopt_plugin.core.stretch import TARGET_MEDIAN, Stretch


def test_stretch_round_trip_and_median():
    rng = np.random.default_rng(0)
    img = (0.02 + rng.gamma(2.0, 0.01, (64, 80, 3))).astype(np.float32)
    st = Stretch.fit(img, 0.95)
    y = st.forward(img)
    assert y.dtype == np.float32
    assert y.min() == 0.0 and y.max() > 1.0  # the brightest 5 % map above 1, not clipped
    np.testing.assert_allclose(np.median(y.reshape(-1, 3), axis=0), TARGET_MEDIAN, atol=2e-3)
    # The inverse is exact for every pixel, above the quantile too, and for values
    # outside the data (a model may dip below the pedestal or rise above the maximum).
    np.testing.assert_allclose(st.inverse(y), img, rtol=2e-5, atol=1e-7)
    beyond = np.concatenate([st.pedestal - 0.05, st.pedestal + 3 * st.scale]).reshape(2, 1, 3)
    beyond = np.broadcast_to(beyond, (2, 1, 3)).astype(np.float32)
    np.testing.assert_allclose(st.inverse(st.forward(beyond)), beyond, rtol=1e-5)
    # Monotonic everywhere.
    ramp = np.linspace(-0.1, 1.0, 2000, dtype=np.float32)[:, None, None].repeat(3, -1)
    assert (np.diff(st.forward(ramp), axis=0) > 0).all()


def test_stretch_rejects_constant_channel():
    with pytest.raises(ValueError, match="constant"):
        Stretch.fit(np.full((10, 10, 1), 0.3, np.float32), 0.95)


def test_block_median_and_mean_match_numpy_with_nans():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(37, 45, 2)).astype(np.float32)
    img[rng.uniform(size=img.shape) < 0.1] = np.nan
    img[:8, :8] = np.nan  # an all-NaN block
    f = 8
    for func, ref in (("median", np.nanmedian), ("mean", np.nanmean)):
        got = block_reduce(img, f, func)
        assert got.shape == (5, 6, 2)
        for by in range(5):
            for bx in range(6):
                block = img[by * f:(by + 1) * f, bx * f:(bx + 1) * f]
                with np.errstate(all="ignore"), pytest.warns(RuntimeWarning) if by == bx == 0 else _nowarn():
                    want = ref(block.reshape(-1, 2), axis=0)
                np.testing.assert_allclose(got[by, bx], want, rtol=1e-5, equal_nan=True)


@pytest.mark.parametrize("f", [5, 6])
def test_block_median_mixes_whole_and_holed_blocks(f):
    # Edge blocks padded with NaN and a few missing pixels take the sort; whole blocks
    # the single partition. Both must give numpy's median exactly, odd and even counts.
    rng = np.random.default_rng(2)
    img = rng.random((4 * f + 3, 5 * f + 2, 3), dtype=np.float32)
    img[f + 1, 2 * f + 3] = np.nan
    got = block_reduce(img, f)
    for by in range(got.shape[0]):
        for bx in range(got.shape[1]):
            block = img[by * f:(by + 1) * f, bx * f:(bx + 1) * f].reshape(-1, 3)
            np.testing.assert_array_equal(got[by, bx], np.nanmedian(block, axis=0).astype(np.float32))


@pytest.mark.parametrize("f", [1, 4, 7])
def test_downscale_strips_equal_block_reduce_and_give_the_valid_range(f):
    # Strip by strip into reused buffers: the blocks of the whole image, missing pixels
    # (zero, NaN, Inf) left out, and each channel's range of the valid pixels on the way.
    rng = np.random.default_rng(3)
    img = rng.normal(0.2, 0.05, (30, 41, 3)).astype(np.float32)
    img[:3, :5] = 0.0
    img[10, 7] = [np.nan, np.inf, -np.inf]
    img[20, 40, 1] = 5.0                      # the largest value, in an edge block
    img[29, 0, 2] = -1.0                      # the smallest, in the short last strip
    data = np.where((img == 0) | ~np.isfinite(img), np.nan, img)
    value_range = np.empty((2, 3))
    got = downscale(img, f, "median", value_range=value_range)
    np.testing.assert_array_equal(got, block_reduce(data, f, "median"))
    np.testing.assert_array_equal(value_range, [np.nanmin(data, axis=(0, 1)),
                                                np.nanmax(data, axis=(0, 1))])
    assert value_range[1, 1] == 5.0 and value_range[0, 2] == -1.0
    # Zeros and Inf kept as data (NaN still missing), and integers, by the same path.
    kept = np.where(np.isnan(img), np.nan, img)
    np.testing.assert_array_equal(downscale(img, f, "median", missing_as_nan=False),
                                  _block_nanmedian(kept, f))
    counts = np.clip(img * 1000 + 300, 0, 65535).astype(np.uint16)
    np.testing.assert_array_equal(downscale(counts, f, "median"), block_reduce(
        np.where(counts == 0, np.nan, counts.astype(np.float32)), f, "median"))
    with pytest.raises(ValueError, match="transform"):
        downscale(img, f, "mean", transform=np.sqrt, value_range=value_range)


def _block_nanmedian(img, f):
    """np.nanmedian of each f x f block (edge blocks partial), float32."""
    hb, wb = -(-img.shape[0] // f), -(-img.shape[1] // f)
    out = np.empty((hb, wb, img.shape[2]), np.float32)
    for by in range(hb):
        for bx in range(wb):
            block = img[by * f:(by + 1) * f, bx * f:(bx + 1) * f].reshape(-1, img.shape[2])
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out[by, bx] = np.nanmedian(block, axis=0)
    return out


class _nowarn:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_auto_factor_and_threshold():
    assert auto_factor((4000, 6000)) == 62  # 6000 / 96
    assert auto_factor((100, 50)) == 1
    # Values above 1 (brighter than the quantile) count as 1: the default masks nothing.
    m = threshold_mask(np.array([[0.0, 0.5, np.nan, 1.2]]), 0.001, 1.0)
    np.testing.assert_array_equal(m, [[0, 1, 0, 1]])
    m = threshold_mask(np.array([[0.0, 0.5, np.nan, 1.2]]), 0.001, 0.7)
    np.testing.assert_array_equal(m, [[0, 1, 0, 0]])


def test_initial_points_cover_the_extent():
    # Inside the image, distinct, and spread over all of it: every quarter of a 1:2
    # frame holds some of the 30 points (30 points at one spot would fail).
    rng = np.random.default_rng(0)
    for how in ("random", "grid"):
        pts = initial_points(30, (0.5, 1.0), how, rng)
        assert pts.shape == (30, 2)
        assert (pts[:, 0] >= 0).all() and (pts[:, 0] <= 0.5).all()
        assert (pts[:, 1] >= 0).all() and (pts[:, 1] <= 1.0).all()
        assert len({tuple(np.round(p, 6)) for p in pts}) == 30
        for top in (True, False):
            for left in (True, False):
                rows = (pts[:, 0] < 0.25) if top else (pts[:, 0] >= 0.25)
                cols = (pts[:, 1] < 0.5) if left else (pts[:, 1] >= 0.5)
                assert (rows & cols).sum() >= 3, (how, top, left)
    grid = initial_points(32, (0.5, 1.0), "grid", rng)
    steps = np.diff(np.unique(np.round(grid[:, 1], 6)))
    assert np.allclose(steps, steps[0])      # a regular grid along the long side


@pytest.mark.parametrize("bad", [
    {"order": 5}, {"downscaling_factor": 0}, {"downscaling_factor": "big"},
    {"initializer": "hex"}, {"correction": "add"}, {"pedestal": "max"},
    {"threshold_min": 0.5, "threshold_max": 0.4}, {"n_control_points": 2}, {"epochs": -1},
])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        Config(**bad)


def test_config_rejects_unknown_option():
    with pytest.raises(TypeError, match="unknown option"):
        Config.from_options(n_points=3)


@pytest.mark.parametrize("n", [1, 2, 3, 16, 17, 1000, 100_001])
def test_quantile_and_median_from_one_partition_match_numpy(n):
    from bgopt_plugin.core.stretch import _quantile_and_median

    rng = np.random.default_rng(n)
    sample = rng.lognormal(size=n)
    for q in (0.0, 0.3, 0.5, 0.95, 0.999, 1.0):
        assert _quantile_and_median(sample.copy(), q) == (np.quantile(sample, q), np.median(sample))
    # float32 data less its pedestal, as the stretch takes it: as numpy on the float64 difference
    data = (sample * 1e-3 + 0.01).astype(np.float32)
    ped = float(data.min())
    shifted = data.astype(np.float64) - ped
    for q in (0.0, 0.3, 0.5, 0.95, 0.999, 1.0):
        assert (_quantile_and_median(data, q, ped)
                == (np.quantile(shifted, q), np.median(shifted)))
