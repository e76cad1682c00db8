"""The ``bgopt`` command line host: batch FITS/XISF background extraction."""

from __future__ import annotations

from .app import build_parser, console_main, main, run, run_demo

__all__ = ["main", "console_main", "build_parser", "run", "run_demo"]
