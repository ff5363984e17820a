"""``drift report RUN.h5``: figures and a markdown summary of a run (finished, running, or killed).

Figures are PNGs whose text metadata lists their panels (``Panels``), so tools and tests can check what a figure
shows without looking at it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .store import STATUS, RunData, read_run


def _figure(rows: int, title: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, 1, figsize=(9, 2.6 * rows), sharex=True, squeeze=False)
    fig.suptitle(title)
    return fig, axes[:, 0]


def save_figure(fig: Any, path: Path, panels: list[str]) -> Path:
    """Save a PNG whose text metadata lists its panels (``Panels``: JSON), then close the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Panels": json.dumps(panels), "Software": "drift_framework"})
    plt.close(fig)
    return path


def _frame_rows(steps: dict) -> np.ndarray:
    """Rows of frames (not tracking-region sub-scans; files written before regions existed have none)."""
    region = steps.get("region")
    return np.ones(len(steps["index"]), bool) if region is None else region == 0


def trajectories(run: RunData, path: Path) -> Path:
    s = run.steps
    i = s["index"]
    f = _frame_rows(s)  # truth and field of view per frame; measurements from every row (sub-scans too)
    fig, ax = _figure(3, f"{run.attrs.get('name', '')}: drift and correction")
    panels = []
    for k, axis in enumerate("yx"):
        a = ax[k]
        if np.isfinite(s["true_drift"]).any():
            a.plot(i[f], s["true_drift"][f, k], color="0.6", label="uncorrected drift (truth)")
        a.plot(i, s["offset"][:, k], ".", ms=3, label="measured offset")
        if np.isfinite(s["true_offset"]).any():
            a.plot(i[f], s["true_offset"][f, k], lw=1, label="residual (truth)")
        a.plot(i[f], s["fov"][f, k], lw=1, label="field of view moved")
        a.set_ylabel(f"d{axis} (px)")
        a.legend(fontsize=7, loc="upper left")
        panels.append(f"d{axis} trajectories")
    bad = np.isin(s["status"], (3, 4, 5))
    res = np.hypot(*s["true_offset"].T) if np.isfinite(s["true_offset"]).any() else np.hypot(*s["offset"].T)
    ax[2].plot(i[f], res[f], lw=1, label="|residual| (truth)" if np.isfinite(s["true_offset"]).any() else "|offset|")
    ax[2].plot(i[bad], res[bad], "rx", label="gated / bad / paused")
    ax[2].set_ylabel("px")
    ax[2].set_xlabel("frame")
    ax[2].legend(fontsize=7)
    panels.append("residual magnitude and skipped steps")
    return save_figure(fig, path, panels)


def commands(run: RunData, path: Path) -> Path:
    s = run.steps
    i = s["index"]
    fig, ax = _figure(3, f"{run.attrs.get('name', '')}: commands and estimates")
    for k, axis in enumerate("yx"):
        ax[0].plot(i, s["command"][:, k], lw=1, label=f"command {axis}")
    clipped = s["clipped"] > 0
    ax[0].plot(i[clipped], s["command"][clipped, 0], "r^", label="clipped by limits")
    ax[0].set_ylabel("actuator units")
    ax[0].legend(fontsize=7)
    ax[1].semilogy(i, np.where(s["sigma"] > 0, s["sigma"], np.nan), lw=1, label="sigma")
    ax[1].set_ylabel("sigma (px)")
    ax[2].plot(i, s["confidence"], lw=1, label="confidence")
    ax[2].set_ylim(-0.05, 1.05)
    ax[2].set_ylabel("confidence")
    ax[2].set_xlabel("frame")
    return save_figure(fig, path, ["commands", "sigma", "confidence"])


def ending(run: RunData) -> str:
    """How the run ended, in words: finished, interrupted (Ctrl-C, SIGTERM), ended by an error, or not closed."""
    if not run.finished:
        return "still running, or the process was killed"
    reason = str(run.summary.get("stop_reason", ""))
    if reason.startswith(("interrupted", "terminated")):
        return f"interrupted: {reason}"
    if reason.startswith("error"):
        return f"ended by an {reason}"
    return "finished"


def report(run_path: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict:
    """Write ``NAME-trajectories.png``, ``NAME-commands.png`` and ``NAME-report.md``; returns their paths."""
    run = read_run(run_path)
    if len(run) == 0:
        raise ValueError(f"{run_path} holds no step yet")
    out = Path(out_dir or Path(run_path).parent)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(run_path).stem
    files = {"trajectories": trajectories(run, out / f"{stem}-trajectories.png"),
             "commands": commands(run, out / f"{stem}-commands.png")}
    s = run.steps
    counts = {STATUS[k]: int(np.sum(s["status"] == k)) for k in STATUS}
    summary = run.summary
    lines = [f"# Run {run.attrs.get('name', stem)}", "",
             f"- file: `{run_path}` ({ending(run)})",
             f"- steps: {len(run)}; " + ", ".join(f"{k}: {v}" for k, v in counts.items() if v),
             f"- commands clipped by limits: {int(np.sum(s['clipped']))}"]
    if run.attrs.get("schedule"):
        lines += [f"- correction schedule: {run.attrs['schedule']}"]
    if np.isfinite(s["true_offset"]).any():
        f = _frame_rows(s)
        after = slice(int(run.attrs.get("warmup_frames", 10)), None)
        rms = lambda v: float(np.sqrt(np.nanmean(np.sum(v ** 2, axis=1))))  # noqa: E731
        lines += [f"- residual drift RMS after the warm-up: {rms(s['true_offset'][f][after]):.3f} px "
                  f"(uncorrected: {rms(s['true_drift'][f][after]):.3f} px)"]
    if summary:
        lines += [f"- stop reason: {summary.get('stop_reason')}"]
        if summary.get("session_breaks"):
            lines += [f"- the microscope restarted {summary['session_breaks']} time(s) during the run: a new reference "
                      "was taken each time, and offsets before and after are not comparable"]
    lines += ["", f"![trajectories]({files['trajectories'].name})", "", f"![commands]({files['commands'].name})", ""]
    md = out / f"{stem}-report.md"
    md.write_text("\n".join(lines))
    files["markdown"] = md
    return files
