"""The one parameter table and everything generated from it."""

from __future__ import annotations

import dataclasses

import pytest

import bgopt_plugin as bgopt
from bgopt_plugin.cli import build_parser
from bgopt_plugin.core import PARAMETERS, Config, ParameterError, parameter
from bgopt_plugin.io.provenance import keywords


def test_table_is_consistent():
    names = [p.name for p in PARAMETERS]
    assert names == [f.name for f in dataclasses.fields(Config)][:-1]   # progress is last
    keys = [p.fits_key for p in PARAMETERS]
    assert len(set(keys)) == len(keys) and all(len(k) <= 8 for k in keys)
    flags = [f for p in PARAMETERS for f in p.flags]
    assert len(set(flags)) == len(flags)
    for p in PARAMETERS:
        assert p.check(p.default) == p.default and p.help and p.label


def test_command_line_options_are_generated():
    actions = {a.dest: a for a in build_parser()._actions}   # noqa: SLF001
    for p in PARAMETERS:
        assert actions[p.name].default == p.default
        assert p.option in actions[p.name].option_strings
    args = build_parser().parse_args(["x.fits", "--protect-sigma", "3", "-dx", "auto",
                                      "--pedestal", "0.5", "--no-protect", "-O", "3"])
    assert (args.protect_sigma, args.downscaling_factor, args.pedestal, args.protect,
            args.order) == (3.0, "auto", 0.5, False, 3)


def test_header_keywords_and_docstring_are_generated():
    cards = {k: v for k, v, _ in keywords(Config(seed=5), factor=7, epochs_run=12)}
    for p in PARAMETERS:
        assert p.fits_key in cards
        assert f"\n{p.name} : " in Config.__doc__
    assert cards["BGO_DX"] == 7 and cards["BGO_SEED"] == 5 and cards["BGO_RUN"] == 12
    # the default seed is recorded too (a fit records the seed it drew for 'random')
    assert dict((k, v) for k, v, _ in keywords(Config()))["BGO_SEED"] == 0


def test_config_is_frozen_and_validated():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.order = 9
    assert cfg.replace(order=3).order == 3 and cfg.order == 2
    with pytest.raises(ParameterError, match=r"^order must be an integer in \[1, 4\], got 9$"):
        cfg.replace(order=9)
    with pytest.raises(ParameterError, match="downscaling_factor must be an integer >= 1 or 'auto'"):
        Config(downscaling_factor="big")
    assert Config(pedestal=1).pedestal == 1.0 and isinstance(Config(pedestal=1).pedestal, float)
    assert parameter("order").describe() == "an integer in [1, 4]"
    assert bgopt.Config is Config


def test_front_end_docstrings_list_every_option():
    for func in (bgopt.fit, bgopt.fit_background):
        assert "<the bgopt options>" not in func.__doc__
        for p in PARAMETERS:
            assert f"- ``{p.name}``: {p.help}" in func.__doc__


def test_readme_option_table_is_the_generated_one():
    from pathlib import Path

    from bgopt_plugin.frontend.options import README_MARKERS, options_table

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start, end = (text.index(m) for m in README_MARKERS)
    assert text[start + len(README_MARKERS[0]):end].strip() == options_table()
    for p in PARAMETERS:   # every flag and keyword is in it
        assert (p.flags or (p.option,))[0] in text[start:end] and p.fits_key in text[start:end]
