"""What bgopt records in output headers: keywords and a HISTORY line.

The keywords come from the parameter table (:data:`bgopt_plugin.core.PARAMETERS`), so a new
parameter is recorded without an edit here.
"""

from __future__ import annotations

from .._version import __version__
from ..core import PARAMETERS, BackgroundResult, Config

__all__ = ["keywords", "result_keywords", "history_line", "NORM_KEY", "PROTECTED_KEY",
           "MODEL_KIND"]

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
    'bgopt 0.1.0: subtract N=32 O=2 dx=16 dq=0.95 prot=y'
    """
    dx = factor if factor is not None else config.downscaling_factor
    line = (f"bgopt {__version__}: {config.correction} N={config.n_control_points} "
            f"O={config.order} dx={dx} dq={config.delinearization_quantile} "
            f"prot={'y' if config.protect else 'n'}")
    return line[:70]


def result_keywords(result: BackgroundResult, input_scale: float = 1.0) -> list[tuple[str, object, str]]:
    """:func:`keywords` for a fit: its config, factor, epochs and protected share."""
    return keywords(result.config, result.downscaling_factor, result.epochs_run, input_scale,
                    result.protected_fraction)
