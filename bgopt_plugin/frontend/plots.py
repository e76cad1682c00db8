"""PNG plots (matplotlib, Agg backend): before/after, model, loss, preview."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core import missing_pixels, mtf, robust_sigma

__all__ = ["auto_stretch_params", "apply_display_stretch", "plot_before_after", "plot_model",
           "plot_loss", "plot_preview", "mask_overlay"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def auto_stretch_params(image: np.ndarray, target: float = 0.25) -> tuple[np.ndarray, ...]:
    """Screen-transfer-like display stretch: black point at median - 2.8 MAD, median to ``target``."""
    img = image if image.ndim == 3 else image[..., None]
    flat = img.reshape(-1, img.shape[-1])
    black, white, mid = [], [], []
    for c in range(flat.shape[1]):
        v = flat[:, c][~missing_pixels(flat[:, c])]
        med = float(np.median(v))
        mad = robust_sigma(v)
        lo = max(float(v.min()), med - 2.8 * mad)
        hi = float(np.quantile(v, 0.9995))
        hi = hi if hi > lo else lo + 1e-6
        m = (med - lo) / (hi - lo)
        black.append(lo)
        white.append(hi)
        mid.append(float(mtf(np.clip(m, 1e-6, 1 - 1e-6), target)))
    return np.array(black), np.array(white), np.array(mid)


def apply_display_stretch(image: np.ndarray, params) -> np.ndarray:
    """Apply :func:`auto_stretch_params` output; returns values in [0, 1] for imshow."""
    black, white, mid = params
    img = image if image.ndim == 3 else image[..., None]
    x = np.clip((img - black) / (white - black), 0, 1)
    out = np.clip(mtf(np.nan_to_num(x), mid), 0.0, 1.0)
    return out[..., 0] if out.shape[-1] == 1 else out


def _save(plt, fig, path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)
    return Path(path)


def _show(ax, img, title):
    ax.imshow(img, origin="lower", cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_title(title)
    ax.set_axis_off()


def plot_before_after(path: str | Path, before: np.ndarray, after: np.ndarray) -> Path:
    """Side-by-side before/after with one display stretch (fitted on ``after``, the flat one)."""
    plt = _plt()
    params = auto_stretch_params(after)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    _show(axes[0], apply_display_stretch(before, params), "before")
    _show(axes[1], apply_display_stretch(after, params), "after")
    return _save(plt, fig, path)


def plot_model(path: str | Path, background: np.ndarray, control_points: np.ndarray) -> Path:
    """The background model (min-max stretched) with its control points."""
    plt = _plt()
    bg = background if background.ndim == 3 else background[..., None]
    lo = bg.reshape(-1, bg.shape[-1]).min(0)
    hi = bg.reshape(-1, bg.shape[-1]).max(0)
    img = (bg - lo) / np.where(hi > lo, hi - lo, 1)
    fig, ax = plt.subplots(figsize=(7, 5))
    _show(ax, img[..., 0] if img.shape[-1] == 1 else img, "background model")
    ax.plot(control_points[:, 0], control_points[:, 1], "o", mfc="none", mec="red", ms=7)
    ax.set_xlim(-0.5, bg.shape[1] - 0.5)
    ax.set_ylim(-0.5, bg.shape[0] - 0.5)
    return _save(plt, fig, path)


def plot_loss(path: str | Path, loss_history: list[float]) -> Path:
    """Loss per epoch (protection refits appear as later segments)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(np.arange(1, len(loss_history) + 1), loss_history)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_preview(path: str | Path, working: np.ndarray, weights: np.ndarray,
                 protected: np.ndarray | None = None) -> Path:
    """Delinearized downscaled image, its mask (masked pixels in red, protected objects in
    cyan) and histogram."""
    plt = _plt()
    work = working if working.ndim == 3 else working[..., None]
    wts = weights if weights.ndim == 3 else weights[..., None]
    fig, axes = plt.subplots(2, 1, figsize=(9, 9), gridspec_kw={"height_ratios": [3, 1]})
    title = "delinearized working image (red = masked"
    if protected is not None:   # the share of the pixels the fit could use, as elsewhere
        usable = (wts.max(axis=-1) > 0) | protected
        title += f", cyan = protected objects: {100 * protected.sum() / max(1, usable.sum()):.0f} %"
    _show(axes[0], mask_overlay(work, wts, protected), title + ")")
    colours = ["red", "green", "blue"] if work.shape[-1] == 3 else ["black"]
    for c, col in enumerate(colours):
        v = work[..., c][np.isfinite(work[..., c])]
        axes[1].hist(v, bins=100, range=(0, 1), color=col, alpha=0.5)
    axes[1].set_xlabel("stretched value")
    return _save(plt, fig, path)


#: Tints of the overlay: masked by thresholds or the user's mask, protected objects.
MASKED_TINT = (0.5, 0.0, 0.0)
PROTECTED_TINT = (0.0, 0.4, 0.5)


def mask_overlay(working: np.ndarray, weights: np.ndarray,
                 protected: np.ndarray | None = None) -> np.ndarray:
    """The stretched working image as RGB in [0, 1]: masked pixels tinted red,
    protected objects cyan.

    Parameters
    ----------
    working : ndarray (h, w) or (h, w, C)
        Stretched working image (NaN where there is no data).
    weights : ndarray, same shape
        Loss weights before protection; a pixel with weight 0 in every channel is masked.
    protected : ndarray (h, w) bool, optional
        Pixels object protection leaves out of the fit.

    Returns
    -------
    ndarray (h, w, 3), float64

    Examples
    --------
    >>> import numpy as np
    >>> rgb = mask_overlay(np.full((2, 2), 0.4), np.array([[1.0, 0.0], [1.0, 1.0]]))
    >>> rgb[0, 0].tolist(), rgb[0, 1].tolist()
    ([0.4, 0.4, 0.4], [0.7, 0.2, 0.2])
    >>> rgb = mask_overlay(np.full((1, 2), 0.4), np.array([[0.0, 0.0]]), np.array([[True, False]]))
    >>> rgb[0, 0].tolist(), rgb[0, 1].tolist()
    ([0.2, 0.6000000000000001, 0.7], [0.7, 0.2, 0.2])
    """
    work = working if working.ndim == 3 else working[..., None]
    wts = weights if weights.ndim == 3 else weights[..., None]
    shown = np.nan_to_num(np.asarray(work, dtype=np.float64))
    rgb = np.repeat(shown, 3, -1) if shown.shape[-1] == 1 else shown.copy()
    masked = wts.max(axis=-1) == 0
    if protected is not None:   # weights with protection applied are 0 there too
        protected = np.asarray(protected, bool)
        masked &= ~protected
        rgb[protected] = 0.5 * rgb[protected] + np.array(PROTECTED_TINT)
    rgb[masked] = 0.5 * rgb[masked] + np.array(MASKED_TINT)
    return np.clip(rgb, 0.0, 1.0)
