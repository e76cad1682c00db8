"""The Siril script against a stand-in for sirilpy 1.0.x."""

from __future__ import annotations

import ast
import importlib.util
import py_compile
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tests.sirilpy_standin as standin
from bgopt_plugin.data.synthetic import make_scene

SCRIPT = Path(__file__).resolve().parents[1] / "siril_script" / "BGOptimizer.py"
FAST = ["-e", "80", "--seed", "1"]


@pytest.fixture
def script(monkeypatch):
    monkeypatch.setitem(sys.modules, "sirilpy", standin)
    monkeypatch.setattr(standin, "INSTALL_ERROR", None)
    monkeypatch.setattr(standin, "CONNECT_ERROR", None)
    monkeypatch.setattr(standin, "NEXT", {})
    monkeypatch.setattr(standin, "INSTALLED", [])
    spec = importlib.util.spec_from_file_location("BGOptimizer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pixels(rgb: bool, dtype) -> np.ndarray:
    img = make_scene("dome" if rgb else "linear", shape=(96, 144)).image
    planes = np.moveaxis(img, -1, 0) if rgb else img
    if dtype == np.uint16:
        return np.rint(np.clip(planes, 0, 1) * 65535).astype(np.uint16)
    return planes.astype(np.float32)


def _spread(planes: np.ndarray) -> float:
    p = planes.astype(np.float64)
    p = p[0] if p.ndim == 3 else p
    return float(np.ptp(np.median(p.reshape(6, 16, 9, 16), axis=(1, 3))))


@pytest.mark.parametrize("rgb", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_headless_keeps_layout_and_bit_depth(script, rgb, dtype):
    pixels = _pixels(rgb, dtype)
    siril = standin.SirilInterface(pixels, cli=True, header="OBJECT  = 'M 33'")
    assert script.run_headless(siril, FAST) == 0
    out = siril.pixels
    assert out.dtype == dtype and out.shape == pixels.shape
    assert _spread(out) < 0.3 * _spread(pixels)
    assert siril.logs[0][0].startswith("BGOptimizer 0.1.0: ")
    assert "n_control_points=32" in siril.logs[0][0]
    assert siril.logs[-1][1] == standin.LogColor.GREEN
    # headless: no undo, HISTORY written explicitly
    assert not any(c[0] == "undo_save_state" for c in siril.calls)
    # the same BGO_* keywords as the command line, the summary as a COMMENT (Siril drops
    # HISTORY from a header string), the image's own cards kept, no WARNING logged
    assert "COMMENT bgopt 0.1.0: subtract N=32" in siril.header and "M 33" in siril.header
    assert "BGO_N   =                   32" in siril.header and "BGO_RUN" in siril.header
    assert not any("WARNING" in text for text, _ in siril.logs)


def test_lock_contains_only_undo_and_set(script):
    siril = standin.SirilInterface(_pixels(True, np.float32), cli=False)
    config, _ = script.parse_options(FAST)
    script.process(siril, config)
    names = [c[0] for c in siril.calls]
    i = names.index("lock")
    assert names[i:i + 4] == ["lock", "undo_save_state", "set_image_pixeldata", "unlock"]
    undo = siril.calls[i + 1][1]
    assert undo.startswith("bgopt 0.1.0: subtract") and len(undo) <= 70
    assert names.index("get_image_pixeldata") < i
    assert names.count("lock") == 1


def test_progress_goes_to_siril_and_is_reset(script):
    siril = standin.SirilInterface(_pixels(False, np.float32))
    config, _ = script.parse_options(["-e", "200", "--seed", "1"])
    script.process(siril, config)
    values = [p for _, p in siril.progress]
    assert len(values) >= 2 and all(0.0 <= v <= 1.0 for v in values)
    assert any(m.startswith("bgopt: fitting") for m, _ in siril.progress)
    names = [c[0] for c in siril.calls]
    assert "reset_progress" in names and names.index("reset_progress") < names.index("lock")


def test_uint16_conversion_rounds_and_clips(script):
    img = np.array([[-0.1, 0.0], [32769.4 / 65535, 1.2]], np.float32)  # rounds to 32769
    out, clipped = script.from_engine(img, {"dtype": np.dtype(np.uint16), "ndim": 2})
    assert out.dtype == np.uint16 and clipped == 2
    np.testing.assert_array_equal(out, [[0, 0], [32769, 65535]])
    back, info = script.to_engine(np.array([[[0, 65535]], [[1, 2]], [[3, 4]]], np.uint16))
    assert back.shape == (1, 2, 3) and back.dtype == np.float32 and back[0, 1, 0] == 1.0
    rgb, _ = script.from_engine(back, info)
    assert rgb.shape == (3, 1, 2) and rgb.dtype == np.uint16


def test_mono_float_frame_is_converted_in_place(script):
    # Siril's mono float frame is the engine's layout already: a view in, planes back
    # into the same memory, clipped there; colour and 16-bit frames get their own copy.
    pixels = np.array([[0.2, -0.1, np.nan], [1.5, 0.5, 0.7]], np.float32)
    image, info = script.to_engine(pixels)
    assert image.shape == (2, 3, 1) and np.shares_memory(image, pixels)
    out, clipped = script.from_engine(image, info, into=pixels)
    assert out is pixels and clipped == 3
    np.testing.assert_array_equal(pixels, np.array([[0.2, 0.0, 0.0], [1.0, 0.5, 0.7]], np.float32))
    rgb = np.zeros((3, 2, 3), np.float32)
    assert not np.shares_memory(script.to_engine(rgb)[0], rgb)
    sixteen = np.zeros((2, 3), np.uint16)
    assert not np.shares_memory(script.to_engine(sixteen)[0], sixteen)


def test_argv_parsing(script):
    config, args = script.parse_options(["-N", "16", "-O", "3", "-dq", "0.9", "-tM", "0.7",
                                         "--no-protect", "--correction", "divide", "-dx", "4",
                                         "--save-model", "m.fit"])
    assert (config.n_control_points, config.order, config.delinearization_quantile) == (16, 3, 0.9)
    assert config.threshold_max == 0.7 and not config.protect and config.correction == "divide"
    assert config.downscaling_factor == 4 and args.save_model == "m.fit"
    for bad in (["-O", "9"], ["--bogus"], ["-N", "x"], ["-dq", "0.1"]):
        with pytest.raises(script.OptionError):
            script.parse_options(bad)
    config, text = script.parse_options(["--help"])
    assert config is None and "-dq" in text


def test_bad_option_logs_red_and_leaves_image(script):
    pixels = _pixels(False, np.float32)
    siril = standin.SirilInterface(pixels)
    assert script.run_headless(siril, ["-O", "9"]) == 2
    assert siril.logs[0][1] == standin.LogColor.RED and "bad option" in siril.logs[0][0]
    np.testing.assert_array_equal(siril.pixels, pixels)


def test_no_image_and_busy(script):
    siril = standin.SirilInterface(None)
    assert script.run_headless(siril, FAST) == 1
    assert "no image loaded" in siril.logs[-1][0] and siril.logs[-1][1] == standin.LogColor.RED
    pixels = _pixels(False, np.float32)
    busy = standin.SirilInterface(pixels, busy=True)
    assert script.run_headless(busy, FAST) == 1
    assert "busy" in busy.logs[-1][0] and "Traceback" not in busy.logs[-1][0]
    np.testing.assert_array_equal(busy.pixels, pixels)
    assert ("reset_progress",) in busy.calls


def test_main_connection_and_dependency_failures(script, monkeypatch, capsys):
    monkeypatch.setattr(standin, "CONNECT_ERROR", standin.SirilConnectionError("socket gone"))
    assert script.main(FAST) == 1
    assert "cannot connect to Siril: socket gone" in capsys.readouterr().err
    monkeypatch.setattr(standin, "CONNECT_ERROR", None)
    monkeypatch.setattr(standin, "INSTALL_ERROR", standin.SirilError("pip failed"))
    pixels = _pixels(False, np.float32)
    monkeypatch.setattr(standin, "NEXT", {"pixels": pixels, "cli": True})
    logs = []
    monkeypatch.setattr(standin.SirilInterface, "log",
                        lambda self, m, color=standin.LogColor.DEFAULT: logs.append((m, color)))
    assert script.main(FAST) == 1
    assert "dependencies" in logs[-1][0] and "pip failed" in logs[-1][0]
    assert logs[-1][1] == standin.LogColor.RED


def test_main_headless_end_to_end(script, monkeypatch, tmp_path):
    pixels = _pixels(True, np.uint16)
    monkeypatch.setattr(standin, "NEXT", {"pixels": pixels, "cli": True})
    made = []
    original = standin.SirilInterface.__init__

    def init(self, *a, **k):
        original(self, *a, **k)
        made.append(self)
    monkeypatch.setattr(standin.SirilInterface, "__init__", init)
    model = tmp_path / "model.fit"
    assert script.main([*FAST, "--save-model", str(model)]) == 0
    assert standin.INSTALLED == [script.ENGINE_PACKAGES]  # no PyQt6 headless
    siril = made[0]
    assert siril.pixels.dtype == np.uint16 and siril.pixels.shape == pixels.shape
    from astropy.io import fits
    assert fits.getdata(model).shape == pixels.shape


def test_script_is_a_single_menu_entry_and_compiles(tmp_path):
    folder = SCRIPT.parent
    assert [p.name for p in folder.glob("*.py")] == ["BGOptimizer.py"]
    text = SCRIPT.read_text()
    assert 'check_module_version(">=1.0.0")' in text
    assert "SPDX-License-Identifier: GPL-3.0-or-later" in text and "VERSION = " in text
    ast.parse(text, feature_version=(3, 10))
    py_compile.compile(str(SCRIPT), doraise=True, cfile=str(tmp_path / "BGOptimizer.pyc"))
    # Module-level imports: the standard library and numpy only; PyQt6, sirilpy and
    # bgopt_plugin are imported inside functions, after ensure_installed().
    top = [n for n in ast.parse(text).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
    assert names == {"__future__", "argparse", "sys", "threading", "time", "pathlib", "numpy"}
    assert "tksiril" not in text


def test_gui_offscreen(script, monkeypatch):
    pytest.importorskip("PyQt6.QtWidgets")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    from PyQt6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    pixels = _pixels(True, np.float32)
    siril = standin.SirilInterface(pixels, cli=False)
    win = script.make_window(siril)
    from bgopt_plugin.core import PARAMETERS, Config

    # one widget per parameter, generated from the table, holding the defaults
    assert list(win.widgets) == [p.name for p in PARAMETERS]
    assert win.config() == Config()
    assert win.widgets["n_control_points"].toolTip().endswith("(--control-points)")
    win.widgets["epochs"].setValue(80)
    win.widgets["seed"].setValue(1)
    win.widgets["pedestal"].setCurrentText("0.01")
    win.widgets["downscaling_factor"].setValue(4)
    assert win.config() == Config(epochs=80, seed=1, pedestal=0.01, downscaling_factor=4)
    win.widgets["downscaling_factor"].setValue(0)
    win.widgets["pedestal"].setCurrentText("median")
    win.show_preview()
    assert not win.preview.pixmap().isNull()
    win.apply()
    assert not win.apply_btn.isEnabled()  # disabled while running
    deadline = time.time() + 120
    while win.result is None and time.time() < deadline:
        app.processEvents()
        time.sleep(0.05)
    assert win.result is not None and win.apply_btn.isEnabled()
    assert any(c[0] == "undo_save_state" for c in siril.calls)
    assert siril.logs[-1][1] == standin.LogColor.GREEN
    assert _spread(siril.pixels) < 0.3 * _spread(pixels)
    win.close()
