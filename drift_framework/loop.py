"""The closed-loop engine: acquire → estimate → control → actuate → record.

What to do comes from the recipe; this module only runs it.  The engine owns
the safety rules: every actuator command is clipped to the recipe's limits
(largest step, total travel), estimates that fail the confidence/uncertainty
gates never move the actuator, too many bad estimates in a row stop the run,
and Ctrl-C stops after the current step with the run file closed.
"""
from __future__ import annotations

import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .pipeline import MIN_SIZE, Pipeline, build_component, check_image
from .recipe import Recipe, load_recipe
from .registry import get_registry
from .store import RunWriter
from .types import BuildContext, Frame, FrameError, Shift, SourceExhausted

log = logging.getLogger(__name__)

__all__ = ["run", "Step", "RunContext", "RunSummary", "Limits", "calibration_matrix", "WARMUP_FRAMES"]

WARMUP_FRAMES = 10


@dataclass
class Limits:
    """Hard limits on actuator commands, in actuator units."""

    max_step: float
    travel: float

    def clip(self, command: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, bool]:
        """Clip ``command`` so the step and the resulting position stay inside the limits."""
        cmd = np.nan_to_num(np.asarray(command, float), nan=0.0, posinf=0.0, neginf=0.0)
        clipped = not np.all(np.isfinite(command))
        cmd = np.clip(cmd, -1e12, 1e12)  # keeps the norm finite
        norm = float(np.hypot(*cmd))
        if norm > self.max_step:
            cmd = cmd * (self.max_step / norm)
            clipped = True
        target = np.clip(position + cmd, -self.travel, self.travel)
        if np.any(np.abs(target - (position + cmd)) > 0):
            clipped = True
        cmd = target - position
        # Rounding must never push a step past the limit.
        norm = float(np.hypot(*cmd))
        if norm > self.max_step:
            cmd = cmd * (self.max_step / norm) * (1 - 1e-12)
        return cmd, clipped


@dataclass
class Step:
    """One recorded step (what observers receive)."""

    index: int
    time_s: float
    status: int
    shift: Shift | None = None
    offset: np.ndarray = field(default_factory=lambda: np.full(2, np.nan))
    fov: np.ndarray = field(default_factory=lambda: np.zeros(2))
    command: np.ndarray = field(default_factory=lambda: np.zeros(2))
    requested: np.ndarray = field(default_factory=lambda: np.zeros(2))
    clipped: bool = False
    true_offset: np.ndarray = field(default_factory=lambda: np.full(2, np.nan))
    true_drift: np.ndarray = field(default_factory=lambda: np.full(2, np.nan))
    step_seconds: float = float("nan")
    message: str = ""
    region: bool = False

    def row(self) -> dict:
        s = self.shift
        return {
            "index": self.index, "time_s": self.time_s, "status": self.status,
            "shift": (s.dy, s.dx) if s else (np.nan, np.nan),
            "sigma": s.sigma if s else np.nan, "confidence": s.confidence if s else np.nan,
            "offset": self.offset, "fov": self.fov, "command": self.command, "requested": self.requested,
            "clipped": int(self.clipped), "true_offset": self.true_offset, "true_drift": self.true_drift,
            "step_seconds": self.step_seconds, "region": int(self.region),
        }


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
    residual_rms_px: float = float("nan")
    uncorrected_rms_px: float = float("nan")
    measurement_rmse_px: float = float("nan")
    warmup_frames: int = WARMUP_FRAMES

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class RunContext:
    """The state of a run that observers can see; ``request_stop`` ends it after the current step."""

    def __init__(self, recipe: Recipe, output: Path, source, pipeline: Pipeline, controller, actuator):
        self.recipe, self.output = recipe, output
        self.source, self.pipeline, self.controller, self.actuator = source, pipeline, controller, actuator
        self.stop_reason: str | None = None

    def request_stop(self, reason: str = "stop requested") -> None:
        if self.stop_reason is None:
            self.stop_reason = reason


def calibration_matrix(recipe: Recipe, actuator) -> np.ndarray:
    """The 2×2 px → actuator-units matrix: the recipe's calibration, else the actuator's own."""
    cal = recipe.calibration or {}
    if cal.get("file"):
        from .calibration import read_calibration  # noqa: PLC0415 (only when asked)
        return read_calibration(Path(recipe.directory) / cal["file"])
    if cal.get("matrix") is not None:
        return np.asarray(cal["matrix"], float)
    if cal.get("scale") is not None:
        t = math.radians(cal.get("rotation_deg") or 0.0)
        return cal["scale"] * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return np.asarray(getattr(actuator, "calibration"), float)


