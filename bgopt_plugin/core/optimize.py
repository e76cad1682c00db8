"""Gradient-descent fit of the spline to the working image (TensorFlow, Adam).

The spline lives in normalised linear units, where the sky is smooth and objects add
to it; the loss compares it with the delinearized working image through the same
stretch (the extended midtones transfer function), so faint sky weighs as much as it
does to the eye. The training step is compiled with ``tf.function`` (XLA
``jit_compile`` where it works, plain graph mode otherwise) and runs a block of epochs
per call, keeping the best parameters seen; early stopping (on a loss plateau, or once
the best model has stopped moving), and learning-rate halving act between blocks.
This is the only module that imports TensorFlow.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from ._tf import tf
from .parameters import Config, emit
from .spline import D2_FLOOR, SplineParams
from .stretch import extended_mtf

if TYPE_CHECKING:
    from .initial import InitialFit
    from .prepare import Prepared
    from .protect import Protection

__all__ = ["FitResult", "descend", "fit_spline", "make_trainer", "build_trainer", "load_optimizer",
           "load_optimizer_during", "LOSS_FLOOR"]

log = logging.getLogger(__name__)

#: Constant inside the log of the loss.
LOSS_FLOOR = 1e-3
_BLOCK = 25           # epochs per compiled call
_PATIENCE_LR = 30     # epochs without improvement before halving the learning rate
_PATIENCE_STOP = 60   # epochs without improvement before stopping
_MIN_DELTA = 5e-4     # improvement of the (log) loss that counts
# The model has settled when, over the last _SETTLE_EPOCHS, the best parameters moved it
# by less than _SETTLE_TOL of its range anywhere on the working pixels. The loss alone
# keeps creeping down long after (a 6 MP master: the log loss falls by 0.015 from epoch
# 500 to 1000) while the model no longer changes in a way that matters; the tolerances
# tried are in benchmarks/README.md.
_SETTLE_TOL = 1e-3
_SETTLE_EPOCHS = 100
_PROBES = 1500        # working pixels on which the model's movement is checked


def load_optimizer() -> bool:
    """Import TensorFlow now rather than at the first fit.

    The import takes seconds, mostly in Python; a host can overlap it with work that
    releases the GIL, such as reading the first file (:func:`load_optimizer_during`).

    Returns
    -------
    bool
        True if this call imported it, False if it was already loaded.

    Examples
    --------
    >>> import sys
    >>> from bgopt_plugin.core import load_optimizer
    >>> _ = load_optimizer()
    >>> "tensorflow" in sys.modules, load_optimizer()
    (True, False)
    """
    from . import _tf

    loaded = _tf.loaded()
    tf()
    return not loaded


T = TypeVar("T")


def load_optimizer_during(task: Callable[[], T]) -> T:
    """Import TensorFlow in this thread while ``task`` runs in another; return its result.

    The import is Python that holds the GIL; a task made of a few large calls that
    release it (reading a file, receiving a host's pixels, filling a buffer) runs
    meanwhile (the CLI hides a 24 MP read behind the import, benchmarks/README.md).
    Errors of the task are raised here, after the import, which stays in this thread.

    Examples
    --------
    >>> from bgopt_plugin.core import load_optimizer_during
    >>> load_optimizer_during(lambda: 6 * 7)
    42
    """
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(task)
        load_optimizer()
        return running.result()


@dataclass
class FitResult:
    """Outcome of :func:`fit_spline`."""

    params: SplineParams
    loss_history: list[float] = field(default_factory=list)
    epochs_run: int = 0
    best_loss: float = float("inf")
    jit_compiled: bool = False
    #: The fit reached its epoch limit while the loss was still falling (it improved in
    #: the last ``_PATIENCE_LR`` epochs): more epochs may give a better model.
    still_improving: bool = False


def _kernel(d2, order: int):
    """TensorFlow twin of :func:`bgopt_plugin.spline.kernel` (float32, differentiable)."""
    t = tf()
    d2 = t.maximum(d2, D2_FLOOR)
    if order == 1:
        return t.sqrt(d2)
    if order == 2:
        return 0.5 * d2 * t.math.log(d2)
    if order == 3:
        return d2 * t.sqrt(d2)
    return 0.5 * d2 * d2 * t.math.log(d2)


def apply(query, centers, w, v, order: int):
    """Spline values (C, P) at ``query`` (2, P) in TensorFlow, for the loss.

    Channels first, so every elementwise pass runs along the P pixels (with channels
    last, the minor dimension of 3 leaves XLA's CPU loops unvectorised). Distances are
    |q|^2 + |c|^2 - 2 c.q: one matmul and cheap gradients; the float32 cancellation this
    allows is harmless for training (evaluation is exact, in numpy).
    """
    t = tf()
    d2 = (t.reduce_sum(centers * centers, axis=1)[:, None] + t.reduce_sum(query * query, axis=0)[None, :]
          - 2.0 * t.matmul(centers, query))
    phi = _kernel(t.maximum(d2, 0.0), order)                       # (N, P)
    vt = t.transpose(v)                                            # (C, 3)
    return (t.matmul(w, phi, transpose_a=True) + vt[:, 0:1] + vt[:, 1:2] * query[0:1]
            + vt[:, 2:3] * query[1:2])


def stretch(x, m):
    """TensorFlow twin of :func:`bgopt_plugin.stretch.extended_mtf` (``m`` (C, 1) per channel)."""
    t = tf()
    inside = t.clip_by_value(x, 0.0, 1.0)
    inside = (m - 1.0) * inside / ((2.0 * m - 1.0) * inside - m)
    below = x * ((1.0 - m) / m)
    above = 1.0 + (x - 1.0) * (m / (1.0 - m))
    return t.where(x < 0.0, below, t.where(x > 1.0, above, inside))


def loss_terms(model, y, wt, alpha: float, bound=None, cap=None):
    """The seed loss: log(floor + mean|r| + colour variance + alpha (overshoot + negative)).

    ``model`` and ``y`` are stretched values, channels first (C, P), ``r = wt * (y - model)``.
    Where ``cap`` is non-zero, the model rising above ``bound`` counts as overshoot too.
    """
    t = tf()
    r = wt * (y - model)
    abs_r = t.abs(r)
    err = t.reduce_mean(abs_r)
    if y.shape[0] > 1:
        colour = t.reduce_mean(t.math.reduce_variance(r, axis=0))
    else:
        colour = t.constant(0.0, dtype=r.dtype)
    overshoot = t.reduce_mean(abs_r - r)
    negative = t.reduce_mean(t.abs(model) - model)
    if cap is not None:
        overshoot = overshoot + 2.0 * t.reduce_mean(cap * t.nn.relu(model - bound))
    return t.math.log(LOSS_FLOOR + err + colour + alpha * (overshoot + negative))


def _first(a) -> np.ndarray:
    """(P, K) samples as a contiguous float32 (K, P) array."""
    return np.ascontiguousarray(np.asarray(a, np.float32).T)


def make_adam(variables, learning_rate: float):
    """Keras' Adam for ``variables``, built now (so its state exists before compiling).

    Its learning rate is a variable, so it can be changed between compiled calls;
    :func:`reset_adam` forgets its moments for a fresh start.
    """
    import keras

    opt = keras.optimizers.Adam(learning_rate=float(learning_rate))
    opt.build(variables)
    return opt


def reset_adam(opt, learning_rate: float | None = None) -> None:
    """Forget the moments and the step count of ``opt``; optionally a new learning rate."""
    rate = float(opt.learning_rate.numpy()) if learning_rate is None else float(learning_rate)
    for var in opt.variables:
        var.assign(np.zeros(var.shape, var.dtype))
    opt.learning_rate.assign(rate)


class _Trainer:
    def __init__(self, q, y, wt, midtones, init: SplineParams, alpha: float, lr: float):
        t = tf()
        self.order = init.order
        # Variables, not constants, so a compiled trainer can take new samples of the
        # same shape (see make_trainer's cache).
        # Samples are held channels first: (2, P) coordinates, (C, P) values and weights.
        self.q = t.Variable(_first(q))
        self.y = t.Variable(_first(y))
        self.wt = t.Variable(_first(wt))
        self.midtones = t.Variable(np.asarray(midtones, np.float32).reshape(-1, 1))
        self.alpha = float(alpha)
        # Upper bounds (stretched) where ``cap`` is 1: pixels left out of the loss, such
        # as protected objects, above which the sky cannot be.
        self.bound = t.Variable(np.zeros_like(_first(y)))
        self.cap = t.Variable(np.zeros_like(_first(y)))
        self.vars = [t.Variable(np.asarray(x, np.float32)) for x in (init.centers, init.w, init.v)]
        self.best = [t.Variable(np.asarray(x, np.float32)) for x in (init.centers, init.w, init.v)]
        self.best_loss = t.Variable(np.inf, dtype=t.float32)
        self.opt = make_adam(self.vars, lr)

    @property
    def lr(self):
        return self.opt.learning_rate

    def _loss(self):
        c, w, v = self.vars
        model = stretch(apply(self.q, c, w, v, self.order), self.midtones)
        return loss_terms(model, self.y, self.wt, self.alpha, self.bound, self.cap)

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
        self.opt.apply(grads, self.vars)
        return loss

    def _run(self, n_steps):
        # Up to _BLOCK epochs in one call. One compiled program serves every block length:
        # the loss array has a fixed size, and the loop is a while on a run-time count (a
        # loop over tf.range(n_steps) made XLA compile one program per length). On CPU
        # the whole loop under XLA is several times faster than a graph loop around an
        # XLA-compiled step. The loop is a tf.while_loop traced without AutoGraph, whose
        # rewriting of this module's functions was a large part of a process's first fit
        # (benchmarks/README.md has the figures; the same model bit for bit).
        t = tf()

        def body(i, losses):
            return i + 1, losses.write(i, self._step())

        start = (t.constant(0), t.TensorArray(t.float32, size=_BLOCK, element_shape=[]))
        _, losses = t.while_loop(lambda i, _: i < n_steps, body, start)
        return losses.stack()

    def compile(self) -> bool:
        """Compile the epoch loop with XLA, falling back to a plain graph."""
        t = tf()
        spec = t.TensorSpec([], t.int32)
        try:
            self.run = t.function(self._run, input_signature=[spec], jit_compile=True,
                                  autograph=False)
            self.run(t.constant(1))  # compile now, so a failure falls back here
            return True
        except Exception as exc:  # noqa: BLE001 - XLA is unavailable for some ops/devices
            log.info("XLA compilation failed, training in plain graph mode: %s",
                     str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self.run = t.function(self._run, input_signature=[spec], autograph=False)
            return False

    def reset(self, init: SplineParams, wt: np.ndarray | None = None, lr: float | None = None) -> None:
        """Start again from ``init`` (fresh Adam state), optionally with new weights."""
        for x, b, val in zip(self.vars, self.best, (init.centers, init.w, init.v)):
            x.assign(np.asarray(val, np.float32))
            b.assign(np.asarray(val, np.float32))
        reset_adam(self.opt, lr)
        self.best_loss.assign(np.inf)
        if wt is not None:
            self.wt.assign(_first(wt))

    def restore_best(self) -> None:
        for b, x in zip(self.best, self.vars):
            x.assign(b)

    def params(self) -> SplineParams:
        c, w, v = (x.numpy().astype(np.float64) for x in self.vars)
        return SplineParams(c, w, v, self.order)


_CACHE: dict[tuple, _Trainer] = {}
_CACHE_SIZE = 4
# Trainers may be built in a background thread (see build_trainer) while a fit asks for
# one: a fit waits here for a build of its size instead of starting a second one.
_CACHE_LOCK = threading.RLock()


def _key(n_pixels: int, n_chan: int, n_points: int, order: int, alpha: float) -> tuple:
    return (n_pixels, n_chan, n_points, int(order), float(alpha))


def make_trainer(q, y, wt, midtones, init: SplineParams, *, alpha: float,
                 learning_rate: float, bound=None, cap=None) -> _Trainer:
    """A compiled trainer for samples ``q``, ``y`` (weights can change between fits).

    Compiling costs about a second, so trainers are cached by problem shape: a batch of
    frames of one size, or repeated runs in one session, compiles once.
    """
    key = _key(len(q), np.shape(y)[1], len(init.centers), init.order, alpha)
    with _CACHE_LOCK:
        trainer = _CACHE.get(key)
        if trainer is None:
            trainer = _Trainer(q, y, wt, midtones, init, alpha, learning_rate)
            trainer.jit = trainer.compile()
            if len(_CACHE) >= _CACHE_SIZE:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = trainer
        else:
            trainer.q.assign(_first(q))
            trainer.y.assign(_first(y))
            trainer.midtones.assign(np.asarray(midtones, np.float32).reshape(-1, 1))
        zeros = np.zeros(np.shape(y)[::-1], np.float32)
        trainer.bound.assign(zeros if bound is None else _first(bound))
        trainer.cap.assign(zeros if cap is None else _first(cap))
        trainer.reset(init, wt, learning_rate)
    return trainer


def build_trainer(n_pixels: int, n_chan: int, n_points: int, order: int, alpha: float) -> bool:
    """Build and compile the trainer for a problem of this size ahead of its fit.

    Tracing and compiling the epoch loop (or loading it from the persistent cache) is a
    large part of a process's first fit; it needs only the sizes, so
    :func:`~bgopt_plugin.core.fit_background` runs it in a thread while its numpy stages
    prepare the samples. A fit of that size then finds the trainer cached.

    Returns
    -------
    bool
        True if it built one, False if one of that size was cached already.
    """
    with _CACHE_LOCK:   # a cached trainer may be in use by a fit: never touch it
        if _key(n_pixels, n_chan, n_points, order, alpha) in _CACHE:
            return False
        z = np.zeros((n_pixels, n_chan), np.float32)
        centers = np.random.default_rng(0).random((n_points, 2))
        init = SplineParams(centers, np.zeros((n_points, n_chan)), np.zeros((3, n_chan)), order)
        make_trainer(np.zeros((n_pixels, 2), np.float32), z, z, np.full(n_chan, 0.5), init, alpha=alpha,
                     learning_rate=1e-3)
    return True


class _Settling:
    """Whether the best model has stopped moving (see ``_SETTLE_TOL``), checked in numpy
    on a fixed subset of the working pixels after every block of epochs."""

    def __init__(self, trainer: _Trainer, q: np.ndarray):
        self.trainer = trainer
        self.probe = np.asarray(q, np.float64)[:: max(1, len(q) // _PROBES)]
        self.seen: list[tuple[int, np.ndarray]] = []

    def settled(self, done: int) -> bool:
        c, w, v = (b.numpy().astype(np.float64) for b in self.trainer.best)
        now = SplineParams(c, w, v, self.trainer.order)(self.probe)
        self.seen.append((done, now))
        while len(self.seen) > 1 and done - self.seen[1][0] >= _SETTLE_EPOCHS:
            self.seen.pop(0)
        then, before = self.seen[0]
        if done - then < _SETTLE_EPOCHS:
            return False
        span = float(np.ptp(now, axis=0).max())
        return float(np.abs(now - before).max()) <= _SETTLE_TOL * span


def fit_spline(q: np.ndarray, y: np.ndarray, wt: np.ndarray, midtones: np.ndarray, init: SplineParams,
               *, alpha: float, learning_rate: float, epochs: int, bound=None, cap=None,
               on_block: Callable[[int, float], None] | None = None) -> FitResult:
    """Fit spline parameters to weighted samples by Adam.

    Parameters
    ----------
    q : ndarray (P, 2)
        Normalised coordinates of the working pixels.
    y : ndarray (P, C)
        Their stretched values (anything where ``wt`` is 0).
    wt : ndarray (P, C)
        Their weights in [0, 1]; 0 leaves a pixel out of the loss.
    midtones : ndarray (C,)
        Midtones balance of the stretch that maps the spline's normalised linear units
        onto the stretched values.
    init : SplineParams
        Starting point, in normalised linear units.
    bound, cap : ndarray (P, C), optional
        Stretched upper bounds, and where (``cap`` 1) they hold: the model rising above
        them is penalised like overshoot.
    alpha, learning_rate, epochs
        See :class:`bgopt_plugin.Config`.
    on_block : callable, optional
        Called as ``on_block(epochs_done, loss)`` after each block of epochs.

    Returns
    -------
    FitResult
        The best parameters seen, with the loss history.
    """
    if epochs == 0:
        return FitResult(init, [], 0, float("nan"), False)
    trainer = make_trainer(q, y, wt, midtones, init, alpha=alpha, learning_rate=learning_rate,
                           bound=bound, cap=cap)
    block = trainer.run(tf().constant(1)).numpy()[:1]
    history: list[float] = [float(block[0])]
    best, best_epoch, lr_epoch = history[0], 0, 0
    min_lr = learning_rate / 16
    done = 1
    if on_block is not None:
        on_block(done, history[0])
    watch = _Settling(trainer, q)
    while done < epochs:
        n = min(_BLOCK, epochs - done)
        block = trainer.run(tf().constant(n)).numpy()[:n]
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
        if watch.settled(done):
            break
        if done - lr_epoch >= _PATIENCE_LR and float(trainer.lr.numpy()) > min_lr:
            trainer.lr.assign(float(trainer.lr.numpy()) * 0.5)
            lr_epoch = done
    trainer.restore_best()
    still = done >= epochs and done - best_epoch < _PATIENCE_LR
    return FitResult(trainer.params(), history, done, float(trainer.best_loss.numpy()), trainer.jit,
                     still)


def descend(prep: Prepared, protection: Protection, init: InitialFit, config: Config) -> FitResult:
    """The gradient-descent stage: refine ``init`` on the delinearized working image.

    In: the working image's stretched values, the protection's loss weights, the
    initial spline and its ceiling (mapped through the stretch, where it binds like
    overshoot). Out: the best spline seen, with its loss history. Progress goes to
    ``config.progress`` (stage ``"fit"``), with a last event when the fit stops early.
    """
    n_chan = prep.working.shape[-1]
    y = np.nan_to_num(prep.working).reshape(-1, n_chan)
    bound = cap = None
    if init.ceiling is not None:
        midtones = prep.stretch.midtones.astype(np.float32)
        bound, cap = np.zeros_like(y), np.zeros_like(y)
        bound[init.under] = extended_mtf(init.ceiling[1].astype(np.float32), midtones)
        cap[init.under] = 1.0
    emit(config, "fit", 0, config.epochs, message="fit")
    fit = fit_spline(prep.query, y, protection.weights.reshape(-1, n_chan), prep.stretch.midtones,
                     init.params, alpha=config.alpha, learning_rate=config.learning_rate,
                     epochs=config.epochs, bound=bound, cap=cap,
                     on_block=lambda done, loss: emit(config, "fit", done, config.epochs, loss, "fit"))
    if fit.epochs_run < config.epochs:   # stopped early (plateau or settled): stage complete
        emit(config, "fit", config.epochs, config.epochs, fit.best_loss,
             f"converged at epoch {fit.epochs_run}")
    return fit
