"""What the live page shows, gathered from a run: step rows, the latest frame, the aligned running average and the
run's state.  Two producers fill a :class:`LiveFeed`: :class:`LiveObserver` (the run's own observer hooks, in
this process, with the run's pause and stop) and :class:`RunFileFollower` (a run file read while it is written,
by this process or another one, or after it finished: view only).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from drift_framework import hookimpl
from drift_framework.pipeline import chain_text
from drift_framework.steps import Status

log = logging.getLogger(__name__)

__all__ = ["LiveFeed", "LiveObserver", "RunFileFollower", "COLUMNS"]

#: The step columns sent to the page (px; the page converts to nm with the run's pixel size).
COLUMNS = ("index", "time_s", "status", "offset", "fov", "true_offset", "true_drift", "shift", "sigma",
           "confidence", "ambiguous", "step_seconds", "region")

#: Status code → label, in the order of the page's status timeline.
STATUS_LABELS = {int(s): s.label for s in Status}


def _jsonable(value: Any) -> Any:
    """A step value as JSON (NaN and infinities are null: JSON has no NaN)."""
    arr = np.asarray(value)
    if arr.ndim == 0:
        v = arr.item()
        return None if isinstance(v, float) and not np.isfinite(v) else v
    return [None if not np.isfinite(v) else float(v) for v in arr.astype(float).ravel()]


class LiveFeed:
    """Thread-safe state of one run for the page: the producers write, the server's handlers read.

    Parameters
    ----------
    meta : dict
        What the page shows once: ``name``, ``pixel_size_nm``, ``min_confidence``, ``max_sigma_px``,
        ``pipeline``, ``controller``, ``actuator``, ``source`` (run file or live run); empty until the run starts.
    """

    def __init__(self, meta: dict | None = None):
        self.meta = dict(meta or {})  # empty until the run starts (a live view may be served before)
        self._lock = threading.Lock()
        self._rows: list[dict] = []
        self._frame: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._count = 0
        self.frame_version = 0
        self._arrivals: deque[float] = deque(maxlen=20)
        self.state = "waiting for the first frame"
        self.stop_reason: str | None = None
        self.finished = False
        self.paused: str | None = None

    # -- producers ---------------------------------------------------------
    def add(self, row: dict, image: np.ndarray | None, *, wall_s: float | None = None) -> None:
        """Record one step (run-file columns) and, when given, its frame (aligned into the running average by the
        step's measured offset, when the step was measured)."""
        clean = {k: _jsonable(row[k]) for k in COLUMNS if k in row}
        aligned = None
        if image is not None:
            image = np.asarray(image, np.float32)
            offset = np.asarray(row.get("offset", (np.nan, np.nan)), float)
            if Status(int(row.get("status", 0))) in (Status.REFERENCE, Status.CORRECTED, Status.MEASURED, Status.HELD,
                                                       Status.FRAME) and np.all(np.isfinite(offset)):
                # frame[y, x] ≈ ideal[y − dy, x − dx]: moving the frame by −offset puts it on the reference
                aligned = ndimage.shift(image, -offset, order=1, mode="nearest")
        with self._lock:
            self._rows.append(clean)
            self._arrivals.append(wall_s if wall_s is not None else time.monotonic())
            if image is not None:
                self._frame = image
                self.frame_version += 1
                if aligned is not None and (self._sum is None or self._sum.shape == aligned.shape):
                    self._sum = aligned.astype(np.float64) if self._sum is None else self._sum + aligned
                    self._count += 1
            self.state = "running"

    def finish(self, reason: str) -> None:
        with self._lock:
            self.finished, self.stop_reason = True, reason
            self.state = "interrupted" if reason.startswith(("interrupted", "terminated")) else (
                "finished" if reason.startswith("completed") else "stopped")

    # -- readers -----------------------------------------------------------
    def since(self, cursor: int) -> tuple[list[dict], dict]:
        """Rows after the first ``cursor`` ones, and the run's state now."""
        with self._lock:
            rows = self._rows[cursor:]
            arrivals = list(self._arrivals)
            state = {"n": len(self._rows), "state": self.state, "stop_reason": self.stop_reason,
                     "finished": self.finished, "paused": self.paused, "frame_version": self.frame_version,
                     "averaged": self._count}
        state["frames_per_s"] = ((len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
                                 if len(arrivals) > 1 and arrivals[-1] > arrivals[0] else None)
        return rows, state

    def images(self) -> tuple[np.ndarray | None, np.ndarray | None, int]:
        """The latest frame, the aligned average, and the frame version they belong to."""
        with self._lock:
            average = self._sum / self._count if self._sum is not None and self._count else None
            return self._frame, average, self.frame_version


class LiveObserver:
    """Run observer that fills a :class:`LiveFeed` and lets the page pause, resume and stop the run.

    Pause holds corrections through the engine's own pause (frames are still acquired and measured, and recorded
    as held); stop ends the run after the current step, as Ctrl-C does (the file is closed, the summary written,
    ``drift run`` exits 130).
    """

    def __init__(self, on_finish: Any = None):
        self.feed = LiveFeed()
        self.run: Any = None
        self.server: Any = None  # the LiveServer showing this feed, when one does
        self._on_finish = on_finish

    @hookimpl
    def drift_run_started(self, run: Any) -> None:
        settings = run.recipe.settings
        self.run = run
        self.feed.meta.update({"name": run.recipe.name, "source": f"live run → {run.output}",
                               "pixel_size_nm": run.pixel_size_nm, "min_confidence": settings.min_confidence,
                               "max_sigma_px": settings.max_sigma_px, "pipeline": chain_text(run.pipeline.describe()),
                               "controller": run.recipe.controller.plugin if run.recipe.controller else "none",
                               "actuator": run.recipe.actuator.plugin if run.recipe.actuator else "none"})

    @hookimpl
    def drift_step_completed(self, run: Any, step: Any, image: np.ndarray | None) -> None:
        self.feed.add(step.row(), image)
        self.feed.paused = run.paused

    @hookimpl
    def drift_run_finished(self, run: Any, summary: Any) -> None:
        self.feed.finish(summary.stop_reason)
        if self._on_finish is not None:
            self._on_finish()

    # -- the page's buttons ------------------------------------------------
    def control(self, action: str) -> str:
        """``pause``, ``resume`` or ``stop``; returns what was done."""
        if self.run is None or self.feed.finished:
            return "the run is not going"
        if action == "pause":
            self.run.pause("paused from the live view")
        elif action == "resume":
            self.run.resume()
        elif action == "stop":
            self.run.request_stop("interrupted (stop button of the live view)")
        else:
            raise ValueError(f"unknown action {action!r}: pause, resume or stop")
        self.feed.paused = self.run.paused
        return action


class RunFileFollower:
    """Reads a run file every ``interval_s`` into a :class:`LiveFeed`: the page of ``drift view RUN.h5``.

    Works on a finished run, on one being written (the file is written in SWMR mode; a run in another process or
    copied from a remote machine), and on one left by a killed run.
    """

    def __init__(self, path: str | Path, interval_s: float = 0.5):
        from drift_framework.store import read_run

        self.path, self.interval_s = Path(path), interval_s
        run = read_run(self.path)  # a StoreError names the file when it is not a run file
        meta = {"name": run.attrs.get("name", self.path.stem), "source": f"run file {self.path}",
                "pixel_size_nm": run.attrs.get("pixel_size_nm"), "pipeline": chain_text(run.attrs.get("pipeline", "{}")),
                "controller": run.attrs.get("controller", "?"), "actuator": run.attrs.get("actuator", "?"),
                **run.gates}
        self.feed = LiveFeed(meta)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="drift-view-follower", daemon=True)

    def start(self) -> RunFileFollower:
        self.poll()
        self._thread.start()
        return self

    def poll(self) -> None:
        """Read the rows (and frames) written since the last poll."""
        from drift_framework.store import read_run

        n = self.feed.since(0)[1]["n"]
        run = read_run(self.path, frames=slice(n, None))
        frames = run.frames
        for k in range(n, len(run)):
            row = {name: run.steps[name][k] for name in COLUMNS if name in run.steps}
            image = frames[k - n] if frames is not None and k - n < len(frames) else None
            if image is not None and not np.isfinite(image).any():
                image = None  # a frame that was not stored (not an image, another shape)
            self.feed.add(row, image, wall_s=float(np.nansum(run.steps["step_seconds"][:k + 1])))
        if run.finished and not self.feed.finished:
            self.feed.finish(str(run.summary.get("stop_reason", "completed")))

    def _follow(self) -> None:
        while not self._stop.wait(self.interval_s) and not self.feed.finished:
            try:
                self.poll()
            except Exception as exc:  # a partial write seen mid-flush: read again at the next poll
                log.debug("reading %s: %s", self.path, exc)

    def close(self) -> None:
        self._stop.set()