def _vec(meta: dict, key: str) -> np.ndarray:
    v = meta.get(key)
    return np.asarray(v, float) if v is not None else np.full(2, np.nan)


class _Interrupt:
    """First Ctrl-C: stop after the current step.  Second: stop now."""

    def __init__(self, ctx: RunContext):
        self.ctx, self.previous = ctx, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.ctx.stop_reason == "interrupted (Ctrl-C)":
            raise KeyboardInterrupt
        self.ctx.request_stop("interrupted (Ctrl-C)")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def build_hardware(recipe: Recipe):
    """The recipe's frame source and actuator (None without one); the actuator may share the source's state."""
    ctx = BuildContext(recipe_dir=recipe.directory, extra={"seed": recipe.run.get("seed")})
    source = build_component(recipe.source, ctx)
    ctx.source = source
    try:
        actuator = build_component(recipe.actuator, ctx) if recipe.actuator else None
    except BaseException:
        _close(source)
        raise
    return source, actuator, ctx


def _build(recipe: Recipe, source=None, actuator=None):
    if source is None:
        source, actuator, ctx = build_hardware(recipe)
    else:
        ctx = BuildContext(source=source, recipe_dir=recipe.directory, extra={"seed": recipe.run.get("seed")})
        if actuator is None and recipe.actuator:
            actuator = build_component(recipe.actuator, ctx)
    try:
        parts = {k: build_component(s, ctx) for k, s in recipe.pipeline.items()}
        pipeline = Pipeline(parts["denoiser"], parts["correlator"], parts["estimator"], name=recipe.name,
                            specs=recipe.pipeline)
        controller = build_component(recipe.controller, ctx)
    except BaseException:
        _close(actuator)
        _close(source)
        raise
    return source, pipeline, controller, actuator


def _close(component) -> None:
    close = getattr(component, "close", None)
    if close is not None:
        close()


def _versions() -> dict:
    reg = get_registry()
    out = {"drift_framework": __version__}
    for plugin, package in reg.packages.items():
        mod = reg.plugin_manager.get_plugin(plugin)
        out[package] = getattr(mod, "__version__", "unknown")
    return out


def run(recipe, *, output=None, frames: int | None = None, observers=(), progress=None, source=None,
        actuator=None) -> RunSummary:
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

    Returns
    -------
    RunSummary
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if actuator is not None and not recipe.limits:
        raise ValueError("an actuator needs the recipe's actuator.limits: the engine never moves hardware without them")
    settings = dict(recipe.run)
    n_frames = frames or settings["frames"]
    out = Path(output or settings["output"].replace("{name}", recipe.name))
    pm = get_registry().plugin_manager
    source, pipeline, controller, actuator = _build(recipe, source, actuator)
    ctx = RunContext(recipe, out, source, pipeline, controller, actuator)
    limits = Limits(**recipe.limits) if actuator is not None else None
    cal = calibration_matrix(recipe, actuator) if actuator is not None else np.eye(2)
    cal_inv = np.linalg.inv(cal)
    registered = [pm.register(o) for o in observers]
    writer = None
    t0 = time.perf_counter()
    tally = _Tally()
    try:
        first = source.acquire()
        tracking = _tracking(settings.get("tracking_region"), source, np.shape(first.data))
        first_image = storable(first.data)
        if settings["save_frames"] and first_image is None:
            log.warning("frames are not stored: the first frame is not an image (%s)", _describe(first.data))
        keep_frames = settings["save_frames"] and first_image is not None
        writer = RunWriter(out, overwrite=settings["overwrite"], frame_shape=first_image.shape if keep_frames else None,
                           attrs={"recipe": recipe.text, "recipe_path": str(recipe.path), "name": recipe.name,
                                  "versions": _versions(), "pipeline": pipeline.describe(),
                                  "calibration": cal, "pixel_size_nm": float(first.pixel_size_nm),
                                  "warmup_frames": WARMUP_FRAMES, "schedule": _schedule(settings, tracking)})
        _notify(pm, "drift_run_started", run=ctx)
        state = _LoopState(settings, controller, actuator, limits, cal, cal_inv)
        frame = first
        with _Interrupt(ctx):
            for i in range(n_frames):
                if i > 0:
                    try:
                        frame = source.acquire()
                    except SourceExhausted:
                        ctx.request_stop("completed (the source has no more frames)")
                        break
                t_step = time.perf_counter()
                if tracking:
                    before = state.last_time
                    step = state.observe(frame)
                    frame_s = frame.time_s - before if before is not None else 0.0
                    step.status, step.message = 6, "drift measured on the tracking region"
                    if state.reference is None:
                        # the region's first reference is the same region of the first usable frame, so
                        # region offsets are offsets since that frame, like those of frames
                        state.take_region_reference(frame, tracking)
                else:
                    step = state.step(frame, pipeline)
                step.step_seconds = time.perf_counter() - t_step
                writer.append(step.row(), storable(frame.data) if keep_frames else None)
                tally.add(step)
                for region_step in (_sub_scans(state, source, pipeline, tracking, frame_s) if tracking else ()):
                    writer.append(region_step.row(), None)
                    tally.add(region_step)
                if progress is not None:
                    progress(step)
                _notify(pm, "drift_step_completed", run=ctx, step=step)
                if state.bad_in_row >= settings["stop_after_bad"]:
                    ctx.request_stop(f"{state.bad_in_row} bad estimates in a row (last: {step.message}); "
                                     "check focus, dose and the pipeline")
                if ctx.stop_reason:
                    break
    except BaseException as exc:
        ctx.request_stop(f"error: {exc}" if not isinstance(exc, KeyboardInterrupt) else "interrupted (Ctrl-C)")
        raise
    finally:
        summary = tally.summary(recipe, out, ctx.stop_reason or "completed", time.perf_counter() - t0)
        try:
            if writer is not None:
                writer.close(summary.as_dict())
        finally:
            for component in (actuator, controller, source):
                _close(component)
            _notify(pm, "drift_run_finished", run=ctx, summary=summary)
            for name in registered:
                pm.unregister(name=name)
    return summary


