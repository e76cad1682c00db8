"""What bgopt records in output headers: keywords and a HISTORY line.

The keywords come from the parameter table (:data:`bgopt_plugin.core.PARAMETERS`), so a new
parameter is recorded without an edit here.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .._version import __version__
from ..core import PARAMETERS, BackgroundResult, Config

__all__ = ["keywords", "result_keywords", "history_line", "history_lines", "stale_keywords", "NORM_KEY",
           "PROTECTED_KEY", "MODEL_KIND", "STALE_KEYWORDS"]

#: Keywords that describe the input's values and would be wrong on an output: dropped
#: (DATAMIN/DATAMAX always; BUNIT when integer data were normalised to [0, 1]).
STALE_KEYWORDS = ("DATAMIN", "DATAMAX")

#: Keyword recording the factor integer input samples were divided by (65535 for 16-bit).
NORM_KEY = "BGO_NORM"
#: Keyword recording the share of the working pixels object protection left out of the fit.
PROTECTED_KEY = "BGO_PFRC"
#: Card marking a file as bgopt's background model.
MODEL_KIND = ("BGO_KIND", "model", "this file is the bgopt background model")


def keywords(config: Config, factor: int | None = None, epochs_run: int | None = None,
             input_scale: float = 1.0, protected: float | None = None,
             ) -> list[tuple[str, object, str]]:
    """(keyword, value, comment) triples recording the version and every parameter.

    Parameters
    ----------
    config : Config
    factor : int, optional
        The downscaling factor used (recorded instead of ``"auto"``).
    epochs_run : int, optional
        Epochs actually run (``BGO_RUN``).
    input_scale : float
        What integer input samples were divided by when read; recorded as ``BGO_NORM``
        when it is not 1 (the output is then in [0, 1] units, not in the input's ADU).
    protected : float, optional
        Share of the working pixels object protection left out (``BGO_PFRC``).

    Examples
    --------
    >>> from bgopt_plugin.core import Config
    >>> cards = keywords(Config(seed=1), factor=16, input_scale=65535.0)
    >>> cards[0][:2], dict((k, v) for k, v, _ in cards)["BGO_DX"], cards[-1][:2]
    (('BGOPTVER', '0.1.0'), 16, ('BGO_NORM', 65535.0))
    """
    out: list[tuple[str, object, str]] = [("BGOPTVER", __version__, "bgopt version")]
    params = config.to_dict()
    if factor is not None:
        params["downscaling_factor"] = factor
    for p in PARAMETERS:
        if params[p.name] is not None:
            out.append((p.fits_key, params[p.name], p.fits_comment))
    if epochs_run is not None:
        out.append(("BGO_RUN", int(epochs_run), "epochs run"))
    if protected is not None:
        out.append((PROTECTED_KEY, round(float(protected), 4), "share of working pixels protected"))
    if input_scale != 1.0:
        out.append((NORM_KEY, float(input_scale), "integer input was divided by this"))
    return out


def history_line(config: Config, factor: int | None = None) -> str:
    """One HISTORY line (at most 70 characters) naming the tool and the key parameters.

    70 characters is what Siril's undo history accepts and fits one FITS HISTORY card.

    Examples
    --------
    >>> from bgopt_plugin.core import Config
    >>> history_line(Config(), factor=16)
    'bgopt 0.1.0: subtract N=32 O=2 dx=16 dq=0.95 prot=y seed=0'
    """
    dx = factor if factor is not None else config.downscaling_factor
    line = (f"bgopt {__version__}: {config.correction} N={config.n_control_points} "
            f"O={config.order} dx={dx} dq={config.delinearization_quantile} "
            f"prot={'y' if config.protect else 'n'} seed={config.seed}")
    return line[:70]


def history_lines(config: Config, factor: int | None = None, source: str | Path | None = None,
                  when: datetime | None = None) -> list[str]:
    """The HISTORY lines of an output file: what, when and from which input (as astropy
    and ccdproc log), then :func:`history_line`.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> from bgopt_plugin.core import Config
    >>> history_lines(Config(), 16, "masters/m42.fits", datetime(2026, 12, 7, 21, 5, tzinfo=timezone.utc))[0]
    'bgopt 0.1.0 on 2026-12-07T21:05:00 UTC from m42.fits'
    """
    when = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
    first = f"bgopt {__version__} on {when:%Y-%m-%dT%H:%M:%S} UTC"
    if source:
        first += f" from {Path(source).name}"
    return [first, history_line(config, factor)]


def stale_keywords(input_scale: float, dtype: np.dtype | type | None = None) -> tuple[str, ...]:
    """Keywords of the source that would describe an output wrongly, to drop from it.

    DATAMIN and DATAMAX always (the values changed); BUNIT when integer samples were
    normalised to [0, 1] and are written as floats (no longer in the input's unit).

    Examples
    --------
    >>> stale_keywords(65535.0), stale_keywords(65535.0, np.uint16), stale_keywords(1.0)
    (('DATAMIN', 'DATAMAX', 'BUNIT'), ('DATAMIN', 'DATAMAX'), ('DATAMIN', 'DATAMAX'))
    """
    normalised = input_scale != 1.0 and np.dtype(dtype or np.float32).kind == "f"
    return STALE_KEYWORDS + (("BUNIT",) if normalised else ())


def result_keywords(result: BackgroundResult, input_scale: float = 1.0) -> list[tuple[str, object, str]]:
    """:func:`keywords` for a fit: its config, factor, epochs and protected share."""
    return keywords(result.config, result.downscaling_factor, result.epochs_run, input_scale,
                    result.protected_fraction)
