"""FITS adapter (astropy.io.fits): channels-first planes <-> channels-last Image."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from .atomic import atomic_output, check_regular_file, disk_full, os_reason
from .image import Image, ImageIOError, read_errors, short_reason
from .layout import channels_last_to_planes, planes_to_channels_last
from .provenance import stale_keywords

__all__ = ["read_fits", "write_fits", "FITS_EXTENSIONS"]

FITS_EXTENSIONS = (".fit", ".fits", ".fts", ".fz")

# Cards that describe the data layout; astropy writes them from the array.
_STRUCTURAL = {"SIMPLE", "XTENSION", "BITPIX", "EXTEND", "PCOUNT", "GCOUNT", "BZERO", "BSCALE",
               "BLANK", "CHECKSUM", "DATASUM"}


def _image_hdu(hdul: fits.HDUList):
    for hdu in hdul:
        if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) and hdu.data is not None:
            if hdu.header.get("EXTNAME", "").upper() == "ICCPROFILE":
                continue
            return hdu
    return None


def read_fits(path: str | Path, out: np.ndarray | None = None) -> Image:
    """Read the primary HDU, or the first image HDU, of a FITS file.

    NAXIS 2 is mono; NAXIS 3 with NAXIS3 of 1 or 3 gives those planes. Integer data
    (BZERO/BSCALE applied, unsigned 16-bit included) are normalised to [0, 1]. The
    pixels go into ``out`` when it fits (see :func:`~bgopt_plugin.io.layout.reusable`).

    Raises
    ------
    ImageIOError
        For a missing, unreadable, corrupt or unsupported file.
    """
    path = check_regular_file(path)
    with read_errors(path, "FITS", explain_read_error), warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        try:
            header, extra, data, dtype, scale = _load(path, True, out)
        except ValueError as exc:
            if "memory-mapped" not in str(exc):  # scaled integers cannot be mapped
                raise
            header, extra, data, dtype, scale = _load(path, False, out)
    return Image(data=data, format="fits", source_dtype=dtype, scale=scale,
                 meta={"header": header, "extra_hdus": extra}, path=path)


def _load(path: Path, memmap: bool, out: np.ndarray | None = None):
    """Header, extra HDUs and channels-last float32 pixels of the image HDU."""
    # Memory-mapped where possible: the pixels are converted straight from the file's pages.
    with fits.open(path, memmap=memmap) as hdul:
        hdul.verify("silentfix+ignore")
        hdu = _image_hdu(hdul)
        if hdu is None:
            raise ImageIOError(path, "no image data in any HDU")
        header = hdu.header.copy()
        extra = [h.copy() for h in hdul if h is not hdu and not _empty_primary(h)]
        raw = hdu.data
        try:
            data, scale = planes_to_channels_last(raw, out)
        except ValueError as exc:
            raise ImageIOError(path, str(exc)) from None
    return header, extra, data, raw.dtype.newbyteorder("="), scale


def _empty_primary(hdu) -> bool:
    return isinstance(hdu, fits.PrimaryHDU) and hdu.data is None


def explain_read_error(exc: BaseException) -> str:
    """What is wrong with a FITS file, from the exception astropy or numpy raised."""
    text = str(exc).strip()
    lower = text.lower()
    if "buffer is too small" in lower or "cannot reshape" in lower:
        return "truncated: the file holds less data than its header declares"
    if "decompress" in lower or "compressed byte stream" in lower or re.fullmatch(r"\(-\d+\)", text):
        return "corrupt compressed data"
    if "ufunc" in lower or "bscale" in lower or "bzero" in lower:
        return "unsupported BSCALE/BZERO scaling"
    if "missing end card" in lower:
        return "corrupt header (no END card)"
    if "empty or corrupt" in lower:
        return "not a FITS file, or its header is truncated"
    if isinstance(exc, KeyError) and re.fullmatch(r"-?\d+", text.strip("'")):
        return f"unsupported BITPIX {text.strip(chr(39))}"
    return f"not a readable FITS file ({short_reason(exc)})"


def header_for_output(header: fits.Header | None) -> fits.Header:
    """A primary header with every source card except the structural ones."""
    out = fits.Header()
    if header is None:
        return out
    for card in header.cards:
        key = card.keyword
        if key in _STRUCTURAL or key.startswith("NAXIS") or key in ("EXTNAME", "EXTVER", "ZIMAGE"):
            continue
        out.append(card, end=True)
    return out


def _primary_header(shape: tuple[int, int, int], extend: bool) -> fits.Header:
    h, w, c = shape
    header = fits.Header()
    header["SIMPLE"] = (True, "conforms to FITS standard")
    header["BITPIX"] = (-32, "array data type")
    header["NAXIS"] = (2 if c == 1 else 3, "number of array dimensions")
    header["NAXIS1"] = w
    header["NAXIS2"] = h
    if c > 1:
        header["NAXIS3"] = c
    if extend:
        header["EXTEND"] = True
    return header


def _stream(path: Path, header: fits.Header, pixels: np.ndarray, rows: int = 256) -> None:
    """Write the primary HDU plane by plane, a block of rows at a time (no full copy).

    Each block is gathered from the channels-last pixels straight into a big-endian
    buffer, FITS's byte order, so astropy writes it without another conversion (faster
    than a native-order block or astropy writing the whole planar array:
    benchmarks/README.md).
    """
    out = fits.StreamingHDU(path, header)
    try:
        block = np.empty((rows, pixels.shape[1]), dtype=">f4")
        for k in range(pixels.shape[-1]):
            for start in range(0, pixels.shape[0], rows):
                part = pixels[start:start + rows, :, k]
                buf = block[:len(part)]
                buf[...] = part
                out.write(buf)
    finally:
        out.close()


def write_fits(path: str | Path, image: Image, data: np.ndarray | None = None,
               cards: list[tuple[str, object, str]] = (), history: Sequence[str] = (),
               overwrite: bool = False, into: str | Path | None = None,
               dtype: np.dtype | None = None) -> tuple[Path, int]:
    """Write float32 planes (BITPIX -32), or integer ones, with the source header and
    extra HDUs.

    The source's DATAMIN/DATAMAX are dropped, and its BUNIT too when normalised integer
    samples are written as floats (:func:`~bgopt_plugin.io.provenance.stale_keywords`).

    Parameters
    ----------
    path : path
        Output file (written to a temporary file first, then renamed).
    image : Image
        Source image: its header and extra HDUs (ICC profile...) are carried over.
    data : ndarray (H, W, C), optional
        Pixels to write instead of ``image.data``.
    cards : list of (keyword, value, comment)
        Keywords to add or update.
    history : sequence of str
        HISTORY lines to add.
    overwrite : bool
        Replace an existing output.
    into : path, optional
        Write straight into this (temporary) file instead, which the caller renames
        onto ``path`` (see :class:`~bgopt_plugin.io.atomic.OutputSet`).
    dtype : numpy dtype, optional
        An integer sample type (uint8, int16, uint16) to write instead of float32: the
        normalised values are scaled back, rounded and clipped to its range.

    Returns
    -------
    (Path, int)
        The output path and the number of values clipped to the sample type's range.
    """
    path = Path(path)
    pixels = np.asarray(image.data if data is None else data)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if image.format == "tiff" and image.meta.get("tiff_tags"):
        warnings.warn(f"{image.path or 'input'}: the TIFF's ICC profile is not carried to FITS "
                      f"{path.name}", UserWarning, stacklevel=2)
    if image.format == "xisf":
        from .keywords import keywords_to_header

        source_header = keywords_to_header(image.meta.get("fits_keywords", {}))
        lost = sorted(image.meta.get("properties", {}))
        if lost:
            warnings.warn(f"{image.path or 'input'}: XISF properties not carried to FITS "
                          f"{path.name}: {', '.join(lost[:5])}{' ...' if len(lost) > 5 else ''}",
                          UserWarning, stacklevel=2)
    else:
        source_header = image.meta.get("header")
    extras = [h.copy() for h in image.meta.get("extra_hdus", [])]
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    header = _primary_header(pixels.shape, bool(extras))
    stale = stale_keywords(image.scale, dtype)
    for card in header_for_output(source_header).cards:
        if card.keyword not in stale:
            header.append(card, end=True)
    for key, value, comment in cards:
        header[key] = (value, comment)
    for line in history:
        header.add_history(line)
    clipped = 0
    if dtype.kind in "iu":   # astropy writes BITPIX, and BZERO for unsigned 16-bit
        pixels, clipped = channels_last_to_planes(pixels, 2 if pixels.shape[-1] == 1 else 3, dtype)
    if into is not None:
        _write(path, Path(into), header, pixels, extras)
    else:
        with atomic_output(path, overwrite) as tmp:
            _write(path, tmp, header, pixels, extras)
    return path, clipped


def _write(path: Path, tmp: Path, header: fits.Header, pixels: np.ndarray, extras: list) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            if pixels.dtype.kind in "iu":
                for key in ("BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3"):
                    header.remove(key, ignore_missing=True)
                fits.PrimaryHDU(pixels, header).writeto(tmp, overwrite=True)
            else:
                _stream(tmp, header, pixels)
            if extras:
                with fits.open(tmp, mode="append") as hdul:
                    for h in extras:
                        hdul.append(fits.ImageHDU(h.data, h.header)
                                    if isinstance(h, fits.PrimaryHDU) else h)
    except Exception as exc:  # noqa: BLE001 - astropy reports short writes as several types
        if disk_full(exc):
            raise ImageIOError(path, "cannot write (no space left on device)") from exc
        if isinstance(exc, OSError):
            raise ImageIOError(path, f"cannot write ({os_reason(exc)})") from exc
        raise
