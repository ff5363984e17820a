"""Frame fuzzing: hostile frames through every preset and through the closed loop.

A pipeline must answer a hostile frame with :class:`~drift_framework.types.FrameError` (a documented error) or a
Shift; the loop must record the step as skipped (status 4 or 3) and never move the actuator on it."""
from __future__ import annotations

import numpy as np

from drift_framework.assembly import load_pipeline
from drift_framework.types import Frame, FrameError

from .result import Result


def hostile_frames(good: np.ndarray) -> dict:
    """Named hostile frames built around a good one (same shape unless the point is the shape)."""
    h, w = good.shape
    rng = np.random.default_rng(0)
    nan = good.copy()
    nan[h // 3, w // 4] = np.nan
    frames = {
        "one NaN pixel": nan, "all NaN": np.full_like(good, np.nan), "+inf": np.where(good > good.mean(), np.inf, good),
        "-inf": np.full_like(good, -np.inf), "constant": np.full_like(good, 3.0), "all zero": np.zeros_like(good),
        "1×1": np.ones((1, 1), np.float32), "2×2": rng.random((2, 2)).astype(np.float32),
        "4096²": rng.random((4096, 4096), np.float32), "non-square": rng.random((h, w // 2 + 3)).astype(np.float32),
        "uint8": (good * 255 / max(float(good.max()), 1e-12)).astype(np.uint8), "int16": (good * 1000).astype(np.int16),
        "int64": (good * 1e6).astype(np.int64), "float16": good.astype(np.float16), "float64": good.astype(np.float64),
        "complex64": good.astype(np.complex64), "bool": good > good.mean(), "3-D": np.stack([good, good]),
        "1-D": good.ravel(), "empty": np.zeros((0, 0), np.float32), "object": np.array([[object()] * 3] * 3),
        "string": np.array([["a", "b"], ["c", "d"]]), "nested list": good.tolist(), "None": None,
        "huge values": good * 1e38, "tiny values": good * 1e-38, "negative": -good,
        "mismatched shape": rng.random((h + 16, w + 16)).astype(np.float32),
    }
    return frames


def through_pipelines(presets: list[str], good_ref: np.ndarray, good_mov: np.ndarray, result: Result) -> None:
    for name in presets:
        pipe = load_pipeline(name)
        for label, bad in hostile_frames(good_ref).items():
            for order, (ref, mov) in (("moving", (good_ref, bad)), ("reference", (bad, good_mov))):
                result.cases += 1
                try:
                    shift = pipe.estimate(ref, mov)
                except FrameError:
                    continue
                except Exception as exc:
                    result.fail(f"{name}, {label} as {order}: {type(exc).__name__}: {exc}")
                    continue
                finite = np.isfinite(shift.dy) and np.isfinite(shift.dx)
                if not finite and shift.confidence >= 0.5:
                    result.fail(f"{name}, {label} as {order}: non-finite shift with confidence {shift.confidence}")


class HostileSource:
    """Wraps a virtual microscope; replaces chosen frames by hostile ones (the actuator still shares its state)."""

    def __init__(self, inner, schedule: dict):
        self.inner, self.schedule = inner, schedule

    def acquire(self) -> Frame:
        frame = self.inner.acquire()
        if frame.index in self.schedule:
            bad = self.schedule[frame.index]
            frame = Frame(data=bad, index=frame.index, time_s=frame.time_s, pixel_size_nm=frame.pixel_size_nm,
                          meta=frame.meta)
        return frame

    def __getattr__(self, name):
        return getattr(self.inner, name)


def through_loop(recipe_text: str, work, result: Result) -> None:
    """A closed-loop run per hostile frame kind: the hostile frame comes first (as the reference) in one run and
    mid-run in another; the run must finish, record it as a bad frame, and not move the actuator on it."""
    import drift_framework as df
    from drift_framework.assembly import build_hardware
    from drift_framework.recipe import load_recipe

    recipe = load_recipe(recipe_text)
    good = None
    for position in (0, 5):
        for label in hostile_frames(np.zeros((64, 64), np.float32) + np.eye(64, dtype=np.float32)):
            source, actuator, _ = build_hardware(recipe)
            if good is None:
                good = source.acquire().data
                source, actuator, _ = build_hardware(recipe)
            bad = hostile_frames(good)[label]
            # two hostile frames in a row (one for another geometry: two equal ones would be a valid pair)
            schedule = {position: bad} if label in OTHER_GEOMETRY else {position: bad, position + 1: bad}
            wrapped = HostileSource(source, schedule)
            out = work / f"loop-{position}-{result.cases}.h5"  # run files are never replaced
            result.cases += 1
            try:
                summary = df.run(recipe, output=out, frames=10, source=wrapped, actuator=actuator)
                run = df.read_run(summary.output)
            except Exception as exc:
                result.fail(f"loop, {label} at frame {position}: {type(exc).__name__}: {exc}")
                continue
            status = run.steps["status"]
            span = len(schedule)
            moved = np.abs(run.steps["command"][position:position + span]).sum()
            hit = status[position:position + span]
            misled = label in ACCEPTABLE and "calibration check failed" in summary.stop_reason
            if len(run) != 10 and not misled:  # a reference of inverted contrast misleads every estimate after it:
                # the calibration check sees the corrections go wrong and stops, which is the documented outcome
                result.fail(f"loop, {label} at frame {position}: {len(run)} steps recorded, not 10")
            elif label in OTHER_GEOMETRY and position == 0:
                # a valid image of another size first: it is the reference, and the next good frame, of the
                # usual size, becomes the new one; the run must then go on correcting
                if not set(status[-3:]) <= {1, 2}:
                    result.fail(f"loop, {label} at frame 0: did not recover, last status {status[-3:]}")
            elif label not in ACCEPTABLE and (set(hit) - {3, 4} or moved):
                result.fail(f"loop, {label} at frame {position}: status {hit}, moved {moved}")
            elif label not in ACCEPTABLE and not set(status[-3:]) <= {1, 2}:
                result.fail(f"loop, {label} at frame {position}: did not recover, last status {status[-3:]}")


#: Valid images of another size than the run's frames.
OTHER_GEOMETRY = {"4096²", "non-square", "mismatched shape"}

#: Frames that are valid images (a dtype or a scale, not a fault): the loop may use them.
ACCEPTABLE = {"nested list", "uint8", "int16", "int64", "float16", "float64", "bool", "huge values", "tiny values", "negative"}


LOOP_RECIPE = """
name: fuzz
source: {plugin: simulator, shape: [64, 64], spacing_px: 10, noise: {kind: gaussian, snr: 2.0},
         drift: [{kind: linear, velocity_px_per_frame: [0.3, -0.2]}], seed: 1}
pipeline: classical
controller: {plugin: kalman}
actuator: {plugin: simulated-stage, limits: {max_step: 2.0, travel: 50.0}}
run: {frames: 10, save_frames: true}
"""


def frame_suite(work) -> Result:
    """Every hostile frame as reference and as moving frame through every preset, then through the loop."""
    from drift_bench.pairs import pair_source
    from drift_framework.registry import get_registry

    work.mkdir(parents=True, exist_ok=True)
    presets = sorted(get_registry().presets)
    result = Result("frame fuzzing", detail=f"{len(hostile_frames(np.zeros((64, 64))))} hostile frames "
                                            f"(NaN, ±inf, constant, zero, 1×1, 2×2, 4096², non-square, integer/"
                                            f"float16/complex/bool/object dtypes, 3-D, 1-D, empty, mismatched …) "
                                            f"through {len(presets)} presets both ways, and through the loop "
                                            "as first frame and mid-run")
    pair = next(iter(pair_source("simulator", shape=[64, 64], spacing_px=[10.0],
                                 noise={"kind": "gaussian", "snr": 2.0}).pairs(1, seed=1)))
    through_pipelines(presets, pair.reference.astype(np.float32), pair.moving.astype(np.float32), result)
    through_loop(LOOP_RECIPE, work, result)
    return result
