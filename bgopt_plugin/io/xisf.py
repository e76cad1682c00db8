"""XISF adapter (the ``xisf`` package) <-> Image.

Works around the package's quirks: it returns read-only arrays, mutates the metadata
dicts it is given, needs (H, W, 1) for mono, strips the quotes of string keyword values
on read, writes Boolean properties in a form it cannot read back, declares float
bounds as 0:1, and cannot write some elements (ICC profile, resolution, thumbnail...).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import check_regular_file, write_file
from .image import Image, ImageIOError, read_errors
from .layout import channels_last_to_planes, integer_scale, reusable
from .provenance import stale_keywords

__all__ = ["read_xisf", "write_xisf", "XISF_EXTENSIONS", "CODECS"]

XISF_EXTENSIONS = (".xisf",)
CODECS = (None, "lz4hc", "zstd")
_NS = "{http://www.pixinsight.com/xisf}"


def _raw_keywords(xisf_obj) -> tuple[dict, list[str]]:
    """FITS keywords exactly as stored (quotes kept) and the uncarried elements."""
    root = xisf_obj.get_metadata_xml()
    image = root.find(f"{_NS}Image")
    keywords: dict[str, list[dict[str, str]]] = {}
    uncarried: list[str] = []
    if image is None:
        return keywords, uncarried
    for child in image:
        tag = child.tag.replace(_NS, "")
        if tag == "FITSKeyword":
            keywords.setdefault(child.attrib["name"], []).append(
                {"value": child.attrib.get("value", ""), "comment": child.attrib.get("comment", "")})
        elif tag != "Property":
            uncarried.append(tag)
    return keywords, uncarried


def read_xisf(path: str | Path, out: np.ndarray | None = None) -> Image:
    """Read the first image of an XISF file (into ``out`` when it fits, see
    :func:`~bgopt_plugin.io.layout.reusable`).

    Raises
    ------
    ImageIOError
        For a missing, unreadable, corrupt or unsupported file.
    """
    from xisf import XISF

    path = check_regular_file(path)
    with read_errors(path, "XISF"):
        x = XISF(str(path))
        metas = x.get_images_metadata()
        if not metas:
            raise ImageIOError(path, "no image in the file")
        raw = x.read_image(0)  # a read-only view: converted into our own array below
        props = copy.deepcopy(metas[0].get("XISFProperties", {}))
        file_meta = copy.deepcopy(x.get_file_metadata())
        keywords, uncarried = _raw_keywords(x)
    if raw.ndim != 3 or raw.shape[-1] not in (1, 3):
        raise ImageIOError(path, f"unsupported dimensionality {raw.shape} (need 1 or 3 channels)")
    scale = integer_scale(raw.dtype)
    data = reusable(out, raw.shape)
    data[...] = raw
    if scale != 1.0:
        data /= np.float32(scale)
    meta = {"fits_keywords": keywords, "properties": props, "file_meta": file_meta,
            "uncarried": uncarried}
    return Image(data=data, format="xisf", source_dtype=raw.dtype, scale=scale, meta=meta, path=path)


def _writable_properties(props: dict) -> tuple[dict, list[str]]:
    out, dropped = {}, []
    for pid, p in props.items():
        p = dict(p)
        if p.get("type") == "Boolean":
            # The package writes str(value); the format (and its reader) wants lowercase.
            p["value"] = "true" if p["value"] in (True, "true") else "false"
        if any(k in p for k in ("comment", "format")):
            dropped.append(pid)
        out[pid] = p
    return out, dropped


def write_xisf(path: str | Path, image: Image, data: np.ndarray | None = None,
               cards: list[tuple[str, object, str]] = (), history: Sequence[str] = (),
               overwrite: bool = False, codec: str | None = None,
               into: str | Path | None = None, dtype: np.dtype | None = None) -> tuple[Path, int]:
    """Write float32 (or 8/16-bit) XISF with the source keywords and properties.

    Float values are clipped to [0, 1], the bounds the package declares for float data;
    integer ones to their type's range. The source's DATAMIN/DATAMAX are dropped, and
    its BUNIT when normalised integers are written as floats.

    Parameters
    ----------
    path : path
    image : Image
        Source of the keywords and properties (FITS headers are converted).
    data : ndarray (H, W, C), optional
        Pixels to write instead of ``image.data``.
    cards : list of (keyword, value, comment)
        Keywords to add or replace.
    history : sequence of str
        HISTORY keywords to add.
    overwrite : bool
    codec : {None, "lz4hc", "zstd"}
        Compression, with byte shuffling.
    into : path, optional
        Write straight into this (temporary) file, which the caller renames onto ``path``.
    dtype : numpy dtype, optional
        An integer sample type (uint8, uint16) instead of float32.

    Returns
    -------
    (Path, int)
        The output path and the number of values clipped into range.
    """
    from xisf import XISF

    from .keywords import format_value, header_to_keywords

    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")
    path = Path(path)
    pixels = np.asarray(image.data if data is None else data, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    if dtype.kind in "iu":
        planes, n_clipped = channels_last_to_planes(pixels, 3, dtype)
        pixels = np.ascontiguousarray(np.moveaxis(planes, 0, -1))
    else:
        with np.errstate(invalid="ignore"):
            n_clipped = int(np.count_nonzero((pixels < 0) | (pixels > 1) | ~np.isfinite(pixels)))
        pixels = np.ascontiguousarray(np.clip(np.nan_to_num(pixels, nan=0.0), 0.0, 1.0))

    if image.format == "xisf":
        keywords = copy.deepcopy(image.meta.get("fits_keywords", {}))
        props, dropped = _writable_properties(copy.deepcopy(image.meta.get("properties", {})))
        file_meta = copy.deepcopy(image.meta.get("file_meta", {}))
        uncarried = list(image.meta.get("uncarried", []))
    else:
        from .fits import header_for_output

        keywords = header_to_keywords(header_for_output(image.meta.get("header")))
        props, dropped, file_meta = {}, [], {}
        uncarried = [h.header.get("EXTNAME", "HDU") for h in image.meta.get("extra_hdus", [])]
    for key in stale_keywords(image.scale, dtype):
        keywords.pop(key, None)
    for key, value, comment in cards:
        keywords[key] = [{"value": format_value(value), "comment": comment}]
    for line in history:
        keywords.setdefault("HISTORY", []).append({"value": "", "comment": line})
    src = image.path or "input"
    if uncarried:
        warnings.warn(f"{src}: not carried to {path.name}: {', '.join(sorted(set(uncarried)))} "
                      "(the xisf package cannot write them)", UserWarning, stacklevel=2)
    if dropped:
        warnings.warn(f"{src}: property comments/formats not carried for {', '.join(dropped)}",
                      UserWarning, stacklevel=2)
    file_meta = {k: v for k, v in file_meta.items() if not k.startswith("XISF:")}
    image_meta = {"FITSKeywords": keywords, "XISFProperties": props}
    def write(tmp: Path) -> None:
        XISF.write(str(tmp), pixels, creator_app=_creator(), image_metadata=image_meta,
                   xisf_metadata=file_meta, codec=codec, shuffle=codec is not None)

    write_file(path, write, overwrite, into)
    if n_clipped and dtype.kind == "f":
        warnings.warn(f"{path.name}: {n_clipped} values outside [0, 1] clipped (XISF float data "
                      "are declared in [0, 1])", UserWarning, stacklevel=2)
    return path, n_clipped


def _creator() -> str:
    from .._version import __version__

    return f"bgopt {__version__}"


