"""Progress adapters: engine ProgressEvents to tqdm bars."""

from __future__ import annotations

import sys

from .config import ProgressEvent

__all__ = ["TqdmProgress"]


class TqdmProgress:
    """Callable for ``Config.progress`` that shows one tqdm bar per stage.

    Examples
    --------
    >>> import numpy as np, bgopt_plugin as bgopt
    >>> bar = TqdmProgress()
    >>> # bgopt.fit_background(image, progress=bar)
    """

    def __init__(self, file=None, leave: bool = False):
        self.file = file or sys.stderr
        self.leave = leave
        self.bar = None
        self.label: str | None = None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.label = None, None

    def __call__(self, ev: ProgressEvent) -> None:
        from tqdm import tqdm

        if ev.stage not in ("fit", "protect", "evaluate"):
            if ev.stage == "done":
                self.close()
            return
        label = ev.message if ev.stage == "protect" else ev.stage
        if self.label != label:
            self.close()
            unit = "chunk" if ev.stage == "evaluate" else "epoch"
            self.bar = tqdm(total=max(ev.total, ev.step), desc=f"  {label:8s}", unit=unit,
                            leave=self.leave, file=self.file, dynamic_ncols=True)
            self.label = label
        self.bar.total = max(self.bar.total, ev.total, ev.step)
        self.bar.n = ev.step
        if ev.loss is not None:
            self.bar.set_postfix(loss=f"{ev.loss:.4f}", refresh=False)
        self.bar.refresh()
