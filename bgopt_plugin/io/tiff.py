"""TIFF adapter (tifffile): 8/16-bit integer and 32-bit float, mono and RGB.

Deep Sky Stacker, ASTAP, Astro Pixel Processor and Siril export stacked masters as TIFF.
A TIFF holds pixels and a few tags, not a FITS header: what bgopt records (its
parameters, the HISTORY lines) goes into the ImageDescription tag as text, the source's
ICC profile and resolution are carried from a TIFF input, and everything else a FITS or
XISF source held is named in a warning as not carried.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .atomic import check_regular_file, write_file
from .image import Image, ImageIOError, read_errors
from .layout import channels_last_to_planes, planes_to_channels_last

__all__ = ["read_tiff", "write_tiff", "TIFF_EXTENSIONS"]

TIFF_EXTENSIONS = (".tif", ".tiff")
#: Sample types read: what astro software writes.
_READABLE = (np.uint8, np.uint16, np.float32, np.float64)
#: Tags carried from a TIFF input to a TIFF output: the ICC profile and the resolution.
_CARRIED = {"InterColorProfile": 34675}


def read_tiff(path: str | Path, out: np.ndarray | None = None) -> Image:
    """Read the first image of a TIFF file: (H, W) mono or (H, W, 3) RGB.

    Integer samples are normalised to [0, 1] (divided by 255 or 65535); float samples
    are taken as they are.

    Raises
    ------
    ImageIOError
        For a missing, unreadable or unsupported file.
    """
    import tifffile

    path = check_regular_file(path)
    with read_errors(path, "TIFF"), tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        page = tif.pages[0]
        raw = series.asarray()
        axes = series.axes
        tags = {name: page.tags[code].value for name, code in _CARRIED.items() if code in page.tags}
        resolution = (page.tags["XResolution"].value, page.tags["YResolution"].value,
                      page.tags["ResolutionUnit"].value) if "XResolution" in page.tags else None
    if raw.dtype.type not in _READABLE:
        raise ImageIOError(path, f"unsupported TIFF sample type {raw.dtype} (8/16-bit integer or "
                                 "32-bit float)")
    if axes in ("YXS", "YXC") and raw.shape[-1] in (1, 3, 4):
        raw = np.moveaxis(raw[..., :3] if raw.shape[-1] == 4 else raw, -1, 0)   # alpha dropped
    elif axes in ("SYX", "CYX") and raw.shape[0] in (1, 3):
        pass
    elif axes != "YX":
        raise ImageIOError(path, f"unsupported TIFF layout {axes} {raw.shape} (need mono or RGB)")
    try:
        data, scale = planes_to_channels_last(raw, out)
    except ValueError as exc:
        raise ImageIOError(path, str(exc)) from None
    return Image(data=data, format="tiff", source_dtype=raw.dtype.newbyteorder("="), scale=scale,
                 meta={"tiff_tags": tags, "resolution": resolution}, path=path)


def write_tiff(path: str | Path, image: Image, data: np.ndarray | None = None,
               cards: list[tuple[str, object, str]] = (), history: list[str] = (),
               overwrite: bool = False, into: str | Path | None = None,
               dtype: np.dtype | None = None) -> tuple[Path, int]:
    """Write a TIFF: 32-bit float by default, or ``dtype`` (8/16-bit, clipped to its range).

    ``cards`` and ``history`` go into the ImageDescription tag as text; the ICC profile and
    resolution of a TIFF source are carried. Returns the path and the number of values
    clipped to the sample type's range (NaN included).
    """
    import tifffile

    path = Path(path)
    pixels = np.asarray(image.data if data is None else data)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    clipped = 0
    if dtype.kind in "iu":
        planes, clipped = channels_last_to_planes(pixels, 3, dtype)
        samples = np.moveaxis(planes, 0, -1)
    else:
        samples = pixels.astype(np.float32, copy=False)
    if samples.shape[-1] == 1:
        samples = samples[..., 0]
    lines = [*history, *(f"{k} = {v!r} / {c}" for k, v, c in cards)]
    extratags = [(code, 7, len(value), value, True) for name, code in _CARRIED.items()
                 if (value := image.meta.get("tiff_tags", {}).get(name)) is not None]
    resolution = image.meta.get("resolution")
    _warn_uncarried(image, path)

    def write(tmp: Path) -> None:
        tifffile.imwrite(tmp, np.ascontiguousarray(samples),
                         photometric="rgb" if samples.ndim == 3 else "minisblack",
                         description="\n".join(lines) or None, software=_software(),
                         extratags=extratags,
                         resolution=None if resolution is None else resolution[:2],
                         resolutionunit=None if resolution is None else resolution[2],
                         metadata=None)

    write_file(path, write, overwrite, into)
    return path, clipped


def _warn_uncarried(image: Image, path: Path) -> None:
    """Name what a FITS or XISF source holds that a TIFF cannot carry."""
    src = image.path or "input"
    lost = []
    if image.format == "fits":
        header = image.meta.get("header")
        if header is not None and len(header):
            lost.append(f"the FITS header ({len(header)} cards: WCS, dates, exposure...)")
        lost += [h.header.get("EXTNAME", "HDU") for h in image.meta.get("extra_hdus", [])]
    elif image.format == "xisf":
        if image.meta.get("fits_keywords"):
            lost.append(f"{len(image.meta['fits_keywords'])} FITS keywords")
        if image.meta.get("properties"):
            lost.append(f"{len(image.meta['properties'])} XISF properties")
    if lost:
        warnings.warn(f"{src}: not carried to the TIFF {path.name}: {', '.join(lost)}",
                      UserWarning, stacklevel=3)


def _software() -> str:
    from .._version import __version__

    return f"bgopt {__version__}"
