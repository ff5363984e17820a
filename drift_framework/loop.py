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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .assembly import build_run_components, close_component
from .calibration import calibration_matrix, calibration_origin
from .engine import Engine
from .interrupts import INTERRUPTED, StopOnSignals
from .limits import Limits
from .pipeline import Pipeline
from .policy import Suspender
from .recipe import Recipe, load_recipe
from .registry import get_registry, plugin_versions, register_checked
from .steps import Status, Step
from .store import RunWriter, is_image, storable
from .summary import WARMUP_FRAMES, RunSummary, RunTally
from .types import SourceExhausted

log = logging.getLogger(__name__)

__all__ = ["run", "Engine", "RunContext", "RunSummary", "Step", "Status", "WARMUP_FRAMES"]


class RunContext:
    """The state of a run that observers can see, and the run's controls.

    ``request_stop`` ends the run after the current step; ``pause`` holds corrections (frames are still acquired
    and measured, nothing moves) until ``resume``.  They may be called from another thread (a live view's server).
    """

    def __init__(self, recipe: Recipe, output: Path, source: Any, pipeline: Pipeline, controller: Any,
                 actuator: Any):
        self.recipe, self.output = recipe, output
        self.source, self.pipeline, self.controller, self.actuator = source, pipeline, controller, actuator
        self.stop_reason: str | None = None
        self.suspender: Suspender | None = None  # the engine's, once it is built
        self.pixel_size_nm: float | None = None  # the first frame's

    def request_stop(self, reason: str = "stop requested") -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def pause(self, reason: str = "paused by the user") -> None:
        """Hold corrections from the next step on (the engine's own pause: steps are recorded as held)."""
        if self.suspender is not None:
            self.suspender.hold(reason)

    def resume(self) -> None:
        """Lift :meth:`pause`."""
        if self.suspender is not None:
            self.suspender.release()

    @property
    def paused(self) -> str | None:
        """Why corrections are held (by :meth:`pause`, or after bad estimates), or None."""
        if self.suspender is None:
            return None
        if self.suspender.held_by is not None:
            return self.suspender.held_by
        return "after bad estimates" if self.suspender.paused else None


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
                                  "schedule": settings.schedule_text(tracking),
                                  "controller": recipe.controller.plugin if recipe.controller else "none",
                                  "actuator": recipe.actuator.plugin if recipe.actuator else "none",
                                  "actuator_units": str(getattr(parts.actuator, "units", "")),
                                  "gating": {"min_confidence": settings.min_confidence,
                                             "max_sigma_px": settings.max_sigma_px}})
        engine = Engine(settings, parts.pipeline, parts.controller, parts.actuator,
                        Limits(**recipe.limits) if parts.actuator is not None else None, cal,
                        journal=writer.journal)
        ctx.suspender, ctx.pixel_size_nm = engine.suspender, float(first.pixel_size_nm)
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
                frame_step, frame_image = None, None
                for step, image in engine.frame_steps(frame, parts.source, tracking):
                    if frame_step is None:  # the frame's own step comes first, then its sub-scans
                        frame_step, frame_image = step, image
                    writer.append(step.row(), storable(image) if frame_shape else None)
                    tally.add(step)
                assert frame_step is not None
                if progress is not None:
                    progress(frame_step)
                _notify(pm, "drift_step_completed", run=ctx, step=frame_step,
                        image=frame_image if is_image(frame_image) else None)
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


def _notify(pm: Any, hook: str, **kwargs: Any) -> None:
    try:
        getattr(pm.hook, hook)(**kwargs)
    except Exception as exc:  # an observer must not break the run
        log.warning("observer hook %s failed: %s", hook, exc)
