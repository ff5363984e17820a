"""The engine's step policy as small objects, each testable without a microscope:

- :class:`ReferenceStrategy`: which frame the next one is measured against (``run.reference``);
- :class:`Suspender`: pauses corrections after bad estimates in a row, resumes after good ones;
- :class:`CorrectionSchedule`: whether a correction is due at this frame (``correct_every``, ``correct_every_s``);
- :class:`Actuation`: controller target → calibration → limits → journal → actuator, and the field of view the
  frames show (commands that have not reached the images yet, with ``actuation_delay_frames``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from .limits import Limits
from .types import Frame

__all__ = ["ReferenceStrategy", "Suspender", "CorrectionSchedule", "Actuation", "Correction"]

log = logging.getLogger(__name__)


class ReferenceStrategy:
    """The current reference frame and the content offset it was taken at.

    ``mode`` is ``first`` (keep the first), ``previous`` (every good frame), ``rolling`` (every
    ``rolling_every`` frames) or ``keyframe`` (when the content moved ``keyframe_shift`` of the frame from it).
    """

    def __init__(self, mode: str = "first", rolling_every: int = 20, keyframe_shift: float = 0.25):
        self.mode, self.rolling_every, self.keyframe_shift = mode, rolling_every, keyframe_shift
        self.frame: Frame | None = None
        self.offset = np.zeros(2)
        self.index = 0

    def take(self, frame: Frame, offset: np.ndarray) -> None:
        """Make ``frame`` the reference; its content sits at ``offset`` (px since the start)."""
        self.frame, self.offset, self.index = frame, np.asarray(offset, float).copy(), frame.index

    def after_good(self, frame: Frame, offset: np.ndarray) -> bool:
        """Called with every well-measured frame; returns whether it became the reference."""
        moved = np.abs(offset - self.offset) / np.asarray(np.shape(frame.data), float)
        renew = (self.mode == "previous"
                 or (self.mode == "rolling" and frame.index - self.index >= self.rolling_every)
                 or (self.mode == "keyframe" and float(np.max(moved)) >= self.keyframe_shift))
        if renew:
            self.take(frame, offset)
        return renew


class Suspender:
    """Pauses corrections after ``pause_after`` bad estimates in a row; resumes after ``resume_after`` good ones.

    Like bluesky's suspenders: a run is not stopped by a passing problem (a blanked beam, a refocus), but
    nothing moves until the measurements are trustworthy again.
    """

    def __init__(self, pause_after: int = 5, resume_after: int = 3):
        self.pause_after, self.resume_after = pause_after, resume_after
        self.bad_in_row = 0
        self.good_in_row = 0
        self.paused = False

    def bad(self, why: str) -> str:
        """Count a bad estimate; returns the step's message (``paused: …`` when this one paused corrections)."""
        self.bad_in_row += 1
        self.good_in_row = 0
        if not self.paused and self.bad_in_row >= self.pause_after:
            self.paused = True
            log.warning("corrections paused after %d bad estimates in a row (%s); they resume after %d good ones",
                        self.bad_in_row, why, self.resume_after)
            return f"paused: {why}"
        return why

    def good(self) -> tuple[bool, str]:
        """Count a good estimate; returns (may corrections be sent, the step's message)."""
        self.bad_in_row = 0
        if not self.paused:
            return True, ""
        self.good_in_row += 1
        if self.good_in_row < self.resume_after:
            return False, f"held: {self.good_in_row} good estimate(s) of {self.resume_after}"
        self.paused = False
        log.warning("corrections resumed after %d good estimates", self.good_in_row)
        return True, "resumed"


class CorrectionSchedule:
    """Every ``every`` frames and at most once per ``every_s`` seconds of the source's clock."""

    def __init__(self, every: int = 1, every_s: float = 0.0):
        self.every, self.every_s = every, every_s
        self.last_time: float | None = None

    def due(self, index: int, time_s: float) -> bool:
        """Whether a correction is due for frame ``index`` acquired at ``time_s`` (records it when it is)."""
        if index % self.every != 0:
            return False
        # a clock that went backwards (a restarted microscope) must not hold corrections back
        if self.last_time is not None and 0 <= time_s - self.last_time < self.every_s:
            return False
        self.last_time = time_s
        return True


class Correction:
    """What one actuation sent: the command before and after clipping, in actuator units."""

    def __init__(self, requested: np.ndarray, command: np.ndarray, clipped: bool):
        self.requested, self.command, self.clipped = requested, command, clipped


class Actuation:
    """Turns a drift measurement into an actuator move, within the limits, journaled before it is sent.

    Parameters
    ----------
    actuator, controller :
        Built components (see :class:`~drift_framework.types.Actuator`, :class:`~drift_framework.types.Controller`).
    limits : Limits
        Every command is clipped to them.
    calibration : (2, 2) array
        px → actuator units.
    delay_frames : int
        Frames before a command shows in the images.
    journal : callable, optional
        ``journal(frame_index, command)`` is called before the actuator moves (the run file records it first).
    """

    def __init__(self, actuator: Any, controller: Any, limits: Limits, calibration: np.ndarray,
                 delay_frames: int = 0, journal: Callable[[int, np.ndarray], None] | None = None):
        self.actuator, self.controller, self.limits = actuator, controller, limits
        self.calibration = np.asarray(calibration, float)
        self.inverse = np.linalg.inv(self.calibration)
        self.delay = delay_frames
        self.journal = journal
        self.fov = np.zeros(2)          # commanded field-of-view position, px
        self.position = np.zeros(2)     # commanded actuator position, actuator units
        self.pending: list[tuple[int, np.ndarray]] = []  # (frame index it shows in, move px)

    def seen_fov(self, index: int) -> np.ndarray:
        """The field-of-view position frame ``index`` was taken at (later commands have not reached it)."""
        seen = self.fov - sum((m for k, m in self.pending if k > index), np.zeros(2))
        self.pending = [(k, m) for k, m in self.pending if k > index]
        return seen

    def correct(self, index: int, time_s: float, drift_px: np.ndarray, sigma_px: float,
                next_time_s: float) -> Correction:
        """Ask the controller where the field of view should be, and move there within the limits."""
        target = np.asarray(self.controller.update(time_s, drift_px, sigma_px, self.fov.copy(), next_time_s), float)
        requested = self.calibration @ (target - self.fov)
        command, clipped = self.limits.clip(requested, self.position)
        if self.journal is not None:
            self.journal(index, command)
        self.actuator.move_by(command)
        self.position = self.position + command
        move = self.inverse @ command
        self.fov = self.fov + move
        if self.delay:
            self.pending.append((index + 1 + self.delay, move))
        return Correction(requested, command, clipped)