def _sub_scans(state, source, pipeline: Pipeline, tracking: dict, frame_s: float):
    """Acquire, measure and act on the tracking-region sub-scans between two frames; yields their steps."""
    for k in range(tracking["per_frame"]):
        t0 = time.perf_counter()
        before = state.last_time
        sub = source.acquire_region(tracking["position"], (tracking["size_px"],) * 2)
        # aim at the middle of the next frame, after the sub-scans still to come
        region_s = sub.time_s - before if before is not None else 0.0
        aim = sub.time_s + (tracking["per_frame"] - 1 - k) * region_s + (frame_s + region_s) / 2
        step = state.step(sub, pipeline, region=True, aim_time_s=aim)
        step.step_seconds = time.perf_counter() - t0
        yield step


def _schedule(settings: dict, tracking: dict | None) -> str:
    """Which correction schedule ran, in words (stored in the run file)."""
    if tracking:
        return (f"tracking region {tracking['size_px']} px at {tuple(int(v) for v in tracking['position'])}, "
                f"{tracking['per_frame']} sub-scan(s) and corrections per frame")
    parts = ["every frame" if settings["correct_every"] == 1 else f"every {settings['correct_every']} frames"]
    if settings["correct_every_s"]:
        parts.append(f"at most once per {settings['correct_every_s']:g} s")
    return ", ".join(parts)


