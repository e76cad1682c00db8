"""The optimizer's own Adam against Keras' (the library it stands in for)."""

from __future__ import annotations

import numpy as np

from bgopt_plugin.core._tf import tf
from bgopt_plugin.core.optimize import Adam


def _descend(update, start, steps, halve_at):
    """Minimise a badly scaled quartic from ``start``; ``update(grads, vars, lr)``."""
    t = tf()
    xs = [t.Variable(a) for a in start]
    scale = t.constant(np.array([1.0, 30.0, 0.2], np.float32))
    path = []
    for i in range(steps):
        with t.GradientTape() as tape:
            loss = (t.reduce_sum(scale * (xs[0] - 1.0) ** 4)
                    + t.reduce_sum(t.sin(3.0 * xs[1]) + xs[1] ** 2))
        update(tape.gradient(loss, xs), xs, 0.5 if i >= halve_at else 1.0)
        path.append(np.concatenate([x.numpy().ravel() for x in xs]))
    return np.array(path)


def test_adam_follows_keras_adam_step_for_step():
    import keras

    rng = np.random.default_rng(3)
    start = [rng.normal(size=3).astype(np.float32), rng.normal(size=(2, 2)).astype(np.float32)]
    lr = 0.05

    ours = None

    def ours_update(grads, xs, factor):
        nonlocal ours
        if ours is None:
            ours = Adam(xs, lr)
        ours.learning_rate.assign(lr * factor)
        ours.apply(grads, xs)

    theirs = None

    def keras_update(grads, xs, factor):
        nonlocal theirs
        if theirs is None:
            theirs = keras.optimizers.Adam(learning_rate=lr, epsilon=1e-7)
            theirs.build(xs)
        theirs.learning_rate.assign(lr * factor)
        theirs.apply_gradients(zip(grads, xs))

    a = _descend(ours_update, start, 200, halve_at=120)
    b = _descend(keras_update, start, 200, halve_at=120)
    assert np.abs(a[-1] - a[0]).max() > 0.3          # it did move
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)


def test_adam_reset_starts_afresh():
    t = tf()
    x = t.Variable(np.array([2.0, -1.0], np.float32))
    opt = Adam([x], 0.1)

    def run(n):
        x.assign(np.array([2.0, -1.0], np.float32))
        for _ in range(n):
            with t.GradientTape() as tape:
                loss = t.reduce_sum(x * x)
            opt.apply(tape.gradient(loss, [x]), [x])
        return x.numpy().copy()

    first = run(15)
    opt.reset(0.1)
    assert int(opt.iterations.numpy()) == 0
    np.testing.assert_array_equal(run(15), first)
    opt.reset(0.05)
    assert float(opt.learning_rate.numpy()) == np.float32(0.05)
