"""The closed-loop engine: acquire → estimate → control → actuate → record.

What to do comes from the recipe; this module only runs it.  The engine owns the safety rules: every actuator
command is clipped to the recipe's limits (:mod:`~drift_framework.limits`) and journaled before it is sent,
estimates that fail the confidence/uncertainty gates never move the actuator, bad estimates in a row pause
corrections and, if they go on, stop the run (:mod:`~drift_framework.policy`), and Ctrl-C stops after the current
step with the run file closed.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .assembly import build_run_components, close_component
from .calibration import calibration_matrix, calibration_origin
from .interrupts import INTERRUPTED, StopOnSignals
from .limits import Limits
from .pipeline import Pipeline, check_image
from .policy import Actuation, CalibrationCheck, CorrectionSchedule, ReferenceStrategy, Suspender
from .recipe import Recipe, load_recipe
from .registry import get_registry, plugin_versions, register_checked
from .settings import RunSettings, TrackingRegion
from .steps import Status, Step
from .store import RunWriter, is_image, storable
from .summary import WARMUP_FRAMES, RunSummary, RunTally
from .types import Frame, FrameError, RegionSource, SourceExhausted

log = logging.getLogger(__name__)

__all__ = ["run", "Engine", "RunContext", "RunSummary", "Step", "Status", "WARMUP_FRAMES"]


class RunContext:
    """The state of a run that observers can see; ``request_stop`` ends it after the current step."""

    def __init__(self, recipe: Recipe, output: Path, source: Any, pipeline: Pipeline, controller: Any,
                 actuator: Any):
        self.recipe, self.output = recipe, output
        self.source, self.pipeline, self.controller, self.actuator = source, pipeline, controller, actuator
        self.stop_reason: str | None = None

    def request_stop(self, reason: str = "stop requested") -> None:
        if self.stop_reason is None:
            self.stop_reason = reason


def run(recipe: Any, *, output: Any = None, frames: int | None = None, observers: Sequence[object] = (),
        progress: Callable[[Step], None] | None = None, source: Any = None, actuator: Any = None,
        pipeline: Pipeline | None = None) -> RunSummary:
    """Run a closed-loop correction described by a recipe.

    Parameters
    ----------
    recipe : Recipe, path, YAML text or dict
        What to run.
    output : path, optional
        Overrides ``run.output``.
    frames : int, optional
        Overrides ``run.frames``.
    observers : sequence of objects
        Extra plugins (objects with ``drift_run_started`` / ``drift_step_completed`` /
        ``drift_run_finished`` hook implementations) registered for this run only.
    progress : callable, optional
        Called with every :class:`Step` (the CLI draws its progress bar with it).
    source : object with ``acquire()``, optional
        An already-built frame source used instead of the recipe's (your own acquisition object, or a
        wrapper around one); the recipe's actuator is built with it as its context unless ``actuator`` is given.
    actuator : object with ``move_by()``, optional
        An already-built actuator used instead of the recipe's (the recipe's ``limits`` still apply).
    pipeline : Pipeline, optional
        An already-built pipeline used instead of the recipe's.

    Returns
    -------
    RunSummary
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if actuator is not None and not recipe.limits:
        raise ValueError("an actuator needs the recipe's actuator.limits: the engine never moves hardware without them")
    settings = recipe.settings
    n_frames = frames or settings.frames
    out = Path(output or settings.output.replace("{name}", recipe.name))
    pm = get_registry().plugin_manager
    registered: list[str] = []
    try:  # observers first: one with a misspelled hook is refused before any hardware is built
        for observer in observers:
            registered.append(register_checked(pm, observer))
        parts = build_run_components(recipe, source=source, actuator=actuator, pipeline=pipeline)
    except BaseException:
        for name in registered:
            pm.unregister(name=name)
        raise
    ctx = RunContext(recipe, out, *parts)
    writer: RunWriter | None = None
    t0 = time.perf_counter()
    tally = RunTally()
    try:
        cal = calibration_matrix(recipe, parts.actuator) if parts.actuator is not None else np.eye(2)
        first = parts.source.acquire()
        tracking = settings.tracking_region.resolve(parts.source, np.shape(first.data)) if settings.tracking_region \
            else None
        first_image = storable(first.data) if settings.save_frames else None
        if settings.save_frames and first_image is None:
            log.warning("frames are not stored: the first frame is not an image (%s, shape %s)",
                        type(first.data).__name__, np.shape(first.data) if hasattr(first.data, "shape") else "-")
        frame_shape = first_image.shape if first_image is not None else None
        writer = RunWriter(out, overwrite=settings.overwrite, frame_shape=frame_shape,
                           attrs={"recipe": recipe.text, "recipe_path": str(recipe.path), "name": recipe.name,
                                  "versions": {"drift_framework": __version__, **plugin_versions()},
                                  "pipeline": parts.pipeline.describe(), "calibration": cal,
                                  "pixel_size_nm": float(first.pixel_size_nm), "warmup_frames": WARMUP_FRAMES,
                                  "schedule": settings.schedule_text(tracking)})
        engine = Engine(settings, parts.pipeline, parts.controller, parts.actuator,
                        Limits(**recipe.limits) if parts.actuator is not None else None, cal,
                        journal=writer.journal)
        _notify(pm, "drift_run_started", run=ctx)
        frame = first
        with StopOnSignals(ctx.request_stop):
            for i in range(n_frames):
                if i > 0:
                    try:
                        frame = parts.source.acquire()
                    except SourceExhausted:
                        ctx.request_stop("completed (the source has no more frames)")
                        break
                frame_step = None
                for step, image in engine.frame_steps(frame, parts.source, tracking):
                    frame_step = frame_step or step  # the frame's own step comes first, then its sub-scans
                    writer.append(step.row(), storable(image) if frame_shape else None)
                    tally.add(step)
                assert frame_step is not None
                if progress is not None:
                    progress(frame_step)
                _notify(pm, "drift_step_completed", run=ctx, step=frame_step)
                if engine.failure is not None:
                    ctx.request_stop(f"error: calibration check failed at frame {frame.index}: {engine.failure}; "
                                     f"the calibration ({calibration_origin(recipe)}) is wrong — run drift calibrate")
                if engine.suspender.bad_in_row >= settings.stop_after_bad:
                    ctx.request_stop(f"{engine.suspender.bad_in_row} bad estimates in a row (last: "
                                     f"{frame_step.message}); check focus, dose and the pipeline")
                if ctx.stop_reason:
                    break
    except BaseException as exc:
        ctx.request_stop(f"error: {exc}" if not isinstance(exc, KeyboardInterrupt) else INTERRUPTED)
        raise
    finally:
        summary = tally.summary(recipe.name, out, ctx.stop_reason or "completed", time.perf_counter() - t0)
        try:
            if writer is not None:
                writer.close(summary.as_dict())
        finally:
            for component in (parts.actuator, parts.controller, parts.source):
                close_component(component)
            _notify(pm, "drift_run_finished", run=ctx, summary=summary)
            for name in registered:
                pm.unregister(name=name)
    return summary


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
        self.failure: str | None = None  # set when corrections make the view worse: the run must stop
        self.last_offset = np.zeros(2)  # the content offset of the last good estimate
        self.last_time: float | None = None
        self.period: float | None = None

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
        return step

    def step(self, frame: Frame, *, region: bool = False, aim_time_s: float | None = None) -> Step:
        """Measure ``frame``, gate the estimate, and correct when a correction is due."""
        step = self.observe(frame, region=region)
        ref = self.reference.frame
        if ref is None:
            try:
                check_image(frame.data, "reference")
            except FrameError as exc:  # a bad first frame must not become the reference
                step.status, step.message = Status.BAD_FRAME, self.suspender.bad(f"no reference yet: {exc}")
                return step
            self.reference.take(frame, np.zeros(2))
            step.offset = np.zeros(2)
            self.calibration_check.observe(step.offset, step.fov, 0.0)
            return step
        if is_image(frame.data) and np.shape(frame.data) != np.shape(ref.data):
            # the acquisition geometry changed (scan size, binning): nothing to compare with, so this frame
            # becomes the reference and the offset carries on from the last measurement
            step.status = Status.BAD_FRAME
            step.message = f"frame shape changed from {np.shape(ref.data)} to {np.shape(frame.data)}; new reference"
            log.warning("frame %d: %s", frame.index, step.message)
            self.reference.take(frame, self.last_offset)
            step.offset = self.last_offset.copy()
            return step
        try:
            shift = self.pipeline.estimate(ref.data, frame.data)
        except FrameError as exc:
            step.status, step.message = Status.BAD_FRAME, self.suspender.bad(str(exc))
            return step
        step.shift = shift
        step.offset = self.reference.offset + shift.vector
        s = self.settings
        good = (np.isfinite(shift.dy) and np.isfinite(shift.dx)
                and not (shift.confidence < s.min_confidence) and not (shift.sigma > s.max_sigma_px))
        if not good:
            step.status = Status.LOW_CONFIDENCE
            saturated = shift.meta.get("saturated")
            why = f"saturated: {saturated:.1%} of the pixels at a ceiling; " if saturated else ""
            step.message = self.suspender.bad(f"{why}confidence {shift.confidence:.2f}, sigma {shift.sigma:.3g} px")
            if saturated:
                log.warning("frame %d is saturated (%.1f%% of the pixels at a ceiling): not acted on", frame.index,
                            100 * saturated)
            return step
        self.last_offset = step.offset.copy()
        self.reference.after_good(frame, step.offset)
        step.status = Status.MEASURED
        self.calibration_check.observe(step.offset, step.fov, shift.sigma)
        if self.actuation is not None and self.failure is None and s.check_calibration:
            self.failure = self.calibration_check.failure()
        if self.failure is not None:  # never move again against the evidence
            step.status, step.message = Status.HELD, f"held: {self.failure}"
            return step
        may_act, step.message = self.suspender.good()
        if not may_act:
            step.status = Status.HELD
            return step
        if self.actuation is None or not self.schedule.due(frame.index, frame.time_s):
            return step
        drift = step.offset + step.fov  # the field of view this frame was taken at, not the one commanded since
        next_time = aim_time_s if aim_time_s is not None else frame.time_s + (1 + s.actuation_delay_frames) * (
            self.period or 0.0)
        probe = self.calibration_check.probe() if s.check_calibration else None
        sent = self.actuation.correct(frame.index, frame.time_s, drift, shift.sigma, next_time, probe)
        step.requested, step.command, step.clipped = sent.requested, sent.command, sent.clipped
        step.status = Status.CORRECTED
        return step

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
        self.calibration_check.observe(np.zeros(2), self.actuation.fov if self.actuation else np.zeros(2), 0.0)

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


def _vec(meta: dict, key: str) -> np.ndarray:
    v = meta.get(key)
    return np.asarray(v, float) if v is not None else np.full(2, np.nan)


def _notify(pm: Any, hook: str, **kwargs: Any) -> None:
    try:
        getattr(pm.hook, hook)(**kwargs)
    except Exception as exc:  # an observer must not break the run
        log.warning("observer hook %s failed: %s", hook, exc)
