"""Command-line options generated from the parameter table, for the CLI and the Siril script.

Imports only the core's parameter table, so hosts can parse options before any heavy
import. Flags, defaults, help and accepted values all come from
:data:`bgopt_plugin.core.PARAMETERS`; values are checked by :class:`~bgopt_plugin.core.Config`
(one error message per problem, whichever front end).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..core import PARAMETERS, Config, Parameter, parameter

__all__ = ["add_engine_options", "config_from_args", "option_name"]


def _converter(p: Parameter):
    """argparse ``type=`` for a number that may also be one of a few words."""
    def convert(text: str):
        if text in p.choices:
            return text
        try:
            return p.kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected {p.describe()}, got {text!r}") from exc
    convert.__name__ = p.kind.__name__
    return convert


def _help(p: Parameter) -> str:
    accepted = "" if p.kind in (bool, str) else f"; {p.describe()}"
    return f"{p.help} (default: {p.default}{accepted})".replace("%", "%%")


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Add one option per parameter of :data:`~bgopt_plugin.core.PARAMETERS`."""
    group = parser.add_argument_group("background model")
    for p in PARAMETERS:
        flags = p.flags or (p.option,)
        kwargs: dict[str, Any] = {"dest": p.name, "default": p.default, "help": _help(p)}
        if p.kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif p.kind is str:
            kwargs["choices"] = list(p.choices)
        else:
            kwargs["type"] = _converter(p) if p.choices else p.kind
            kwargs["metavar"] = "|".join([p.kind.__name__.upper(), *p.choices])
        group.add_argument(*flags, **kwargs)


def config_from_args(args: argparse.Namespace, progress: Any = None) -> Config:
    """Map parsed options onto the one :class:`Config` (ParameterError if invalid)."""
    return Config(**{p.name: getattr(args, p.name) for p in PARAMETERS}, progress=progress)


def option_name(name: str) -> str:
    """How the command line spells the option of a Config field (``--pedestal``)."""
    try:
        return parameter(name).option
    except KeyError:   # not a parameter (e.g. "progress")
        return name