def _tracking(spec, source, frame_shape) -> dict | None:
    """The tracking-region schedule with its position resolved, or None; a clear error when it cannot run."""
    if not spec:
        return None
    if not callable(getattr(source, "acquire_region", None)):
        raise ValueError(f"run.tracking_region: the source {type(source).__name__} cannot acquire regions "
                         "(it has no acquire_region method)")
    size = spec["size_px"]
    if len(frame_shape) != 2 or size > min(frame_shape):
        raise ValueError(f"run.tracking_region: a {size} px region does not fit in {tuple(frame_shape)} frames")
    position = spec["position"] or [(frame_shape[0] - size) // 2, (frame_shape[1] - size) // 2]
    if position[0] + size > frame_shape[0] or position[1] + size > frame_shape[1]:
        raise ValueError(f"run.tracking_region: the region at {tuple(position)} leaves the {tuple(frame_shape)} frame")
    return {**spec, "position": tuple(position)}


def _is_image(data) -> bool:
    """A real 2-D array of at least ``MIN_SIZE`` pixels a side (its values are not looked at)."""
    shape, kind = getattr(data, "shape", None), getattr(getattr(data, "dtype", None), "kind", "")
    return shape is not None and len(shape) == 2 and kind in "fiub" and kind != "" and min(shape) >= MIN_SIZE


def storable(data) -> np.ndarray | None:
    """``data`` as a float32 image for the run file, or None when it is not a real 2-D image of at least
    ``MIN_SIZE`` pixels a side (the step is then recorded without its frame)."""
    try:
        arr = np.asarray(data)
    except Exception:
        return None
    if not _is_image(arr):
        return None
    with np.errstate(all="ignore"):
        return arr.astype(np.float32)


def _describe(data) -> str:
    shape, dtype = getattr(data, "shape", None), getattr(data, "dtype", None)
    return f"shape {shape}, dtype {dtype}" if shape is not None else type(data).__name__


def _notify(pm, hook: str, **kwargs) -> None:
    try:
        getattr(pm.hook, hook)(**kwargs)
    except Exception as exc:  # an observer must not break the run
        log.warning("observer hook %s failed: %s", hook, exc)


class _Tally:
    """Running counts and sums for the summary: constant memory, however long the run."""

    def __init__(self):
        self.steps = 0
        self.counts = {"corrected": 0, "skipped": 0, "clipped": 0, "pauses": 0}
        self.sums = {"residual": [0.0, 0], "uncorrected": [0.0, 0], "measurement": [0.0, 0]}

    def add(self, step: Step) -> None:
        self.counts["corrected"] += step.status == 1
        self.counts["skipped"] += step.status in (3, 4)
        self.counts["clipped"] += bool(step.clipped)
        self.counts["pauses"] += step.message.startswith("paused")
        if step.region:  # the residual is that of the frames, which the tracking region keeps still
            if self.steps > WARMUP_FRAMES and step.status in (1, 2):
                self._sum("measurement", step.offset - step.true_offset)
            return
        self.steps += 1
        if self.steps <= WARMUP_FRAMES:
            return
        self._sum("residual", step.true_offset)
        self._sum("uncorrected", step.true_drift)
        if step.status in (1, 2):
            self._sum("measurement", step.offset - step.true_offset)

    def _sum(self, key: str, v) -> None:
        if np.all(np.isfinite(v)):
            self.sums[key][0] += float(np.sum(np.square(v)))
            self.sums[key][1] += 1

    def rms(self, key: str) -> float:
        total, n = self.sums[key]
        return math.sqrt(total / n) if n else float("nan")

    def summary(self, recipe, out, reason, duration) -> RunSummary:
        c = self.counts
        return RunSummary(recipe.name, str(out), self.steps, c["corrected"], c["skipped"], c["clipped"], reason,
                          duration, c["pauses"], residual_rms_px=self.rms("residual"),
                          uncorrected_rms_px=self.rms("uncorrected"), measurement_rmse_px=self.rms("measurement"))


class _LoopState:
    """Reference management, gating and actuation for one run."""

    def __init__(self, settings, controller, actuator, limits, cal, cal_inv):
        self.settings, self.controller, self.actuator, self.limits = settings, controller, actuator, limits
        self.cal, self.cal_inv = cal, cal_inv
        self.reference = None
        self.reference_offset = np.zeros(2)
        self.last_offset = np.zeros(2)  # the content offset of the last good estimate
        self.reference_index = 0
        self.fov = np.zeros(2)          # commanded field-of-view position, px
        self.pending: list = []         # (frame index it shows in, move px) for delayed actuators
        self.delay = settings["actuation_delay_frames"]
        self.position = np.zeros(2)     # commanded actuator position, actuator units
        self.bad_in_row = 0
        self.good_in_row = 0
        self.paused = False
        self.last_correction = None
        self.last_time = None
        self.period = None

    def observe(self, frame, *, region: bool = False) -> Step:
        """A step for ``frame`` with what is known before measuring: time, field of view, ground truth."""
        meta = frame.meta or {}
        seen = self.fov - sum((m for k, m in self.pending if k > frame.index), np.zeros(2))
        self.pending = [(k, m) for k, m in self.pending if k > frame.index]
        step = Step(frame.index, frame.time_s, 0, fov=seen, true_offset=_vec(meta, "true_offset_px"),
                    true_drift=_vec(meta, "true_drift_px"), region=region)
        if self.last_time is not None and frame.time_s > self.last_time:
            self.period = frame.time_s - self.last_time
        self.last_time = frame.time_s
        return step

    def step(self, frame, pipeline: Pipeline, *, region: bool = False, aim_time_s: float | None = None) -> Step:
        step = self.observe(frame, region=region)
        seen = step.fov
        if self.reference is None:
            try:
                check_image(frame.data, "reference")
            except FrameError as exc:  # a bad first frame must not become the reference
                step.status, step.message = 4, self._bad(f"no reference yet: {exc}")
                return step
            return self._take_reference(frame, step, np.zeros(2))
        if _is_image(frame.data) and np.shape(frame.data) != np.shape(self.reference.data):
            # the acquisition geometry changed (scan size, binning): nothing to compare with, so this frame
            # becomes the reference and the offset carries on from the last measurement
            step.status = 4
            step.message = (f"frame shape changed from {np.shape(self.reference.data)} to {np.shape(frame.data)}; "
                            "new reference")
            log.warning("frame %d: %s", frame.index, step.message)
            self._take_reference(frame, step, self.last_offset.copy())
            step.status = 4
            return step
        try:
            shift = pipeline.estimate(self.reference.data, frame.data)
        except FrameError as exc:
            step.status, step.message = 4, self._bad(str(exc))
            return step
        step.shift = shift
        step.offset = self.reference_offset + shift.vector
        s = self.settings
        good = (np.isfinite(shift.dy) and np.isfinite(shift.dx)
                and not (shift.confidence < s["min_confidence"]) and not (shift.sigma > s["max_sigma_px"]))
        if not good:
            step.status = 3
            step.message = self._bad(f"confidence {shift.confidence:.2f}, sigma {shift.sigma:.3g} px")
            return step
        self.bad_in_row = 0
        self.last_offset = step.offset.copy()
        self._manage_reference(frame, step)
        step.status = 2
        if self.paused:
            self.good_in_row += 1
            if self.good_in_row < s["resume_after_good"]:
                step.status, step.message = 5, f"held: {self.good_in_row} good estimate(s) of {s['resume_after_good']}"
                return step
            self.paused = False
            step.message = "resumed"
            log.warning("frame %d: corrections resumed after %d good estimates", frame.index, self.good_in_row)
        if self.actuator is None or (frame.index % s["correct_every"]) != 0:
            return step
        # (a clock that went backwards — a restarted microscope — must not hold corrections back)
        if self.last_correction is not None and 0 <= frame.time_s - self.last_correction < s["correct_every_s"]:
            return step
        self.last_correction = frame.time_s
        drift = step.offset + seen  # the field of view this frame was taken at, not the one commanded since
        next_time = aim_time_s if aim_time_s is not None else frame.time_s + (1 + self.delay) * (self.period or 0.0)
        target = np.asarray(self.controller.update(frame.time_s, drift, shift.sigma, self.fov.copy(), next_time), float)
        requested = self.cal @ (target - self.fov)
        command, clipped = self.limits.clip(requested, self.position)
        self.actuator.move_by(command)
        self.position = self.position + command
        move = self.cal_inv @ command
        self.fov = self.fov + move
        if self.delay:
            self.pending.append((frame.index + 1 + self.delay, move))
        step.requested, step.command, step.clipped, step.status = requested, command, clipped, 1
        return step

    def _bad(self, why: str) -> str:
        """Count a bad estimate; pause corrections after ``pause_after_bad`` in a row (a suspender)."""
        self.bad_in_row += 1
        self.good_in_row = 0
        if not self.paused and self.bad_in_row >= self.settings["pause_after_bad"]:
            self.paused = True
            log.warning("corrections paused after %d bad estimates in a row (%s); they resume after %d good ones",
                        self.bad_in_row, why, self.settings["resume_after_good"])
            return f"paused: {why}"
        return why

    def take_region_reference(self, frame, tracking: dict) -> None:
        """Make the tracking region of ``frame`` the reference (when ``frame`` is a usable image)."""
        try:
            image = check_image(frame.data, "frame")
        except FrameError:
            return
        (y0, x0), size = (int(v) for v in tracking["position"]), tracking["size_px"]
        crop = Frame(data=image[y0:y0 + size, x0:x0 + size], index=frame.index, time_s=frame.time_s,
                     pixel_size_nm=frame.pixel_size_nm, meta=dict(frame.meta or {}))
        self.reference, self.reference_offset, self.reference_index = crop, np.zeros(2), frame.index

    def _take_reference(self, frame, step, offset) -> Step:
        self.reference, self.reference_offset, self.reference_index = frame, offset, frame.index
        step.offset = offset
        return step

    def _manage_reference(self, frame, step) -> None:
        mode, s = self.settings["reference"], self.settings
        moved = np.abs(step.offset - self.reference_offset) / np.asarray(np.shape(frame.data), float)
        if (mode == "previous" or (mode == "rolling" and frame.index - self.reference_index >= s["rolling_every"])
                or (mode == "keyframe" and np.max(moved) >= s["keyframe_shift"])):
            self.reference, self.reference_offset, self.reference_index = frame, step.offset.copy(), frame.index
