"""bgopt against the original bgoptimizer on the same 6 MP frame, end to end, in one run.

The original (github.com/sergio-dr/bgoptimizer) needs TensorFlow 2.15 and
tensorflow-addons 0.23, which cannot live beside bgopt's TensorFlow; give it its own venv
and point this script at that venv's python and at a git snapshot of its sources (for
example the folder the workplace's ``fetch`` tool returns). The sources are unpacked into
a temporary folder for the run; nothing of them enters this project.

    python3 -m venv orig-venv
    orig-venv/bin/pip install "tensorflow-cpu==2.15.1" "tensorflow-addons==0.23.0" \\
        "numpy<2" scikit-image matplotlib xisf
    python benchmarks/compare_original.py --original-python orig-venv/bin/python \\
        --original-git /path/to/sergio-dr+bgoptimizer/repo

Both run from the command line on the same XISF master (the original reads XISF only),
with their default options, as a user would; the wall time includes each one's
TensorFlow import. The residual is the benchmarks' (RMS of model - truth over every
pixel, the galaxy's included, median offset removed, / peak-to-peak of the truth, worst
channel), computed on each tool's written background model.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmarks import make_master  # noqa: E402

SHAPE = (2000, 3000, 3)   # 6 MP RGB, as the benchmarks' 6mp case


def _unpack(git_dir: Path, into: Path) -> Path:
    # The Python sources only: snapshots may lack large files (the README images).
    archive = subprocess.run(["git", f"--git-dir={git_dir}", "archive", "HEAD", "--", "*.py"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def _timed(cmd: list[str], cwd: Path, env: dict) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return wall


def _residual(model_path: Path, truth: np.ndarray) -> float:
    from xisf import XISF

    from bgopt_plugin.data.synthetic import residual_score

    model = np.asarray(XISF(str(model_path)).read_image(0), dtype=np.float32)
    step = 4
    return residual_score(model[::step, ::step], truth[::step, ::step],
                          np.ones(truth[::step, ::step].shape[:2], bool))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--original-python", required=True, help="python of the TF 2.15 + tfa venv")
    p.add_argument("--original-git", required=True, type=Path,
                   help="git directory of a sergio-dr/bgoptimizer snapshot")
    p.add_argument("--repeat", type=int, default=1, help="runs of each tool (best is kept)")
    args = p.parse_args()
    from xisf import XISF

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        image, truth = make_master(SHAPE)
        src = work / "master.xisf"
        XISF.write(str(src), image, creator_app="bgopt benchmarks")
        original = _unpack(args.original_git, work / "original")
        # The original prints tensorflow.keras.__version__, which TF 2.15's lazy keras
        # module lacks (it had it in the TF 2.8 days the tool was written for): a
        # sitecustomize on the original's path sets it, and changes nothing else.
        shim = work / "shim"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(
            "import keras\nimport keras.api._v2.keras as _k\n_k.__version__ = keras.__version__\n")
        env = {**os.environ, "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "3"}
        env_original = {**env, "PYTHONPATH": str(shim)}
        rows = []
        for label, cmd, model, run_env in (
            ("bgoptimizer (original, defaults)",
             [args.original_python, str(original / "bgoptimizer.py"), str(src), str(work / "o1")],
             work / "o1" / "master_bgModel.xisf", env_original),
            ("bgopt (defaults, --seed 1)",
             [sys.executable, "-m", "bgopt_plugin", str(src), "-o", str(work / "o2"), "--seed",
              "1", "-q", "--overwrite"],
             work / "o2" / "master_bgModel.xisf", env),
        ):
            model.parent.mkdir(exist_ok=True)
            wall = min(_timed(cmd, work, run_env) for _ in range(args.repeat))
            rows.append((label, wall, _residual(model, truth)))
            print(f"{label}: {wall:.1f} s, residual {100 * rows[-1][2]:.2f}%", flush=True)
    (_, t_orig, r_orig), (_, t_new, r_new) = rows
    print("\n| tool | end to end | residual (all pixels) |\n|---|---|---|")
    for label, wall, res in rows:
        print(f"| {label} | {wall:.1f} s | {100 * res:.2f}% |")
    print(f"\nbgopt is {t_orig / t_new:.1f}x faster, residual {100 * r_new:.2f}% vs {100 * r_orig:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
