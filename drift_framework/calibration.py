"""Actuator calibration: move by known steps, measure the image shifts, fit the 2×2 px → actuator matrix.

Model, for the frame after the k-th move (actuator position ``p_k``, time ``t_k``)::

    offset_k = −M·p_k + v·t_k + c          (M: image px per actuator unit)

The field of view follows the actuator, so the content moves the other way; the drift velocity ``v`` and the
constant ``c`` are fitted together with ``M`` so slow drift does not bias the calibration.  The calibration is
``C = M⁻¹`` (actuator units per px), decomposed into rotation, scales and shear for people to read.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import ArrayLike

from .assembly import build_run_components, close_component
from .limits import Limits
from .recipe import Recipe
from .types import FrameError

__all__ = ["Calibration", "calibrate", "calibration_matrix", "fit_calibration", "read_calibration",
           "write_calibration", "step_pattern"]


@dataclass
class Calibration:
    """A fitted calibration: ``matrix`` maps a field-of-view move (dy, dx) in px to actuator units."""

    matrix: list
    rotation_deg: float
    scale: float
    scale_ratio: float
    shear: float
    residual_px: float
    steps: int
    units: str = ""
    created: str = ""

    def as_array(self) -> np.ndarray:
        return np.asarray(self.matrix, float)


def step_pattern(step: float, radius: float, n: int) -> np.ndarray:
    """Relative moves (actuator units), none longer than ``step``, that visit ``n`` points on a circle of
    ``radius`` and return to the start.

    Each move is measured against the previous frame, so a move must shift the image by less than about a
    third of a lattice period; the circle makes the fit see every direction.
    """
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    points = radius * np.stack([np.sin(angles), np.cos(angles)], axis=1)
    path = np.concatenate([np.zeros((1, 2)), points, np.zeros((1, 2))])
    moves = []
    for a, b in zip(path[:-1], path[1:]):
        k = max(1, int(np.ceil(np.hypot(*(b - a)) / step)))
        moves += [(b - a) / k] * k
    return np.array(moves)


def fit_calibration(positions: ArrayLike, offsets: ArrayLike, times: ArrayLike, units: str = "") -> Calibration:
    """Least-squares fit of ``offset = −M·p + v·t + c``; returns ``C = M⁻¹`` and its decomposition."""
    p, o, t = np.asarray(positions, float), np.asarray(offsets, float), np.asarray(times, float)
    if len(p) < 4:
        raise ValueError("calibration needs at least 4 measured positions")
    t = t - t.mean()
    design = np.column_stack([-p, t, np.ones(len(p))])  # unknowns per image axis: M row (2), v, c
    coef, *_ = np.linalg.lstsq(design, o, rcond=None)
    m = coef[:2].T                                       # px per actuator unit
    residual = o - design @ coef
    c = np.linalg.inv(m)
    # polar decomposition C = R·S (R rotation, S symmetric positive): rotation, scales and shear
    u, s, vt = np.linalg.svd(c)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    sym = r.T @ c
    rotation = math.degrees(math.atan2(r[1, 0], r[0, 0]))
    scales = np.sqrt(np.diag(sym.T @ sym))
    shear = float(sym[0, 1] / max(np.sqrt(sym[0, 0] * sym[1, 1]), 1e-30))
    return Calibration(matrix=c.tolist(), rotation_deg=rotation, scale=float(np.sqrt(abs(np.linalg.det(c)))),
                       scale_ratio=float(scales[0] / scales[1]), shear=shear,
                       residual_px=float(np.sqrt(np.mean(np.sum(residual ** 2, axis=1)))), steps=len(p), units=units,
                       created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def calibrate(recipe: Recipe, *, steps: int = 12, step: float | None = None, radius: float | None = None,
              progress: Callable[[int, int], None] | None = None) -> Calibration:
    """Run a calibration with the recipe's source, pipeline and actuator (the engine's limits apply).

    ``step`` (actuator units) defaults to 2 px worth when the actuator works in nm and the frames carry a pixel
    size, else a quarter of ``limits.max_step``; ``radius`` defaults to 4 steps.
    """
    if recipe.actuator is None:
        raise ValueError("the recipe has no actuator to calibrate")
    source, pipeline, controller, actuator = build_run_components(recipe)
    assert recipe.limits is not None  # validated: an actuator section always has limits
    limits = Limits(**recipe.limits)
    try:
        previous = source.acquire()
        if step is None:
            px = previous.pixel_size_nm
            step = 2 * px if getattr(actuator, "units", "") == "nm" and math.isfinite(px) else limits.max_step / 4
        step = min(step, limits.max_step)
        radius = min(radius or 4 * step, limits.travel / 2)
        position, offset = np.zeros(2), np.zeros(2)
        positions, offsets, times = [position.copy()], [offset.copy()], [previous.time_s]
        moves = step_pattern(step, radius, steps)
        for i, move in enumerate(moves):
            command, _ = limits.clip(move, position)
            actuator.move_by(command)
            position = position + command
            frame = source.acquire()
            try:
                offset = offset + pipeline.estimate(previous.data, frame.data).vector
            except FrameError as exc:
                raise ValueError(f"calibration frame {frame.index} could not be measured: {exc}") from None
            previous = frame
            positions.append(position.copy())
            offsets.append(offset.copy())
            times.append(frame.time_s)
            if progress is not None:
                progress(i + 1, len(moves))
    finally:
        for component in (actuator, controller, source):
            close_component(component)
    return fit_calibration(positions, offsets, times, units=getattr(actuator, "units", ""))


def calibration_matrix(recipe: Recipe, actuator: Any) -> np.ndarray:
    """The 2×2 px → actuator-units matrix the engine uses: the recipe's calibration, else the actuator's own."""
    cal = recipe.calibration or {}
    if cal.get("file"):
        return read_calibration(Path(recipe.directory) / cal["file"])
    if cal.get("matrix") is not None:
        return np.asarray(cal["matrix"], float)
    if cal.get("scale") is not None:
        t = math.radians(cal.get("rotation_deg") or 0.0)
        return cal["scale"] * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return np.asarray(actuator.calibration, float)


def calibration_origin(recipe: Recipe) -> str:
    """Where the engine's calibration comes from, in words (named when a check finds it wrong)."""
    cal = recipe.calibration or {}
    if cal.get("file"):
        return f"actuator.calibration.file {Path(recipe.directory) / cal['file']}"
    if cal.get("matrix") is not None:
        return "actuator.calibration.matrix of the recipe"
    if cal.get("scale") is not None:
        return "actuator.calibration scale and rotation_deg of the recipe"
    return "the actuator's own nominal calibration"


def write_calibration(cal: Calibration, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by `drift calibrate`; use it with actuator.calibration: {file: THIS_FILE}\n"
                    + yaml.safe_dump(asdict(cal), sort_keys=False))
    return path


def read_calibration(path: str | os.PathLike) -> np.ndarray:
    """The 2×2 matrix from a calibration file (raises ValueError with the file name when it is unusable)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
        matrix = np.asarray(data["matrix"], float)
    except FileNotFoundError:
        raise ValueError(f"calibration file {path} does not exist; run `drift calibrate`") from None
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"calibration file {path} is unusable: {exc}") from None
    if matrix.shape != (2, 2) or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-12:
        raise ValueError(f"calibration file {path} does not hold an invertible 2×2 matrix")
    return matrix
