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

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "siril_script" / "BGOptimizer.py"
FAST = ["-e", "80", "--seed", "1"]


@pytest.fixture
def script(monkeypatch, tmp_path):
    """The script with the stand-in as sirilpy; pip is replaced by a recorder and the
    install stamp lives in a temporary folder (the test venv is never touched)."""
    monkeypatch.setitem(sys.modules, "sirilpy", standin)
    monkeypatch.setattr(standin, "INSTALL_ERROR", None)
    monkeypatch.setattr(standin, "CONNECT_ERROR", None)
    monkeypatch.setattr(standin, "NEXT", {})
    monkeypatch.setattr(standin, "INSTALLED", [])
    spec = importlib.util.spec_from_file_location("BGOptimizer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.pip_installs = []
    monkeypatch.setattr(module, "STAMP", tmp_path / "stamp.json")
    monkeypatch.setattr(module, "install_checkout",
                        lambda root, extras=(): module.pip_installs.append((root, extras)))
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


def test_bad_option_logs_red_and_stops_a_headless_script(script):
    # Headless, the image is closed so that the .ssf's next command (save) fails.
    pixels = _pixels(False, np.float32)
    siril = standin.SirilInterface(pixels, cli=True)
    assert script.run_headless(siril, ["-O", "9"]) == 2
    assert siril.logs[0][1] == standin.LogColor.RED and "bad option" in siril.logs[0][0]
    assert not siril.is_image_loaded() and ("cmd", "close") in siril.calls
    # In the GUI (the Scripts menu: is_cli() False) the user's image is never closed.
    gui = standin.SirilInterface(pixels, cli=False)
    assert script.run_headless(gui, ["-O", "9"]) == 2
    np.testing.assert_array_equal(gui.pixels, pixels)
    assert not any(c[0] == "cmd" for c in gui.calls)


def test_no_image_and_busy(script):
    siril = standin.SirilInterface(None)
    assert script.run_headless(siril, FAST) == 1
    assert "no image loaded" in siril.logs[-1][0] and siril.logs[-1][1] == standin.LogColor.RED
    pixels = _pixels(False, np.float32)
    busy = standin.SirilInterface(pixels, busy=True, cli=False)
    assert script.run_headless(busy, FAST) == 1
    assert "busy" in busy.logs[-1][0] and "Traceback" not in busy.logs[-1][0]
    np.testing.assert_array_equal(busy.pixels, pixels)
    assert ("reset_progress",) in busy.calls
    headless = standin.SirilInterface(pixels, busy=True, cli=True)
    assert script.run_headless(headless, FAST) == 1
    assert "busy" in headless.logs[-1][0] and not headless.is_image_loaded()


def test_main_connection_and_dependency_failures(script, monkeypatch, capsys):
    monkeypatch.setattr(standin, "CONNECT_ERROR", standin.SirilConnectionError("socket gone"))
    assert script.main(FAST) == 1
    assert "cannot connect to Siril: socket gone" in capsys.readouterr().err
    monkeypatch.setattr(standin, "CONNECT_ERROR", None)

    def pip_fails(root, extras=()):
        raise script.SetupError(f"pip could not install {root}: ERROR: no matching distribution")
    monkeypatch.setattr(script, "install_checkout", pip_fails)
    made = _record_interfaces(monkeypatch)
    monkeypatch.setattr(standin, "NEXT", {"pixels": _pixels(False, np.float32), "cli": True})
    assert script.main(FAST) == 1
    siril = made[0]
    assert siril.logs[-1] == (f"BGOptimizer: pip could not install {script.checkout_root()}: "
                              "ERROR: no matching distribution", standin.LogColor.RED)
    assert not siril.is_image_loaded()          # the .ssf's next command fails
    assert not script.STAMP.exists()            # and the next run tries again


def _record_interfaces(monkeypatch) -> list:
    made = []
    original = standin.SirilInterface.__init__

    def init(self, *a, **k):
        original(self, *a, **k)
        made.append(self)
    monkeypatch.setattr(standin.SirilInterface, "__init__", init)
    return made


def test_main_headless_end_to_end(script, monkeypatch, tmp_path):
    pixels = _pixels(True, np.uint16)
    monkeypatch.setattr(standin, "NEXT", {"pixels": pixels, "cli": True})
    made = _record_interfaces(monkeypatch)
    model = tmp_path / "model.fit"
    assert script.main([*FAST, "--save-model", str(model)]) == 0
    # The first run installs the checkout itself (no PyQt6 headless); the next one, with
    # the checkout unchanged and every requirement met, installs nothing.
    assert script.pip_installs == [(REPO, ())]
    assert script.main([*FAST, "--save-model", str(tmp_path / "model2.fit")]) == 0
    assert script.pip_installs == [(REPO, ())] and standin.INSTALLED == []
    siril = made[0]
    assert siril.pixels.dtype == np.uint16 and siril.pixels.shape == pixels.shape
    from astropy.io import fits
    assert fits.getdata(model).shape == pixels.shape


def test_script_is_a_single_menu_entry_and_compiles(tmp_path):
    folder = SCRIPT.parent
    assert [p.name for p in folder.glob("*.py")] == ["BGOptimizer.py"]
    text = SCRIPT.read_text()
    assert 'check_module_version(">=1.0.0")' in text
    assert "SPDX-License-Identifier: GPL-3.0-or-later" in text
    ast.parse(text, feature_version=(3, 10))
    py_compile.compile(str(SCRIPT), doraise=True, cfile=str(tmp_path / "BGOptimizer.pyc"))
    # Module-level imports: the standard library and numpy only; PyQt6, sirilpy and
    # bgopt_plugin are imported inside functions, after ensure_installed().
    top = [n for n in ast.parse(text).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
    assert names == {"__future__", "argparse", "hashlib", "json", "subprocess", "sys", "threading",
                     "time", "pathlib", "numpy"}
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


# --------------------------------------------------------------------------- set-up
def _declared_dependencies() -> set[str]:
    """Distribution names that ``pip install <checkout>`` brings: pyproject's dependencies."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name.lower().replace("_", "-") for r in project["dependencies"]}


def _runtime_imports() -> dict[str, str]:
    """Top-level modules that bgopt_plugin imports outside an ``except ImportError`` guard,
    with one file that imports each."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "bgopt_plugin").rglob("*.py")):
        tree = ast.parse(path.read_text())
        guarded = set()
        caught = ("ImportError", "ModuleNotFoundError")
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                    isinstance(h.type, ast.Name) and h.type.id in caught for h in node.handlers):
                guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
            elif isinstance(node, ast.With) and any(   # with contextlib.suppress(ImportError)
                    isinstance(item.context_expr, ast.Call)
                    and any(isinstance(a, ast.Name) and a.id in caught for a in item.context_expr.args)
                    for item in node.items):
                guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    return found


def _undeclared(declared: set[str]) -> list[str]:
    """Third-party modules the package imports that no distribution in ``declared`` provides."""
    from importlib import metadata

    providers = metadata.packages_distributions()
    missing = []
    for module, where in _runtime_imports().items():
        if module in sys.stdlib_module_names or module == "bgopt_plugin":
            continue
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [module])}
        if not dists & declared:
            missing.append(f"{module} (imported by {where}; from {sorted(dists)})")
    return missing


