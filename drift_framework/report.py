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

from .pipeline import chain_text
from .store import STATUS, RunData, read_run


def _figure(rows: int, title: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, 1, figsize=(9, 2.6 * rows), sharex=True, squeeze=False)
    fig.suptitle(title)
    return fig, axes[:, 0]


def save_figure(fig: Any, path: Path, panels: list[str]) -> Path:
    """Save a PNG whose text metadata lists its panels (``Panels``: JSON) and its title, then close the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Panels": json.dumps(panels), "Title": fig.get_suptitle(),
                                        "Software": "drift_framework"})
    plt.close(fig)
    return path


def _frame_rows(steps: dict) -> np.ndarray:
    """Rows of frames (not tracking-region sub-scans; files written before regions existed have none)."""
    region = steps.get("region")
    return np.ones(len(steps["index"]), bool) if region is None else region == 0


#: Distinct styles, so that no line hides another: the drift, what was done about it, what was left.
STYLES = {
    "uncorrected drift (measured)": dict(color="0.5", lw=6, alpha=0.35, solid_capstyle="butt", zorder=1),
    "uncorrected drift (truth)": dict(color="k", ls=":", lw=1.2, zorder=2),
    "correction (field of view moved)": dict(color="C0", lw=1.6, zorder=3),
    "residual (measured)": dict(color="C3", ls="none", marker=".", ms=4, zorder=4),
    "residual (truth)": dict(color="C1", lw=1.0, zorder=5),
}


def _closed_loop(run: RunData) -> bool:
    """Whether the run moved the microscope (an open-loop replay only measures)."""
    s = run.steps
    return bool(np.any(s["status"] == 1) or np.any(s["fov"] != 0))


def _nm_axis(ax: Any, pixel_nm: float, label: str) -> None:
    """Label ``ax`` in nm and add px on the right (no pixel size: px only)."""
    if np.isfinite(pixel_nm) and pixel_nm > 0:
        ax.set_ylabel(f"{label} (nm)")
        ax.secondary_yaxis("right", functions=(lambda v: v / pixel_nm, lambda v: v * pixel_nm)).set_ylabel("px")
    else:
        ax.set_ylabel(f"{label} (px)")


def _pixel_nm(run: RunData) -> float:
    value = run.attrs.get("pixel_size_nm", float("nan"))
    return float(value) if np.isfinite(value) and value > 0 else float("nan")


def trajectories(run: RunData, path: Path) -> Path:
    s = run.steps
    i = s["index"]
    f = _frame_rows(s)  # truth and field of view per frame; measurements from every row (sub-scans too)
    nm = _pixel_nm(run)
    scale = nm if np.isfinite(nm) else 1.0
    closed = _closed_loop(run)
    title = (f"{run.attrs.get('name', '')}: drift and correction" if closed else
             f"{run.attrs.get('name', '')}: measured drift (open loop: nothing was corrected)")
    fig, ax = _figure(3, f"{title} — {ending(run)}")
    panels = []
    truth = np.isfinite(s["true_drift"]).any()
    for k, axis in enumerate("yx"):
        a = ax[k]
        series = {"uncorrected drift (measured)": (i[f], (s["offset"][f, k] + s["fov"][f, k]))}
        if truth:
            series["uncorrected drift (truth)"] = (i[f], s["true_drift"][f, k])
        if closed:
            series["correction (field of view moved)"] = (i[f], s["fov"][f, k])
            series["residual (measured)"] = (i, s["offset"][:, k])
            if np.isfinite(s["true_offset"]).any():
                series["residual (truth)"] = (i[f], s["true_offset"][f, k])
        for name, (x, y) in series.items():
            a.plot(x, y * scale, label=name, **STYLES[name])
        _nm_axis(a, nm, f"d{axis}")
        if k == 0:  # one legend: the panels draw the same series
            a.legend(fontsize=7, loc="best", framealpha=0.85)
        panels.append(f"d{axis} trajectories")
    bad = np.isin(s["status"], (3, 4, 5))
    has_truth = np.isfinite(s["true_offset"]).any()
    res = np.hypot(*s["true_offset"].T) if has_truth else np.hypot(*s["offset"].T)
    what = ("|residual| (truth)" if has_truth else "|residual| (measured)") if closed else "|drift| (measured)"
    ax[2].plot(i[f], res[f] * scale, color="C3" if closed else "0.55", lw=1, label=what)
    ax[2].plot(i[bad], res[bad] * scale, "x", color="C1", label="gated / bad / held: not acted on")
    _nm_axis(ax[2], nm, "|offset|")
    ax[2].set_xlabel("frame")
    ax[2].legend(fontsize=7, loc="upper left")
    panels.append("residual magnitude and skipped steps")
    return save_figure(fig, path, panels)


def commands(run: RunData, path: Path) -> Path:
    s = run.steps
    i = s["index"]
    gates = run.gates
    units = str(run.attrs.get("actuator_units", "")) or "actuator units"
    fig, ax = _figure(3, f"{run.attrs.get('name', '')}: commands and estimates — {ending(run)}")
    for k, axis in enumerate("yx"):
        ax[0].plot(i, s["command"][:, k], lw=1.2, color=("C0", "C2")[k], label=f"command {axis}")
    clipped = s["clipped"] > 0
    ax[0].plot(i[clipped], s["command"][clipped, 0], "r^", label="clipped by the limits")
    ax[0].set_ylabel(f"command ({units})")
    ax[0].set_title(f"actuator {run.attrs.get('actuator', '?')}", fontsize=9)
    ax[0].legend(fontsize=7, loc="upper left")
    ax[1].semilogy(i, np.where(s["sigma"] > 0, s["sigma"], np.nan), lw=1, color="C4", label="sigma")
    ax[1].axhline(gates["max_sigma_px"], color="C3", ls="--", lw=1.2,
                  label=f"gate: sigma ≤ {gates['max_sigma_px']:g} px")
    ax[1].set_ylabel("sigma (px)")
    ax[1].legend(fontsize=7, loc="upper left")
    ax[2].plot(i, s["confidence"], lw=1, color="C2", label="confidence")
    ax[2].axhline(gates["min_confidence"], color="C3", ls="--", lw=1.2,
                  label=f"gate: confidence ≥ {gates['min_confidence']:g}")
    ax[2].set_ylim(-0.05, 1.05)
    ax[2].set_ylabel("confidence")
    ax[2].set_xlabel("frame")
    ax[2].legend(fontsize=7, loc="lower left")
    return save_figure(fig, path, ["commands", "sigma with its gate", "confidence with its gate"])


#: Frames read for the aligned average: evenly spaced over the run, at most this many.
AVERAGE_FRAMES = 200


def images(run_path: str | os.PathLike, run: RunData, path: Path) -> Path | None:
    """First frame, last frame and the aligned average (each measured frame moved back by its measured offset),
    when the run stored its frames; None otherwise."""
    from scipy import ndimage

    n = len(run)
    every = max(1, n // AVERAGE_FRAMES)
    sampled = read_run(run_path, frames=slice(0, n, every)).frames
    if sampled is None or not np.isfinite(sampled[0]).any():
        return None
    last = read_run(run_path, frames=slice(n - 1, n)).frames
    s = run.steps
    rows = np.arange(0, n, every)
    usable = [k for k, r in enumerate(rows) if s["status"][r] in (0, 1, 2, 5, 6) and np.isfinite(s["offset"][r]).all()
              and np.isfinite(sampled[k]).all()]
    if not usable:
        return None
    average = np.mean([ndimage.shift(sampled[k], -s["offset"][rows[k]], order=1, mode="nearest") for k in usable],
                      axis=0)
    fig, axes = _figure_grid(1, 3, f"{run.attrs.get('name', '')}: frames — {ending(run)}")
    shown = [(sampled[0], f"first frame ({int(s['index'][0])})"),
             (last[0] if last is not None else sampled[-1], f"last frame ({int(s['index'][n - 1])})"),
             (average, f"aligned average of {len(usable)} frames")]
    for a, (image, label) in zip(axes, shown):
        finite = image[np.isfinite(image)]
        lo, hi = np.percentile(finite, (0.5, 99.5)) if finite.size else (0, 1)
        a.imshow(image, cmap="gray", vmin=lo, vmax=hi)
        a.set_title(label, fontsize=9)
        a.set_axis_off()
    return save_figure(fig, path, ["first frame", "last frame", "aligned average"])


def _figure_grid(rows: int, cols: int, title: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.6 * rows), squeeze=False)
    fig.suptitle(title)
    return fig, axes.ravel()


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
    frames = images(run_path, run, out / f"{stem}-frames.png")
    if frames is not None:
        files["frames"] = frames
    s = run.steps
    counts = {STATUS[k]: int(np.sum(s["status"] == k)) for k in STATUS}
    summary = run.summary
    gates = run.gates
    nm = _pixel_nm(run)
    mode = "closed loop" if _closed_loop(run) else "open loop (measured only, nothing was corrected)"
    lines = [f"# Run {run.attrs.get('name', stem)}", "",
             f"- file: `{run_path}` ({ending(run)})",
             f"- {mode}: pipeline {chain_text(run.attrs.get('pipeline', '{}'))}, controller "
             f"{run.attrs.get('controller', '?')}, actuator {run.attrs.get('actuator', '?')}",
             f"- gates: confidence ≥ {gates['min_confidence']:g}, sigma ≤ {gates['max_sigma_px']:g} px "
             "(estimates beyond them never move the microscope)",
             f"- pixel size: {nm:g} nm" if np.isfinite(nm) else "- pixel size: unknown (figures in px)",
             f"- steps: {len(run)}; " + ", ".join(f"{k}: {v}" for k, v in counts.items() if v),
             f"- commands clipped by limits: {int(np.sum(s['clipped']))}"]
    if run.attrs.get("schedule"):
        lines += [f"- correction schedule: {run.attrs['schedule']}"]
    if np.isfinite(s["true_offset"]).any():
        f = _frame_rows(s)
        after = slice(int(run.attrs.get("warmup_frames", 10)), None)
        residual, uncorrected = s["true_offset"][f][after], s["true_drift"][f][after]
        if np.isfinite(residual).any():  # a run shorter than the warm-up has none
            rms = lambda v: float(np.sqrt(np.nanmean(np.sum(v ** 2, axis=1))))  # noqa: E731
            in_nm = lambda v: f" = {v * nm:.3g} nm" if np.isfinite(nm) else ""  # noqa: E731
            lines += [f"- residual drift RMS after the warm-up: {rms(residual):.3f} px{in_nm(rms(residual))} "
                      f"(uncorrected: {rms(uncorrected):.3f} px{in_nm(rms(uncorrected))})"]
    if summary:
        lines += [f"- stop reason: {summary.get('stop_reason')}"]
        if summary.get("session_breaks"):
            lines += [f"- the microscope restarted {summary['session_breaks']} time(s) during the run: a new reference "
                      "was taken each time, and offsets before and after are not comparable"]
    lines += ["", f"![trajectories]({files['trajectories'].name})", "", f"![commands]({files['commands'].name})", ""]
    if frames is not None:
        lines += [f"![frames]({frames.name})", ""]
    md = out / f"{stem}-report.md"
    md.write_text("\n".join(lines))
    files["markdown"] = md
    return files
