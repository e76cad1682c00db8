"""Plan a command-line batch before anything is read or written.

Every output path of every file is known up front, so a file whose outputs would
replace an input of the batch, clash with another file's outputs, or replace an
existing file without ``--overwrite`` is refused before any work, and the rest of the
batch goes on.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import io as bio

__all__ = ["Job", "Plan", "expand", "output_paths", "job_targets", "plan_batch", "OUTPUT_SUFFIXES",
           "is_own_output"]

#: What bgopt appends to a file's stem for each output.
OUTPUT_SUFFIXES = ("_bgSubtracted", "_bgModel", "_preview")
_OWN = re.compile(r"_(bgSubtracted|bgModel)(_before_after|_loss|_mask)?$")


def is_own_output(name: str) -> bool:
    """Whether a file name (a temporary's target included) is one bgopt writes.

    Examples
    --------
    >>> is_own_output("m31_bgSubtracted.fits"), is_own_output("m31_bgModel.png")
    (True, True)
    >>> is_own_output("m31_preview.png"), is_own_output("m31.fits")
    (True, False)
    """
    stem = split_name(Path(name))[0]
    return bool(_OWN.search(stem)) or stem.endswith("_preview")


def split_name(path: Path) -> tuple[str, str]:
    """(stem, extension) with ``.fits.fz`` style double extensions handled."""
    name = path.name
    lower = name.lower()
    for ext in (".fits.fz", ".fit.fz", ".fts.fz"):
        if lower.endswith(ext):
            return name[: -len(ext)], name[-len(ext):-3]
    if lower.endswith(".fz"):
        return name[:-3], ".fits"
    return path.stem, path.suffix


def output_paths(src: Path, out_dir: Path, fmt: str = "same") -> tuple[Path, Path]:
    """``<stem>_bgSubtracted<ext>`` and ``<stem>_bgModel<ext>`` in ``out_dir``.

    Examples
    --------
    >>> [p.name for p in output_paths(Path("m31.fit"), Path("."))]
    ['m31_bgSubtracted.fit', 'm31_bgModel.fit']
    >>> output_paths(Path("a.fits.fz"), Path("."))[0].name
    'a_bgSubtracted.fits'
    >>> output_paths(Path("a.fits"), Path("."), "xisf")[0].name
    'a_bgSubtracted.xisf'
    """
    stem, ext = split_name(src)
    if fmt == "fits" and ext.lower() not in (".fit", ".fits", ".fts"):
        ext = ".fits"
    elif fmt == "xisf":
        ext = ".xisf"
    elif fmt == "tiff" and ext.lower() not in (".tif", ".tiff"):
        ext = ".tif"
    return out_dir / f"{stem}_bgSubtracted{ext}", out_dir / f"{stem}_bgModel{ext}"


def job_targets(src: Path, out_dir: Path, fmt: str = "same", *, model: bool = True,
                plots: bool = False, preview: bool = False) -> dict[str, Path]:
    """Every file a job writes, by kind.

    Examples
    --------
    >>> sorted(job_targets(Path("a.fits"), Path("o"), plots=True))
    ['before_after', 'corrected', 'loss', 'mask_png', 'model', 'model_png']
    >>> job_targets(Path("a.fits"), Path("o"), preview=True)["preview"].name
    'a_preview.png'
    """
    if preview:
        return {"preview": out_dir / f"{split_name(src)[0]}_preview.png"}
    corrected, model_path = output_paths(src, out_dir, fmt)
    targets = {"corrected": corrected}
    if model:
        targets["model"] = model_path
    if plots:
        c_stem, m_stem = split_name(corrected)[0], split_name(model_path)[0]
        targets["before_after"] = out_dir / f"{c_stem}_before_after.png"
        targets["model_png"] = out_dir / f"{m_stem}.png"
        targets["loss"] = out_dir / f"{c_stem}_loss.png"
        targets["mask_png"] = out_dir / f"{c_stem}_mask.png"
    return targets


@dataclass
class Job:
    """One input and the files it will write."""

    src: Path
    targets: dict[str, Path]


@dataclass
class Plan:
    """The jobs to run, the inputs refused up front (one message each), the inputs whose
    outputs exist and are kept (``--skip-existing``), and notes."""

    jobs: list[Job] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (input, message)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def expand(inputs: list[str]) -> tuple[list[tuple[Path, bool]], list[str]]:
    """Inputs as paths, each with whether it came from a pattern, and the patterns that
    matched nothing.

    An argument that names an existing file is that file, whatever characters it holds;
    otherwise it is expanded as a glob pattern (sorted).
    """
    out: list[tuple[Path, bool]] = []
    unmatched: list[str] = []
    for item in inputs:
        if Path(item).exists() or not any(ch in item for ch in "*?["):
            out.append((Path(item), False))
            continue
        matches = sorted(glob.glob(item))
        if matches:
            out.extend((Path(m), True) for m in matches)
        else:
            unmatched.append(item)
    return out, unmatched


def _too_long(src: Path, targets: dict[str, Path]) -> str | None:
    """A one-line problem when an output's name (or its temporary's) is too long."""
    for target in targets.values():
        if len(os.fsencode(target.name)) > bio.MAX_TARGET_NAME:
            return (f"{src}: the output name {target.name[:40]}... is too long for the file "
                    f"system ({len(os.fsencode(target.name))} bytes; at most "
                    f"{bio.MAX_TARGET_NAME}): rename the input")
    return None


def _key(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def plan_batch(inputs: list[str], out_dir: Path, fmt: str = "same", *, model: bool = True,
               plots: bool = False, preview: bool = False, overwrite: bool = False,
               skip_existing: bool = False) -> Plan:
    """Decide, before any work, which inputs run, which are skipped (``skip_existing``:
    every output exists) and which are refused, and why."""
    plan = Plan()
    listed, unmatched = expand(inputs)
    for pattern in unmatched:
        plan.refused.append((pattern, f"{pattern}: no file matches"))
    skipped = [p for p, from_pattern in listed if from_pattern and is_own_output(p.name)]
    if skipped:
        names = ", ".join(p.name for p in skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        plan.notes.append(f"skipped {len(skipped)} file(s) that bgopt wrote ({names}); "
                          "name a file explicitly to process it")
    candidates, seen = [], set()
    for path, from_pattern in listed:
        if from_pattern and is_own_output(path.name):
            continue
        if _key(path) in seen:
            plan.notes.append(f"{path}: listed twice, processed once")
            continue
        seen.add(_key(path))
        candidates.append(path)
    inputs_by_key = {_key(p): p for p in candidates}
    claimed: dict[Path, Path] = {}
    for src in candidates:
        try:
            bio.format_of(src)
            bio.check_regular_file(src)
        except bio.ImageIOError as exc:
            plan.refused.append((str(src), str(exc)))
            continue
        targets = job_targets(src, out_dir, fmt, model=model, plots=plots, preview=preview)
        if skip_existing and all(t.exists() for t in targets.values()):
            plan.skipped.append(str(src))
            continue
        problem = _too_long(src, targets)
        for target in targets.values() if problem is None else ():
            key = _key(target)
            if key in inputs_by_key:
                problem = (f"{src}: its output {target} would replace {inputs_by_key[key]}, "
                           "an input of this batch")
            elif key in claimed:
                problem = f"{src}: its output {target} is also the output of {claimed[key]}"
            elif target.exists() and not overwrite:
                problem = f"{target}: output exists (use --overwrite to replace it)"
            if problem:
                break
        if problem:
            plan.refused.append((str(src), problem))
            continue
        for target in targets.values():
            claimed[_key(target)] = src
        plan.jobs.append(Job(src, targets))
    return plan
