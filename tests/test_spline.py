"""The numpy polyharmonic spline against scipy's RBFInterpolator, and its solves."""

import numpy as np
import pytest
from scipy.interpolate import RBFInterpolator

from bgopt_plugin.core import evaluation_step
from bgopt_plugin.core.spline import (
    SplineParams,
    bending_energy,
    evaluate_image,
    robust_fit,
    solve,
    solve_lstsq,
)

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
    ours = SplineParams(centers, w, v, 2)(query)
    ref = RBFInterpolator(centers, values, kernel="thin_plate_spline", degree=1,
                          smoothing=smoothing)(query)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("order", [1, 3])
def test_other_orders_match_scipy_rbf(order):
    rng = np.random.default_rng(order)
    centers = rng.uniform(0, 1, (40, 2))
    values = _smooth_values(centers)
    query = rng.uniform(-0.1, 1.1, (500, 2))
    w, v = solve(centers, values, order, 0.0)
    ours = SplineParams(centers, w, v, order)(query)
    ref = RBFInterpolator(centers, values, kernel=KERNELS[order], degree=1)(query)
    np.testing.assert_allclose(ours, ref, atol=5e-5 * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_interpolates_exactly_without_regularisation(order):
    rng = np.random.default_rng(10 + order)
    centers = rng.uniform(0, 1, (25, 2))
    values = _smooth_values(centers)[:, :1]
    w, v = solve(centers, values, order, 0.0)
    got = SplineParams(centers, w, v, order)(centers)
    np.testing.assert_allclose(got, values, atol=1e-6)
    # The linear term reproduces a plane exactly.
    plane = 0.3 + 0.5 * centers[:, :1] - 0.2 * centers[:, 1:]
    w, v = solve(centers, plane, order, 0.0)
    q = rng.uniform(0, 1, (100, 2))
    got = SplineParams(centers, w, v, order)(q)
    np.testing.assert_allclose(got[:, 0], 0.3 + 0.5 * q[:, 0] - 0.2 * q[:, 1], atol=1e-6)


def _side_conditioned(rng, centers, n_chan):
    """Random radial weights with P^T w = 0 (a proper polyharmonic spline)."""
    p = np.hstack([np.ones((len(centers), 1)), centers])
    w = rng.normal(size=(len(centers), n_chan))
    return w - p @ np.linalg.lstsq(p, w, rcond=None)[0]


def test_lstsq_recovers_spline():
    rng = np.random.default_rng(5)
    centers = rng.uniform(0, 1, (16, 2))
    true = SplineParams(centers, _side_conditioned(rng, centers, 2), rng.normal(size=(3, 2)), 2)
    q = rng.uniform(0, 1, (3000, 2))
    y = true(q)
    w, v = solve_lstsq(centers, q, y, np.ones_like(y), 2, ridge=0.0)
    np.testing.assert_allclose(SplineParams(centers, w, v, 2)(q), y, atol=1e-6)
    # The side conditions hold, so the spline is linear far from its centres.
    np.testing.assert_allclose(np.hstack([np.ones((16, 1)), centers]).T @ w, 0, atol=1e-8)


def test_smoothing_tends_to_the_best_plane():
    rng = np.random.default_rng(6)
    centers = rng.uniform(0, 1, (25, 2))
    q = rng.uniform(0, 1, (2000, 2))
    y = (0.1 + 0.3 * q[:, :1] - 0.2 * q[:, 1:] + 0.05 * np.sin(6 * q[:, :1])).repeat(1, axis=1)
    energies = []
    for smoothing in (0.0, 1e-2, 1e3):
        w, v = solve_lstsq(centers, q, y, np.ones_like(y), 2, smoothing=smoothing)
        energies.append(bending_energy(SplineParams(centers, w, v, 2))[0])
    assert energies[0] > energies[1] > energies[2] >= -1e-12
    plane = np.linalg.lstsq(np.hstack([np.ones((2000, 1)), q]), y, rcond=None)[0]
    np.testing.assert_allclose(v, plane, atol=1e-3)


@pytest.mark.parametrize("two_sided", [False, True])
def test_robust_fit_ignores_outliers(two_sided):
    rng = np.random.default_rng(8)
    q = rng.uniform(0, 1, (4000, 2))
    truth = 0.2 + 0.1 * q[:, :1] - 0.05 * q[:, 1:]
    y = truth + rng.normal(0, 0.002, truth.shape)
    y[:300] += 0.5                     # stars and objects
    if two_sided:
        y[300:600] -= 0.3              # dark lanes, ignored only by the two-sided fit
    centers = rng.uniform(0, 1, (9, 2))
    plain = SplineParams(centers, *solve_lstsq(centers, q, y, np.ones_like(y), 2), 2)
    robust = robust_fit(centers, q, y, np.ones_like(y), 2, two_sided=two_sided)
    err = lambda s: np.abs(s(q[600:]) - truth[600:]).max()  # noqa: E731
    assert err(robust) < 0.004 < err(plain)


def test_robust_fit_ceiling_keeps_the_model_under_the_bound():
    rng = np.random.default_rng(9)
    q = rng.uniform(0, 1, (3000, 2))
    left = q[:, 1] < 0.5
    y = (0.2 + 0.4 * q[:, 1:]) + rng.normal(0, 0.001, (3000, 1))  # a ramp, seen on the left only
    centers = rng.uniform(0, 1, (16, 2))
    free = robust_fit(centers, q[left], y[left], np.ones((left.sum(), 1)), 2)
    cq = q[~left]
    bound = np.full((len(cq), 1), 0.3)                              # the image caps the right half
    capped = robust_fit(centers, q[left], y[left], np.ones((left.sum(), 1)), 2, ceiling=(cq, bound))
    assert free(cq).max() > 0.55
    # The bounds join the fit as values: the model ends near them, not far above.
    assert capped(cq).max() < 0.335 and np.median(capped(cq)) < 0.305


def test_coarse_grid_evaluation_matches_exact():
    rng = np.random.default_rng(3)
    centers = rng.uniform(0, 1, (32, 2))
    vals = rng.uniform(0.2, 0.3, (32, 1))
    w, v = solve(centers, vals, 2, 0.1)
    params = SplineParams(centers, w, v, 2)
    exact = evaluate_image(params, (300, 400), step=1)
    coarse = evaluate_image(params, (300, 400), step=8)
    assert np.abs(coarse - exact).max() < 1e-3 * np.ptp(exact)
    # The default grid (about 64 points along the long side) on this rough spline: 2.5e-4
    # of its range (a fitted sky, smoother: 5e-5 in the benchmarks).
    default = evaluate_image(params, (300, 400), step=evaluation_step((300, 400)))
    assert evaluation_step((300, 400)) > 1
    assert np.abs(default - exact).max() < 5e-4 * np.ptp(exact)


def test_chunked_evaluation_is_bounded_and_exact():
    rng = np.random.default_rng(4)
    centers = rng.uniform(0, 1, (8, 2))
    w, v = solve(centers, rng.normal(size=(8, 1)), 2, 0.0)
    params = SplineParams(centers, w, v, 2)
    small_budget = evaluate_image(params, (50, 70), budget_bytes=70 * 8 * 16 * 3)
    big_budget = evaluate_image(params, (50, 70))
    np.testing.assert_allclose(small_budget, big_budget, atol=1e-6)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_smoothing_lowers_the_bending_energy(order):
    # The smoothing term must penalise bending for every order: the energy of the fit
    # (sign * w^T K w, K the kernel between the centres) is positive and falls as the
    # smoothing rises. With the plain kernel as the penalty, orders 1 and 4 (whose
    # kernels are conditionally definite with the other sign) were pushed to bend more.
    from bgopt_plugin.core.sampling import grid_points
    from bgopt_plugin.core.spline import bending_sign, kernel, robust_fit, sqdist

    rng = np.random.default_rng(0)
    q = rng.uniform(0, 1, (3000, 2))
    dome = np.exp(-((q[:, 0] - 1.1) ** 2 + (q[:, 1] - 0.3) ** 2) / 0.4)
    truth = (0.3 + 0.2 * dome + 0.05 * q[:, 1])[:, None]
    y = truth + rng.normal(0, 0.005, truth.shape)
    c = grid_points(6, (1.0, 1.0))
    k = bending_sign(order) * kernel(sqdist(c, c), order)
    energies, errors = [], []
    for smoothing in (0.0, 0.01, 0.1):
        p = robust_fit(c, q, y, np.ones_like(y), order, smoothing=smoothing)
        energies.append(float(p.w[:, 0] @ k @ p.w[:, 0]))
        errors.append(float(np.sqrt(np.mean((p(q) - truth) ** 2)) / np.ptp(truth)))
    assert min(energies) > 0 and energies[0] > energies[1] > energies[2]
    assert errors[1] < 0.03, errors


@pytest.mark.parametrize("shape, step", [((300, 457), 7), ((211, 640), 16), ((96, 100), 24)])
def test_banded_upsampling_is_the_full_cubic_convolution(shape, step):
    # The band-by-band products must equal the interpolation written with the whole
    # weight matrices: three channels, sizes that are not multiples of the step, ``out``.
    from bgopt_plugin.core.spline import _cubic_matrix, evaluate_grid

    rng = np.random.default_rng(5)
    centers = rng.uniform(0, 1, (24, 2)) * np.array(shape) / max(shape)
    w, v = solve(centers, rng.uniform(0.2, 0.3, (24, 3)), 2, 0.1)
    params = SplineParams(centers, w, v, 2)
    h, wd = shape
    ry = np.arange(-step, h + 2 * step, step, dtype=np.float64)
    rx = np.arange(-step, wd + 2 * step, step, dtype=np.float64)
    grid = evaluate_grid(params, ry, rx, float(max(shape))).astype(np.float64)
    full = np.einsum("hk,wj,kjc->hwc", _cubic_matrix(ry, h), _cubic_matrix(rx, wd), grid)
    out = np.full(shape + (3,), np.nan, np.float32)
    banded = evaluate_image(params, shape, step=step, out=out)
    assert banded is out
    np.testing.assert_allclose(banded, full, rtol=0, atol=1e-6)
