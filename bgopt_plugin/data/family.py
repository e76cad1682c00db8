"""A randomised family of synthetic skies, drawn whole from a seed.

Each draw picks, independently: the frame (size from 300x450 to 4000x6000, landscape,
portrait or square; mono or RGB; the noise), a smooth random background (a tilt at any
angle, a light-pollution dome centred on or beyond a border, a bowl or saddle, and
sometimes a horizon glow above a dark foreground or vignetting) and a content class:
stars only (sparse to a dense cluster), a textured nebula (5-70 % of the frame above a
tenth of its peak, anywhere), a galaxy (with or without a faint halo), a Milky-Way band,
dust lanes, or a nebula plus a galaxy. The truth (background and object signal) is
known, so a model is scored with :func:`~bgopt_plugin.data.synthetic.residual_score` and
:func:`~bgopt_plugin.data.synthetic.flux_kept`.

Everything but the noise and the stars is defined in units of the frame, so
``draw_sky(seed, shape=...)`` gives the same sky at another size. The development seeds
(:data:`DEV_SEEDS`) are for tuning, the validation seeds (:data:`VALIDATION_SEEDS`) only for
checking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .synthetic import Scene, add_stars

__all__ = ["CONTENTS", "DEV_SEEDS", "VALIDATION_SEEDS", "SkyDraw", "draw_sky", "footprint"]

#: The content classes, in the order tables list them.
CONTENTS = ("stars", "nebula", "galaxy", "band", "dust", "mixed")
#: Seeds for development (tuning).
DEV_SEEDS = range(0, 200)
#: Seeds kept for validation: never tuned on.
VALIDATION_SEEDS = range(100_000, 100_200)
#: Long side of the grid on which textures are drawn before they are scaled to the frame.
_COARSE = 256
#: Frame sizes (long side of a 2:3 frame) drawn, log-uniformly; squares have its area.
LONG_SIDE = (450, 6000)


@dataclass
class SkyDraw:
    """One draw of the family: the scene and what was drawn.

    Attributes
    ----------
    seed : int
    content : str
        One of :data:`CONTENTS`.
    scene : Scene
        Image, true background, known pixels, object signal and the options a user would
        set (``threshold_min`` above a dark foreground, ``correction="divide"`` for
        vignetting).
    background : tuple of str
        The background's components.
    """

    seed: int
    content: str
    scene: Scene
    background: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return self.scene.image.shape[:2]

    def describe(self) -> str:
        h, w = self.shape
        colour = "RGB" if self.scene.image.ndim == 3 else "mono"
        return f"#{self.seed} {self.content} {h}x{w} {colour} [{'+'.join(self.background)}]"


def footprint(scene: Scene, level: float = 0.01, min_sky: float = 0.15) -> np.ndarray:
    """Pixels where the objects' signal reaches ``level`` of its peak (H, W) bool.

    Where that would leave less than ``min_sky`` of the known pixels, the level is raised
    (2, 5, 10, 20 % of the peak) until it does not: what a perfect detector can leave out
    while some sky is left to fit.
    """
    if scene.signal is None:
        return np.zeros(scene.known.shape, bool)
    s = np.abs(scene.signal if scene.signal.ndim == 2 else scene.signal.max(axis=-1))
    for lv in (level, 0.02, 0.05, 0.1, 0.2):
        mask = s >= lv * s.max()
        if (scene.known & ~mask).sum() >= min_sky * scene.known.sum():
            break
    return mask


def _shape(rng: np.random.Generator) -> tuple[int, int]:
    long_side = int(round(np.exp(rng.uniform(*np.log(LONG_SIDE)))))
    kind = rng.choice(["landscape", "portrait", "square"], p=[0.45, 0.35, 0.2])
    if kind == "square":   # the area of the 2:3 frame of that long side
        side = int(round(long_side * np.sqrt(2 / 3)))
        return side, side
    short = int(round(long_side * 2 / 3))
    return (short, long_side) if kind == "landscape" else (long_side, short)


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _colour(rng: np.random.Generator, n_chan: int, kind: str = "any") -> np.ndarray:
    if n_chan == 1:
        return np.ones(1)
    if kind == "lp":       # sodium and LED light pollution: red-heavy
        c = np.array([1.0, rng.uniform(0.6, 0.9), rng.uniform(0.3, 0.7)])
    elif kind == "moon":   # moonlight: blue-ish
        c = np.array([rng.uniform(0.8, 0.95), rng.uniform(0.9, 1.0), 1.0])
    else:
        c = np.clip(1.0 + 0.3 * rng.normal(size=3), 0.3, 1.4)
    return c / c.max()


class _Frame:
    """Frame coordinates: ``y`` in [0, h/L], ``x`` in [0, w/L], L the long side."""

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape
        h, w = shape
        long_side = max(h, w)
        self.h, self.w = h / long_side, w / long_side
        self.y = ((np.arange(h) + 0.5) / long_side)[:, None]
        self.x = ((np.arange(w) + 0.5) / long_side)[None, :]
        ch = max(8, int(round(_COARSE * h / long_side)))
        cw = max(8, int(round(_COARSE * w / long_side)))
        self.coarse = (ch, cw)

    def upsample(self, field: np.ndarray) -> np.ndarray:
        """A coarse-grid field (``self.coarse``) at full resolution (bilinear)."""
        h, w = self.shape
        ch, cw = field.shape
        rows = np.clip((np.arange(h) + 0.5) * ch / h - 0.5, 0, ch - 1)
        cols = np.clip((np.arange(w) + 0.5) * cw / w - 0.5, 0, cw - 1)
        r0 = np.minimum(rows.astype(int), ch - 2)
        c0 = np.minimum(cols.astype(int), cw - 2)
        fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
        top = field[r0][:, c0] * (1 - fc) + field[r0][:, c0 + 1] * fc
        bottom = field[r0 + 1][:, c0] * (1 - fc) + field[r0 + 1][:, c0 + 1] * fc
        return top * (1 - fr) + bottom * fr

    def texture(self, rng: np.random.Generator, scales: tuple[float, ...], contrast: float) -> np.ndarray:
        """Log-normal texture with unit median; ``scales`` in units of the long side."""
        field = np.zeros(self.coarse)
        for s in scales:
            f = ndimage.gaussian_filter(rng.normal(size=self.coarse), s * _COARSE, mode="wrap")
            field += f / f.std()
        return self.upsample(np.exp(contrast * field / np.sqrt(len(scales))))


# ------------------------------------------------------------------------- background
def _tilt(f: _Frame, rng) -> np.ndarray:
    a = rng.uniform(0, 2 * np.pi)
    t = f.x * np.cos(a) + f.y * np.sin(a)
    return t - t.min()


def _dome(f: _Frame, rng) -> np.ndarray:
    """Light pollution: a glow centred on a border or beyond it."""
    side = rng.integers(4)
    along = rng.uniform(-0.2, 1.2)
    beyond = rng.uniform(0.0, 0.6)
    cy, cx = {0: (-beyond, along * f.w), 1: (f.h + beyond, along * f.w),
              2: (along * f.h, -beyond), 3: (along * f.h, f.w + beyond)}[int(side)]
    scale = rng.uniform(0.25, 1.0)
    r2 = ((f.y - cy) ** 2 + (f.x - cx) ** 2) / scale**2
    return np.exp(-0.5 * r2) if rng.uniform() < 0.5 else 1.0 / (1.0 + r2)


def _quadratic(f: _Frame, rng) -> np.ndarray:
    """A bowl (lowest inside the frame) or a saddle, at any angle."""
    a = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0.2, 0.8) * f.h, rng.uniform(0.2, 0.8) * f.w
    u = (f.x - cx) * np.cos(a) + (f.y - cy) * np.sin(a)
    v = -(f.x - cx) * np.sin(a) + (f.y - cy) * np.cos(a)
    q = u**2 + (rng.uniform(0.3, 1.0) if rng.uniform() < 0.6 else -rng.uniform(0.3, 1.0)) * v**2
    return q - q.min()


def _horizon(f: _Frame, rng) -> tuple[np.ndarray, np.ndarray]:
    """A glow above a wavy horizon at the bottom; returns (glow, ground mask)."""
    level = rng.uniform(0.65, 0.85) * f.h
    wave = 0.03 * f.h * np.sin(f.x[0] * rng.uniform(4, 14) + rng.uniform(0, 6))
    horizon = level + wave + 0.04 * f.h * rng.normal() * (f.x[0] / f.w - 0.5)
    above = np.maximum(horizon[None, :] - f.y, 0.0)
    glow = np.exp(-above / (rng.uniform(0.15, 0.45) * f.h))
    ground = f.y > horizon[None, :]
    return glow, np.broadcast_to(ground, f.shape)


def _background(f: _Frame, rng, n_chan: int, sky: float):
    """(background (H, W, C) without the sky level, components, ground mask, vignetting)."""
    h, w = f.shape
    kinds = [k for k in ("tilt", "dome", "quadratic") if rng.uniform() < 0.55] or ["dome"]
    extra = rng.choice(["none", "horizon", "vignetting"], p=[0.7, 0.15, 0.15])
    bg = np.zeros((h, w, n_chan))
    for kind in kinds:
        field = {"tilt": _tilt, "dome": _dome, "quadratic": _quadratic}[kind](f, rng)
        field = field / max(float(np.ptp(field)), 1e-12)
        colour = _colour(rng, n_chan, "lp" if kind == "dome" else "any")
        bg += rng.uniform(0.3, 1.0) * field[..., None] * colour
    ground = vignetting = None
    if extra == "horizon":
        glow, ground = _horizon(f, rng)
        bg += rng.uniform(0.5, 1.5) * glow[..., None] * _colour(rng, n_chan, "lp")
        kinds.append("horizon")
    p2p = float(np.ptp(bg.mean(axis=-1)))
    bg *= _loguniform(rng, 0.1, 1.5) * sky / max(p2p, 1e-12)
    if extra == "vignetting":
        cy, cx = f.h / 2 + rng.normal(0, 0.03), f.w / 2 + rng.normal(0, 0.03)
        r2 = ((f.y - cy) ** 2 + (f.x - cx) ** 2) / (0.25 * (f.h**2 + f.w**2))
        depth = rng.uniform(0.15, 0.5)
        vignetting = 1.0 - depth * r2 - 0.3 * depth * r2 * r2
        kinds.append("vignetting")
    return bg, tuple(kinds), ground, vignetting


# ------------------------------------------------------------------------- content
def _place(f: _Frame, rng) -> tuple[float, float]:
    """A centre anywhere: near the middle, off-centre or on an edge."""
    where = rng.choice(["centre", "off", "edge"], p=[0.3, 0.45, 0.25])
    if where == "centre":
        return f.h * rng.uniform(0.4, 0.6), f.w * rng.uniform(0.4, 0.6)
    if where == "off":
        return f.h * rng.uniform(0.1, 0.9), f.w * rng.uniform(0.1, 0.9)
    if rng.uniform() < 0.5:
        return f.h * rng.choice([0.0, 1.0]) + rng.normal(0, 0.03), f.w * rng.uniform(0.1, 0.9)
    return f.h * rng.uniform(0.1, 0.9), f.w * rng.choice([0.0, 1.0]) + rng.normal(0, 0.03)


def _nebula(f: _Frame, rng, amplitude: float, n_chan: int) -> np.ndarray:
    """A textured emission nebula whose smooth envelope covers 5-70 % of the frame above
    a tenth of its peak (and more in its faint outskirts); round-topped or flat-topped."""
    share = rng.uniform(0.05, 0.7)
    power = rng.uniform(0.8, 2.0)                      # > 1: a flat top and a sharper edge
    ratio = rng.uniform(0.5, 2.0)
    reach = (2 * np.log(10)) ** (1 / power)            # q at a tenth of the peak
    area = share * f.h * f.w / (np.pi * reach)         # su * sv
    su, sv = np.sqrt(area * ratio), np.sqrt(area / ratio)
    cy, cx = _place(f, rng)
    a = rng.uniform(0, np.pi)
    u = (f.x - cx) * np.cos(a) + (f.y - cy) * np.sin(a)
    v = -(f.x - cx) * np.sin(a) + (f.y - cy) * np.cos(a)
    envelope = np.exp(-0.5 * ((u / su) ** 2 + (v / sv) ** 2) ** power)
    size = np.sqrt(su * sv)
    texture = f.texture(rng, (0.08 * size, 0.25 * size, 0.6 * size), rng.uniform(0.3, 0.8))
    neb = envelope * texture
    neb *= amplitude / max(float(neb.max()), 1e-12)
    colour = _colour(rng, n_chan) if rng.uniform() < 0.5 else (
        np.array([1.0, rng.uniform(0.3, 0.6), rng.uniform(0.4, 0.8)])[:n_chan])
    return neb[..., None] * colour


def _galaxy(f: _Frame, rng, amplitude: float, n_chan: int) -> np.ndarray:
    """A bulge and an exponential disc, sometimes with a faint halo."""
    cy, cx = f.h * rng.uniform(0.15, 0.85), f.w * rng.uniform(0.15, 0.85)
    a = rng.uniform(0, np.pi)
    axis = rng.uniform(0.3, 1.0)
    scale = rng.uniform(0.008, 0.04)                   # disc scale length, frame units
    u = (f.x - cx) * np.cos(a) + (f.y - cy) * np.sin(a)
    v = -(f.x - cx) * np.sin(a) + (f.y - cy) * np.cos(a)
    r = np.sqrt(u**2 + (v / axis) ** 2)
    gal = amplitude * (np.exp(-r / scale) + 4.0 * np.exp(-((r / (0.15 * scale)) ** 0.5)))
    if rng.uniform() < 0.5:
        gal = gal + amplitude * rng.uniform(0.02, 0.06) * np.exp(-r / (rng.uniform(2.5, 4.0) * scale))
    colour = np.array([1.0, rng.uniform(0.85, 1.0), rng.uniform(0.7, 0.95)])[:n_chan]
    return gal[..., None] * colour


def _band(f: _Frame, rng, amplitude: float, n_chan: int) -> tuple[np.ndarray, np.ndarray]:
    """A Milky-Way band crossing the frame; returns (signal, band profile)."""
    a = rng.uniform(0, np.pi)
    cy, cx = f.h * rng.uniform(0.3, 0.7), f.w * rng.uniform(0.3, 0.7)
    dist = np.abs((f.x - cx) * np.sin(a) - (f.y - cy) * np.cos(a))
    sigma = rng.uniform(0.15, 0.6) * min(f.h, f.w) / 2.355
    profile = np.exp(-0.5 * (dist / sigma) ** 2)
    glow = amplitude * profile * f.texture(rng, (0.01, 0.03, 0.08), rng.uniform(0.3, 0.6))
    colour = np.array([1.0, rng.uniform(0.85, 1.0), rng.uniform(0.7, 0.9)])[:n_chan]
    return glow[..., None] * colour, profile


def _dust(f: _Frame, rng, glow: float, n_chan: int) -> tuple[np.ndarray, np.ndarray]:
    """Dark lanes absorbing a diffuse glow; returns (negative signal, absorption)."""
    t = np.log(f.texture(rng, (0.01, 0.03, 0.08), 1.0))
    cut = np.quantile(t[:: max(1, t.shape[0] // 200), :: max(1, t.shape[1] // 200)],
                      1 - rng.uniform(0.1, 0.3))
    absorb = rng.uniform(0.5, 0.9) / (1 + np.exp(-(t - cut) / 0.25))
    return -glow * absorb[..., None] * np.ones(n_chan), absorb


# ------------------------------------------------------------------------- the draw
def draw_sky(seed: int, *, shape: tuple[int, int] | None = None, content: str | None = None,
             colour: bool | None = None, noise_scale: float = 1.0) -> SkyDraw:
    """Draw one sky of the family.

    Parameters
    ----------
    seed : int
        Every choice follows from it.
    shape : (int, int), optional
        The frame's (height, width) instead of the drawn one: the same sky at another size
        (only the noise and the stars' pixels differ).
    content : str, optional
        One of :data:`CONTENTS` instead of the drawn one (the rest of the draw is kept).
    colour : bool, optional
        RGB (True) or mono (False) instead of the drawn one.
    noise_scale : float
        Multiplies the pixel noise: drawn at k times the size with ``noise_scale=k``, the
        working image (a block median over k times longer blocks) has about the same
        signal-to-noise ratio, so the same sky is as hard at every size.

    Returns
    -------
    SkyDraw

    Examples
    --------
    >>> d = draw_sky(3, shape=(60, 90), content="nebula")
    >>> d.scene.image.shape[:2], d.content, d.scene.signal is not None
    ((60, 90), 'nebula', True)
    """
    rng = np.random.default_rng([seed, 0])             # the sky: independent of the size
    drawn_shape = _shape(rng)
    drawn_content = str(rng.choice(CONTENTS))
    drawn_colour = bool(rng.uniform() < 0.5)
    shape = tuple(shape or drawn_shape)
    content = content or drawn_content
    n_chan = 3 if (drawn_colour if colour is None else colour) else 1
    f = _Frame(shape)
    sky = rng.uniform(0.02, 0.1)
    read_noise = _loguniform(rng, 0.0005, 0.004) * noise_scale
    gain = _loguniform(rng, 2000, 20000) / noise_scale**2
    bg, kinds, ground, vignetting = _background(f, rng, n_chan, sky)
    p2p = float(np.ptp(bg.mean(axis=-1)))
    pixels = np.random.default_rng([seed, 1])          # noise and stars: per size
    n_stars = int(_loguniform(rng, 200, 20000) if content != "stars" else _loguniform(rng, 300, 40000))
    fwhm = rng.uniform(2.0, 4.0)

    signal = None
    star_where = None
    level = sky
    if content in ("nebula", "mixed"):
        signal = _nebula(f, rng, p2p * _loguniform(rng, 0.5, 4.0), n_chan)
    if content in ("galaxy", "mixed"):
        gal = _galaxy(f, rng, p2p * _loguniform(rng, 0.5, 4.0), n_chan)
        signal = gal if signal is None else signal + gal
    if content == "band":
        signal, star_where = _band(f, rng, p2p * _loguniform(rng, 0.5, 3.0), n_chan)
    if content == "dust":
        glow = p2p * _loguniform(rng, 0.3, 1.5)
        level = sky + glow
        signal, absorb = _dust(f, rng, glow, n_chan)
        star_where = 1.0 - absorb
    cluster = content == "stars" and rng.uniform() < 0.4

    h, w = shape
    density = min(n_stars / (h * w), 3e-3)
    stars = add_stars(shape, pixels, density=density, fwhm=fwhm)
    if star_where is not None and content == "band":
        stars = stars + add_stars(shape, pixels, density=min(8 * density, 6e-3), fwhm=fwhm,
                                  where=star_where)
    elif star_where is not None:
        stars = stars * star_where
    if cluster:   # an M67-like cluster: many more stars, concentrated (Plummer profile)
        cy, cx = f.h * rng.uniform(0.25, 0.75), f.w * rng.uniform(0.25, 0.75)
        core = rng.uniform(0.05, 0.2)
        plummer = (1 + ((f.y - cy) ** 2 + (f.x - cx) ** 2) / core**2) ** -2.5
        stars = stars + add_stars(shape, pixels, density=min(6 * density + 5e-4, 6e-3),
                                  fwhm=fwhm, where=plummer)
    options: dict = {}
    if ground is not None:
        options["threshold_min"] = 0.05
    if vignetting is not None:
        options["correction"] = "divide"
    scene = _compose(f"{content} #{seed}", bg, signal, stars, pixels, level, read_noise, gain,
                     vignetting, ground, options, _colour(rng, n_chan))
    if cluster:
        kinds = (*kinds, "cluster")
    return SkyDraw(seed, content, scene, tuple(kinds))


def _compose(name, bg, signal, stars, rng, sky, read_noise, gain, vignetting, ground,
             options, star_colour) -> Scene:
    """``(sky + bg + signal + stars) * vignetting + noise``, the ground dark."""
    h, w, n_chan = bg.shape
    vign = np.ones((h, w)) if vignetting is None else vignetting
    truth = (sky + bg) * vign[..., None]
    img = np.empty((h, w, n_chan), np.float32)
    for k in range(n_chan):
        clean = truth[..., k] + stars * star_colour[k] * vign
        if signal is not None:
            clean = clean + signal[..., k] * vign
        sigma = np.sqrt(np.maximum(clean, 0) / gain + read_noise**2)
        img[..., k] = np.clip(clean + rng.standard_normal((h, w)) * sigma, 1e-5, 1.0)
    known = np.ones((h, w), bool)
    if ground is not None:
        img[ground] = np.clip(0.0008 + rng.normal(0, 0.0002, (int(ground.sum()), n_chan)), 1e-5, None)
        known = ~ground
    sig = None if signal is None else (signal * vign[..., None]).astype(np.float32)
    sky_px = None
    if sig is not None:   # where the sky offset is measured: no object (dust: 3 % of its depth)
        strength = np.abs(sig).max(axis=-1)
        share = 0.03 if sig.max() <= 0 else 0.003
        sky_px = known & (strength < share * strength.max())
        if sky_px.sum() < 0.01 * known.sum():    # an object filling the frame: its faintest tenth
            sky_px = known & (strength <= np.quantile(strength[known], 0.1))
    squeeze = (lambda a: a[..., 0]) if n_chan == 1 else (lambda a: a)
    return Scene(name, squeeze(img), squeeze(truth.astype(np.float32)), known,
                 None if sig is None else squeeze(sig), sky_px, options)
