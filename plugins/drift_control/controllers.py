"""Controllers: turn drift measurements into the field-of-view position to hold.

Each receives the measured absolute drift ``D`` (content offset plus the
commanded field-of-view position, px) at frame time ``t`` and returns the
field-of-view target for the next frame, acquired around ``next_time_s``.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from drift_framework.trajectory import ConstantVelocityFilter


class NoControl:
    """Measure only: the field of view never moves."""

    def update(self, time_s, drift_px, sigma_px, fov_px, next_time_s):
        return np.asarray(fov_px, float)

    def reset(self):
        pass


class ProportionalIntegral:
    """``target = fov + kp·e + ki·Σe`` with ``e`` the measured residual offset."""

    def __init__(self, kp: float = 1.0, ki: float = 0.0):
        self.kp, self.ki = kp, ki
        self.integral = np.zeros(2)

    def update(self, time_s, drift_px, sigma_px, fov_px, next_time_s):
        error = np.asarray(drift_px, float) - fov_px
        self.integral += error
        return fov_px + self.kp * error + self.ki * self.integral

    def reset(self):
        self.integral = np.zeros(2)


class LinearRate:
    """Feed-forward: fit a straight line to the last ``history`` drift measurements and
    hold the position it predicts for the next frame."""

    def __init__(self, history: int = 3):
        self.points: deque = deque(maxlen=history)

    def update(self, time_s, drift_px, sigma_px, fov_px, next_time_s):
        self.points.append((time_s, np.asarray(drift_px, float)))
        if len(self.points) < 2:
            return np.asarray(drift_px, float)
        t = np.array([p[0] for p in self.points])
        d = np.array([p[1] for p in self.points])
        tc = t - t.mean()
        rate = (tc[:, None] * (d - d.mean(axis=0))).sum(axis=0) / max((tc ** 2).sum(), 1e-30)
        return d.mean(axis=0) + rate * (next_time_s - t.mean())

    def reset(self):
        self.points.clear()


class Kalman:
    """Constant-velocity Kalman filter per axis, fusing each measurement with its sigma.

    State ``[position, velocity]``; process noise: white acceleration of spectral
    density ``q`` (px²/s³) plus a position random walk ``q_pos`` (px²/s).
    """

    def __init__(self, q: float = 0.05, q_pos: float = 0.01, initial_velocity_std: float = 10.0,
                 min_sigma_px: float = 0.01):
        self.filter = ConstantVelocityFilter(q, q_pos, initial_velocity_std, min_sigma_px)

    def reset(self):
        self.filter.reset()

    def update(self, time_s, drift_px, sigma_px, fov_px, next_time_s):
        self.filter.update(time_s, drift_px, sigma_px)
        return self.filter.predict(next_time_s)[0]
