"""FITS header cards <-> XISF FITSKeyword entries, values kept as written."""

from __future__ import annotations

import warnings

from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

__all__ = ["header_to_keywords", "keywords_to_header", "format_value"]

_SKIP = {"SIMPLE", "BITPIX", "EXTEND", "BZERO", "BSCALE", "BLANK", "END", "XTENSION",
         "PCOUNT", "GCOUNT", "CHECKSUM", "DATASUM"}


def format_value(value: object) -> str:
    """A keyword value as FITS writes it: strings quoted, logicals T/F.

    Examples
    --------
    >>> format_value("M31"), format_value(True), format_value(2.5)
    ("'M31'", 'T', '2.5')
    """
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def header_to_keywords(header: fits.Header) -> dict[str, list[dict[str, str]]]:
    """XISF FITSKeywords (name -> list of {value, comment}) from a FITS header."""
    out: dict[str, list[dict[str, str]]] = {}
    for card in header.cards:
        key = card.keyword
        if not key or key in _SKIP or key.startswith("NAXIS"):
            continue
        if key in ("HISTORY", "COMMENT"):
            entry = {"value": "", "comment": str(card.value)}
        else:
            entry = {"value": format_value(card.value), "comment": card.comment or ""}
        out.setdefault(key, []).append(entry)
    return out


def keywords_to_header(keywords: dict[str, list[dict[str, str]]]) -> fits.Header:
    """A FITS header from XISF FITSKeywords; unparseable values are kept as strings."""
    header = fits.Header()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        for key, entries in keywords.items():
            if key in _SKIP or key.startswith("NAXIS"):
                continue
            for entry in entries:
                if key in ("HISTORY", "COMMENT"):
                    header.append((key, entry.get("comment") or entry.get("value", "")), end=True)
                    continue
                raw = str(entry.get("value", "")).strip()
                try:
                    card = fits.Card.fromstring(f"{'VALUE':8s}= {raw}")
                    value = card.value
                except Exception:  # noqa: BLE001 - keep what cannot be parsed as text
                    value = raw.strip("'").strip()
                try:
                    header.append((key, value, entry.get("comment", "")), end=True)
                except (ValueError, TypeError):
                    continue
    return header
