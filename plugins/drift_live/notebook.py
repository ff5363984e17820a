"""A run observer for notebooks: a matplotlib figure of the drift that updates while the run goes.

Example (in a Jupyter notebook)::

    import drift_framework as df
    from drift_live.notebook import LivePlot

    plot = LivePlot()
    summary = df.run("configs/quickstart.yaml", observers=[plot])

The figure shows, per axis, the uncorrected drift as measured, the correction (field of view moved), the residual
and, when the source knows it, the true drift, in nm (px on the right axis).  In a notebook it redraws in place
(``IPython.display``); elsewhere :attr:`LivePlot.figure` is an ordinary figure to save.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from drift_framework import hookimpl

__all__ = ["LivePlot"]


class LivePlot:
    """Run observer drawing the drift trajectory every ``every`` frames.

    Parameters
    ----------
    every : int
        Redraw every this many frames (drawing costs ~50 ms).
    """

    def __init__(self, every: int = 5):
        self.every = every
        self.rows: list[dict] = []
        self.figure: Any = None
        self._handle: Any = None
        self._px_nm = 1.0

    @hookimpl
    def drift_run_started(self, run: Any) -> None:
        import matplotlib.pyplot as plt

        self.rows = []
        self._px_nm = run.pixel_size_nm or 1.0
        self.figure, self.axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
        self.figure.suptitle(f"{run.recipe.name}: drift (nm; px on the right)")
        self.lines: dict[str, list] = {}
        styles = {"uncorrected drift (measured)": dict(color="0.5", ls="--", lw=2.5),
                  "correction (field of view moved)": dict(color="C0", lw=1.5),
                  "residual (measured)": dict(color="C3", ls="none", marker=".", ms=4),
                  "uncorrected drift (truth)": dict(color="k", ls=":", lw=1)}
        for ax, axis in zip(self.axes, "yx"):
            for name, style in styles.items():
                self.lines.setdefault(name, []).append(ax.plot([], [], label=name, **style)[0])
            ax.set_ylabel(f"d{axis} (nm)")
            ax.secondary_yaxis("right", functions=(lambda v: v / self._px_nm, lambda v: v * self._px_nm)) \
                .set_ylabel("px")
        self.axes[0].legend(fontsize=7, loc="upper left")
        self.axes[1].set_xlabel("frame")
        self._handle = _display(self.figure, None)

    @hookimpl
    def drift_step_completed(self, run: Any, step: Any) -> None:
        self.rows.append(step.row())
        if len(self.rows) % self.every == 0:
            self.draw()

    @hookimpl
    def drift_run_finished(self, run: Any, summary: Any) -> None:
        if self.figure is not None:
            self.draw()
            self.figure.suptitle(f"{run.recipe.name}: drift (nm; px on the right) — {summary.stop_reason}")

    def draw(self) -> None:
        """Put the rows recorded so far on the figure."""
        index = np.array([r["index"] for r in self.rows], float)
        column = {name: np.array([r[name] for r in self.rows], float) * self._px_nm
                  for name in ("offset", "fov", "true_drift")}
        values = {"uncorrected drift (measured)": column["offset"] + column["fov"],
                  "correction (field of view moved)": column["fov"], "residual (measured)": column["offset"],
                  "uncorrected drift (truth)": column["true_drift"]}
        for name, lines in self.lines.items():
            for k, line in enumerate(lines):
                line.set_data(index, values[name][:, k])
        for ax in self.axes:
            ax.relim()
            ax.autoscale_view()
        self.figure.canvas.draw_idle()
        self._handle = _display(self.figure, self._handle)


def _display(figure: Any, handle: Any) -> Any:
    """Show or refresh the figure in a notebook (IPython); nothing outside one."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return None
    if get_ipython() is None:
        return None
    if handle is None:
        return display(figure, display_id=True)
    handle.update(figure)
    return handle
