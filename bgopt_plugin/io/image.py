"""The one image type every reader returns and every writer takes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Image", "ImageIOError", "read_errors", "short_reason"]


class ImageIOError(ValueError):
    """A file could not be read or written; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def short_reason(exc: BaseException) -> str:
    """The first line of an exception's message (its type if it has none), at most 120
    characters."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


@contextlib.contextmanager
def read_errors(path: str | Path, kind: str,
                explain: Callable[[BaseException], str] | None = None) -> Iterator[None]:
    """Turn what a format's reader raises into one :class:`ImageIOError` naming ``path``.

    Missing, unreadable and directory paths get their own words; anything else the
    reader raises (libraries raise many types for bad files) is ``explain(exc)``, by
    default "not a readable ``kind`` file (the reader's first line)".
    """
    try:
        yield
    except ImageIOError:
        raise
    except FileNotFoundError as exc:
        raise ImageIOError(path, "file not found") from exc
    except PermissionError as exc:
        raise ImageIOError(path, "permission denied") from exc
    except IsADirectoryError as exc:
        raise ImageIOError(path, "is a directory") from exc
    except Exception as exc:  # noqa: BLE001 - readers raise many types for bad files
        problem = explain(exc) if explain else f"not a readable {kind} file ({short_reason(exc)})"
        raise ImageIOError(path, problem) from exc


@dataclass
class Image:
    """Channels-last float32 pixels plus what is needed to write them back.

    Attributes
    ----------
    data : ndarray, (H, W, C) float32
        Pixels. Integer files are normalised to [0, 1] (divided by ``scale``).
    format : {"fits", "xisf", "tiff"}
        Where the image came from.
    source_dtype : numpy.dtype
        The stored sample type.
    scale : float
        Factor integer data were divided by (65535 for 16-bit), 1.0 for float data.
    meta : dict
        Format metadata. FITS: ``header`` (astropy Header of the image HDU) and
        ``extra_hdus`` (other HDUs, kept on write). XISF: ``fits_keywords`` (name ->
        list of {value, comment}, values as stored), ``properties``, ``file_meta`` and
        ``uncarried`` (elements the xisf package cannot write). TIFF: ``tiff_tags`` (the
        ICC profile) and ``resolution``.
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
