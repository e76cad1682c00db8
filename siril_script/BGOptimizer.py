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

Options are those of the ``bgopt`` command line (-dx -df -dq -N -O -tm -tM -i -e -a -lr
--correction --pedestal --protect/--no-protect --seed ...), generated from the same
parameter table, plus --save-model FILE [--overwrite].

Installation: the first run installs the bgopt package into Siril's own Python, from
the checkout this script sits in (``pip install <checkout>``, which brings exactly the
dependencies its pyproject.toml declares; PyQt6 as well for the dialog), and again
whenever the checkout changes. A script copied alone uses a bgopt installed in Siril's
Python, or says in Siril's log what to run.

A failure (dependencies, bad options, no image, a fit error) is one red line in
Siril's log. Siril carries on after a Python script whatever it did, so in a headless
script the image is closed as well: the next command (``save``) then fails and stops
the script instead of saving the unchanged image. The GUI's image is never closed.

Everything but the Siril glue comes from the bgopt package: the pipeline
(bgopt_plugin.core), the layout and bit-depth conversion, header keywords and atomic
writing (bgopt_plugin.io), options and the mask overlay (bgopt_plugin.frontend).

Author: bgopt developers
SPDX-License-Identifier: GPL-3.0-or-later
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

SCRIPT_NAME = "BGOptimizer"
#: The distribution that holds the engine; its pyproject.toml is the one list of what
#: it needs, and installing it brings exactly that.
DIST = "bgopt"
#: Its optional dependencies for the dialog (PyQt6), declared there as well.
GUI_EXTRA = "gui"
#: Where the script notes which checkout it installed into Siril's Python, and its state.
STAMP = Path(sys.prefix) / "bgopt-checkout.json"


# --------------------------------------------------------------------------- set-up
class SetupError(RuntimeError):
    """bgopt cannot be installed or imported in Siril's Python (one line for the log)."""


