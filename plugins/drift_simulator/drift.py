"""Composable, time-based drift models.

Each model gives the specimen's displacement (content displacement in the
image, pixels ``(dy, dx)``) at a time ``t`` in seconds.  Rates are given per
second or per frame; per-frame rates are converted with the source's frame
time, so the drift per frame follows the acquisition settings.  Calls must come
in non-decreasing time order (random components evolve with time).
"""
from __future__ import annotations

import math

import numpy as np

DRIFT_KINDS = ("linear", "random-walk", "sinusoidal", "jumps", "settling")


class Linear:
    """Constant velocity."""

    def __init__(self, velocity_px_per_s):
        self.v = np.asarray(velocity_px_per_s, float)

    def __call__(self, t: float) -> np.ndarray:
        return self.v * t


class RandomWalk:
    """Brownian motion: the displacement's std grows as ``step · sqrt(t / frame_time)``."""

    def __init__(self, std_px_per_sqrt_s: float, rng: np.random.Generator):
        self.d, self.rng = float(std_px_per_sqrt_s), rng
        self.t, self.pos = 0.0, np.zeros(2)

    def __call__(self, t: float) -> np.ndarray:
        dt = t - self.t
        if dt > 0:
            self.pos = self.pos + self.rng.normal(0, self.d * math.sqrt(dt), 2)
            self.t = t
        return self.pos.copy()


class Sinusoidal:
    """Thermal oscillation: ``amplitude · sin(2π t / period + phase)``."""

    def __init__(self, amplitude_px, period_s: float, phase_rad: float = 0.0):
        self.a, self.period, self.phase = np.asarray(amplitude_px, float), float(period_s), float(phase_rad)

    def __call__(self, t: float) -> np.ndarray:
        return self.a * math.sin(2 * math.pi * t / self.period + self.phase)


class Jumps:
    """Sudden jumps (Poisson events) of a fixed size in a random direction."""

    def __init__(self, rate_per_s: float, size_px: float, rng: np.random.Generator):
        self.rate, self.size, self.rng = float(rate_per_s), float(size_px), rng
        self.t, self.pos = 0.0, np.zeros(2)

    def __call__(self, t: float) -> np.ndarray:
        dt = t - self.t
        if dt > 0:
            for _ in range(self.rng.poisson(self.rate * dt)):
                angle = self.rng.uniform(0, 2 * math.pi)
                self.pos = self.pos + self.size * np.array([math.sin(angle), math.cos(angle)])
            self.t = t
        return self.pos.copy()


class Settling:
    """Creep after a stage move: the specimen keeps going a ``fraction`` of each move, relaxing with ``tau_s``."""

    def __init__(self, fraction: float, tau_s: float):
        self.fraction, self.tau = float(fraction), float(tau_s)
        self.moves: list[tuple[float, np.ndarray]] = []

    def notify_move(self, t: float, move_px: np.ndarray) -> None:
        self.moves.append((t, np.asarray(move_px, float)))
        if len(self.moves) > 64:  # old moves have settled; fold them into a constant
            t0, m0 = self.moves.pop(0)
            self._settled = getattr(self, "_settled", np.zeros(2)) + self.fraction * m0

    def __call__(self, t: float) -> np.ndarray:
        out = getattr(self, "_settled", np.zeros(2)).copy()
        for tm, m in self.moves:
            if t > tm:
                out += self.fraction * m * (1 - math.exp(-(t - tm) / self.tau))
        return out


class CompositeDrift:
    """The sum of several drift models."""

    def __init__(self, models):
        self.models = list(models)

    def __call__(self, t: float) -> np.ndarray:
        out = np.zeros(2)
        for m in self.models:
            out = out + m(t)
        return out

    def notify_move(self, t: float, move_px) -> None:
        for m in self.models:
            if hasattr(m, "notify_move"):
                m.notify_move(t, move_px)


def build_drift(specs, frame_time_s: float, rng: np.random.Generator) -> CompositeDrift:
    """Build drift models from validated recipe specs (a list of ``{kind: …}`` mappings)."""
    models: list = []
    per = 1.0 / frame_time_s
    for spec in specs:
        kind = spec["kind"]
        if kind == "linear":
            v = spec["velocity_px_per_s"] if spec.get("velocity_px_per_s") is not None \
                else np.asarray(spec["velocity_px_per_frame"]) * per
            models.append(Linear(v))
        elif kind == "random-walk":
            d = spec["step_px_per_sqrt_s"] if spec.get("step_px_per_sqrt_s") is not None \
                else spec["step_px_per_frame"] * math.sqrt(per)
            models.append(RandomWalk(d, rng))
        elif kind == "sinusoidal":
            period = spec["period_s"] if spec.get("period_s") is not None else spec["period_frames"] * frame_time_s
            models.append(Sinusoidal(spec["amplitude_px"], period, math.radians(spec["phase_deg"])))
        elif kind == "jumps":
            rate = spec["rate_per_s"] if spec.get("rate_per_s") is not None else spec["rate_per_frame"] * per
            models.append(Jumps(rate, spec["size_px"], rng))
        elif kind == "settling":
            models.append(Settling(spec["fraction"], spec["tau_s"]))
        else:
            raise ValueError(f"unknown drift kind {kind!r}; available: {', '.join(DRIFT_KINDS)}")
    return CompositeDrift(models)
