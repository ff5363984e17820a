"""Controllers: turn drift measurements into the field-of-view position to hold.

Each receives the measured absolute drift ``D`` (content offset plus the
commanded field-of-view position, px) at frame time ``t`` and returns the
field-of-view target for the next frame, acquired around ``next_time_s``.
"""
from __future__ import annotations

from collections import deque

import numpy as np


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
        self.q, self.q_pos, self.v0, self.min_sigma = q, q_pos, initial_velocity_std, min_sigma_px
        self.reset()

    def reset(self):
        self.x = None
        self.P = None
        self.t = None

    def _predict(self, dt):
        F = np.array([[1.0, dt], [0.0, 1.0]])
        Q = self.q * np.array([[dt ** 3 / 3, dt ** 2 / 2], [dt ** 2 / 2, dt]]) + self.q_pos * np.array([[dt, 0], [0, 0]])
        return F, Q

    def update(self, time_s, drift_px, sigma_px, fov_px, next_time_s):
        z = np.asarray(drift_px, float)
        r = max(float(sigma_px) if np.isfinite(sigma_px) else 1.0, self.min_sigma) ** 2 / 2  # per axis
        if self.x is None:
            self.x = np.stack([z, np.zeros(2)])           # (2 states, 2 axes)
            self.P = np.array([[r, 0.0], [0.0, self.v0 ** 2]])
            self.t = time_s
        else:
            F, Q = self._predict(max(time_s - self.t, 0.0))
            self.x = F @ self.x
            self.P = F @ self.P @ F.T + Q
            H = np.array([1.0, 0.0])
            S = H @ self.P @ H + r
            K = self.P @ H / S
            self.x = self.x + np.outer(K, z - H @ self.x)
            self.P = self.P - np.outer(K, H @ self.P)
            self.t = time_s
        F, _ = self._predict(max(next_time_s - time_s, 0.0))
        return (F @ self.x)[0]
