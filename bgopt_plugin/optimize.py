"""Gradient-descent fit of the spline to the working image (TensorFlow, Adam).

The training step is compiled with ``tf.function`` (XLA ``jit_compile`` where it
works, plain graph mode otherwise) and runs a block of epochs per call, keeping the
best parameters seen. Early stopping and learning-rate halving act between blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ._tf import tf
from .spline import SplineParams, apply

__all__ = ["FitResult", "fit_spline", "make_trainer", "LOSS_FLOOR"]

#: Constant inside the log of the loss.
LOSS_FLOOR = 1e-3
_BLOCK = 25           # epochs per compiled call
_PATIENCE_LR = 30     # epochs without improvement before halving the learning rate
_PATIENCE_STOP = 60   # epochs without improvement before stopping
_MIN_DELTA = 5e-4     # improvement of the (log) loss that counts
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-7


@dataclass
class FitResult:
    """Outcome of :func:`fit_spline`."""

    params: SplineParams
    loss_history: list[float] = field(default_factory=list)
    epochs_run: int = 0
    best_loss: float = float("inf")
    jit_compiled: bool = False


def loss_terms(model, y, wt, alpha: float):
    """The seed loss: log(floor + mean|r| + colour variance + alpha (overshoot + negative))."""
    t = tf()
    r = wt * (y - model)
    abs_r = t.abs(r)
    err = t.reduce_mean(abs_r)
    if y.shape[-1] > 1:
        colour = t.reduce_mean(t.math.reduce_variance(r, axis=-1))
    else:
        colour = t.constant(0.0, dtype=r.dtype)
    overshoot = t.reduce_mean(abs_r - r)
    negative = t.reduce_mean(t.abs(model) - model)
    return t.math.log(LOSS_FLOOR + err + colour + alpha * (overshoot + negative))


class _Trainer:
    def __init__(self, q, y, wt, init: SplineParams, alpha: float, lr: float):
        t = tf()
        self.order = init.order
        # Variables, not constants, so a compiled trainer can take new samples of the
        # same shape (see make_trainer's cache).
        self.q = t.Variable(q, dtype=t.float32)
        self.y = t.Variable(y, dtype=t.float32)
        self.wt = t.Variable(wt, dtype=t.float32)
        self.alpha = float(alpha)
        self.vars = [t.Variable(init.centers), t.Variable(init.w), t.Variable(init.v)]
        self.best = [t.Variable(init.centers), t.Variable(init.w), t.Variable(init.v)]
        self.m = [t.Variable(t.zeros_like(x)) for x in self.vars]
        self.s = [t.Variable(t.zeros_like(x)) for x in self.vars]
        self.step_count = t.Variable(0.0)
        self.best_loss = t.Variable(np.inf, dtype=t.float32)
        self.lr = t.Variable(float(lr), dtype=t.float32)

    def _loss(self):
        c, w, v = self.vars
        return loss_terms(apply(self.q, c, w, v, self.order, fast=True), self.y, self.wt, self.alpha)

    def _step(self):
        """One Adam epoch; returns the loss before the update."""
        t = tf()
        with t.GradientTape() as tape:
            loss = self._loss()
        grads = tape.gradient(loss, self.vars)
        # Keep the parameters that produced the best loss so far.
        better = loss < self.best_loss
        for b, x in zip(self.best, self.vars):
            b.assign(t.where(better, x, b))
        self.best_loss.assign(t.minimum(loss, self.best_loss))
        self.step_count.assign_add(1.0)
        k = self.step_count
        corr = t.sqrt(1 - _BETA2**k) / (1 - _BETA1**k)
        for x, g, m, s in zip(self.vars, grads, self.m, self.s):
            m.assign(_BETA1 * m + (1 - _BETA1) * g)
            s.assign(_BETA2 * s + (1 - _BETA2) * g * g)
            x.assign_sub(self.lr * corr * m / (t.sqrt(s) + _ADAM_EPS))
        return loss

    def _run(self, n_steps):
        # A graph loop around the compiled step: XLA compiles the step well, but a
        # whole while-loop under XLA runs about 3x slower on CPU.
        t = tf()
        losses = t.TensorArray(t.float32, size=n_steps)
        for i in t.range(n_steps):
            losses = losses.write(i, self.step())
        return losses.stack()

    def compile(self) -> bool:
        """Compile the epoch step with XLA, falling back to a plain graph."""
        t = tf()
        spec = t.TensorSpec([], t.int32)
        try:
            self.step = t.function(self._step, jit_compile=True)
            self.run = t.function(self._run, input_signature=[spec])
            self.run(t.constant(1))  # compile now, so a failure falls back here
            return True
        except Exception:  # noqa: BLE001 - XLA is unavailable for some ops/devices
            self.step = t.function(self._step)
            self.run = t.function(self._run, input_signature=[spec])
            return False

    def reset(self, init: SplineParams, wt: np.ndarray | None = None, lr: float | None = None) -> None:
        """Start again from ``init`` (fresh Adam state), optionally with new weights."""
        t = tf()
        for x, b, val in zip(self.vars, self.best, (init.centers, init.w, init.v)):
            x.assign(val)
            b.assign(val)
        for m, s in zip(self.m, self.s):
            m.assign(t.zeros_like(m))
            s.assign(t.zeros_like(s))
        self.step_count.assign(0.0)
        self.best_loss.assign(np.inf)
        if wt is not None:
            self.wt.assign(wt)
        if lr is not None:
            self.lr.assign(lr)

    def restore_best(self) -> None:
        for b, x in zip(self.best, self.vars):
            x.assign(b)

    def params(self) -> SplineParams:
        c, w, v = (x.numpy() for x in self.vars)
        return SplineParams(c, w, v, self.order)


_CACHE: dict[tuple, _Trainer] = {}
_CACHE_SIZE = 4


def make_trainer(q, y, wt, init: SplineParams, *, alpha: float, learning_rate: float) -> _Trainer:
    """A compiled trainer for samples ``q``, ``y`` (weights can change between fits).

    Compiling costs about a second, so trainers are cached by problem shape: a batch of
    frames of one size, or repeated runs in one session, compiles once.
    """
    key = (q.shape, y.shape, init.centers.shape, init.order, float(alpha))
    trainer = _CACHE.get(key)
    if trainer is None:
        trainer = _Trainer(q, y, wt, init, alpha, learning_rate)
        trainer.jit = trainer.compile()
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = trainer
    else:
        trainer.q.assign(q)
        trainer.y.assign(y)
    trainer.reset(init, wt, learning_rate)
    return trainer


def fit_spline(
    q: np.ndarray,
    y: np.ndarray,
    wt: np.ndarray,
    init: SplineParams,
    *,
    alpha: float,
    learning_rate: float,
    epochs: int,
    on_block: Callable[[int, float], None] | None = None,
    trainer: _Trainer | None = None,
) -> FitResult:
    """Fit spline parameters to weighted samples by Adam.

    Parameters
    ----------
    q : ndarray (P, 2)
        Normalised coordinates of the working pixels that enter the loss.
    y : ndarray (P, C)
        Their stretched values.
    wt : ndarray (P, C)
        Their weights in (0, 1].
    init : SplineParams
        Starting point.
    alpha, learning_rate, epochs
        See :class:`bgopt_plugin.Config`.
    on_block : callable, optional
        Called as ``on_block(epochs_done, loss)`` after each block of epochs.
    trainer : optional
        A trainer from :func:`make_trainer` for the same samples, reused so the
        compiled step is not rebuilt (its weights are replaced by ``wt``).

    Returns
    -------
    FitResult
        The best parameters seen, with the loss history.
    """
    if epochs == 0:
        return FitResult(init, [], 0, float("nan"), False)
    if trainer is None:
        trainer = make_trainer(q, y, wt, init, alpha=alpha, learning_rate=learning_rate)
    trainer.reset(init, wt, learning_rate)
    jit = trainer.jit
    block = trainer.run(tf().constant(1)).numpy()
    history: list[float] = [float(block[0])]
    best, best_epoch, lr_epoch = history[0], 0, 0
    min_lr = learning_rate / 16
    done = 1
    while done < epochs:
        n = min(_BLOCK, epochs - done)
        block = trainer.run(tf().constant(n)).numpy()
        history.extend(float(x) for x in block)
        done += n
        i = int(np.argmin(block))
        if block[i] < best - _MIN_DELTA:
            best, best_epoch, lr_epoch = float(block[i]), done - n + i, done - n + i
        if on_block is not None:
            on_block(done, float(block[-1]))
        if not np.isfinite(block[-1]):
            break
        if done - best_epoch >= _PATIENCE_STOP:
            break
        if done - lr_epoch >= _PATIENCE_LR and float(trainer.lr.numpy()) > min_lr:
            trainer.lr.assign(float(trainer.lr.numpy()) * 0.5)
            lr_epoch = done
    trainer.restore_best()
    return FitResult(trainer.params(), history, done, float(trainer.best_loss.numpy()), jit)
