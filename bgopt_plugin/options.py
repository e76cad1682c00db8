"""Command-line options for the engine parameters, shared by the CLI and the Siril script.

Only depends on :mod:`bgopt_plugin.config`, so hosts can parse options before any heavy
import. Short names follow the original bgoptimizer (``-dx -df -dq -N -O -tm -tM -i -e
-a -lr``); defaults and help come from :class:`Config`.
"""

from __future__ import annotations

import argparse
from typing import Any

from .config import PARAMETER_HELP, Config

__all__ = ["add_engine_options", "config_from_args", "ENGINE_OPTIONS"]

_D = Config.defaults()

#: Config fields set from the command line.
ENGINE_OPTIONS = ("downscaling_factor", "downscaling_func", "delinearization_quantile",
                  "n_control_points", "order", "threshold_min", "threshold_max", "initializer",
                  "epochs", "alpha", "learning_rate", "correction", "pedestal", "protect", "seed")


def _h(name: str) -> str:
    return f"{PARAMETER_HELP[name]} (default: {_D[name]})"


def _factor(text: str):
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from exc


def _pedestal(text: str):
    if text in ("median", "none"):
        return text
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected 'median', 'none' or a number, got {text!r}") from exc


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """Add one option per engine parameter (see :data:`ENGINE_OPTIONS`)."""
    p.add_argument("-dx", "--downscaling-factor", type=_factor, default=_D["downscaling_factor"],
                   help=_h("downscaling_factor"))
    p.add_argument("-df", "--downscaling-func", choices=["median", "mean"],
                   default=_D["downscaling_func"], help=_h("downscaling_func"))
    p.add_argument("-dq", "--delinearization-quantile", type=float,
                   default=_D["delinearization_quantile"], help=_h("delinearization_quantile"))
    p.add_argument("-N", "--control-points", dest="n_control_points", type=int,
                   default=_D["n_control_points"], help=_h("n_control_points"))
    p.add_argument("-O", "--order", type=int, choices=[1, 2, 3, 4], default=_D["order"],
                   help=_h("order"))
    p.add_argument("-tm", "--threshold-min", type=float, default=_D["threshold_min"],
                   help=_h("threshold_min"))
    p.add_argument("-tM", "--threshold-max", type=float, default=_D["threshold_max"],
                   help=_h("threshold_max"))
    p.add_argument("-i", "--initializer", choices=["random", "grid"], default=_D["initializer"],
                   help=_h("initializer"))
    p.add_argument("-e", "--epochs", type=int, default=_D["epochs"], help=_h("epochs"))
    p.add_argument("-a", "--alpha", type=float, default=_D["alpha"], help=_h("alpha"))
    p.add_argument("-lr", "--learning-rate", type=float, default=_D["learning_rate"],
                   help=_h("learning_rate"))
    p.add_argument("--correction", choices=["subtract", "divide"], default=_D["correction"],
                   help=_h("correction"))
    p.add_argument("--pedestal", type=_pedestal, default=_D["pedestal"], help=_h("pedestal"))
    p.add_argument("--protect", action=argparse.BooleanOptionalAction, default=_D["protect"],
                   help=_h("protect"))
    p.add_argument("--seed", type=int, default=_D["seed"], help=_h("seed"))


def config_from_args(args: argparse.Namespace, progress: Any = None) -> Config:
    """Map parsed options onto the one :class:`Config` (ValueError if invalid)."""
    return Config(**{n: getattr(args, n) for n in ENGINE_OPTIONS}, progress=progress)
