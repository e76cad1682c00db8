"""The TensorFlow polyharmonic spline against scipy's RBFInterpolator."""

import numpy as np
import pytest
from scipy.interpolate import RBFInterpolator

from bgopt_plugin.spline import SplineParams, evaluate_image, solve, solve_lstsq

KERNELS = {1: "linear", 2: "thin_plate_spline", 3: "cubic"}


def _smooth_values(centers):
    y, x = centers[:, :1], centers[:, 1:]
    return np.hstack([np.sin(3 * x) + y**2, np.exp(-((x - 0.5) ** 2 + (y - 0.4) ** 2) / 0.1), x * y])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("smooth", [False, True])
def test_thin_plate_matches_scipy_rbf(smoothing, smooth):
    rng = np.random.default_rng(7)
    centers = rng.uniform(0, 1, (40, 2))
    values = _smooth_values(centers) if smooth else rng.normal(size=(40, 3))
    query = rng.uniform(-0.1, 1.1, (500, 2))
    w, v = solve(centers, values, 2, smoothing)
    ours = SplineParams(centers.astype(np.float32), w, v, 2)(query)
    ref = RBFInterpolator(centers, values, kernel="thin_plate_spline", degree=1,
                          smoothing=smoothing)(query)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


@pytest.mark.parametrize("order", [1, 3])
def test_other_orders_match_scipy_rbf(order):
    # r and r^3 interpolants of smooth data (random data makes the r^3 weights too
    # large for float32 weights, whatever the implementation).
    rng = np.random.default_rng(order)
    centers = rng.uniform(0, 1, (40, 2))
    values = _smooth_values(centers)
    query = rng.uniform(-0.1, 1.1, (500, 2))
    w, v = solve(centers, values, order, 0.0)
    ours = SplineParams(centers.astype(np.float32), w, v, order)(query)
    ref = RBFInterpolator(centers, values, kernel=KERNELS[order], degree=1)(query)
    np.testing.assert_allclose(ours, ref, atol=1e-4 * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_interpolates_exactly_without_regularisation(order):
    rng = np.random.default_rng(10 + order)
    centers = rng.uniform(0, 1, (25, 2))
    values = _smooth_values(centers)[:, :1]
    w, v = solve(centers, values, order, 0.0)
    got = SplineParams(centers.astype(np.float32), w, v, order)(centers)
    np.testing.assert_allclose(got, values, atol=2e-3)
    # The linear term reproduces a plane exactly.
    plane = 0.3 + 0.5 * centers[:, :1] - 0.2 * centers[:, 1:]
    w, v = solve(centers, plane, order, 0.0)
    q = rng.uniform(0, 1, (100, 2))
    got = SplineParams(centers.astype(np.float32), w, v, order)(q)
    np.testing.assert_allclose(got[:, 0], 0.3 + 0.5 * q[:, 0] - 0.2 * q[:, 1], atol=2e-3)


def test_lstsq_recovers_spline():
    rng = np.random.default_rng(5)
    centers = rng.uniform(0, 1, (16, 2)).astype(np.float32)
    true = SplineParams(centers, rng.normal(size=(16, 2)).astype(np.float32),
                        rng.normal(size=(3, 2)).astype(np.float32), 2)
    q = rng.uniform(0, 1, (3000, 2)).astype(np.float32)
    y = true(q)
    w, v = solve_lstsq(centers, q, y, np.ones_like(y), 2, ridge=0.0)
    np.testing.assert_allclose(SplineParams(centers, w, v, 2)(q), y, atol=1e-3)


def test_coarse_grid_evaluation_matches_exact():
    rng = np.random.default_rng(3)
    centers = rng.uniform(0, 1, (32, 2)).astype(np.float32)
    vals = rng.uniform(0.2, 0.3, (32, 1))
    w, v = solve(centers, vals, 2, 0.1)
    params = SplineParams(centers, w, v, 2)
    exact = evaluate_image(params, (300, 400), step=1)
    coarse = evaluate_image(params, (300, 400), step=8)
    assert np.abs(coarse - exact).max() < 1e-3 * np.ptp(exact)


def test_chunked_evaluation_is_bounded_and_exact():
    rng = np.random.default_rng(4)
    centers = rng.uniform(0, 1, (8, 2)).astype(np.float32)
    w, v = solve(centers, rng.normal(size=(8, 1)), 2, 0.0)
    params = SplineParams(centers, w, v, 2)
    small_budget = evaluate_image(params, (50, 70), budget_bytes=70 * 8 * 16 * 3)
    big_budget = evaluate_image(params, (50, 70))
    np.testing.assert_allclose(small_budget, big_budget, atol=1e-6)
