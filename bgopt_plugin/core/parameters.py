"""The one definition of bgopt's parameters.

Each :class:`Parameter` in :data:`PARAMETERS` holds a parameter's default, type, range or
choices, help text, command-line flags, FITS keyword and dialog label. Everything else is
generated from that table: the frozen :class:`Config` dataclass and its validation, its
docstring, the ``bgopt`` options (``bgopt_plugin.cli.options``), the header keywords
(``bgopt_plugin.io.provenance``) and the Siril dialog's widgets. Adding a parameter is one
entry here plus its use in the pipeline.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .sampling import AUTO_LONG_SIDE

__all__ = ["Config", "Parameter", "PARAMETERS", "PARAMETER_HELP", "ParameterError",
           "ProgressEvent", "emit", "parameter", "document_options"]


@dataclass(frozen=True)
class ProgressEvent:
    """One progress update sent to ``Config.progress``.

    Attributes
    ----------
    stage : str
        ``"prepare"``, ``"protect"``, ``"fit"``, ``"evaluate"``, ``"correct"`` or ``"done"``.
    step : int
        Steps completed within the stage (epochs for ``"fit"``, row chunks for
        ``"evaluate"`` and ``"correct"``).
    total : int
        Total steps of the stage, known when the stage starts. A fit that stops early on
        a plateau ends with ``step == total``.
    loss : float or None
        Current loss during ``"fit"``.
    message : str
        Short description of the stage.
    """

    stage: str
    step: int = 0
    total: int = 0
    loss: float | None = None
    message: str = ""


def emit(config: Config, stage: str, step: int = 0, total: int = 0,
         loss: float | None = None, message: str = "") -> None:
    """Send a :class:`ProgressEvent` to ``config.progress``, if any."""
    if config.progress is not None:
        config.progress(ProgressEvent(stage, step, total, loss, message))


class ParameterError(ValueError):
    """An invalid parameter value; ``name`` is the Config field, ``problem`` the reason.

    ``str(error)`` is ``"<name> <problem>"``; front ends print the option as they spell
    it (``--pedestal: must be a finite number``).
    """

    def __init__(self, name: str, problem: str):
        self.name, self.problem = name, problem
        super().__init__(f"{name} {problem}")


@dataclass(frozen=True)
class Parameter:
    """Everything about one parameter, for every front end.

    Attributes
    ----------
    name : str
        The :class:`Config` field.
    default : object
        Default value.
    kind : type
        ``int``, ``float``, ``bool`` or ``str``; a value may also be one of ``choices``.
    help : str
        One line, used by ``--help``, tooltips and the docstring.
    doc : str
        Further explanation for the docstring.
    choices : tuple of str
        Accepted words (the only values when ``kind`` is ``str``).
    low, high : float or None
        Inclusive bounds of a number (``low`` exclusive when ``low_open``).
    optional : bool
        ``None`` is accepted.
    flags : tuple of str
        Command-line spellings, short form first; the long form is last.
    fits_key : str
        FITS keyword (at most 8 characters) recording the value in output headers.
    fits_comment : str
        Its comment.
    label : str
        Label in the Siril dialog.
    gui_max : float or None
        Upper end of the dialog's range where ``high`` is None.
    gui_step : float or None
        Step of the dialog's spin box for a float.
    """

    name: str
    default: Any
    kind: type
    help: str
    fits_key: str
    fits_comment: str
    label: str
    flags: tuple[str, ...] = ()
    doc: str = ""
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    optional: bool = False
    gui_max: float | None = None
    gui_step: float | None = None

    @property
    def option(self) -> str:
        """The long command-line flag (``--control-points``)."""
        return self.flags[-1] if self.flags else "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        """What values are accepted, in words (``"an integer in [1, 4]"``)."""
        words = " or ".join(repr(c) for c in self.choices)
        if self.kind is bool:
            return "True or False"
        if self.kind is str:
            return f"one of {', '.join(repr(c) for c in self.choices)}"
        noun = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            left = "(" if self.low_open else "["
            noun += f" in {left}{self.low:g}, {self.high:g}]"
        elif self.low is not None:
            noun += f" {'>' if self.low_open else '>='} {self.low:g}"
        if words:
            noun += f" or {words}"
        elif self.optional:
            noun += " or None"
        return noun

    def check(self, value: Any) -> Any:
        """``value`` if it is valid (ints given for a float become floats), else ParameterError."""
        if value is None and self.optional:
            return None
        if isinstance(value, str) and value in self.choices:
            return value
        if self.kind is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise ParameterError(self.name, f"must be True or False, got {value!r}")
            return bool(value)
        # numpy scalars count as numbers (np.float32(0.8), np.int64(32)); booleans do not.
        is_number = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
        if self.kind is str or not is_number:
            raise ParameterError(self.name, f"must be {self.describe()}, got {value!r}")
        if self.kind is int and not isinstance(value, numbers.Integral):
            raise ParameterError(self.name, f"must be {self.describe()}, got {value!r}")
        if not math.isfinite(value):
            raise ParameterError(self.name, f"must be a finite number, got {value!r}")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        if too_low or (self.high is not None and value > self.high):
            raise ParameterError(self.name, f"must be {self.describe()}, got {value!r}")
        return float(value) if self.kind is float else int(value)

    def doc_entry(self) -> str:
        """The numpydoc ``Parameters`` entry."""
        kind = {int: "int", float: "float", bool: "bool", str: "str"}[self.kind]
        if self.kind is str:
            kind = "{" + ", ".join(repr(c) for c in self.choices) + "}"
        elif self.choices:
            kind += " or " + " or ".join(repr(c) for c in self.choices)
        if self.optional:
            kind += " or None"
        text = self.help[0].upper() + self.help[1:] + "."
        if self.doc:
            text += " " + self.doc
        text += f" Default {self.default!r}; ``{self.option}``; header keyword {self.fits_key}."
        return f"{self.name} : {kind}\n    {text}"


#: The parameters, in the order front ends show them. Short flags follow the original
#: bgoptimizer (-dx -df -dq -N -O -tm -tM -i -e -a -lr).
PARAMETERS: tuple[Parameter, ...] = (
    Parameter("downscaling_factor", "auto", int, low=1, choices=("auto",), gui_max=128,
              help=f"block size for the working image, or 'auto' (long side near {AUTO_LONG_SIDE} px)",
              doc="The working image is the input reduced by this block size.",
              flags=("-dx", "--downscaling-factor"), fits_key="BGO_DX",
              fits_comment="downscaling factor", label="Downscaling factor"),
    Parameter("downscaling_func", "median", str, choices=("median", "mean"),
              help="block statistic used to downscale: 'median' or 'mean'",
              doc="NaN-aware; the median rejects most stars.",
              flags=("-df", "--downscaling-func"), fits_key="BGO_DF",
              fits_comment="downscaling function", label="Block statistic"),
    Parameter("delinearization_quantile", 0.95, float, low=0.5, high=1.0, gui_step=0.005,
              help="quantile mapped to 1.0 by the delinearizing stretch",
              doc="Lower values stretch harder.",
              flags=("-dq", "--delinearization-quantile"), fits_key="BGO_DQ",
              fits_comment="delinearization quantile", label="Delinearization quantile"),
    Parameter("n_control_points", 32, int, low=3, gui_max=256,
              help="number of spline control points (shared by all channels)",
              flags=("-N", "--control-points"), fits_key="BGO_N",
              fits_comment="spline control points", label="Control points"),
    Parameter("order", 2, int, low=1, high=4,
              help="spline order: 1=r, 2=thin plate (r^2 log r), 3=r^3, 4=r^4 log r",
              flags=("-O", "--order"), fits_key="BGO_ORD", fits_comment="spline order",
              label="Spline order"),
    Parameter("threshold_min", 0.001, float, gui_max=1.0, gui_step=0.001,
              help="working pixels below this stretched value are masked",
              doc="The stretched scale puts the chosen quantile at 1.",
              flags=("-tm", "--threshold-min"), fits_key="BGO_TMIN",
              fits_comment="mask threshold min (stretched)", label="Threshold min"),
    Parameter("threshold_max", 1.0, float, gui_max=1.0, gui_step=0.01,
              help="working pixels above this stretched value are masked",
              doc="Must be above ``threshold_min``.",
              flags=("-tM", "--threshold-max"), fits_key="BGO_TMAX",
              fits_comment="mask threshold max (stretched)", label="Threshold max"),
    Parameter("initializer", "grid", str, choices=("grid", "random"),
              help="initial control point layout: 'grid' or 'random'",
              doc="The near-square grid is the more accurate in the benchmarks.",
              flags=("-i", "--initializer"), fits_key="BGO_INIT",
              fits_comment="control point initializer", label="Initializer"),
    Parameter("epochs", 1000, int, low=0, gui_max=20000,
              help="maximum number of optimisation epochs",
              doc="Training stops earlier on a loss plateau or once the model has settled.",
              flags=("-e", "--epochs"), fits_key="BGO_EPO", fits_comment="maximum epochs",
              label="Epochs"),
    Parameter("alpha", 0.3, float, low=0.0, gui_max=100.0, gui_step=0.1,
              help="weight of the overshoot and negative-background penalties",
              doc="The original bgoptimizer used 5 (a lower envelope of the data); with "
                  "objects masked before the fit, 0.3 is more accurate on the synthetic "
                  "scenes (benchmarks/README.md).",
              flags=("-a", "--alpha"), fits_key="BGO_ALPH",
              fits_comment="overshoot/negative penalty weight", label="Alpha"),
    Parameter("learning_rate", 0.001, float, low=0.0, low_open=True, gui_max=1.0,
              gui_step=0.0005, help="initial Adam learning rate, halved on plateaus",
              flags=("-lr", "--learning-rate"), fits_key="BGO_LR",
              fits_comment="Adam learning rate", label="Learning rate"),
    Parameter("correction", "subtract", str, choices=("subtract", "divide"),
              help="'subtract' the model (additive gradients) or 'divide' by it (vignetting)",
              flags=("--correction",), fits_key="BGO_CORR", fits_comment="background correction",
              label="Correction"),
    Parameter("pedestal", "median", float, choices=("median", "none"),
              help="what is added back: 'median' of the model, 'none', or a number",
              doc="``'median'`` keeps the sky level: the per-channel median of the model is "
                  "added back (subtract) or multiplied back (divide). A number is added to "
                  "every channel after a bare subtraction.",
              flags=("--pedestal",), fits_key="BGO_PED", fits_comment="pedestal policy",
              label="Pedestal"),
    Parameter("protect", True, bool,
              help="automatic object protection: find nebulae and galaxies before fitting",
              doc="Stiff-to-flexible robust fits of the linear working image find extended "
                  "excess standing ``protect_sigma`` above the sky at several scales; it is "
                  "grown by ``protect_grow`` pixels and left out of the fit.",
              flags=("--protect",), fits_key="BGO_PROT",
              fits_comment="automatic object protection", label="Protect objects"),
    Parameter("protect_sigma", 5.0, float, low=0.0, low_open=True, gui_max=50.0, gui_step=0.5,
              help="object protection threshold in robust sigmas",
              flags=("--protect-sigma",), fits_key="BGO_PSIG",
              fits_comment="object protection threshold (sigma)", label="Protection sigma"),
    Parameter("protect_grow", 2, int, low=0, gui_max=20,
              help="object protection mask dilation radius, in working pixels",
              flags=("--protect-grow",), fits_key="BGO_PGRW",
              fits_comment="object protection growth (working px)", label="Protection growth"),
    Parameter("smoothing", 0.03, float, low=0.0, gui_max=10.0, gui_step=0.005,
              help="bending-energy weight of the initial spline fit (0 = none)",
              doc="Larger is stiffer; it decides how the model bridges masked objects.",
              flags=("--smoothing",), fits_key="BGO_SMOO",
              fits_comment="initial fit bending-energy weight", label="Smoothing"),
    Parameter("regularization", 0.1, float, low=0.0, gui_max=10.0, gui_step=0.01,
              help="regularisation of the 'interpolate' initial solve",
              flags=("--regularization",), fits_key="BGO_REG",
              fits_comment="interpolation solve regularisation", label="Regularisation"),
    Parameter("init_solve", "lstsq", str, choices=("lstsq", "interpolate"),
              help="initial weights: 'lstsq' fits all pixels, 'interpolate' the control points",
              doc="``'interpolate'`` solves the regularised interpolation through the working "
                  "image at the control points; ``'lstsq'`` is a robust least-squares fit of "
                  "every weighted working pixel with the control points fixed.",
              flags=("--init-solve",), fits_key="BGO_ISOL", fits_comment="initial solve",
              label="Initial solve"),
    Parameter("seed", 0, int, low=0, choices=("random",), optional=True, gui_max=2**31 - 1,
              help="seed of the random parts: the same seed, the same model; 'random' for a new one",
              doc="``'random'`` (or None) draws a seed for this fit, which the result records "
                  "(``BackgroundResult.config.seed``, ``BGO_SEED``), so any run can be repeated.",
              flags=("--seed",), fits_key="BGO_SEED", fits_comment="random seed", label="Seed"),
)

_BY_NAME = {p.name: p for p in PARAMETERS}

#: One-line help per parameter (generated from :data:`PARAMETERS`).
PARAMETER_HELP: dict[str, str] = {p.name: p.help for p in PARAMETERS}


def parameter(name: str) -> Parameter:
    """The :class:`Parameter` called ``name`` (KeyError if there is none)."""
    return _BY_NAME[name]


#: The line a docstring holds where :func:`document_options` lists the parameters.
OPTIONS_MARKER = "<the bgopt options>"


def document_options(func):
    """Decorator: replace the line holding :data:`OPTIONS_MARKER` in ``func``'s docstring
    with one line per parameter (name, help, default), at that line's indentation, so
    every front end's ``**options`` lists the same options from the one table."""
    doc = func.__doc__ or ""
    lines = []
    for line in doc.splitlines():
        if OPTIONS_MARKER in line:
            pad = line[:len(line) - len(line.lstrip())]
            lines += [f"{pad}- ``{p.name}``: {p.help} (default ``{p.default!r}``)"
                      for p in PARAMETERS]
        else:
            lines.append(line)
    func.__doc__ = "\n".join(lines)
    return func


