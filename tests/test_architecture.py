"""The layout's rules, checked on the source: one core, IO adapters, hosts on the core's API."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import bgopt_plugin.core as core
import bgopt_plugin.io as bio

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


IO_USERS = [*sorted((PKG / "cli").glob("*.py")), PKG / "astropy_api.py",
            *sorted((PKG / "frontend").glob("*.py")), ROOT / "siril_script" / "BGOptimizer.py"]


def _absolute(path: Path, module: str, level: int) -> str:
    if not level:
        return module
    base = path.relative_to(ROOT).with_suffix("").parts[:-level]
    return ".".join([*base, module] if module else base)


@pytest.mark.parametrize("path", IO_USERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_hosts_use_only_the_io_public_api(path):
    for module, level, names in _imports(path):
        target = _absolute(path, module, level)
        if not target.startswith("bgopt_plugin.io"):
            continue
        assert target == "bgopt_plugin.io", f"{path.name} imports the IO module {target}"
        private = sorted(set(names) - set(bio.__all__) - {"*"})
        assert not private, f"{path.name} imports {private}, not in bgopt_plugin.io.__all__"


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")) + [ROOT / "siril_script" / "BGOptimizer.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_private_is_imported_from_another_module(path):
    for module, level, names in _imports(path):
        target = _absolute(path, module, level)
        if target.startswith("bgopt_plugin") and target != _absolute(path, "", 1):
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            assert not private, f"{path.name} imports {private} from {target}"


def _module_graph() -> dict[str, set[str]]:
    """bgopt_plugin's modules and the modules of the package each imports (any depth)."""
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        deps = graph.setdefault(name, set())
        for module, level, names in _imports(path):
            if level and path.name == "__init__.py":
                level -= 1   # a package's relative import starts at the package itself
                base = name.split(".")
                target = ".".join(base[:len(base) - level] + ([module] if module else []))
            else:
                target = _absolute(path, module, level)
            if not target.startswith("bgopt_plugin"):
                continue
            for candidate in [f"{target}.{n}" for n in names] + [target]:
                if (ROOT / Path(*candidate.split("."))).with_suffix(".py").exists():
                    deps.add(candidate)
                    break
                if (ROOT / Path(*candidate.split(".")) / "__init__.py").exists():
                    deps.add(candidate)
                    break
    return graph


def test_no_import_cycles():
    graph = _module_graph()
    assert "bgopt_plugin.cli.job" in graph["bgopt_plugin.cli.parallel"]
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if dep == node or dep.startswith(node + ".") or node.startswith(dep + "."):
                continue   # a package and its own modules
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(dep):] + [dep])
                            if dep in trail else f"import cycle through {dep}")
            if not state.get(dep):
                visit(dep, trail + [dep])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [node])


def test_no_function_is_longer_than_100_lines():
    long = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 100:
                    long.append(f"{path.relative_to(ROOT)}:{node.name} ({length} lines)")
    assert not long, long


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