def checkout_root() -> Path | None:
    """The bgopt checkout this script sits in (``<root>/siril_script/``), if any."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "bgopt_plugin" / "__init__.py").is_file():
        return root
    return None


def checkout_state(root: Path) -> dict:
    """What identifies the checkout's installable state: its folder and a digest of its
    ``pyproject.toml`` and package files (a ``git pull`` changes it)."""
    digest = hashlib.sha256()
    files = [root / "pyproject.toml",
             *sorted(f for f in (root / "bgopt_plugin").rglob("*")
                     if f.is_file() and "__pycache__" not in f.parts)]
    for f in files:
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return {"checkout": str(root), "digest": digest.hexdigest()}


def unmet_requirements(extras: tuple[str, ...] = ()) -> list[str]:
    """The installed bgopt's declared requirements (with ``extras``) that this Python
    does not satisfy; ``[DIST]`` when bgopt itself is not installed."""
    from importlib import metadata

    from packaging.requirements import Requirement  # ships with sirilpy

    try:
        declared = metadata.requires(DIST) or []
    except metadata.PackageNotFoundError:
        return [DIST]
    unmet = []
    for text in declared:
        req = Requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e})
                                              for e in ("", *extras)):
            continue
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            unmet.append(text)
            continue
        if not req.specifier.contains(have, prereleases=True):
            unmet.append(text)
    return unmet


def install_checkout(root: Path, extras: tuple[str, ...] = ()) -> None:
    """``pip install <root>[extras]`` into this Python (Siril's venv).

    pip's output is kept out of Siril's log (a long output can stall siril-cli); on
    failure its last error line is raised as a :class:`SetupError`.
    """
    target = f"{root}[{','.join(extras)}]" if extras else str(root)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                           "--quiet", target], capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or ["no output"]
        raise SetupError(f"pip could not install {target} into Siril's Python "
                         f"({sys.executable}): {errors[-1]}")


def prepare_engine(siril, gui: bool) -> None:
    """Make the bgopt package importable in Siril's Python, installing what is missing.

    In a checkout (this script in its ``siril_script`` folder), the checkout is installed
    with pip whenever it is not, or has changed since, or a declared requirement is
    unmet: pip then brings exactly what ``pyproject.toml`` declares. Copied alone, an
    installed bgopt is used, its unmet requirements installed with sirilpy's
    ``ensure_installed``; without one, :class:`SetupError` says what to run.
    """
    import sirilpy

    extras = (GUI_EXTRA,) if gui else ()
    root = checkout_root()
    if root is not None:
        state = checkout_state(root)
        if _read_stamp() != state or unmet_requirements(extras):
            siril.log(f"{SCRIPT_NAME}: installing bgopt from {root} into Siril's Python "
                      "(the first time, TensorFlow is downloaded: a few minutes)")
            STAMP.unlink(missing_ok=True)
            install_checkout(root, extras)
            STAMP.write_text(json.dumps(state))
    else:
        unmet = unmet_requirements(extras)
        if unmet == [DIST]:
            raise SetupError(
                f"bgopt is not installed in Siril's Python; run  \"{sys.executable}\" -m pip "
                "install /path/to/bgopt  (a bgopt checkout), or run this script from the "
                "siril_script folder of a checkout")
        if unmet:
            from packaging.requirements import Requirement

            reqs = [Requirement(text) for text in unmet]
            sirilpy.ensure_installed([r.name for r in reqs],
                                     version_constraints=[str(r.specifier) or None for r in reqs])
    try:
        import bgopt_plugin  # noqa: F401 - fail here, not half-way through
    except ImportError as exc:
        raise SetupError(f"bgopt does not import in Siril's Python: {exc}") from exc


def _read_stamp() -> dict | None:
    try:
        return json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return None


def stop_script(siril) -> None:
    """Make a failure stop the Siril script (.ssf) that ran this one.

    Siril 1.4 carries on after a Python script whatever it did (an exception or a
    non-zero exit included), so the next command, typically ``save``, would write the
    unchanged image and the run would end in success. Headless, the image is closed
    instead: the next command that needs it fails and Siril stops the script there
    ("Script execution failed", siril-cli exits 1). In the GUI the user's image is never
    closed: both ``is_cli()`` (a script, not the Scripts menu) and a Siril without a
    display (no display ICC profile) are required.
    """
    import sirilpy

    try:
        headless = siril.is_cli() and siril.get_siril_display_iccprofile() is None
    except sirilpy.SirilError:
        return
    if headless:
        try:
            siril.cmd("close")
        except sirilpy.SirilError:
            pass


def version() -> str:
    """The engine's version (bgopt_plugin.__version__)."""
    from bgopt_plugin import __version__

    return __version__


# --------------------------------------------------------------------------- engine
def build_parser() -> argparse.ArgumentParser:
    """Headless options: the engine options of the ``bgopt`` CLI plus --save-model."""
    from bgopt_plugin.frontend.options import add_engine_options

    p = argparse.ArgumentParser(prog="pyscript BGOptimizer.py", exit_on_error=False,
                                description="Remove the sky background from the loaded image.")
    add_engine_options(p)
    p.add_argument("--save-model", metavar="FILE",
                   help="also write the background model to this FITS file")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the --save-model file if it exists")
    return p


class OptionError(ValueError):
    """A bad command-line option (reported in Siril's log, image untouched)."""


def parse_options(argv: list[str]):
    """Parse headless argv into (Config, namespace); OptionError on bad input, None for --help."""
    from bgopt_plugin.frontend.options import config_from_args, option_name

    parser = build_parser()
    if any(a in ("-h", "--help") for a in argv):
        return None, parser.format_help()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            raise OptionError(f"unrecognized arguments: {' '.join(extra)}")
        return config_from_args(args), args
    except OptionError:
        raise
    except argparse.ArgumentError as exc:
        raise OptionError(str(exc)) from exc
    except ValueError as exc:
        name, problem = getattr(exc, "name", None), getattr(exc, "problem", None)
        raise OptionError(f"{option_name(name)}: {problem}" if name else str(exc)) from exc
    except SystemExit as exc:  # argparse may still exit on some errors
        raise OptionError("invalid options (see --help)") from exc


# --------------------------------------------------------------------------- layouts
def to_engine(pixels: np.ndarray) -> tuple[np.ndarray, dict]:
    """Siril pixels, (H, W) or (C, H, W), float32 or uint16 -> channels-last float32 [0, 1]."""
    from bgopt_plugin.io import planes_to_channels_last

    if pixels.dtype not in (np.float32, np.uint16):
        raise ValueError(f"unexpected pixel type {pixels.dtype} (Siril gives float32 or uint16)")
    info = {"dtype": pixels.dtype, "ndim": pixels.ndim}
    if (pixels.ndim == 2 and pixels.dtype == np.float32 and pixels.flags.c_contiguous
            and pixels.flags.writeable):
        # A mono float frame is already channels last, with one channel: a view of our
        # own copy, no new frame (a new one's first writes cost time).
        return pixels[..., None], info
    data, _ = planes_to_channels_last(pixels)
    return data, info


def from_engine(image: np.ndarray, info: dict, into: np.ndarray | None = None
                ) -> tuple[np.ndarray, int]:
    """Engine output back to Siril's layout and bit depth, clipped to Siril's [0, 1].

    ``into``: an array of that layout to write into, such as the pixels Siril gave.
    Returns the array and the number of values that were clipped.
    """
    from bgopt_plugin.io import channels_last_to_planes

    return channels_last_to_planes(image, info["ndim"], info["dtype"], clip=True, out=into)


# --------------------------------------------------------------------------- Siril glue
class SirilProgress:
    """Engine progress events -> Siril's progress bar (throttled, one label per stage)."""

    LABELS = {"protect": "bgopt: finding objects", "fit": "bgopt: fitting",
              "evaluate": "bgopt: full resolution", "correct": "bgopt: correcting"}

    def __init__(self, siril, min_interval: float = 0.25):
        self.siril = siril
        self.min_interval = min_interval
        self._last = 0.0
        self._label = None

    def __call__(self, ev) -> None:
        now = time.monotonic()
        label = self.LABELS.get(ev.stage)
        if label is None or ev.total <= 0:
            return
        # Throttled, but a new stage always shows (a fit may end within one interval).
        if label == self._label and now - self._last < self.min_interval and ev.step < ev.total:
            return
        self._last, self._label = now, label
        self.siril.update_progress(label, min(1.0, max(0.0, ev.step / ev.total)))


def undo_message(config) -> str:
    """Undo/HISTORY text, at most 70 characters as Siril allows."""
    from bgopt_plugin.io import history_line

    return history_line(config)


def loaded_header(siril):
    """The loaded image's FITS header as an astropy Header (empty if Siril has none)."""
    from astropy.io import fits

    # Siril 1.4 ends the string with "END" and a NUL; without the NUL astropy stops at END
    # (with it, "END\x00" became an invalid card that Siril then warned about).
    text = (siril.get_image_fits_header(return_as="str") or "").replace("\x00", "")
    return fits.Header.fromstring(text, sep="\n") if text.strip() else fits.Header()


def record_history(siril, result) -> None:
    """Headless: the BGO_* keywords into the loaded image's header, the summary as a COMMENT.

    Siril 1.4.4 keeps the keywords and COMMENT cards of a header string but drops its
    HISTORY cards, and ``undo_save_state`` (which writes HISTORY in the GUI) does nothing
    headless; so the one-line summary goes in as a COMMENT card of the same string (an
    ``update_key -comment`` command of its own is another round trip to Siril).
    """
    from bgopt_plugin.io import history_line, result_keywords

    hdr = loaded_header(siril)
    for key, value, comment in result_keywords(result):
        hdr[key] = (value, comment)
    hdr.add_comment(history_line(result.config, result.downscaling_factor))
    siril.set_image_metadata_from_header_string(hdr.tostring(sep="\n", endcard=False,
                                                             padding=False))


def process(siril, config, save_model: str | None = None, overwrite: bool = False):
    """Fit and remove the background of Siril's loaded image.

    Reads the pixels (no lock needed), fits with progress on Siril's bar, then, inside
    ``image_lock()`` and nothing else, saves the undo state (GUI only) and sets the new
    pixels with the same bit depth. Headless, the parameters go to the FITS header.

    Returns
    -------
    (BackgroundResult, int)
        The engine result and the number of values clipped to [0, 1].
    """
    import sirilpy

    from bgopt_plugin.core import fit_background
    from bgopt_plugin.frontend.process import import_tensorflow_during

    if not siril.is_image_loaded():
        raise sirilpy.NoImageError("no image loaded: open a linear image first")
    # Siril hands the pixels over through its socket and shared memory while TensorFlow
    # is imported; with it loaded, the fit also builds its compiled trainer during prepare.
    pixels = (import_tensorflow_during(siril.get_image_pixeldata) if config.epochs > 0
              else siril.get_image_pixeldata())
    image, info = to_engine(pixels)
    # Our own copies, reused: the image is corrected in place and the result goes back
    # into Siril's pixel array (two new full-size arrays less, whose first writes cost
    # time: benchmarks/README.md).
    try:
        result = fit_background(image, None, config.replace(progress=SirilProgress(siril)),
                                out=(np.empty_like(image), image))
    finally:
        siril.reset_progress()
    out, clipped = from_engine(result.corrected, info, into=pixels)
    with siril.image_lock():
        if not siril.is_cli():
            siril.undo_save_state(undo_message(config))
        siril.set_image_pixeldata(out)
    if siril.is_cli():
        record_history(siril, result)
    if save_model:
        write_model(save_model, siril, result, overwrite)
    return result, clipped


def write_model(path: str, siril, result, overwrite: bool = False) -> None:
    """Write the linear model as float32 FITS: the image's header plus bgopt's keywords.

    Written to a temporary file and renamed; an existing file is kept unless ``overwrite``.
    """
    from bgopt_plugin.io import MODEL_KIND, Image, history_line, result_keywords, write_image

    try:
        header = loaded_header(siril)
    except Exception:  # noqa: BLE001 - a model without the image's header is still useful
        header = None
    background = result.background if result.background.ndim == 3 else result.background[..., None]
    image = Image(background, "fits", meta={"header": header})
    cards = result_keywords(result) + [MODEL_KIND]
    write_image(path, image, cards=cards, overwrite=overwrite,
                history=history_line(result.config, result.downscaling_factor))


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


def fail(siril, *lines: str) -> int:
    """Report a failure in red in Siril's log and stop the calling Siril script.

    Used for every failure: dependencies, bad options, no image, a fit error. In the
    GUI's dialog a message box is shown as well (:meth:`Window._error`). Returns 1.
    """
    import sirilpy

    for line in lines:
        siril.log(line, sirilpy.LogColor.RED)
    stop_script(siril)
    return 1


def run_headless(siril, argv: list[str]) -> int:
    """``pyscript BGOptimizer.py [options]``: parse, log, process, log the outcome."""
    import sirilpy

    try:
        config, args = parse_options(argv)
    except OptionError as exc:
        fail(siril, describe_error(exc), f"usage: {build_parser().format_usage().strip()}")
        return 2
    if config is None:
        for line in args.splitlines():
            siril.log(line)
        return 0
    params = ", ".join(f"{k}={v}" for k, v in config.to_dict().items())
    siril.log(f"{SCRIPT_NAME} {version()}: {params}")
    try:
        if args.save_model and Path(args.save_model).exists() and not args.overwrite:
            raise FileExistsError(f"{args.save_model}: output exists (add --overwrite to replace it)")
        start = time.perf_counter()
        result, clipped = process(siril, config, args.save_model, args.overwrite)
        seconds = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001 - every failure becomes one red log line
        return fail(siril, describe_error(exc))
    siril.log(summary(result, clipped, seconds), sirilpy.LogColor.GREEN)
    return 0


def summary(result, clipped: int, seconds: float | None = None) -> str:
    """The log's closing line; ``seconds``: the whole processing, pixel transfers included."""
    t = result.timings
    extra = f"; {clipped} values clipped to [0, 1]" if clipped else ""
    whole = "" if seconds is None else f", with Siril's transfers {seconds:.1f}s"
    return (f"{SCRIPT_NAME}: background removed ({result.epochs_run} epochs, factor "
            f"{result.downscaling_factor}, {100 * result.protected_fraction:.0f}% protected, "
            f"fit {t['fit']:.1f}s, total {t['total']:.1f}s{whole}{extra})")


# --------------------------------------------------------------------------- GUI
def run_gui(siril) -> int:  # pragma: no cover - exercised by the offscreen GUI test
    """The PyQt6 dialog; the QApplication exists only on this path."""
    from PyQt6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = make_window(siril)
    window.show()
    return app.exec()


def make_widget(p):
    """A Qt input for one bgopt Parameter, from its type, range and choices."""
    from PyQt6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox

    top = p.high if p.high is not None else p.gui_max
    if p.kind is bool:
        widget = QCheckBox(checked=p.default)
    elif p.kind is str or (p.kind is float and p.choices):
        widget = QComboBox(editable=p.kind is float)
        widget.addItems(list(p.choices))
        widget.setCurrentText(str(p.default))
    elif p.kind is int:
        special = bool(p.choices) or p.optional   # one value below the range means it
        low = int(p.low or 0) - (1 if special else 0)
        widget = QSpinBox(minimum=low, maximum=int(top))
        if special:
            widget.setSpecialValueText(p.choices[0] if p.choices else "none (random)")
        widget.setValue(low if isinstance(p.default, str) or p.default is None else p.default)
    else:
        step = p.gui_step or 0.01
        decimals = max(2, len(f"{step:.10f}".rstrip("0").split(".")[1]))
        widget = QDoubleSpinBox(minimum=p.low or 0.0, maximum=float(top), singleStep=step,
                                decimals=decimals, value=p.default)
    widget.setToolTip(f"{p.help} ({p.option})")
    return widget


def widget_value(p, widget):
    """The Config value a widget made by :func:`make_widget` holds."""
    if p.kind is bool:
        return widget.isChecked()
    if p.kind is str:
        return widget.currentText()
    if p.kind is float and p.choices:
        text = widget.currentText().strip()
        try:
            return text if text in p.choices else float(text)
        except ValueError:
            return text   # Config names the parameter and the problem
    if p.kind is int and (p.choices or p.optional) and widget.value() == widget.minimum():
        return p.choices[0] if p.choices else None
    return widget.value()


def make_window(siril):
    """Build the main dialog (PyQt6 imported here only), one row per bgopt parameter."""
    import sirilpy
    from PyQt6.QtCore import QObject, Qt, pyqtSignal
    from PyQt6.QtGui import QImage, QPixmap
    from PyQt6.QtWidgets import (
        QCheckBox,
        QFileDialog,
        QFormLayout,
        QHBoxLayout,
        QLabel,
        QPushButton,
        QVBoxLayout,
        QWidget,
    )

    from bgopt_plugin.core import PARAMETERS, Config, find_objects, prepare
    from bgopt_plugin.frontend.plots import mask_overlay

    class Signals(QObject):
        finished = pyqtSignal(object, object)

    class Window(QWidget):
        def __init__(self):
            super().__init__()
            self.setWindowTitle(f"{SCRIPT_NAME} {version()} (bgopt)")
            self.signals = Signals()
            self.signals.finished.connect(self._done)
            self.result = None
            self.protected_fraction = None   # of the last preview
            form = QFormLayout()
            self.widgets = {p.name: make_widget(p) for p in PARAMETERS}
            for p in PARAMETERS:
                form.addRow(p.label, self.widgets[p.name])
            self.save_model = QCheckBox("save the background model after Apply")
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
            self.inputs = [*self.widgets.values(), self.save_model, self.preview_btn, self.apply_btn]

        def config(self):
            return Config(**{p.name: widget_value(p, self.widgets[p.name]) for p in PARAMETERS})

        def set_busy(self, busy: bool):
            for w in self.inputs:
                w.setEnabled(not busy)

        def show_preview(self):
            try:
                image, _ = to_engine(siril.get_image_pixeldata())
                config = self.config()
                prep = prepare(image, None, config)
                protection = find_objects(prep, config)
            except Exception as exc:  # noqa: BLE001
                self._error(exc)
                return
            self.protected_fraction = protection.fraction
            rgb = mask_overlay(prep.working, prep.weights, protection.protected)
            rgb = np.ascontiguousarray((rgb[::-1] * 255).astype(np.uint8))
            h, w = rgb.shape[:2]
            qimg = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
            self.preview.setPixmap(QPixmap.fromImage(qimg).scaledToWidth(min(480, 3 * w)))
            masked = int((prep.weights.max(-1) == 0).sum())
            siril.log(f"{SCRIPT_NAME}: preview - red = masked ({masked} of "
                      f"{prep.usable.size} working pixels, factor {prep.factor}), cyan = "
                      f"protected objects ({100 * protection.fraction:.0f}% of the sky)")

        def apply(self):
            try:
                config = self.config()
            except ValueError as exc:
                self._error(OptionError(str(exc)))
                return
            model_path = None
            if self.save_model.isChecked():
                # The dialog asks before replacing a file, so a chosen file may be replaced.
                model_path, _ = QFileDialog.getSaveFileName(self, "Save background model",
                                                            "bgModel.fit", "FITS (*.fit *.fits)")
            self.set_busy(True)
            siril.log(f"{SCRIPT_NAME}: running ({undo_message(config)})")

            def work():
                try:
                    outcome = process(siril, config, model_path or None, overwrite=True)
                    self.signals.finished.emit(outcome, None)
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
        prepare_engine(siril, gui=not headless)
        from bgopt_plugin.frontend.process import own_process

        own_process()   # the script owns Siril's Python process: quiet TensorFlow, one thread
    except Exception as exc:  # noqa: BLE001 - dependency install or import failure
        text = f"{SCRIPT_NAME}: {exc}" if isinstance(exc, SetupError) else (
            f"{SCRIPT_NAME}: could not install or import its dependencies: {exc}")
        if not headless:
            siril.error_messagebox(text)
        return fail(siril, text)
    if headless:
        return run_headless(siril, argv)
    try:
        return run_gui(siril)
    except Exception as exc:  # noqa: BLE001
        siril.log(describe_error(exc), s.LogColor.RED)
        return 1


if __name__ == "__main__":
    sys.exit(main())