def _validate(self: Any) -> None:
    for p in PARAMETERS:
        object.__setattr__(self, p.name, p.check(getattr(self, p.name)))
    if self.threshold_min >= self.threshold_max:
        raise ParameterError("threshold_min", f"must be below threshold_max ({self.threshold_max:g}), "
                                              f"got {self.threshold_min:g}")
    if self.progress is not None and not callable(self.progress):
        raise ParameterError("progress", "must be callable or None")


def _from_options(cls: type, **options: Any) -> Any:
    """Build a config from keyword options, rejecting unknown names."""
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(unknown)}")
    return cls(**options)


def _replace(self: Any, **changes: Any) -> Any:
    """Return a validated copy with some fields changed."""
    return dataclasses.replace(self, **changes)


def _to_dict(self: Any) -> dict[str, Any]:
    """Parameters as a plain dict (without the progress callable)."""
    return {p.name: getattr(self, p.name) for p in PARAMETERS}


def _defaults(cls: type) -> dict[str, Any]:
    """The default value of every parameter."""
    return {p.name: p.default for p in PARAMETERS}


_CONFIG_DOC = """Parameters of a background fit: frozen, validated on creation.

Generated from :data:`PARAMETERS`; change a value with :meth:`replace`.

Parameters
----------
{entries}
progress : callable or None
    Called with a :class:`ProgressEvent` for each stage and during the fit.

Raises
------
ParameterError
    Naming the first invalid parameter.

Examples
--------
>>> from bgopt_plugin.core import Config
>>> Config(n_control_points=16).order
2
>>> Config(order=7)
Traceback (most recent call last):
...
bgopt_plugin.core.parameters.ParameterError: order must be an integer in [1, 4], got 7
>>> Config().replace(seed=3).seed
3
"""

def _annotation(p: Parameter) -> Any:
    """The field type of a parameter: its kind, its words, None when optional."""
    if p.kind is str:
        return Literal[p.choices]
    kind: Any = p.kind
    if p.choices:
        kind = kind | Literal[p.choices]
    return kind | None if p.optional else kind


Config = dataclasses.make_dataclass(
    "Config",
    [(p.name, _annotation(p), field(default=p.default)) for p in PARAMETERS]
    + [("progress", Callable[[ProgressEvent], Any] | None,
        field(default=None, repr=False, compare=False))],
    frozen=True,
    namespace={
        "__post_init__": _validate,
        "validate": _validate,
        "from_options": classmethod(_from_options),
        "replace": _replace,
        "to_dict": _to_dict,
        "defaults": classmethod(_defaults),
        "__doc__": _CONFIG_DOC.format(
            entries="\n".join(p.doc_entry() for p in PARAMETERS)),
    },
)
Config.__module__ = __name__