def test_the_installation_satisfies_every_runtime_import():
    # The script installs the checkout, so what it brings is pyproject's dependencies;
    # every third-party module the package imports must come from one of them.
    missing = _undeclared(_declared_dependencies())
    assert not missing, f"imported but not in pyproject's dependencies: {missing}"


def test_an_undeclared_import_is_reported():
    # What the last round missed: threadpoolctl imported, not in the installed list.
    declared = _declared_dependencies()
    assert {"numpy", "scipy", "astropy", "tensorflow", "keras"} <= set(_runtime_imports())
    missing = _undeclared(declared - {"threadpoolctl"})
    assert len(missing) == 1 and missing[0].startswith("threadpoolctl (imported by bgopt_plugin/")


def _fake_checkout(root: Path) -> Path:
    (root / "bgopt_plugin").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'bgopt'\n")
    (root / "bgopt_plugin" / "__init__.py").write_text("")
    (root / "siril_script").mkdir()
    return root


def test_checkout_is_installed_once_and_again_when_it_changes(script, tmp_path, monkeypatch):
    root = _fake_checkout(tmp_path / "checkout")
    monkeypatch.setattr(script, "checkout_root", lambda: root)
    siril = standin.SirilInterface(_pixels(False, np.float32))
    script.prepare_engine(siril, gui=False)
    assert script.pip_installs == [(root, ())]
    assert "installing bgopt from" in siril.logs[0][0]
    script.prepare_engine(siril, gui=False)                    # unchanged: nothing to do
    assert len(script.pip_installs) == 1
    (root / "bgopt_plugin" / "__init__.py").write_text("x = 1\n")   # a git pull
    script.prepare_engine(siril, gui=False)
    assert script.pip_installs[-1] == (root, ())
    (root / "pyproject.toml").write_text("[project]\nname = 'bgopt'\ndependencies = ['x']\n")
    script.prepare_engine(siril, gui=False)
    assert len(script.pip_installs) == 3


