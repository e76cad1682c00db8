"""Real masters from ../shared/data/real (SOURCES.md there): a moonlit and a suburban Seestar
stack of M94, and the Hubble deep field as the negative control (no gradient at all).

Figures are in pixel sigmas (robust sigma of each channel); they skip without ../shared.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import bgopt_plugin as bgopt
from bgopt_plugin import io as bio
from bgopt_plugin.core import robust_sigma


@functools.cache
def _fit(path: str):
    data = bio.read_image(path).data
    res = bgopt.fit_background(data, seed=1)
    sigma = np.array([robust_sigma(data[..., c]) for c in range(data.shape[-1])])
    return data, res, sigma


def _block_spread(a: np.ndarray, n: int = 8) -> np.ndarray:
    """Per-channel peak-to-peak of an n x n grid of block medians."""
    h, w = a.shape[:2]
    grid = np.array([[np.median(a[i * h // n:(i + 1) * h // n, j * w // n:(j + 1) * w // n]
                                .reshape(-1, a.shape[-1]), axis=0) for j in range(n)] for i in range(n)])
    return np.ptp(grid.reshape(-1, a.shape[-1]), axis=0)


def _centre_excess(a: np.ndarray) -> np.ndarray:
    """Median of the central 20 % box above the frame median (M94 is at the centre)."""
    h, w = a.shape[:2]
    box = a[h // 2 - h // 10:h // 2 + h // 10, w // 2 - w // 10:w // 2 + w // 10]
    return (np.median(box.reshape(-1, a.shape[-1]), axis=0)
            - np.median(a.reshape(-1, a.shape[-1]), axis=0))


def test_seestar_moonlit_gradient_removed_and_galaxy_kept(real_data):
    data, res, sigma = _fit(str(real_data / "seestar_m94_moonlit_rgb.fits"))
    before, after = _block_spread(data) / sigma, _block_spread(res.corrected) / sigma
    assert (before > 0.9).all() and (after < 0.5).all(), (before, after)
    assert (_centre_excess(res.corrected) >= 0.9 * _centre_excess(data)).all()


def test_seestar_suburban_weak_gradient_not_made_worse(real_data):
    data, res, sigma = _fit(str(real_data / "seestar_m94_suburban_rgb.fits"))
    before, after = _block_spread(data) / sigma, _block_spread(res.corrected) / sigma
    assert (after < before + 0.15).all(), (before, after)
    assert (_centre_excess(res.corrected) >= 0.9 * _centre_excess(data)).all()


def test_hubble_deep_field_negative_control(real_data):
    # No gradient at all: the model must stay within a pixel sigma of flat, and the
    # corrected frame no less flat than the input.
    data, res, sigma = _fit(str(real_data / "hubble_deep_field_rgb.fits"))
    model_spread = np.ptp(res.background.reshape(-1, 3), axis=0) / sigma
    assert (model_spread < 1.0).all(), model_spread
    before, after = _block_spread(data) / sigma, _block_spread(res.corrected) / sigma
    assert (after < before + 0.15).all(), (before, after)
    assert res.protected.any()          # its galaxies are found and kept out of the fit


@pytest.mark.parametrize("name", ["seestar_m94_moonlit_rgb.fits", "hubble_deep_field_rgb.fits"])
def test_real_files_keep_the_linear_data_as_is(real_data, name):
    data, res, _ = _fit(str(real_data / name))
    # subtract: corrected = data - model + sky level, exactly; missing (0) pixels stay 0
    valid = np.isfinite(data) & (data != 0)
    expected = data - res.background + res.sky_level
    np.testing.assert_allclose(res.corrected[valid], expected[valid], atol=1e-6)
    assert (res.corrected[~valid] == 0).all()
