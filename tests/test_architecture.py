"""The layout's rules, checked on the source: one core, IO adapters, hosts on the core's API."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import bgopt_plugin.core as core

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "bgopt_plugin"
HOSTS = [*sorted((PKG / "cli").glob("*.py")), PKG / "astropy_api.py",
         *sorted((PKG / "frontend").glob("*.py")), *sorted((PKG / "io").glob("*.py")),
         ROOT / "siril_script" / "BGOptimizer.py"]


def _imports(path: Path):
    """(module as written, level, names) of every import in a file, nested ones included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, 0, []


def _core_target(path: Path, module: str, level: int) -> str | None:
    """The absolute module an import names when it is in bgopt_plugin.core, else None."""
    if level:
        base = path.relative_to(ROOT).with_suffix("").parts[:-level]
        absolute = ".".join([*base, module] if module else base)
    else:
        absolute = module
    return absolute if absolute.startswith("bgopt_plugin.core") else None


@pytest.mark.parametrize("path", HOSTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_hosts_use_only_the_core_public_api(path):
    for module, level, names in _imports(path):
        target = _core_target(path, module, level)
        if target is None:
            continue
        assert target == "bgopt_plugin.core", f"{path.name} imports the core stage {target}"
        private = sorted(set(names) - set(core.__all__))
        assert not private, f"{path.name} imports {private}, not in bgopt_plugin.core.__all__"


def test_core_imports_no_host_and_tensorflow_only_in_the_optimizer():
    for path in sorted((PKG / "core").glob("*.py")):
        for module, level, _ in _imports(path):
            if level >= 2 or module.startswith("bgopt_plugin"):
                pytest.fail(f"core/{path.name} imports {'.' * level}{module} outside the core")
            if module.split(".")[0] == "tensorflow":
                assert path.name == "_tf.py", f"core/{path.name} imports TensorFlow"
    users = [p.name for p in (PKG / "core").glob("*.py") if "_tf import" in p.read_text()]
    assert users == ["optimize.py"]


def test_demo_does_not_import_the_command_line():
    for module, level, _ in _imports(PKG / "cli" / "demo.py"):
        assert not (level == 1 and module in ("app", "")) and "cli" not in module


def test_evaluating_and_correcting_need_no_tensorflow():
    code = ("import sys, numpy as np\n"
            "import bgopt_plugin as bgopt, bgopt_plugin.astropy_api, bgopt_plugin.cli\n"
            "from bgopt_plugin.core import BackgroundModel, Config, correct, prepare\n"
            "from bgopt_plugin.core.spline import SplineParams, solve\n"
            "img = np.random.default_rng(0).random((64, 96, 1)).astype(np.float32) + 1\n"
            "prep = prepare(img)\n"
            "pts = np.random.default_rng(1).random((9, 2)) * [64 / 96, 1]\n"
            "w, v = solve(pts, np.ones((9, 1)), 2, 0.1)\n"
            "model = BackgroundModel(SplineParams(pts, w, v, 2), prep.stretch, (64, 96))\n"
            "out = correct(img, model.evaluate(), Config())\n"
            "assert out.shape == img.shape and np.isfinite(out).all()\n"
            "assert 'tensorflow' not in sys.modules, 'imported outside the fit'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
