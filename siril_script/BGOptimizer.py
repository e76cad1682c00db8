"""
BGOptimizer - background (gradient) extraction for Siril with bgopt.

Removes light pollution, moonglow, airglow and vignetting from the loaded linear image:
a smooth polyharmonic spline is fitted to a stretched, downscaled, masked copy of the
image by gradient descent (TensorFlow) and removed at full resolution. Undo is available
in the GUI. The algorithm follows bgoptimizer by Sergio Diaz.

Usage
-----
GUI: add the folder holding this file to Siril's script folders (Preferences > Scripts),
load a linear image, then run Scripts > siril_script > BGOptimizer.

Headless (Siril script files and siril-cli):
    pyscript BGOptimizer.py [options]
    pyscript BGOptimizer.py --help
for example in an .ssf file:
    requires 1.4.0
    load master.fit
    pyscript BGOptimizer.py -N 32 --seed 1
    save master_bg

Options use the names of the ``bgopt`` command line (-dx -df -dq -N -O -tm -tM -i -e
-a -lr --correction --pedestal --protect/--no-protect --seed), plus --save-model FILE.

Author: bgopt developers
SPDX-License-Identifier: GPL-3.0-or-later
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

VERSION = "0.1.0"
SCRIPT_NAME = "BGOptimizer"
# Packages the engine needs in Siril's Python (numpy ships with Siril).
ENGINE_PACKAGES = ["scipy", "tensorflow", "astropy", "xisf"]
GUI_PACKAGES = ["PyQt6"]
UINT16_MAX = 65535.0


# --------------------------------------------------------------------------- engine
def locate_engine() -> None:
    """Make ``bgopt_plugin`` importable: the repository this script sits in, else installed."""
    repo = Path(__file__).resolve().parent.parent
    if (repo / "bgopt_plugin" / "__init__.py").is_file() and str(repo) not in sys.path:
        sys.path.insert(0, str(repo))


def build_parser() -> argparse.ArgumentParser:
    """Headless options: the engine options of the ``bgopt`` CLI plus --save-model."""
    from bgopt_plugin.options import add_engine_options

    p = argparse.ArgumentParser(prog="pyscript BGOptimizer.py", exit_on_error=False,
                                description="Remove the sky background from the loaded image.")
    add_engine_options(p)
    p.add_argument("--save-model", metavar="FILE",
                   help="also write the background model to this FITS file")
    return p


class OptionError(ValueError):
    """A bad command-line option (reported in Siril's log, image untouched)."""


def parse_options(argv: list[str]):
    """Parse headless argv into (Config, namespace); OptionError on bad input, None for --help."""
    from bgopt_plugin.options import config_from_args

    parser = build_parser()
    if any(a in ("-h", "--help") for a in argv):
        return None, parser.format_help()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            raise OptionError(f"unrecognized arguments: {' '.join(extra)}")
        return config_from_args(args), args
    except (argparse.ArgumentError, ValueError) as exc:
        raise OptionError(str(exc)) from exc
    except SystemExit as exc:  # argparse may still exit on some errors
        raise OptionError("invalid options (see --help)") from exc


# --------------------------------------------------------------------------- layouts
def to_engine(pixels: np.ndarray) -> tuple[np.ndarray, dict]:
    """Siril pixels, (H, W) or (C, H, W), float32 or uint16 -> channels-last float32 [0, 1]."""
    if pixels.dtype == np.uint16:
        data = pixels.astype(np.float32) / np.float32(UINT16_MAX)
    elif pixels.dtype == np.float32:
        data = pixels.astype(np.float32, copy=True)
    else:
        raise ValueError(f"unexpected pixel type {pixels.dtype} (Siril gives float32 or uint16)")
    if data.ndim == 3:
        data = np.moveaxis(data, 0, -1)
    elif data.ndim != 2:
        raise ValueError(f"unexpected pixel layout {pixels.shape}")
    return np.ascontiguousarray(data), {"dtype": pixels.dtype, "ndim": pixels.ndim}


def from_engine(image: np.ndarray, info: dict) -> tuple[np.ndarray, int]:
    """Engine output back to Siril's layout and bit depth, clipped to [0, 1].

    Returns the array and the number of values that were clipped.
    """
    arr = np.asarray(image, dtype=np.float32)
    if info["ndim"] == 3:
        arr = np.moveaxis(arr if arr.ndim == 3 else arr[..., None], -1, 0)
    elif arr.ndim == 3:
        arr = arr[..., 0]
    arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
    clipped = int(np.count_nonzero((arr < 0) | (arr > 1)))
    arr = np.clip(arr, 0.0, 1.0)
    if info["dtype"] == np.uint16:
        out = np.rint(arr * UINT16_MAX).astype(np.uint16)
    else:
        out = arr.astype(np.float32)
    return np.ascontiguousarray(out), clipped


# --------------------------------------------------------------------------- Siril glue
class SirilProgress:
    """Engine progress events -> Siril's progress bar (throttled)."""

    def __init__(self, siril, min_interval: float = 0.25):
        self.siril = siril
        self.min_interval = min_interval
        self._last = 0.0
        self._label = None

    def __call__(self, ev) -> None:
        now = time.monotonic()
        if ev.stage not in ("fit", "protect", "evaluate") or ev.total <= 0:
            return
        label = {"fit": "bgopt: fitting", "evaluate": "bgopt: full resolution"}.get(
            ev.stage, f"bgopt: {ev.message}")
        # Throttled, but a new stage always shows (a fit may end within one interval).
        if label == self._label and now - self._last < self.min_interval and ev.step < ev.total:
            return
        self._last, self._label = now, label
        self.siril.update_progress(label, min(1.0, max(0.0, ev.step / ev.total)))


def undo_message(config) -> str:
    """Undo/HISTORY text, at most 70 characters as Siril allows."""
    text = (f"bgopt: {config.correction} N={config.n_control_points} O={config.order} "
            f"dq={config.delinearization_quantile} prot={'y' if config.protect else 'n'}")
    return text[:70]


def record_history(siril, text: str) -> str:
    """Add a FITS HISTORY line to the loaded image (headless: undo_save_state does not)."""
    from astropy.io import fits

    try:
        header = siril.get_image_fits_header(return_as="str") or ""
        hdr = fits.Header.fromstring(header, sep="\n") if header.strip() else fits.Header()
        hdr.add_history(text)
        siril.set_image_metadata_from_header_string(hdr.tostring(sep="\n"))
        return "history"
    except Exception:  # noqa: BLE001 - older Siril: fall back to a COMMENT card
        siril.cmd("update_key", "-comment", text)
        return "comment"


def process(siril, config, save_model: str | None = None):
    """Fit and remove the background of Siril's loaded image.

    Reads the pixels (no lock needed), fits with progress on Siril's bar, then, inside
    ``image_lock()`` and nothing else, saves the undo state (GUI only) and sets the new
    pixels with the same bit depth. Headless, the parameters go to FITS HISTORY.

    Returns
    -------
    (BackgroundResult, int)
        The engine result and the number of values clipped to [0, 1].
    """
    import sirilpy

    from bgopt_plugin import fit_background

    if not siril.is_image_loaded():
        raise sirilpy.NoImageError("no image loaded: open a linear image first")
    pixels = siril.get_image_pixeldata()
    image, info = to_engine(pixels)
    try:
        result = fit_background(image, None, config.replace(progress=SirilProgress(siril)))
    finally:
        siril.reset_progress()
    out, clipped = from_engine(result.corrected, info)
    message = undo_message(config)
    with siril.image_lock():
        if not siril.is_cli():
            siril.undo_save_state(message)
        siril.set_image_pixeldata(out)
    if siril.is_cli():
        record_history(siril, message)
    if save_model:
        write_model(save_model, result.background, info)
    return result, clipped


def write_model(path: str, background: np.ndarray, info: dict) -> None:
    """Write the linear background model as float32 FITS (Siril's layout)."""
    from astropy.io import fits

    planes = background if background.ndim == 2 else np.moveaxis(background, -1, 0)
    tmp = f"{path}.part"
    fits.PrimaryHDU(np.asarray(planes, dtype=np.float32)).writeto(tmp, overwrite=True)
    os.replace(tmp, path)


def describe_error(exc: BaseException) -> str:
    """One line for Siril's log, never a traceback."""
    import sirilpy

    if isinstance(exc, sirilpy.NoImageError):
        return f"{SCRIPT_NAME}: no image loaded ({exc})"
    if isinstance(exc, sirilpy.ProcessingThreadBusyError):
        return f"{SCRIPT_NAME}: Siril is busy with another task; try again when it is done"
    if isinstance(exc, getattr(sirilpy, "ImageDialogOpenError", ())):
        return f"{SCRIPT_NAME}: close the open image-processing dialog first"
    if isinstance(exc, sirilpy.SirilConnectionError):
        return f"{SCRIPT_NAME}: lost the connection to Siril ({exc})"
    if isinstance(exc, OptionError):
        return f"{SCRIPT_NAME}: bad option: {exc}"
    return f"{SCRIPT_NAME}: {type(exc).__name__}: {exc}"


def run_headless(siril, argv: list[str]) -> int:
    """``pyscript BGOptimizer.py [options]``: parse, log, process, log the outcome."""
    import sirilpy

    try:
        config, args = parse_options(argv)
    except OptionError as exc:
        siril.log(describe_error(exc), sirilpy.LogColor.RED)
        siril.log(f"usage: {build_parser().format_usage().strip()}", sirilpy.LogColor.RED)
        return 2
    if config is None:
        for line in args.splitlines():
            siril.log(line)
        return 0
    params = ", ".join(f"{k}={v}" for k, v in config.to_dict().items())
    siril.log(f"{SCRIPT_NAME} {VERSION}: {params}")
    try:
        result, clipped = process(siril, config, args.save_model)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one red log line
        siril.log(describe_error(exc), sirilpy.LogColor.RED)
        return 1
    siril.log(summary(result, clipped), sirilpy.LogColor.GREEN)
    return 0


def summary(result, clipped: int) -> str:
    t = result.timings
    extra = f"; {clipped} values clipped to [0, 1]" if clipped else ""
    return (f"{SCRIPT_NAME}: background removed ({result.epochs_run} epochs, factor "
            f"{result.downscaling_factor}, {result.info['protected_pixels']} protected px, "
            f"fit {t['fit']:.1f}s, total {t['total']:.1f}s{extra})")


# --------------------------------------------------------------------------- GUI
def run_gui(siril) -> int:  # pragma: no cover - exercised by the offscreen GUI test
    """The PyQt6 dialog; the QApplication exists only on this path."""
    from PyQt6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = make_window(siril)
    window.show()
    return app.exec()


def make_window(siril):
    """Build the main dialog (PyQt6 imported here only)."""
    import sirilpy
    from PyQt6.QtCore import QObject, Qt, pyqtSignal
    from PyQt6.QtGui import QImage, QPixmap
    from PyQt6.QtWidgets import (
        QCheckBox,
        QComboBox,
        QDoubleSpinBox,
        QFileDialog,
        QFormLayout,
        QHBoxLayout,
        QLabel,
        QPushButton,
        QSpinBox,
        QVBoxLayout,
        QWidget,
    )

    from bgopt_plugin.config import PARAMETER_HELP, Config

    d = Config.defaults()

    class Signals(QObject):
        finished = pyqtSignal(object, object)

    class Window(QWidget):
        def __init__(self):
            super().__init__()
            self.setWindowTitle(f"{SCRIPT_NAME} {VERSION} (bgopt)")
            self.signals = Signals()
            self.signals.finished.connect(self._done)
            self.result = None
            form = QFormLayout()
            self.n = QSpinBox(minimum=3, maximum=256, value=d["n_control_points"])
            self.order = QComboBox()
            self.order.addItems(["1", "2", "3", "4"])
            self.order.setCurrentText(str(d["order"]))
            self.dq = QDoubleSpinBox(minimum=0.5, maximum=1.0, singleStep=0.005, decimals=3,
                                     value=d["delinearization_quantile"])
            self.tmin = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.001, decimals=3,
                                       value=d["threshold_min"])
            self.tmax = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.01, decimals=3,
                                       value=d["threshold_max"])
            self.dx = QSpinBox(minimum=0, maximum=128,
                               value=0 if d["downscaling_factor"] == "auto" else d["downscaling_factor"])
            self.dx.setSpecialValueText("auto")
            self.init = QComboBox()
            self.init.addItems(["random", "grid"])
            self.init.setCurrentText(d["initializer"])
            self.epochs = QSpinBox(minimum=0, maximum=20000, value=d["epochs"])
            self.correction = QComboBox()
            self.correction.addItems(["subtract", "divide"])
            self.correction.setCurrentText(d["correction"])
            self.protect = QCheckBox(checked=d["protect"])
            self.seed = QSpinBox(minimum=-1, maximum=2**31 - 1, value=-1)
            self.seed.setSpecialValueText("random")
            self.save_model = QCheckBox("save the background model after Apply")
            rows = [("Control points", self.n, "n_control_points"), ("Order", self.order, "order"),
                    ("Delinearization quantile", self.dq, "delinearization_quantile"),
                    ("Threshold min", self.tmin, "threshold_min"),
                    ("Threshold max", self.tmax, "threshold_max"),
                    ("Downscaling factor", self.dx, "downscaling_factor"),
                    ("Initializer", self.init, "initializer"), ("Epochs", self.epochs, "epochs"),
                    ("Correction", self.correction, "correction"),
                    ("Protect objects", self.protect, "protect"), ("Seed", self.seed, "seed")]
            for label, widget, key in rows:
                widget.setToolTip(PARAMETER_HELP[key])
                form.addRow(label, widget)
            form.addRow("", self.save_model)
            self.preview = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
            self.preview_btn = QPushButton("Preview mask")
            self.apply_btn = QPushButton("Apply")
            self.close_btn = QPushButton("Close")
            self.preview_btn.clicked.connect(self.show_preview)
            self.apply_btn.clicked.connect(self.apply)
            self.close_btn.clicked.connect(self.close)
            buttons = QHBoxLayout()
            for b in (self.preview_btn, self.apply_btn, self.close_btn):
                buttons.addWidget(b)
            layout = QVBoxLayout(self)
            layout.addLayout(form)
            layout.addWidget(self.preview)
            layout.addLayout(buttons)
            self.inputs = [w for _, w, _ in rows] + [self.save_model, self.preview_btn, self.apply_btn]

        def config(self):
            dx = self.dx.value()
            return Config(n_control_points=self.n.value(), order=int(self.order.currentText()),
                          delinearization_quantile=self.dq.value(), threshold_min=self.tmin.value(),
                          threshold_max=self.tmax.value(), downscaling_factor=dx or "auto",
                          initializer=self.init.currentText(), epochs=self.epochs.value(),
                          correction=self.correction.currentText(), protect=self.protect.isChecked(),
                          seed=None if self.seed.value() < 0 else self.seed.value())

        def set_busy(self, busy: bool):
            for w in self.inputs:
                w.setEnabled(not busy)

        def show_preview(self):
            from bgopt_plugin.engine import prepare

            try:
                image, _ = to_engine(siril.get_image_pixeldata())
                prep = prepare(image, None, self.config())
            except Exception as exc:  # noqa: BLE001
                self._error(exc)
                return
            work = np.nan_to_num(prep.working)
            rgb = np.repeat(work, 3, -1) if work.shape[-1] == 1 else work.copy()
            masked = prep.weights.max(-1) == 0
            rgb[masked] = 0.5 * rgb[masked] + np.array([0.5, 0.0, 0.0])
            rgb = np.ascontiguousarray((np.clip(rgb[::-1], 0, 1) * 255).astype(np.uint8))
            h, w = rgb.shape[:2]
            qimg = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
            self.preview.setPixmap(QPixmap.fromImage(qimg).scaledToWidth(min(480, 3 * w)))
            siril.log(f"{SCRIPT_NAME}: preview - red = masked ({int(masked.sum())} of "
                      f"{masked.size} working pixels, factor {prep.factor})")

        def apply(self):
            try:
                config = self.config()
            except ValueError as exc:
                self._error(OptionError(str(exc)))
                return
            model_path = None
            if self.save_model.isChecked():
                model_path, _ = QFileDialog.getSaveFileName(self, "Save background model",
                                                            "bgModel.fit", "FITS (*.fit *.fits)")
            self.set_busy(True)
            siril.log(f"{SCRIPT_NAME}: running ({undo_message(config)})")

            def work():
                try:
                    self.signals.finished.emit(process(siril, config, model_path or None), None)
                except Exception as exc:  # noqa: BLE001 - reported in the GUI thread
                    self.signals.finished.emit(None, exc)

            self.worker = threading.Thread(target=work, daemon=True)
            self.worker.start()

        def _done(self, outcome, exc):
            self.set_busy(False)
            if exc is not None:
                self._error(exc)
                return
            self.result, clipped = outcome
            siril.log(summary(self.result, clipped), sirilpy.LogColor.GREEN)

        def _error(self, exc):
            text = describe_error(exc)
            siril.log(text, sirilpy.LogColor.RED)
            siril.error_messagebox(text)

    return Window()


