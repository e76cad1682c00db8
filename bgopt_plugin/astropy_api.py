"""astropy front end: background extraction for CCDData / NDData pipelines.

Functions take a CCDData (2-D mono, or a (3, H, W) colour cube), an NDData, a Quantity
or a plain array and return a NEW CCDData, in the manner of ccdproc: the input is left
untouched, ``unit``, ``wcs``, ``flags`` and a copy of ``meta`` are kept, and what was
done is logged to ``meta``.

Unlike photutils' Background2D, the mask of the input (``ccd.mask``, True = bad) IS
honoured: masked pixels do not enter the fit, and the mask is carried to the output.
float64 data (what ``ccdproc.combine`` returns) stay float64: the fit runs in float32,
and its smooth model is exact enough for that, but the correction keeps the data's
precision.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.utils.exceptions import AstropyUserWarning

from .core import (
    BackgroundResult,
    Config,
    correct,
    correction_factor,
    document_options,
    fit_background,
)
from .io import as_channels_last, as_planes, history_lines, result_keywords

__all__ = ["subtract", "model", "fit", "CCDFit"]


def _unpack(data: Any, unit: Any = None) -> CCDData:
    """Normalise the accepted inputs to a CCDData (no copy of the pixel data)."""
    given = u.Unit(unit) if unit is not None else None
    if isinstance(data, NDData):
        src_unit = data.unit
        if given is not None and src_unit is not None and given != src_unit:
            raise u.UnitsError(f"unit={given} does not match the data's unit {src_unit}")
        unit_ = src_unit or given
        if unit_ is None:
            warnings.warn("bgopt: the data have no unit; assuming dimensionless", AstropyUserWarning,
                          stacklevel=1)
            unit_ = u.dimensionless_unscaled
        arr = np.asarray(data.data)
        mask = data.mask
        if mask is not None and np.shape(mask) != arr.shape:
            # A (H, W) mask of a (C, H, W) cube holds for every channel.
            try:
                mask = np.broadcast_to(np.asarray(mask, dtype=bool), arr.shape).copy()
            except ValueError as exc:
                raise ValueError(f"mask shape {np.shape(mask)} does not match data shape "
                                 f"{arr.shape}") from exc
        return CCDData(arr, unit=unit_, mask=mask, uncertainty=data.uncertainty,
                       wcs=data.wcs, meta=data.meta, flags=getattr(data, "flags", None), copy=False)
    if isinstance(data, u.Quantity):
        if given is not None and given != data.unit:
            raise u.UnitsError(f"unit={given} does not match the Quantity's unit {data.unit}")
        return CCDData(data.value, unit=data.unit, copy=False)
    if isinstance(data, (np.ndarray, list, tuple)):
        arr = np.asarray(data)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"expected numeric data, got dtype {arr.dtype}")
        if given is None:   # attributed to bgopt (stacklevel 1), which makes the assumption
            warnings.warn("bgopt: no unit given; assuming dimensionless", AstropyUserWarning,
                          stacklevel=1)
        return CCDData(arr, unit=given or u.dimensionless_unscaled, copy=False)
    raise TypeError(f"expected CCDData, NDData, Quantity or ndarray, got {type(data).__name__}")


def _to_engine(arr: np.ndarray) -> np.ndarray:
    """(H, W) stays, (C, H, W) becomes (H, W, C) (a view: io's layout)."""
    engine = as_channels_last(arr)
    return engine[..., 0] if arr.ndim == 2 else engine


def _from_engine(arr: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Back to the data layout: (H, W) or (H, W, 1) -> (H, W); (H, W, C) -> (C, H, W)."""
    return np.ascontiguousarray(as_planes(arr, like.ndim))


def _bad_mask(ccd: CCDData, extra: Any) -> np.ndarray | None:
    """Union of ccd.mask and the extra mask (True = exclude), in the data's layout."""
    masks = []
    for m in (ccd.mask, extra):
        if m is None:
            continue
        m = np.asarray(m, dtype=bool)
        if m.shape != ccd.data.shape:
            try:
                m = np.broadcast_to(m, ccd.data.shape)
            except ValueError as exc:
                raise ValueError(f"mask shape {m.shape} does not match data shape {ccd.data.shape}") from exc
        masks.append(m)
    if not masks:
        return None
    out = masks[0].copy()
    for m in masks[1:]:
        out |= m
    return out


def _pedestal_value(pedestal: Any, unit: u.UnitBase) -> Any:
    if isinstance(pedestal, u.Quantity):
        return float(pedestal.to_value(unit))  # raises UnitsError on a mismatch
    return pedestal


def _config(options: dict[str, Any], progress: Any, unit: u.UnitBase) -> Config:
    if progress is True:
        from .frontend.progress import TqdmProgress

        progress = TqdmProgress()
    elif progress is False:
        progress = None
    elif progress is not None and not callable(progress):
        raise TypeError("progress must be a callable, True or None")
    if "pedestal" in options:
        options = {**options, "pedestal": _pedestal_value(options["pedestal"], unit)}
    try:
        return Config.from_options(**options, progress=progress)
    except TypeError:
        raise
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def _log(meta: Any, config: Config, result: BackgroundResult, add_keyword: Any) -> Any:
    if add_keyword is False or add_keyword is None:
        return meta
    meta = copy.deepcopy(meta) if meta is not None else {}
    # what, when, from which file (when the meta names one), as ccdproc logs it; the
    # last line is the parameters' (history_line)
    source = meta.get("FILENAME") if hasattr(meta, "get") else None
    lines = history_lines(config, result.downscaling_factor, source)
    cards = result_keywords(result)
    if isinstance(add_keyword, str):
        cards = [(add_keyword, lines[-1][:60], "")] + cards
    if isinstance(meta, fits.Header):
        for key, value, comment in cards:
            meta[key] = (value, comment)
        for text in lines:
            meta.add_history(text)
        return meta
    if "HISTORY" in meta or "history" in meta:
        header = fits.Header()
        for key, value in meta.items():
            if key.upper() in ("HISTORY", "COMMENT"):
                for item in (value if isinstance(value, (list, tuple)) else [value]):
                    header.append((key.upper(), str(item)), end=True)
            else:
                header[key] = value
        return _log(header, config, result, add_keyword)
    for key, value, _ in cards:   # plain values in a dict; comments only in a Header
        meta[key] = value
    meta["HISTORY"] = "; ".join(lines)   # a dict holds one value per key
    return meta


def _scaled_uncertainty(unc, factor: np.ndarray):
    """Uncertainty of ``data * factor`` for a noiseless ``factor``."""
    if unc is None:
        return None
    std = unc.represent_as(StdDevUncertainty).array * np.abs(factor)
    return StdDevUncertainty(std).represent_as(type(unc))


@dataclass
class CCDFit:
    """A fitted background for a CCDData, photutils-style.

    Attributes
    ----------
    background : CCDData
        The model, same unit and wcs as the input.
    corrected : CCDData
        The input with the background removed (what :func:`subtract` returns).
    control_points : ndarray (N, 2)
        Fitted control points as (x, y) pixel coordinates.
    result : BackgroundResult
        The engine's full result (loss history, timings, working image...).
    """

    background: CCDData
    corrected: CCDData
    control_points: np.ndarray
    result: BackgroundResult

    def evaluate(self, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Background at ``shape`` (H, W) in data units, laid out like the input data.

        Needs numpy only (no TensorFlow): the fitted spline is evaluated again.

        Examples
        --------
        >>> import numpy as np
        >>> from astropy.nddata import CCDData
        >>> import bgopt_plugin as bgopt
        >>> yy, xx = np.mgrid[0:64, 0:96]
        >>> fitted = bgopt.fit(CCDData(100 + 0.5 * xx, unit="adu"), seed=1, epochs=20,
        ...                    protect=False)
        >>> half = fitted.evaluate((32, 48))
        >>> half.shape, bool(abs(half[0, -1] - half[0, 0] - 47) < 2)
        ((32, 48), True)
        """
        arr = self.result.model.evaluate(shape)
        like = self.background.data
        arr = arr[..., 0] if like.ndim == 2 else arr
        return _from_engine(arr, like)

    def apply(self, ccd: CCDData) -> CCDData:
        """Remove this background from another frame of the same size and unit."""
        other = _unpack(ccd)
        if other.unit != self.background.unit:
            raise u.UnitsError(f"frame unit {other.unit} does not match the model's {self.background.unit}")
        if other.data.shape != self.background.data.shape:
            raise ValueError(f"frame shape {other.data.shape} does not match the model's "
                             f"{self.background.data.shape}")
        return _correct(other, self.background.data, self.result)


def _correct(ccd: CCDData, background: np.ndarray, result: BackgroundResult,
             corrected: np.ndarray | None = None) -> CCDData:
    """New CCDData with ``background`` (data layout) removed, uncertainty propagated.

    The correction is the engine's own, with the sky level it used (``result.sky_level``),
    so data, uncertainty and :meth:`CCDFit.apply` share one factor.
    """
    config, level = result.config, result.sky_level
    data = np.asarray(ccd.data)
    data = data if data.dtype == np.float64 else data.astype(np.float32, copy=False)
    if corrected is None:
        corrected = _from_engine(correct(as_channels_last(data), as_channels_last(background), config,
                                         level=level), data)
    if config.correction == "subtract":
        new_unc = copy.deepcopy(ccd.uncertainty)  # the model is treated as noiseless
    else:
        factor = _from_engine(correction_factor(as_channels_last(background), config, level), data)
        new_unc = _scaled_uncertainty(ccd.uncertainty, factor)
    return CCDData(corrected, unit=ccd.unit, wcs=copy.deepcopy(ccd.wcs), meta=copy.deepcopy(ccd.meta),
                   mask=None if ccd.mask is None else np.array(ccd.mask, copy=True),
                   uncertainty=new_unc, flags=None if ccd.flags is None else np.array(ccd.flags))


@document_options
def fit(data: Any, *, mask: Any = None, unit: Any = None, progress: Any = None,
        add_keyword: Any = True, **options: Any) -> CCDFit:
    """Fit the background of a frame and return the model and the corrected frame.

    Parameters
    ----------
    data : CCDData, NDData, Quantity or ndarray
        2-D mono, or (C, H, W) with C in {1, 3}. Linear data.
    mask : array_like of bool, optional
        Extra pixels to exclude (True = exclude), on top of ``data.mask``.
    unit : unit-like, optional
        Unit of a plain array; must match the unit of a CCDData or Quantity.
    progress : callable or True, optional
        A :class:`bgopt_plugin.ProgressEvent` callback, or True for a tqdm bar.
    add_keyword : bool or str
        Log to ``meta``: a HISTORY line and BGO* keywords (True), nothing (False),
        or also a keyword of this name holding a summary (str).
    **options
        Any :class:`bgopt_plugin.Config` field; ``pedestal`` may be a Quantity in the
        data's unit:

        <the bgopt options>

    Returns
    -------
    CCDFit

    Raises
    ------
    TypeError
        Unsupported input type or unknown option.
    ValueError
        Bad shapes, invalid options, or data the engine cannot fit.
    astropy.units.UnitsError
        Conflicting units.

    Examples
    --------
    >>> import numpy as np, astropy.units as u
    >>> from astropy.nddata import CCDData
    >>> import bgopt_plugin as bgopt
    >>> yy, xx = np.mgrid[0:64, 0:96]
    >>> ccd = CCDData(100 + 0.5 * xx + np.random.default_rng(0).normal(0, 1, xx.shape), unit="adu")
    >>> fitted = bgopt.fit(ccd, seed=1, epochs=50, protect=False)
    >>> fitted.background.unit, fitted.corrected.shape
    (Unit("adu"), (64, 96))
    """
    ccd = _unpack(data, unit)
    arr = np.asarray(ccd.data)
    engine_image = _to_engine(arr)
    bad = _bad_mask(ccd, mask)
    weights = None if bad is None else _to_engine((~bad).astype(np.float32))
    config = _config(options, progress, ccd.unit)
    result = fit_background(engine_image, weights, config)
    background = _from_engine(result.background, arr)
    # float64 data (what ccdproc.combine returns) are corrected in float64: the fit runs
    # in float32, and the smooth model is exact enough for that, but the data keep theirs.
    double = arr.dtype == np.float64
    corrected = _correct(ccd, background, result,
                         None if double else _from_engine(result.corrected, arr))
    corrected.meta = _log(corrected.meta, config, result, add_keyword)
    if bad is not None:
        corrected.mask = bad.copy()
    oor = result.out_of_range
    if oor["below"]:
        warnings.warn(f"{oor['below']} valid pixels are below 0 after the correction "
                      "(nothing was clipped)", AstropyUserWarning, stacklevel=2)
    bg = CCDData(background.astype(np.float64 if double else np.float32), unit=ccd.unit,
                 wcs=copy.deepcopy(ccd.wcs),
                 meta=_log(copy.deepcopy(ccd.meta), config, result, add_keyword))
    return CCDFit(bg, corrected, result.control_points, result)


def subtract(data: Any, *, mask: Any = None, unit: Any = None, progress: Any = None,
             add_keyword: Any = True, **options: Any) -> CCDData:
    """Remove the sky background and return a new CCDData.

    Takes the same arguments as :func:`fit`. The default ``correction="subtract"``
    removes the model and adds back its median (``pedestal="median"``), so the sky level,
    units and linearity are kept; ``correction="divide"`` divides by the model (for
    vignetting) and scales the uncertainty accordingly. With subtraction the
    uncertainty is unchanged: the model is treated as noiseless.

    Returns
    -------
    CCDData
        New object; the input is not modified. Keeps ``unit``, ``wcs``, ``flags``, the
        mask (``ccd.mask`` plus ``mask``) and a copy of ``meta`` with a HISTORY line and
        BGO* keywords (see ``add_keyword``).

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> import bgopt_plugin as bgopt
    >>> yy, xx = np.mgrid[0:64, 0:96]
    >>> ccd = CCDData(100 + 0.5 * xx + np.random.default_rng(0).normal(0, 1, xx.shape), unit="adu")
    >>> clean = bgopt.subtract(ccd, seed=1, epochs=50, protect=False)
    >>> slope = lambda d: np.polyfit(xx[0], d.mean(axis=0), 1)[0]   # 0.5 adu/px before
    >>> bool(abs(slope(clean.data)) < 0.02), bool(abs(np.median(clean.data) - np.median(ccd.data)) < 1)
    (True, True)
    >>> clean.meta["BGO_N"], clean.data.dtype
    (32, dtype('float64'))
    """
    return fit(data, mask=mask, unit=unit, progress=progress, add_keyword=add_keyword,
               **options).corrected


def model(data: Any, *, mask: Any = None, unit: Any = None, progress: Any = None,
          add_keyword: Any = True, **options: Any) -> CCDData:
    """Return the fitted background as a CCDData with the input's unit and wcs.

    Takes the same arguments as :func:`fit`.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> import bgopt_plugin as bgopt
    >>> yy, xx = np.mgrid[0:64, 0:96]
    >>> ccd = CCDData(100 + 0.5 * xx + np.random.default_rng(0).normal(0, 1, xx.shape), unit="adu")
    >>> bgopt.model(ccd, seed=1, epochs=50, protect=False).unit
    Unit("adu")
    """
    return fit(data, mask=mask, unit=unit, progress=progress, add_keyword=add_keyword,
               **options).background
