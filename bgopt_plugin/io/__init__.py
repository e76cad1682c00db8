"""IO adapter layer: FITS, XISF and TIFF files <-> one :class:`Image` type.

Layout conversion (channels-first planes in FITS and Siril, channels-last in XISF and
TIFF) happens only here (:mod:`.layout`); the core always sees channels-last float32.
Header provenance (:mod:`.provenance`) and atomic output sets (:mod:`.atomic`) live here
too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import MAX_TARGET_NAME, OutputSet, check_output_dir, check_regular_file, remove_stale_parts
from .fits import FITS_EXTENSIONS, read_fits, write_fits
from .image import Image, ImageIOError
from .layout import as_channels_last, as_planes, channels_last_to_planes, planes_to_channels_last, reusable
from .provenance import MODEL_KIND, history_line, history_lines, keywords, result_keywords
from .tiff import TIFF_EXTENSIONS, read_tiff, write_tiff
from .xisf import XISF_EXTENSIONS, read_xisf, write_xisf

__all__ = ["Image", "ImageIOError", "read_image", "write_image", "format_of", "SUPPORTED",
           "OutputSet", "check_output_dir", "check_regular_file", "remove_stale_parts", "MAX_TARGET_NAME",
           "planes_to_channels_last", "channels_last_to_planes", "as_channels_last", "as_planes",
           "reusable",
           "keywords", "result_keywords", "history_line", "history_lines", "MODEL_KIND"]

SUPPORTED = FITS_EXTENSIONS + XISF_EXTENSIONS + TIFF_EXTENSIONS


def format_of(path: str | Path) -> str:
    """``"fits"``, ``"xisf"`` or ``"tiff"`` from the file name; ImageIOError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix in FITS_EXTENSIONS:
        return "fits"
    if suffix in XISF_EXTENSIONS:
        return "xisf"
    if suffix in TIFF_EXTENSIONS:
        return "tiff"
    raise ImageIOError(path, f"unknown extension {suffix!r} (expected one of {', '.join(SUPPORTED)})")


def read_image(path: str | Path, out: np.ndarray | None = None) -> Image:
    """Read a FITS or XISF file into an :class:`Image` (dispatch on the extension).

    ``out``: an array to read the pixels into when it has their shape (H, W, C) and is
    float32, C-contiguous and writeable (a batch reuses one); a new one otherwise.

    Examples
    --------
    >>> read_image("missing.fits")
    Traceback (most recent call last):
    ...
    bgopt_plugin.io.image.ImageIOError: missing.fits: file not found
    """
    readers = {"fits": read_fits, "xisf": read_xisf, "tiff": read_tiff}
    return readers[format_of(path)](path, out)


def write_image(path: str | Path, image: Image, data: np.ndarray | None = None, *,
                cards=(), history: str | Sequence[str] = (), overwrite: bool = False,
                codec: str | None = None, into: str | Path | None = None,
                dtype: np.dtype | None = None) -> int:
    """Write ``data`` (or ``image.data``) in the format of ``path``, atomically.

    With ``into``, the bytes go to that temporary file instead and the caller renames it
    (an :class:`OutputSet` writes a whole set of outputs this way). ``dtype``: an integer
    sample type to write instead of float32 (values scaled back by its full scale).

    Returns
    -------
    int
        Number of values clipped to fit the format (XISF float data are kept in [0, 1];
        integer samples in their type's range).
    """
    history = [history] if isinstance(history, str) else list(history)
    fmt = format_of(path)
    if fmt == "fits":
        if Path(path).suffix.lower() == ".fz":
            raise ImageIOError(path, "writing tile-compressed .fz is not supported; use .fits")
        _, clipped = write_fits(path, image, data, cards, history, overwrite, into, dtype)
    elif fmt == "tiff":
        if codec is not None:
            raise ImageIOError(path, "--codec applies to XISF output only")
        _, clipped = write_tiff(path, image, data, cards, history, overwrite, into, dtype)
    else:
        _, clipped = write_xisf(path, image, data, cards, history, overwrite, codec, into, dtype)
    return clipped
