"""The summary of a run: running counts and sums over its steps (constant memory, however long the run)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .steps import Status, Step

__all__ = ["RunSummary", "RunTally", "WARMUP_FRAMES"]

#: Frames left out of the residual statistics while the controller settles.
WARMUP_FRAMES = 10


@dataclass
class RunSummary:
    """What a finished run reports (also stored in the run file)."""

    name: str
    output: str
    steps: int
    corrected: int
    skipped: int
    clipped: int
    stop_reason: str
    duration_s: float
    pauses: int = 0
    session_breaks: int = 0
    residual_rms_px: float = float("nan")
    uncorrected_rms_px: float = float("nan")
    measurement_rmse_px: float = float("nan")
    warmup_frames: int = WARMUP_FRAMES

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class RunTally:
    """Counts and sums of squares over the steps of a run, for :class:`RunSummary`."""

    def __init__(self) -> None:
        self.steps = 0
        self.counts = {"corrected": 0, "skipped": 0, "clipped": 0, "pauses": 0, "session_breaks": 0}
        self.sums = {"residual": [0.0, 0], "uncorrected": [0.0, 0], "measurement": [0.0, 0]}

    def add(self, step: Step) -> None:
        status = Status(step.status)
        self.counts["corrected"] += status is Status.CORRECTED
        self.counts["skipped"] += status in (Status.LOW_CONFIDENCE, Status.BAD_FRAME)
        self.counts["clipped"] += bool(step.clipped)
        self.counts["pauses"] += step.message.startswith("paused")
        self.counts["session_breaks"] += step.message.startswith("session break")
        if step.region:  # the residual is that of the frames, which the tracking region keeps still
            if self.steps > WARMUP_FRAMES and status.measured:
                self._sum("measurement", step.offset - step.true_offset)
            return
        self.steps += 1
        if self.steps <= WARMUP_FRAMES:
            return
        self._sum("residual", step.true_offset)
        self._sum("uncorrected", step.true_drift)
        if status.measured:
            self._sum("measurement", step.offset - step.true_offset)

    def _sum(self, key: str, v: np.ndarray) -> None:
        if np.all(np.isfinite(v)):
            self.sums[key][0] += float(np.sum(np.square(v)))
            self.sums[key][1] += 1

    def rms(self, key: str) -> float:
        total, n = self.sums[key]
        return math.sqrt(total / n) if n else float("nan")

    def summary(self, name: str, out: Path, reason: str, duration: float) -> RunSummary:
        c = self.counts
        return RunSummary(name, str(out), self.steps, c["corrected"], c["skipped"], c["clipped"], reason,
                          duration, c["pauses"], c["session_breaks"], residual_rms_px=self.rms("residual"),
                          uncorrected_rms_px=self.rms("uncorrected"), measurement_rmse_px=self.rms("measurement"))
