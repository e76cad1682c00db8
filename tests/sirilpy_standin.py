"""A stand-in for Siril's ``sirilpy`` 1.0.x, for tests.

Same public names, method signatures, return layouts, dtypes and exceptions as sirilpy
1.0.x (Siril 1.4): pixels come as (H, W) or (C, H, W), float32 or uint16; setting pixels
needs ``image_lock()``; ``undo_save_state`` does nothing headless. It records every call
so tests can check their order. Written from sirilpy's documentation; no Siril code.
"""

from __future__ import annotations

import contextlib
from enum import IntEnum

import numpy as np

__version__ = "1.0.25"


class SirilError(Exception):
    def __init__(self, message: str = "An error occurred"):
        self.message = message
        super().__init__(message)


class SirilConnectionError(SirilError):
    pass


class DataError(SirilError):
    pass


class CommandError(SirilError):
    pass


class NoImageError(SirilError):
    pass


class ProcessingThreadBusyError(SirilError):
    pass


class ImageDialogOpenError(SirilError):
    pass


class LogColor(IntEnum):
    DEFAULT = 0
    RED = 1
    SALMON = 2
    GREEN = 3
    BLUE = 4
    BOLD = 5


#: (packages, version_constraints) of every ensure_installed call.
INSTALLED: list[tuple[list[str], object]] = []
INSTALL_ERROR: Exception | None = None
CONNECT_ERROR: Exception | None = None
NEXT: dict = {}


def ensure_installed(*packages, version_constraints=None, reinstall=False) -> bool:
    if packages and isinstance(packages[0], list):
        packages = tuple(packages[0])
    INSTALLED.append((list(packages), version_constraints))
    if INSTALL_ERROR is not None:
        raise INSTALL_ERROR
    return True


def check_module_version(requires=None) -> bool:
    if requires is None:
        return True
    assert requires.startswith(">="), "only >= is used here"
    want = tuple(int(x) for x in requires[2:].split("."))
    return tuple(int(x) for x in __version__.split(".")) >= want


class SirilInterface:
    """Fake Siril holding one image (``pixels``) and a FITS header."""

    def __init__(self, pixels: np.ndarray | None = None, cli: bool = True, busy: bool = False,
                 header: str = ""):
        cfg = dict(NEXT)
        pixels = cfg.get("pixels", pixels)
        self.pixels = None if pixels is None else np.array(pixels)
        self.cli = cfg.get("cli", cli)
        self.busy = cfg.get("busy", busy)
        self.header = cfg.get("header", header)
        self.calls: list[tuple] = []
        self.logs: list[tuple[str, LogColor]] = []
        self.progress: list[tuple[str, float]] = []
        self._locked = False
        self.connected = False

    # connection ---------------------------------------------------------------------
    def connect(self) -> bool:
        if CONNECT_ERROR is not None:
            raise CONNECT_ERROR
        self.connected = True
        return True

    def is_cli(self) -> bool:
        return self.cli

    # logging and progress ------------------------------------------------------------
    def log(self, my_string: str, color: LogColor = LogColor.DEFAULT) -> bool:
        # Siril truncates at 1022 bytes; keep what it would show.
        self.logs.append((my_string.encode()[:1022].decode(errors="ignore"), color))
        self.calls.append(("log",))
        return True

    def update_progress(self, message: str, progress: float) -> bool:
        if not (0.0 <= progress <= 1.0 or progress in (-1.0, -2.0)):
            raise ValueError("Progress value must be between 0.0 and 1.0")
        self.progress.append((message, progress))
        self.calls.append(("update_progress", progress))
        return True

    def reset_progress(self) -> bool:
        self.calls.append(("reset_progress",))
        return self.update_progress("", 0.0)

    def error_messagebox(self, my_string: str, modal: bool | None = False) -> bool:
        self.calls.append(("error_messagebox", my_string))
        return True

    def info_messagebox(self, my_string: str, modal: bool | None = False) -> bool:
        self.calls.append(("info_messagebox", my_string))
        return True

    # image ------------------------------------------------------------------------
    def is_image_loaded(self) -> bool:
        return self.pixels is not None

    def get_image_shape(self):
        if self.pixels is None:
            return None
        return self.pixels.shape if self.pixels.ndim == 3 else (1,) + self.pixels.shape

    def get_image_pixeldata(self, shape=None, preview=False, linked=False):
        if self.pixels is None:
            raise NoImageError("No Siril image loaded")
        self.calls.append(("get_image_pixeldata",))
        return self.pixels.copy()

    @contextlib.contextmanager
    def image_lock(self):
        if self.busy:
            raise ProcessingThreadBusyError("Siril processing thread is busy")
        self.calls.append(("lock",))
        self._locked = True
        try:
            yield self
        finally:
            self._locked = False
            self.calls.append(("unlock",))

    def undo_save_state(self, my_string: str):
        self.calls.append(("undo_save_state", my_string))
        if self.cli:
            return None
        return True

    def set_image_pixeldata(self, image_data: np.ndarray) -> bool:
        if not isinstance(image_data, np.ndarray):
            raise ValueError("Image data must be a numpy array")
        if image_data.ndim not in (2, 3):
            raise ValueError("Image must be 2D or 3D array")
        if image_data.dtype not in (np.float32, np.uint16):
            raise ValueError("Image data must be float32 or uint16")
        if self.pixels is None:
            raise NoImageError("Error in set_image_pixeldata(): no image loaded")
        if not self._locked:
            raise SirilError("the processing thread is not claimed")
        self.calls.append(("set_image_pixeldata", image_data.dtype, image_data.shape))
        self.pixels = image_data.copy()
        return True

    def get_image_fits_header(self, return_as="str"):
        # As Siril 1.4.4: the cards, one per line, then "END" and a NUL.
        if self.pixels is None:
            raise NoImageError("no image")
        if not self.header:
            return None
        return "\n".join(line.ljust(80) for line in self.header.splitlines()) + "\nEND\x00"

    def set_image_metadata_from_header_string(self, header: str) -> bool:
        # As Siril 1.4.4: keywords are kept, HISTORY cards dropped, and a card Siril
        # cannot parse (an "END" with trailing bytes) is logged as a WARNING.
        if not isinstance(header, str):
            raise TypeError("Header data must be a string")
        self.calls.append(("set_image_metadata_from_header_string",))
        lines = [line for line in header.splitlines() if line.strip()]
        for line in lines:
            if line.startswith("END") and line.rstrip() != "END":
                self.logs.append(("WARNING: The following header keyword is invalid or follows "
                                  "an unrecognized non-standard convention:", None))
        self.header = "\n".join(line for line in lines
                                if not line.startswith(("HISTORY", "END")))
        return True

    def get_siril_display_iccprofile(self):
        # Siril 1.4.4: None when Siril runs headless (with or without an image), the
        # monitor profile's bytes in the GUI (NoImageError there without an image).
        if self.cli:
            return None
        if self.pixels is None:
            raise NoImageError("no image is currently loaded in Siril")
        return b"ICC profile bytes"

    def cmd(self, *args: str):
        self.calls.append(("cmd",) + args)
        if args[:2] == ("update_key", "-comment"):
            self.header += "\nCOMMENT " + " ".join(args[2:]).strip('"')
        elif args == ("close",):
            self.pixels = None
        return True