def test_unmet_requirement_reinstalls_the_checkout_with_the_gui_extra(script, monkeypatch):
    monkeypatch.setattr(script, "unmet_requirements",
                        lambda extras=(): ["PyQt6>=6.5"] if extras else [])
    script.prepare_engine(standin.SirilInterface(None), gui=False)
    script.prepare_engine(standin.SirilInterface(None), gui=True)
    assert script.pip_installs == [(REPO, ()), (REPO, ("gui",))]


def _fake_dist(site: Path, name: str, requires: list[str]) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0",
             *[f"Requires-Dist: {r}" for r in requires]]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


def test_unmet_requirements_reads_the_installed_metadata(script, tmp_path, monkeypatch):
    site = tmp_path / "site"
    _fake_dist(site, "bgoptfake", ["numpy>=1.0", "numpy>=999", "surely-not-installed-pkg",
                                   "PyQt6>=999; extra == 'gui'", "scipy; python_version < '3'"])
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(script, "DIST", "bgoptfake")
    assert script.unmet_requirements() == ["numpy>=999", "surely-not-installed-pkg"]
    assert script.unmet_requirements(("gui",))[-1].startswith("PyQt6>=999")
    monkeypatch.setattr(script, "DIST", "no-such-dist-bgopt")
    assert script.unmet_requirements() == ["no-such-dist-bgopt"]
    # The package installed in this test environment satisfies its own requirements.
    monkeypatch.setattr(script, "DIST", "bgopt")
    assert script.unmet_requirements(("gui",)) == []


def test_copied_alone_uses_the_installed_bgopt_or_says_what_to_run(script, monkeypatch):
    monkeypatch.setattr(script, "checkout_root", lambda: None)
    siril = standin.SirilInterface(None)
    script.prepare_engine(siril, gui=False)                    # bgopt is installed here
    assert script.pip_installs == [] and standin.INSTALLED == []
    # an unmet requirement goes through sirilpy's ensure_installed, with its floor
    monkeypatch.setattr(script, "unmet_requirements", lambda extras=(): ["PyQt6>=6.5"])
    script.prepare_engine(siril, gui=True)
    assert standin.INSTALLED == [(["PyQt6"], [">=6.5"])]
    monkeypatch.setattr(script, "unmet_requirements", lambda extras=(): [script.DIST])
    with pytest.raises(script.SetupError) as err:
        script.prepare_engine(siril, gui=False)
    message = str(err.value)
    assert f'"{sys.executable}" -m pip install' in message and "\n" not in message