# --------------------------------------------------------------------------- entry
def main(argv: list[str] | None = None) -> int:
    """Connect to Siril, install what is missing, then run headless or the GUI."""
    argv = list(sys.argv[1:] if argv is None else argv)
    import sirilpy as s

    siril = s.SirilInterface()
    try:
        siril.connect()
    except s.SirilConnectionError as exc:
        print(f"{SCRIPT_NAME}: cannot connect to Siril: {exc}", file=sys.stderr)
        return 1
    if not s.check_module_version(">=1.0.0"):
        siril.log(f"{SCRIPT_NAME} needs sirilpy 1.0.0 or newer (Siril 1.4)", s.LogColor.RED)
        return 1
    headless = siril.is_cli() or bool(argv)
    try:
        s.ensure_installed(ENGINE_PACKAGES + ([] if headless else GUI_PACKAGES))
        locate_engine()
        import bgopt_plugin  # noqa: F401 - fail here, not half-way through
    except Exception as exc:  # noqa: BLE001 - dependency install or import failure
        siril.log(f"{SCRIPT_NAME}: could not install or import its dependencies: {exc}",
                  s.LogColor.RED)
        return 1
    if headless:
        return run_headless(siril, argv)
    try:
        return run_gui(siril)
    except Exception as exc:  # noqa: BLE001
        siril.log(describe_error(exc), s.LogColor.RED)
        return 1


if __name__ == "__main__":
    sys.exit(main())
