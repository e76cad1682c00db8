"""Synthetic linear skies with a known background, for tests, benchmarks and the demo.

Each scene is a linear image (stars with power-law fluxes, some saturated, Poisson-like
noise) plus a known smooth additive background, the mask of sky pixels to score on, and
the options a user would pass for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Scene", "SCENES", "make_scene", "residual_score", "add_stars"]


@dataclass
class Scene:
    """A synthetic sky: ``image = signal + background + noise``."""

    name: str
    image: np.ndarray          # (H, W) or (H, W, 3) float32, linear
    background: np.ndarray     # same shape: the true additive background
    sky: np.ndarray            # (H, W) bool: pixels to score on (no object, data present)
    options: dict[str, Any] = field(default_factory=dict)
    signal: np.ndarray | None = None  # objects (no stars), same shape as image


def residual_score(model: np.ndarray, truth: np.ndarray, sky: np.ndarray) -> float:
    """RMS(model - truth, median offset removed) / peak-to-peak(truth) on sky pixels.

    The worst channel counts. Returns a fraction (0.01 = 1 %).
    """
    model = model[..., None] if model.ndim == 2 else model
    truth = truth[..., None] if truth.ndim == 2 else truth
    worst = 0.0
    for c in range(truth.shape[-1]):
        t = truth[..., c][sky].astype(np.float64)
        d = model[..., c][sky].astype(np.float64) - t
        d -= np.median(d)
        ptp = float(np.ptp(t))
        worst = max(worst, float(np.sqrt(np.mean(d * d))) / (ptp if ptp > 0 else 1.0))
    return worst


def add_stars(shape: tuple[int, int], rng: np.random.Generator, density: float = 4e-4,
              fwhm: float = 2.5, peak_max: float = 3.0) -> np.ndarray:
    """Stars as Gaussian PSFs with power-law peak brightness (some reach saturation)."""
    h, w = shape
    n = max(1, int(density * h * w))
    ys, xs = rng.uniform(0, h, n), rng.uniform(0, w, n)
    # Pareto peaks: many faint stars, a few bright ones that saturate at 1.
    peaks = np.minimum(0.01 * (rng.pareto(1.3, n) + 1.0), peak_max)
    sig = fwhm / 2.355
    out = np.zeros(shape, dtype=np.float32)
    r = int(np.ceil(4 * sig)) + 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    for y, x, p in zip(ys, xs, peaks):
        iy, ix = int(y), int(x)
        psf = p * np.exp(-((yy - (y - iy)) ** 2 + (xx - (x - ix)) ** 2) / (2 * sig * sig))
        y0, y1, x0, x1 = iy - r, iy + r + 1, ix - r, ix + r + 1
        sy0, sx0 = max(0, -y0), max(0, -x0)
        sy1, sx1 = psf.shape[0] - max(0, y1 - h), psf.shape[1] - max(0, x1 - w)
        if sy1 <= sy0 or sx1 <= sx0:
            continue
        out[max(0, y0):min(h, y1), max(0, x0):min(w, x1)] += psf[sy0:sy1, sx0:sx1]
    return out


def _finish(name, bg, signal, rng, sky=None, options=None, colour=(1.0,), noise=0.0015,
            sky_level=0.05, stars=True, gain=4000.0):
    h, w = bg.shape[:2]
    star = add_stars((h, w), rng) if stars else np.zeros((h, w), np.float32)
    chans = []
    for k, cf in enumerate(colour):
        b = bg[..., k] if bg.ndim == 3 else bg
        s = signal[..., k] if signal is not None and signal.ndim == 3 else (
            signal if signal is not None else 0.0)
        clean = sky_level + b + s + star * cf
        # Poisson-like noise (variance grows with the signal) plus read noise.
        sigma = np.sqrt(np.maximum(clean, 0) / gain + noise**2)
        chans.append(clean + rng.normal(0, 1, (h, w)) * sigma)
    img = np.stack(chans, axis=-1) if len(colour) > 1 else chans[0]
    img = np.clip(img, 1e-5, 1.0).astype(np.float32)
    truth = (np.stack([bg[..., k] if bg.ndim == 3 else bg for k in range(len(colour))], -1)
             if len(colour) > 1 else bg) + sky_level
    sig_arr = None
    if signal is not None:
        sig_arr = signal.astype(np.float32)
    return Scene(name, img, truth.astype(np.float32),
                 np.ones((h, w), bool) if sky is None else sky, options or {}, sig_arr)


def _grid(shape):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return yy / max(h, w), xx / max(h, w)


def scene_linear(shape=(256, 384), seed=0):
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    return _finish("linear gradient", 0.04 * x + 0.015 * y, None, rng)


def scene_dome(shape=(256, 384), seed=1):
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    h = shape[0] / max(shape)
    d2 = (x - 0.2) ** 2 + (y - h - 0.1) ** 2  # glow centred below the bottom edge
    dome = np.exp(-d2 / 0.18)
    bg = np.stack([0.06 * dome, 0.035 * dome, 0.012 * dome], axis=-1)
    return _finish("colour light-pollution dome (RGB)", bg, None, rng, colour=(1.0, 0.9, 0.7))


def scene_saddle(shape=(256, 384), seed=2):
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    h, w = shape[0] / max(shape), shape[1] / max(shape)
    bg = 0.05 * ((x - w / 2) ** 2 - (y - h / 2) ** 2) / 0.25 + 0.02
    return _finish("quadratic saddle", bg, None, rng)


def scene_borders(shape=(256, 384), seed=3):
    sc = scene_linear(shape, seed)
    img = sc.image.copy()
    sky = np.ones(shape, bool)
    img[:, :14] = 0.0
    img[-9:, :] = 0.0
    sky[:, :14] = False
    sky[-9:, :] = False
    return Scene("registration borders of zeros", img, sc.background, sky, {})


def _blob(y, x, cy, cx, sy, sx, angle=0.0):
    ca, sa = np.cos(angle), np.sin(angle)
    u = (x - cx) * ca + (y - cy) * sa
    v = -(x - cx) * sa + (y - cy) * ca
    return np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))


def scene_nebula(shape=(256, 384), seed=4, protect=False):
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    bg = 0.03 * x + 0.02 * (1 - y)
    neb = 0.25 * _blob(y, x, 0.33, 0.5, 0.07, 0.12, 0.4) + 0.12 * _blob(y, x, 0.3, 0.62, 0.05, 0.05)
    sky = neb < 0.003
    opts = {} if protect else {"threshold_max": 0.6}
    return _finish("bright extended nebula" + (" (auto protection)" if protect else " (threshold mask)"),
                   bg, neb, rng, sky=sky, options=opts)


def scene_galaxy(shape=(256, 384), seed=5):
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    bg = 0.035 * (1 - x) + 0.01 * y
    r = np.sqrt(((x - 0.45) / 1.0) ** 2 + ((y - 0.32) / 0.55) ** 2)
    gal = 0.3 * np.exp(-r / 0.06)  # exponential disc, large and faint outskirts
    sky = gal < 0.002
    return _finish("large galaxy (auto protection)", bg, gal, rng, sky=sky)


def scene_skyscape(shape=(256, 384), seed=6):
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    h = shape[0] / max(shape)
    bg = 0.04 * (1 - np.abs(x - 0.5)) * (1 + 0.5 * y / h)
    sc = _finish("skyscape with dark foreground", bg, None, rng)
    img = sc.image.copy()
    horizon = (0.8 + 0.05 * np.sin(x[0] * 12)) * shape[0]
    ground = np.arange(shape[0])[:, None] > horizon[None, :]
    img[ground] = (0.0008 + rng.normal(0, 0.0002, ground.sum())).clip(1e-5)
    sky = ~ground
    return Scene(sc.name, img, sc.background, sky, {"threshold_min": 0.05})


SCENES = {
    "linear": scene_linear,
    "dome": scene_dome,
    "saddle": scene_saddle,
    "borders": scene_borders,
    "nebula": scene_nebula,
    "nebula_protect": lambda shape=(256, 384), seed=4: scene_nebula(shape, seed, protect=True),
    "galaxy": scene_galaxy,
    "skyscape": scene_skyscape,
}


def make_scene(name: str, shape: tuple[int, int] = (256, 384), seed: int | None = None) -> Scene:
    """Build a named scene (see :data:`SCENES`)."""
    factory = SCENES[name]
    return factory(shape) if seed is None else factory(shape, seed)
