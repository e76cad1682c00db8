"""The gradient-descent fit: its optimizer (Keras' Adam) and its TensorFlow twins."""

from __future__ import annotations

import numpy as np
import pytest

from bgopt_plugin.core import optimize
from bgopt_plugin.core._tf import tf
from bgopt_plugin.core.optimize import make_adam, reset_adam
from bgopt_plugin.core.spline import SplineParams, kernel
from bgopt_plugin.core.stretch import extended_mtf


def test_adam_reset_starts_afresh():
    # A fit restarts the optimizer from its initial spline; the second run must follow
    # the first step for step (moments and step count forgotten), at its learning rate.
    t = tf()
    x = t.Variable(np.array([2.0, -1.0], np.float32))
    opt = make_adam([x], 0.1)

    def run(n):
        x.assign(np.array([2.0, -1.0], np.float32))
        for _ in range(n):
            with t.GradientTape() as tape:
                loss = t.reduce_sum(x * x)
            opt.apply(tape.gradient(loss, [x]), [x])
        return x.numpy().copy()

    first = run(15)
    assert np.abs(first - [2.0, -1.0]).max() > 0.5      # it moved
    assert run(15).tolist() != first.tolist()           # without a reset it goes on differently
    reset_adam(opt, 0.1)
    assert int(opt.iterations.numpy()) == 0
    np.testing.assert_array_equal(run(15), first)
    reset_adam(opt, 0.05)
    assert float(opt.learning_rate.numpy()) == np.float32(0.05)
    reset_adam(opt)                                      # keeps the rate it has
    assert float(opt.learning_rate.numpy()) == np.float32(0.05)


# ------------------------------------------------------------------ TensorFlow twins
# The fit's TensorFlow functions must agree with their numpy counterparts (spline.kernel,
# SplineParams.__call__, stretch.extended_mtf) and with a numpy reference of the loss,
# to float32 accuracy (the training runs in float32; distances there are |q|^2 + |c|^2 -
# 2 q.c, whose cancellation costs a few more bits near the centres).


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_kernel_twin(order):
    d2 = np.geomspace(1e-6, 4.0, 400).astype(np.float32)
    ours = optimize._kernel(tf().constant(d2), order).numpy()
    np.testing.assert_allclose(ours, kernel(d2.astype(np.float64), order), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_apply_twin(order):
    rng = np.random.default_rng(order)
    centers = rng.uniform(0, 1, (12, 2)) * [0.667, 1.0]
    params = SplineParams(centers, rng.normal(0, 0.1, (12, 3)), rng.normal(0, 0.3, (3, 3)), order)
    query = rng.uniform(0, 1, (500, 2)) * [0.667, 1.0]
    t = tf()
    ours = optimize.apply(t.constant(query.T.astype(np.float32)), t.constant(centers.astype(np.float32)),
                          t.constant(params.w.astype(np.float32)), t.constant(params.v.astype(np.float32)),
                          order).numpy()
    exact = params(query).T
    np.testing.assert_allclose(ours, exact, rtol=0, atol=2e-5 * max(1.0, np.abs(exact).max()))


def test_stretch_twin():
    x = np.linspace(-0.6, 2.5, 1001).astype(np.float32)
    m = np.array([0.05, 0.25, 0.7], np.float32)
    ours = optimize.stretch(tf().constant(np.tile(x, (3, 1))), tf().constant(m[:, None])).numpy()
    for c in range(3):
        np.testing.assert_allclose(ours[c], extended_mtf(x.astype(np.float64), float(m[c])),
                                   rtol=2e-6, atol=2e-6)


def _loss_reference(model, y, wt, alpha, bound=None, cap=None):
    """The seed loss in numpy, written from its definition (float64)."""
    r = wt * (y - model)
    err = np.mean(np.abs(r))
    colour = np.mean(np.var(r, axis=0)) if y.shape[0] > 1 else 0.0
    overshoot = np.mean(np.abs(r) - r)
    if cap is not None:
        overshoot += 2.0 * np.mean(cap * np.maximum(model - bound, 0.0))
    negative = np.mean(np.abs(model) - model)
    return np.log(optimize.LOSS_FLOOR + err + colour + alpha * (overshoot + negative))


@pytest.mark.parametrize("channels", [1, 3])
def test_loss_twin(channels):
    rng = np.random.default_rng(channels)
    model = rng.normal(0.3, 0.2, (channels, 800))
    y = model + rng.normal(0, 0.05, (channels, 800))
    wt = (rng.uniform(size=(channels, 800)) > 0.2).astype(np.float64)
    bound = model + rng.normal(0, 0.05, (channels, 800))
    cap = (rng.uniform(size=(channels, 800)) > 0.7).astype(np.float64)
    t = tf()

    def f32(a):
        return t.constant(np.asarray(a, np.float32))

    for args in ((None, None), (bound, cap)):
        ours = float(optimize.loss_terms(f32(model), f32(y), f32(wt), 0.3,
                                         *(None if a is None else f32(a) for a in args)).numpy())
        assert ours == pytest.approx(_loss_reference(model, y, wt, 0.3, *args), abs=2e-5)
