"""What bgopt records in output headers: short keywords and a HISTORY line."""

from __future__ import annotations

from ._version import __version__
from .config import Config

__all__ = ["keywords", "history_line"]

# FITS keyword (at most 8 characters) for each recorded parameter.
_KEYS = {
    "downscaling_factor": ("BGO_DX", "downscaling factor"),
    "downscaling_func": ("BGO_DF", "downscaling function"),
    "delinearization_quantile": ("BGO_DQ", "delinearization quantile"),
    "n_control_points": ("BGO_N", "spline control points"),
    "order": ("BGO_ORD", "spline order"),
    "threshold_min": ("BGO_TMIN", "mask threshold min (stretched)"),
    "threshold_max": ("BGO_TMAX", "mask threshold max (stretched)"),
    "initializer": ("BGO_INIT", "control point initializer"),
    "epochs": ("BGO_EPO", "maximum epochs"),
    "alpha": ("BGO_ALPH", "overshoot/negative penalty weight"),
    "learning_rate": ("BGO_LR", "Adam learning rate"),
    "correction": ("BGO_CORR", "background correction"),
    "pedestal": ("BGO_PED", "pedestal policy"),
    "protect": ("BGO_PROT", "automatic object protection"),
    "seed": ("BGO_SEED", "random seed"),
}


def keywords(config: Config, factor: int | None = None,
             epochs_run: int | None = None) -> list[tuple[str, object, str]]:
    """(keyword, value, comment) triples recording the version and the parameters.

    Examples
    --------
    >>> from bgopt_plugin import Config
    >>> keywords(Config(seed=1))[0][:2]
    ('BGOPTVER', '0.1.0')
    """
    out: list[tuple[str, object, str]] = [("BGOPTVER", __version__, "bgopt version")]
    params = config.to_dict()
    if factor is not None:
        params["downscaling_factor"] = factor
    for name, (key, comment) in _KEYS.items():
        value = params[name]
        if value is None:
            continue
        out.append((key, value, comment))
    if epochs_run is not None:
        out.append(("BGO_RUN", int(epochs_run), "epochs run"))
    return out


def history_line(config: Config, factor: int | None = None) -> str:
    """One HISTORY line (at most 72 characters) naming the tool and the key parameters."""
    dx = factor if factor is not None else config.downscaling_factor
    line = (f"bgopt {__version__}: {config.correction} N={config.n_control_points} "
            f"O={config.order} dx={dx} dq={config.delinearization_quantile} "
            f"prot={'y' if config.protect else 'n'}")
    return line[:72]
