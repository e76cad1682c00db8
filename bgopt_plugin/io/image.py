"""The one image type every reader returns and every writer takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Image", "ImageIOError"]


class ImageIOError(ValueError):
    """A file could not be read or written; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass
class Image:
    """Channels-last float32 pixels plus what is needed to write them back.

    Attributes
    ----------
    data : ndarray, (H, W, C) float32
        Pixels. Integer files are normalised to [0, 1] (divided by ``scale``).
    format : {"fits", "xisf"}
        Where the image came from.
    source_dtype : numpy.dtype
        The stored sample type.
    scale : float
        Factor integer data were divided by (65535 for 16-bit), 1.0 for float data.
    meta : dict
        Format metadata. FITS: ``header`` (astropy Header of the image HDU) and
        ``extra_hdus`` (other HDUs, kept on write). XISF: ``fits_keywords`` (name ->
        list of {value, comment}, values as stored), ``properties``, ``file_meta`` and
        ``uncarried`` (elements the xisf package cannot write).
    path : Path or None
    """

    data: np.ndarray
    format: str
    source_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    scale: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def mono(self) -> bool:
        return self.data.shape[-1] == 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.data.shape  # type: ignore[return-value]
