"""Synthetic linear skies with a known background, and the scores that judge a model.

Each scene is a linear image (stars with power-law fluxes, some saturated, Poisson-like
noise) made of a known smooth background plus, for most scenes, extended objects
(nebulae, galaxies, a Milky Way band, dust lanes) whose signal is known too. A model is
scored on every pixel where the true background is known, object pixels included, and
by the share of the objects' flux that survives the correction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Scene", "SCENES", "make_scene", "demo_scene", "residual_score", "flux_kept",
           "model_flatness", "add_stars", "score"]

_SHAPE = (256, 384)


@dataclass
class Scene:
    """A synthetic sky: ``image = background + signal + stars + noise``.

    Attributes
    ----------
    name : str
    image : ndarray, (H, W) or (H, W, 3), float32
        The linear frame.
    background : ndarray, same shape as ``image``
        The true background (the sky level included), what a model should find.
    known : ndarray (H, W), bool
        Pixels where the true background is defined (data present, not foreground).
    signal : ndarray, same shape as ``image``, or None
        The extended objects (no stars): positive for emission, negative for absorption.
    sky : ndarray (H, W), bool
        Known pixels with no object signal, where the sky offset is measured.
    options : dict
        The :class:`bgopt_plugin.Config` options a user would set for this scene.
    """

    name: str
    image: np.ndarray
    background: np.ndarray
    known: np.ndarray
    signal: np.ndarray | None = None
    sky: np.ndarray | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sky is None:
            self.sky = self.known.copy()

    @property
    def sky_level(self) -> np.ndarray:
        """Median of the true background per channel."""
        return np.median(_chan(self.background)[self.known], axis=0)


def _chan(a: np.ndarray) -> np.ndarray:
    return a[..., None] if a.ndim == 2 else a


def residual_score(model: np.ndarray, truth: np.ndarray, known: np.ndarray) -> float:
    """RMS(model - truth, median offset removed) / peak-to-peak(truth) over ``known``.

    ``known`` should be every pixel where the true background is defined, object
    pixels included: a model that bends up under a nebula is then penalised. The worst
    channel counts. Returns a fraction (0.01 = 1 %).

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.linspace(0, 1, 100).reshape(10, 10)
    >>> residual_score(truth + 5.0, truth, np.ones((10, 10), bool))
    0.0
    """
    model, truth = _chan(model), _chan(truth)
    worst = 0.0
    for c in range(truth.shape[-1]):
        t = truth[..., c][known].astype(np.float64)
        d = model[..., c][known].astype(np.float64) - t
        d -= np.median(d)
        ptp = float(np.ptp(t))
        worst = max(worst, float(np.sqrt(np.mean(d * d))) / (ptp if ptp > 0 else 1.0))
    return worst


def _ideal(x: np.ndarray, truth: np.ndarray, divide: bool) -> np.ndarray:
    """The correction made with the true background (without the pedestal)."""
    return x * (np.median(truth) / truth) if divide else x - truth


def flux_kept(corrected: np.ndarray, scene: Scene, footprint: float = 0.01) -> float:
    """Share of the objects' integrated signal left in the corrected image.

    The same correction made with the true background tells what the corrected frame
    would hold without the objects (``ideal(image - signal)``) and what the objects
    should become (``ideal(image) - ideal(image - signal)``; the signal itself for a
    subtraction). What ``corrected`` holds beyond the first, minus the constant sky
    offset of the model (measured on ``scene.sky``), is summed over the object footprint
    (``|signal| >= footprint * max|signal|``) and divided by the second. 1.0 is perfect;
    below 1 the model ate part of the object, above 1 it dug a hole around it. The
    channel furthest from 1 counts.

    Examples
    --------
    >>> sc = make_scene("galaxy", shape=(64, 96))
    >>> round(flux_kept(sc.image - sc.background, sc), 6)
    1.0
    """
    if scene.signal is None:
        return float("nan")
    divide = scene.options.get("correction") == "divide"
    corrected, image = _chan(corrected).astype(np.float64), _chan(scene.image).astype(np.float64)
    truth, signal = _chan(scene.background).astype(np.float64), _chan(scene.signal).astype(np.float64)
    worst = 1.0
    for c in range(image.shape[-1]):
        t, s = truth[..., c], signal[..., c]
        without = _ideal(image[..., c] - s, t, divide)
        wanted = _ideal(image[..., c], t, divide) - without
        left = corrected[..., c] - without
        fp = (np.abs(s) >= footprint * np.abs(s).max()) & scene.known
        offset = np.median((left - wanted)[scene.sky])  # zero for a perfect model
        kept = float(np.sum(left[fp] - offset) / np.sum(wanted[fp]))
        worst = kept if abs(kept - 1) > abs(worst - 1) else worst
    return worst


def model_flatness(model: np.ndarray, known: np.ndarray, level: np.ndarray) -> float:
    """Largest per-channel peak-to-peak of ``model`` over ``known``, / the sky ``level``."""
    model = _chan(model)
    return max(float(np.ptp(model[..., c][known])) / float(level[c]) for c in range(model.shape[-1]))


def score(scene: Scene, background: np.ndarray, corrected: np.ndarray) -> dict[str, float]:
    """Every score of a fit: ``residual`` (all known pixels), ``sky_residual`` (away from
    objects), ``flux_kept`` and ``flatness`` (model peak-to-peak / sky level)."""
    return {
        "residual": residual_score(background, scene.background, scene.known),
        "sky_residual": residual_score(background, scene.background, scene.sky),
        "flux_kept": flux_kept(corrected, scene),
        "flatness": model_flatness(background, scene.known, scene.sky_level),
    }


def add_stars(shape: tuple[int, int], rng: np.random.Generator, density: float = 4e-4,
              fwhm: float = 2.5, peak_max: float = 3.0, where: np.ndarray | None = None) -> np.ndarray:
    """Stars as Gaussian PSFs with power-law peak brightness (some reach saturation).

    ``where`` (H, W) in [0, 1], optional, scales the local density (a Milky Way band).
    """
    h, w = shape
    n = max(1, int(density * h * w))
    ys, xs = rng.uniform(0, h, n), rng.uniform(0, w, n)
    # Pareto peaks: many faint stars, a few bright ones that saturate at 1.
    peaks = np.minimum(0.01 * (rng.pareto(1.3, n) + 1.0), peak_max)
    if where is not None:
        keep = rng.uniform(size=n) < where[ys.astype(int), xs.astype(int)]
        ys, xs, peaks = ys[keep], xs[keep], peaks[keep]
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


def _finish(name, bg, signal, rng, *, options=None, colour=(1.0,), noise=0.0015, sky_level=0.05,
            stars=None, gain=4000.0, known=None, sky_frac=0.003, gain_map=None):
    """Compose ``sky_level + bg + signal + stars`` with noise; ``gain_map`` multiplies
    everything (vignetting), ``bg`` and ``signal`` are (H, W) or (H, W, C)."""
    h, w = bg.shape[:2]
    n_chan = len(colour)
    star = add_stars((h, w), rng) if stars is None else stars
    bgc = np.stack([_chan(bg)[..., min(k, _chan(bg).shape[-1] - 1)] for k in range(n_chan)], -1)
    sig = None
    if signal is not None:
        sig = np.stack([_chan(signal)[..., min(k, _chan(signal).shape[-1] - 1)]
                        for k in range(n_chan)], -1)
    vign = np.ones((h, w)) if gain_map is None else gain_map
    truth = (sky_level + bgc) * vign[..., None]
    chans = []
    for k, cf in enumerate(colour):
        clean = truth[..., k] + (0 if sig is None else sig[..., k] * vign) + star * cf * vign
        # Poisson-like noise (variance grows with the signal) plus read noise.
        sigma = np.sqrt(np.maximum(clean, 0) / gain + noise**2)
        chans.append(clean + rng.normal(0, 1, (h, w)) * sigma)
    img = np.clip(np.stack(chans, axis=-1), 1e-5, 1.0).astype(np.float32)
    if sig is not None and gain_map is not None:
        sig = sig * vign[..., None]
    known = np.ones((h, w), bool) if known is None else known
    sky = None
    if sig is not None:
        peak = np.abs(sig).max()
        sky = known & (np.abs(sig).max(axis=-1) < sky_frac * peak)
    squeeze = (lambda a: a[..., 0]) if n_chan == 1 else (lambda a: a)
    return Scene(name, squeeze(img), squeeze(truth.astype(np.float32)), known,
                 None if sig is None else squeeze(sig.astype(np.float32)), sky, options or {})


def _grid(shape):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return yy / max(h, w), xx / max(h, w)


def _blob(y, x, cy, cx, sy, sx, angle=0.0):
    ca, sa = np.cos(angle), np.sin(angle)
    u = (x - cx) * ca + (y - cy) * sa
    v = -(x - cx) * sa + (y - cy) * ca
    return np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))


def _texture(shape, rng, scales=(3.0, 9.0), contrast=0.7):
    """Log-normal texture with unit median: smoothed noise at a few scales (pixels)."""
    from scipy import ndimage

    field_ = np.zeros(shape)
    for s in scales:
        f = ndimage.gaussian_filter(rng.normal(size=shape), s, mode="reflect")
        field_ += f / f.std()
    return np.exp(contrast * field_ / np.sqrt(len(scales)))


# ----------------------------------------------------------------- the original scenes
def scene_linear(shape=_SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    return _finish("linear gradient", 0.04 * x + 0.015 * y, None, rng)


def scene_dome(shape=_SHAPE, seed=1):
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    h = shape[0] / max(shape)
    d2 = (x - 0.2) ** 2 + (y - h - 0.1) ** 2  # glow centred below the bottom edge
    dome = np.exp(-d2 / 0.18)
    bg = np.stack([0.06 * dome, 0.035 * dome, 0.012 * dome], axis=-1)
    return _finish("colour light-pollution dome (RGB)", bg, None, rng, colour=(1.0, 0.9, 0.7))


def scene_saddle(shape=_SHAPE, seed=2):
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    h, w = shape[0] / max(shape), shape[1] / max(shape)
    bg = 0.05 * ((x - w / 2) ** 2 - (y - h / 2) ** 2) / 0.25 + 0.02
    return _finish("quadratic saddle", bg, None, rng)


def scene_borders(shape=_SHAPE, seed=3):
    sc = scene_linear(shape, seed)
    img = sc.image.copy()
    known = np.ones(shape, bool)
    img[:, :14] = 0.0
    img[-9:, :] = 0.0
    known[:, :14] = False
    known[-9:, :] = False
    return Scene("registration borders of zeros", img, sc.background, known)


def scene_nebula(shape=_SHAPE, seed=4, protect=False):
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    bg = 0.03 * x + 0.02 * (1 - y)
    neb = 0.25 * _blob(y, x, 0.33, 0.5, 0.07, 0.12, 0.4) + 0.12 * _blob(y, x, 0.3, 0.62, 0.05, 0.05)
    opts = {} if protect else {"threshold_max": 0.6}
    return _finish("bright extended nebula" + (" (auto protection)" if protect else " (threshold mask)"),
                   bg, neb, rng, options=opts)


def scene_galaxy(shape=_SHAPE, seed=5):
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    bg = 0.035 * (1 - x) + 0.01 * y
    r = np.sqrt(((x - 0.45) / 1.0) ** 2 + ((y - 0.32) / 0.55) ** 2)
    gal = 0.3 * np.exp(-r / 0.06)  # exponential disc, large and faint outskirts
    return _finish("large galaxy (auto protection)", bg, gal, rng)


def scene_skyscape(shape=_SHAPE, seed=6):
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    h = shape[0] / max(shape)
    bg = 0.04 * (1 - np.abs(x - 0.5)) * (1 + 0.5 * y / h)
    sc = _finish("skyscape with dark foreground", bg, None, rng)
    img = sc.image.copy()
    horizon = (0.8 + 0.05 * np.sin(x[0] * 12)) * shape[0]
    ground = np.arange(shape[0])[:, None] > horizon[None, :]
    img[ground] = (0.0008 + rng.normal(0, 0.0002, ground.sum())).clip(1e-5)
    return Scene(sc.name, img, sc.background, ~ground, options={"threshold_min": 0.05})


# ----------------------------------------------------------------- the harder scenes
def _lp_gradient(y, x, h, strength=0.04, colour=(1.0, 0.75, 0.45)):
    """A coloured light-pollution glow from below the bottom-left, plus a tilt."""
    dome = np.exp(-((x - 0.1) ** 2 + (y - h - 0.15) ** 2) / 0.3)
    base = strength * (0.8 * dome + 0.2 * x)
    return np.stack([base * c for c in colour], axis=-1)


def scene_nebula_large(shape=_SHAPE, seed=8, user_mask=False):
    """A textured emission nebula over a third to a half of the frame, touching the right edge."""
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    h = shape[0] / max(shape)
    bg = _lp_gradient(y, x, h)
    envelope = _blob(y, x, 0.36 * h / 0.667, 0.82, 0.17, 0.22, 0.3) ** 1.5
    neb = envelope * _texture(shape, rng, scales=(2.5, 7.0, 16.0), contrast=0.6)
    neb *= 4.0 * float(np.ptp(bg[..., 0])) / neb.max()   # peak 4 x the gradient's p2p
    signal = np.stack([neb, 0.6 * neb, 0.7 * neb], axis=-1)  # H-alpha and OIII
    opts = {"threshold_max": 0.7} if user_mask else {}  # just above the brightest sky
    return _finish("frame-filling emission nebula" + (" (user threshold)" if user_mask else ""),
                   bg, signal, rng, options=opts, colour=(1.0, 0.9, 0.8))


def scene_galaxy_halo(shape=_SHAPE, seed=9):
    """A bright galaxy whose faint halo spans about a quarter of the frame width (RGB)."""
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    h = shape[0] / max(shape)
    bg = _lp_gradient(y, x, h, strength=0.045, colour=(0.9, 0.8, 0.7))
    ca, sa = np.cos(0.5), np.sin(0.5)
    u = (x - 0.42) * ca + (y - 0.36) * sa
    v = -(x - 0.42) * sa + (y - 0.36) * ca
    r = np.sqrt(u**2 + (v / 0.6) ** 2)
    core = 0.2 * np.exp(-((r / 0.01) ** 0.5))          # Sersic-like bulge
    disc = 0.04 * np.exp(-r / 0.03)
    halo = 0.006 * np.exp(-r / 0.05)                   # faint; reaches the noise at r ~ 0.13
    gal = core + disc + halo
    signal = np.stack([gal, 0.95 * gal, 0.8 * gal], axis=-1)
    return _finish("large galaxy with a faint halo (RGB)", bg, signal, rng,
                   colour=(1.0, 0.95, 0.9))


def scene_milky_way(shape=_SHAPE, seed=10):
    """A diagonal Milky Way band (diffuse glow, dense stars) over light pollution."""
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    h = shape[0] / max(shape)
    bg = _lp_gradient(y, x, h, strength=0.045)
    theta = np.arctan2(h, 1.0)  # corner to corner
    dist = np.abs((x - 0.5) * np.sin(theta) - (y - h / 2) * np.cos(theta))
    sigma = 0.15 * h / 2.355                           # FWHM 15 % of the frame height
    band = np.exp(-0.5 * (dist / sigma) ** 2)
    glow = 0.03 * band * _texture(shape, rng, scales=(2.0, 6.0), contrast=0.5)
    signal = np.stack([glow, 0.85 * glow, 0.7 * glow], axis=-1)
    stars = add_stars(shape, rng, density=6e-4) + add_stars(shape, rng, density=6e-3, where=band)
    return _finish("Milky Way band over light pollution", bg, signal, rng, stars=stars,
                   colour=(1.0, 0.95, 0.9))


def scene_dust(shape=_SHAPE, seed=11):
    """Dark dust lanes absorbing a diffuse glow, against a gradient (negative structure)."""
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    h = shape[0] / max(shape)
    bg = 0.035 * (1 - x) + 0.012 * y / h
    f = np.log(_texture(shape, rng, scales=(2.0, 5.0, 12.0), contrast=1.0))
    absorb = 0.85 / (1 + np.exp(-(f - 0.8) / 0.3))     # soft lanes over ~20 % of the frame
    glow = 0.03
    stars = add_stars(shape, rng) * (1 - absorb)
    return _finish("dark nebula / dust lanes", bg, -glow * absorb, rng, stars=stars,
                   sky_level=0.05 + glow, sky_frac=0.03)


def scene_flat(shape=_SHAPE, seed=12):
    """Negative control: no gradient at all, a galaxy and a nebula on a flat sky."""
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    gal = 0.2 * np.exp(-np.sqrt(((x - 0.3) / 1.0) ** 2 + ((y - 0.25) / 0.6) ** 2) / 0.03)
    neb = 0.06 * _blob(y, x, 0.45, 0.75, 0.06, 0.1, -0.3) * _texture(shape, rng, contrast=0.4)
    return _finish("negative control: flat sky with objects", np.zeros(shape), gal + neb, rng,
                   noise=0.0008, gain=20000.0)


def scene_bright_corner(shape=_SHAPE, seed=13):
    """Light pollution so strong that the brightest 10 % of the frame is sky."""
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    h = shape[0] / max(shape)
    d = np.sqrt((x - 1.0) ** 2 + (y - h) ** 2)        # from the top-right corner
    bg = 0.12 * np.exp(-d / 0.25) + 0.01 * x
    return _finish("bright-corner gradient (sky above the 95th percentile)", bg, None, rng,
                   noise=0.001, gain=8000.0)


def scene_vignetting(shape=_SHAPE, seed=14):
    """Vignetting: sky, stars and a small galaxy multiplied by a radial fall-off."""
    rng = np.random.default_rng(seed)
    y, x = _grid(shape)
    h = shape[0] / max(shape)
    r2 = ((x - 0.5) ** 2 + (y - h / 2) ** 2) / 0.36
    vign = 1.0 - 0.45 * r2 - 0.15 * r2 * r2
    gal = 0.1 * np.exp(-np.sqrt((x - 0.62) ** 2 + ((y - 0.28) / 0.6) ** 2) / 0.02)
    return _finish("vignetting (correction=divide)", np.zeros(shape), gal, rng,
                   options={"correction": "divide"}, sky_level=0.08, gain_map=vign)


def demo_scene(shape: tuple[int, int] = (600, 900), seed: int = 7) -> Scene:
    """The ``bgopt demo`` master: a linear RGB frame with a strong colour gradient,
    stars and a nebula.

    Returns
    -------
    Scene
        The image with its true background and nebula signal.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = _grid(shape)
    hh = h / max(h, w)
    dome = np.exp(-((x - 0.15) ** 2 + (y - hh - 0.15) ** 2) / 0.35)
    tilt = 0.3 * x
    background = np.stack([0.05 * dome + 0.010 * tilt, 0.032 * dome + 0.008 * tilt,
                           0.012 * dome + 0.012 * tilt], axis=-1) + 0.04
    neb = 0.08 * _blob(y, x, 0.36, 0.62, 0.06, 0.13, 0.5)
    nebula = np.stack([neb, 0.35 * neb, 0.5 * neb], axis=-1)
    stars = add_stars(shape, rng, density=5e-4)[..., None] * np.array([1.0, 0.95, 0.9])
    clean = background + nebula + stars
    noise = rng.normal(size=clean.shape) * np.sqrt(clean / 20000 + 0.0008**2)
    image = np.clip(clean + noise, 1e-5, 1.0).astype(np.float32)
    return Scene("bgopt demo", image, background.astype(np.float32), np.ones(shape, bool),
                 nebula.astype(np.float32), neb < 1e-4 * neb.max())


#: Scene factories by name: ``factory(shape=(256, 384), seed=...) -> Scene``.
SCENES: dict[str, Callable[..., Scene]] = {
    "linear": scene_linear,
    "dome": scene_dome,
    "saddle": scene_saddle,
    "borders": scene_borders,
    "nebula": scene_nebula,
    "nebula_protect": lambda shape=_SHAPE, seed=4: scene_nebula(shape, seed, protect=True),
    "galaxy": scene_galaxy,
    "skyscape": scene_skyscape,
    "nebula_large": scene_nebula_large,
    "nebula_large_mask": lambda shape=_SHAPE, seed=8: scene_nebula_large(shape, seed, user_mask=True),
    "galaxy_halo": scene_galaxy_halo,
    "milky_way": scene_milky_way,
    "dust": scene_dust,
    "flat": scene_flat,
    "bright_corner": scene_bright_corner,
    "vignetting": scene_vignetting,
}


def make_scene(name: str, shape: tuple[int, int] = _SHAPE, seed: int | None = None) -> Scene:
    """Build a named scene (see :data:`SCENES`)."""
    factory = SCENES[name]
    return factory(shape) if seed is None else factory(shape, seed)
