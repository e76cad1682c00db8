"""Progress for the hosts that print to a terminal: engine ProgressEvents to tqdm bars.

Shared by the ``bgopt`` command line and the astropy functions (``progress=True``).
"""

from __future__ import annotations

import sys

from ..core import ProgressEvent

__all__ = ["TqdmProgress"]

#: Stages shown as a bar, with their unit.
_UNITS = {"protect": "step", "fit": "epoch", "evaluate": "chunk", "correct": "chunk"}


class TqdmProgress:
    """Callable for ``Config.progress``: one tqdm bar per stage.

    A bar opens when its stage starts, with the stage's total, and advances by the steps
    done since the last event, so tqdm's rate is the true one. A fit that stops early on
    a plateau completes its bar and says at which epoch it converged.

    Parameters
    ----------
    file : file-like, optional
        Where the bars go (default: standard error).
    leave : bool
        Keep finished bars on screen.
    """

    def __init__(self, file=None, leave: bool = False):
        self.file = file or sys.stderr
        self.leave = leave
        self.bar = None
        self.stage: str | None = None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.stage = None, None

    def __call__(self, ev: ProgressEvent) -> None:
        from tqdm import tqdm

        if ev.stage not in _UNITS:
            if ev.stage == "done":
                self.close()
            return
        if self.stage != ev.stage:
            self.close()
            self.bar = tqdm(total=ev.total, desc=f"  {ev.stage:8s}", unit=_UNITS[ev.stage],
                            leave=self.leave, file=self.file, dynamic_ncols=True)
            self.stage = ev.stage
        bar = self.bar
        if ev.loss is not None:
            bar.set_postfix_str(f"loss={ev.loss:.4f}" + (f", {ev.message}" if "converged" in ev.message
                                                          else ""), refresh=False)
        if ev.step > bar.n:
            bar.update(ev.step - bar.n)
        if ev.step >= ev.total:
            self.close()
