"""``bgopt demo [DIR]``: a built-in synthetic master for the whole pipeline.

This module writes the sample and scores the outputs against the truth; the command line
(:mod:`.app`) runs the batch in between, so the two never import each other.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

__all__ = ["parse_args", "write_sample", "report"]

DEMO_NAME = "bgopt_demo_master.fits"


def _write_master(path: Path, image: np.ndarray) -> None:
    from astropy.io import fits

    header = fits.Header()
    header["OBJECT"] = ("bgopt demo", "synthetic linear master")
    header["EXPTIME"] = (3600.0, "[s] total exposure")
    header["DATE-OBS"] = "2026-01-01T22:00:00"
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRVAL1"], header["CRVAL2"] = 83.8, -5.4
    header["CRPIX1"], header["CRPIX2"] = image.shape[1] / 2, image.shape[0] / 2
    header["CDELT1"], header["CDELT2"] = -0.0005, 0.0005
    fits.PrimaryHDU(np.moveaxis(image, -1, 0), header).writeto(path, overwrite=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The demo's own options: the output folder and ``-q``."""
    p = argparse.ArgumentParser(prog="bgopt demo",
                                description="Run bgopt on a built-in synthetic linear master.")
    p.add_argument("directory", nargs="?", default="bgopt-demo",
                   help="where to write (default: bgopt-demo)")
    p.add_argument("-q", "--quiet", action="store_true")
    return p.parse_args(argv)


def write_sample(directory: Path):
    """Write the sample master into ``directory``; return its path and its Scene."""
    from ..data.synthetic import demo_scene

    directory.mkdir(parents=True, exist_ok=True)
    scene = demo_scene()
    src = directory / DEMO_NAME
    _write_master(src, scene.image)
    return src, scene


def report(scene, directory: Path) -> tuple[dict, str]:
    """Score the demo's outputs in ``directory`` against the truth: (scores, one line)."""
    from ..data.synthetic import score
    from ..io import read_image

    stem = Path(DEMO_NAME).stem
    model = read_image(directory / f"{stem}_bgModel.fits").data
    corrected = read_image(directory / f"{stem}_bgSubtracted.fits").data
    result = score(scene, model, corrected)
    line = (f"bgopt demo: background residual {100 * result['residual']:.2f}% of the gradient "
            f"(RMS over every pixel, the nebula's included, / peak-to-peak); "
            f"nebula flux kept {100 * result['flux_kept']:.1f}%; "
            f"outputs and PNG plots are in {directory}/")
    return result, line
