"""The gradient-descent fit's optimizer (Keras' Adam) and its fresh starts."""

from __future__ import annotations

import numpy as np

from bgopt_plugin.core._tf import tf
from bgopt_plugin.core.optimize import make_adam, reset_adam


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
