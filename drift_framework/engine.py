"""One run's step policy: measure each frame against the reference, gate the estimate, and act through the
actuation — the engine that :func:`drift_framework.loop.run` drives frame by frame.  The policy's parts are the
objects of :mod:`drift_framework.policy`; this class puts them in order.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .limits import Limits
from .pipeline import Pipeline, check_image
from .policy import Actuation, CalibrationCheck, CorrectionSchedule, ReferenceStrategy, Suspender, choose_by_trajectory
from .settings import RunSettings, TrackingRegion
from .steps import Status, Step
from .store import is_image
from .trajectory import DriftTrack
from .types import Frame, FrameError, RegionSource, Shift

__all__ = ["Engine", "SESSION_BREAK"]

#: The message of a step where the microscope was found restarted (counted in the summary).
SESSION_BREAK = "session break"

log = logging.getLogger(__name__)


class Engine:
    """One run's step policy: measure each frame against the reference, gate, and act through the actuation."""

    def __init__(self, settings: RunSettings, pipeline: Pipeline, controller: Any, actuator: Any,
                 limits: Limits | None, calibration: np.ndarray,
                 journal: Callable[[int, np.ndarray], None] | None = None):
        self.settings, self.pipeline = settings, pipeline
        self.reference = ReferenceStrategy(settings.reference, settings.rolling_every, settings.keyframe_shift)
        self.suspender = Suspender(settings.pause_after_bad, settings.resume_after_good)
        self.schedule = CorrectionSchedule(settings.correct_every, settings.correct_every_s)
        self.actuation = (Actuation(actuator, controller, limits, calibration, settings.actuation_delay_frames,
                                    journal) if actuator is not None and limits is not None else None)
        self.calibration_check = CalibrationCheck()
        self.track = DriftTrack(settings.drift_prior_px_per_frame)  # every good measurement, whatever the controller
        self.failure: str | None = None  # set when corrections make the view worse: the run must stop
        self.last_offset = np.zeros(2)  # the content offset of the last good estimate
        self.last_time: float | None = None
        self.period: float | None = None
        self.frame_period: float | None = None  # between whole frames (not sub-scans): the scan ramp's frame
        self.last_frame_time: float | None = None

    def frame_steps(self, frame: Frame, source: Any, tracking: TrackingRegion | None) -> Iterator[tuple[Step, Any]]:
        """The steps of one frame: the frame's own, then its tracking-region sub-scans (with their images)."""
        t_step = time.perf_counter()
        if tracking is None:
            step = self.step(frame)
        else:
            before = self.last_time
            step = self.observe(frame)
            frame_s = frame.time_s - before if before is not None else 0.0
            step.status, step.message = Status.FRAME, "drift measured on the tracking region"
            if self.reference.frame is None:
                # the region's first reference is the same region of the first usable frame, so
                # region offsets are offsets since that frame, like those of frames
                self._take_region_reference(frame, tracking)
        step.step_seconds = time.perf_counter() - t_step
        yield step, frame.data
        if tracking is not None:
            for region_step in self._sub_scans(source, tracking, frame_s):
                yield region_step, None

    def observe(self, frame: Frame, *, region: bool = False) -> Step:
        """A step for ``frame`` with what is known before measuring: time, field of view, ground truth."""
        meta = frame.meta or {}
        seen = self.actuation.seen_fov(frame.index) if self.actuation is not None else np.zeros(2)
        step = Step(frame.index, frame.time_s, Status.REFERENCE, fov=seen, true_offset=_vec(meta, "true_offset_px"),
                    true_drift=_vec(meta, "true_drift_px"), region=region)
        if self.last_time is not None and frame.time_s > self.last_time:
            self.period = frame.time_s - self.last_time
        self.last_time = frame.time_s
        if not region:
            if self.last_frame_time is not None and frame.time_s > self.last_frame_time:
                self.frame_period = frame.time_s - self.last_frame_time
                self.track.set_frame_interval(self.frame_period)
            self.last_frame_time = frame.time_s
        return step

    def step(self, frame: Frame, *, region: bool = False, aim_time_s: float | None = None) -> Step:
        """Measure ``frame``, gate the estimate, and correct when a correction is due (and, with ``run.scan_ramp``,
        bend the scan to the predicted drift rate, or straighten it while corrections are held)."""
        step = self._measure_and_correct(frame, region=region, aim_time_s=aim_time_s)
        if self.settings.scan_ramp is None or self.actuation is None:
            return step
        if step.status == Status.CORRECTED:
            # the drift rate comes through the calibration (content offset + field of view): not before it is proven
            trusted = self.calibration_check.proven or not self.settings.check_calibration
            predicted = self.track.rate(frame.time_s) if trusted else None
            if self.actuation.scan_ramp(predicted, self.frame_period, self.settings.scan_ramp.max_px_per_frame):
                step.message = _join(step.message,
                                     f"scan ramp clipped to {self.settings.scan_ramp.max_px_per_frame:g} px/frame")
        elif self.failure is not None or self.suspender.paused or self.suspender.held_by is not None:
            if self.actuation.withdraw_ramp():
                step.message = _join(step.message, "scan ramp withdrawn")
        step.ramp = self.actuation.ramp.copy()
        return step

    def _measure_and_correct(self, frame: Frame, *, region: bool, aim_time_s: float | None) -> Step:
        step = self.observe(frame, region=region)
        ref = self.reference.frame
        if (frame.meta or {}).get("session_break") and ref is not None:
            # nothing links the frames before a restart to those after: a new reference, the offset carries on
            step.message = f"{SESSION_BREAK}: {frame.meta['session_break']}; new reference"
            if self.settings.on_session_break == "pause":
                self.suspender.paused, self.suspender.good_in_row = True, 0
                step.message += ", corrections paused"
            self.reference.take(frame, self.last_offset)
            step.offset = self.last_offset.copy()
            self.track.reset()
            self.track.add(frame.time_s, step.offset + step.fov, 0.0)
            return step
        if ref is None:
            try:
                check_image(frame.data, "reference")
            except FrameError as exc:  # a bad first frame must not become the reference
                step.status, step.message = Status.BAD_FRAME, self.suspender.bad(f"no reference yet: {exc}")
                return step
            self.reference.take(frame, np.zeros(2))
            step.offset = np.zeros(2)
            self.calibration_check.observe(step.offset, step.fov, 0.0, frame.time_s)
            self.track.add(frame.time_s, step.offset + step.fov, 0.0)
            return step
        if is_image(frame.data) and np.shape(frame.data) != np.shape(ref.data):
            # the acquisition geometry changed (scan size, binning): nothing to compare with, so this frame
            # becomes the reference and the offset carries on from the last measurement
            step.status = Status.BAD_FRAME
            step.message = f"frame shape changed from {np.shape(ref.data)} to {np.shape(frame.data)}; new reference"
            log.warning("frame %d: %s", frame.index, step.message)
            self.reference.take(frame, self.last_offset)
            step.offset = self.last_offset.copy()
            self.track.reset()
            self.track.add(frame.time_s, step.offset + step.fov, 0.0)
            return step
        try:
            shift = self.pipeline.estimate(ref.data, frame.data)
        except FrameError as exc:
            step.status, step.message = Status.BAD_FRAME, self.suspender.bad(str(exc))
            return step
        note = ""  # how an ambiguous estimate was decided, kept with whatever the gating says
        if shift.ambiguous:
            shift, note = self._choose_by_trajectory(shift, step.fov, frame.time_s)
        step.shift = shift
        step.offset = self.reference.offset + shift.vector
        s = self.settings
        good = (np.isfinite(shift.dy) and np.isfinite(shift.dx)
                and not (shift.confidence < s.min_confidence) and not (shift.sigma > s.max_sigma_px))
        if not good:
            step.status = Status.LOW_CONFIDENCE
            saturated = shift.meta.get("saturated")
            why = f"saturated: {saturated:.1%} of the pixels at a ceiling; " if saturated else ""
            step.message = _join(self.suspender.bad(f"{why}confidence {shift.confidence:.2f}, sigma {shift.sigma:.3g} px"),
                                 note)
            if saturated:
                log.warning("frame %d is saturated (%.1f%% of the pixels at a ceiling): not acted on", frame.index,
                            100 * saturated)
            return step
        self.last_offset = step.offset.copy()
        self.track.add(frame.time_s, step.offset + step.fov, shift.sigma)
        self.reference.after_good(frame, step.offset)
        step.status = Status.MEASURED
        self.calibration_check.observe(step.offset, step.fov, shift.sigma, frame.time_s)
        if self.actuation is not None and self.failure is None and s.check_calibration:
            self.failure = self.calibration_check.failure()
        if self.failure is not None:  # never move again against the evidence
            step.status, step.message = Status.HELD, f"held: {self.failure}"
            return step
        may_act, message = self.suspender.good()
        step.message = _join(message, note)
        if not may_act:
            step.status = Status.HELD
            return step
        if self.actuation is None or not self.schedule.due(frame.index, frame.time_s):
            return step
        drift = step.offset + step.fov  # the field of view this frame was taken at, not the one commanded since
        next_time = aim_time_s if aim_time_s is not None else frame.time_s + (1 + s.actuation_delay_frames) * (
            self.period or 0.0)
        probe = self.calibration_check.probe(next_time - frame.time_s) if s.check_calibration else None
        sent = self.actuation.correct(frame.index, frame.time_s, drift, shift.sigma, next_time, probe)
        step.requested, step.command, step.clipped = sent.requested, sent.command, sent.clipped
        step.status = Status.CORRECTED
        return step

    def _choose_by_trajectory(self, shift: Shift, fov_seen: np.ndarray, time_s: float) -> tuple[Shift, str]:
        """An ambiguous estimate decided by where the measured trajectory puts the content (unchanged while there
        is no trajectory, or when it explains none of the candidates); and the step's message."""
        prediction = self.track.predict(time_s)
        if prediction is None:
            return shift, ""
        drift, sigma = prediction
        predicted = drift - fov_seen - self.reference.offset  # as a shift from the reference
        chosen = choose_by_trajectory(shift, predicted, sigma)
        if chosen is None:
            return shift, f"ambiguous; the trajectory predicted ({predicted[0]:.2f}, {predicted[1]:.2f}) px, none " \
                          "of the candidates"
        verb = "chose" if chosen.meta["chosen_by_trajectory"] else "confirmed"
        return chosen, (f"ambiguous; the trajectory {verb} ({chosen.dy:.2f}, {chosen.dx:.2f}) px among "
                        f"{len(shift.candidates) + 1} candidates (p = {chosen.confidence:.2f})")

    def _take_region_reference(self, frame: Frame, tracking: TrackingRegion) -> None:
        """Make the tracking region of ``frame`` the reference (when ``frame`` is a usable image)."""
        try:
            image = check_image(frame.data, "frame")
        except FrameError:
            return
        (y0, x0), size = (int(v) for v in tracking.position or (0, 0)), tracking.size_px
        crop = Frame(data=image[y0:y0 + size, x0:x0 + size], index=frame.index, time_s=frame.time_s,
                     pixel_size_nm=frame.pixel_size_nm, meta=dict(frame.meta or {}))
        self.reference.take(crop, np.zeros(2))

    def _sub_scans(self, source: RegionSource, tracking: TrackingRegion, frame_s: float) -> Iterator[Step]:
        """Acquire, measure and act on the tracking-region sub-scans between two frames."""
        for k in range(tracking.per_frame):
            t0 = time.perf_counter()
            before = self.last_time
            sub = source.acquire_region(tracking.position or (0, 0), (tracking.size_px,) * 2)
            # aim at the middle of the next frame, after the sub-scans still to come
            region_s = sub.time_s - before if before is not None else 0.0
            aim = sub.time_s + (tracking.per_frame - 1 - k) * region_s + (frame_s + region_s) / 2
            step = self.step(sub, region=True, aim_time_s=aim)
            step.step_seconds = time.perf_counter() - t0
            yield step


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _vec(meta: dict, key: str) -> np.ndarray:
    v = meta.get(key)
    return np.asarray(v, float) if v is not None else np.full(2, np.nan)
