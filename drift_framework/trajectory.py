"""The drift as a trajectory in time: a constant-velocity Kalman filter, and the engine's track of the run's drift.

:class:`ConstantVelocityFilter` is the filter (the ``kalman`` controller runs one too).  :class:`DriftTrack` is the
engine's own: it is fed every well-measured frame, whatever the controller, and predicts where the content will be
(to decide between the candidates of an ambiguous estimate, :func:`~drift_framework.policy.choose_by_trajectory`)
and how fast it moves (fed forward into the scan with ``run.scan_ramp``).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["ConstantVelocityFilter", "DriftTrack"]


class ConstantVelocityFilter:
    """Constant-velocity Kalman filter, the same on both axes, of a position measured with a radial σ.

    State ``[position, velocity]`` per axis; process noise: white acceleration of spectral density ``q``
    (px²/time³) plus a position random walk ``q_pos`` (px²/time); ``initial_velocity_std`` (px/time) is the
    prior before a second measurement; σ below ``min_sigma_px`` is not trusted.
    """

    def __init__(self, q: float, q_pos: float, initial_velocity_std: float, min_sigma_px: float = 0.01):
        self.q, self.q_pos, self.v0, self.min_sigma = q, q_pos, initial_velocity_std, min_sigma_px
        self.reset()

    def reset(self) -> None:
        self.x: np.ndarray | None = None  # (2 states, 2 axes)
        self.P: np.ndarray | None = None  # (2, 2), shared by the axes
        self.t: float | None = None
        self.measurements = 0

    def transition(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """The state transition and process noise over ``dt``."""
        F = np.array([[1.0, dt], [0.0, 1.0]])
        Q = self.q * np.array([[dt ** 3 / 3, dt ** 2 / 2], [dt ** 2 / 2, dt]]) + self.q_pos * np.array([[dt, 0], [0, 0]])
        return F, Q

    def update(self, time: float, position: np.ndarray, sigma_px: float) -> None:
        """Fuse a measured ``position`` (px) of radial σ ``sigma_px`` at ``time``."""
        z = np.asarray(position, float)
        r = max(float(sigma_px) if np.isfinite(sigma_px) else 1.0, self.min_sigma) ** 2 / 2  # per axis
        self.measurements += 1
        if self.x is None or self.P is None or self.t is None:
            self.x = np.stack([z, np.zeros(2)])
            self.P = np.array([[r, 0.0], [0.0, self.v0 ** 2]])
            self.t = time
            return
        F, Q = self.transition(max(time - self.t, 0.0))
        self.x = F @ self.x
        self.P = F @ self.P @ F.T + Q
        H = np.array([1.0, 0.0])
        K = self.P @ H / (H @ self.P @ H + r)
        self.x = self.x + np.outer(K, z - H @ self.x)
        self.P = self.P - np.outer(K, H @ self.P)
        self.t = time

    def predict(self, time: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position (2,), velocity (2,) and the state covariance (2, 2) per axis at ``time``."""
        if self.x is None or self.P is None or self.t is None:
            raise ValueError("the filter has no measurement yet")
        F, Q = self.transition(max(time - self.t, 0.0))
        x = F @ self.x
        return x[0], x[1], F @ self.P @ F.T + Q


class DriftTrack:
    """The run's drift trajectory as the engine measured it: absolute drift (content offset plus field of view, px)
    against time, in units of the frame interval (so its priors read in px per frame, whatever the scan speed).

    Parameters
    ----------
    prior_px_per_frame : float
        1-σ of the drift per frame before two frames were measured: with lattice-equivalent candidates of an
        ambiguous estimate, a shift of this size is expected, one a lattice vector away is not.
    acceleration_px_per_frame2 : float
        How fast the drift rate wanders (white-acceleration density, px/frame² per √frame).
    walk_px_per_sqrt_frame : float
        The drift's random walk the straight line does not follow.
    """

    def __init__(self, prior_px_per_frame: float = 2.0, acceleration_px_per_frame2: float = 0.1,
                 walk_px_per_sqrt_frame: float = 0.2):
        self.filter = ConstantVelocityFilter(acceleration_px_per_frame2 ** 2, walk_px_per_sqrt_frame ** 2,
                                             prior_px_per_frame)
        self.frame_s: float | None = None

    def reset(self) -> None:
        """Forget the trajectory (a restarted microscope: nothing links the frames before to those after)."""
        self.filter.reset()

    def set_frame_interval(self, frame_s: float) -> None:
        """The time between frames, once two frames were seen (the track's unit of time is kept from then on)."""
        if self.frame_s is None and frame_s > 0:
            self.frame_s = float(frame_s)
            if self.filter.t is not None:  # the reference came before the interval was known
                self.filter.t = self.filter.t / self.frame_s

    def add(self, time_s: float, drift_px: np.ndarray, sigma_px: float) -> None:
        """A well-measured frame: its time, absolute drift (px) and radial σ (px)."""
        self.filter.update(time_s / (self.frame_s or 1.0), drift_px, sigma_px)

    def predict(self, time_s: float) -> tuple[np.ndarray, float] | None:
        """The predicted absolute drift at ``time_s`` and its radial 1-σ (px); None before the first frame or
        while the frame interval is unknown."""
        if self.filter.x is None or self.frame_s is None:
            return None
        position, _, P = self.filter.predict(time_s / self.frame_s)
        return position, math.sqrt(2 * P[0, 0])

    def rate(self, time_s: float) -> np.ndarray | None:
        """The drift rate (px/s) at ``time_s``; None before two frames were measured."""
        if self.filter.measurements < 2 or self.frame_s is None:
            return None
        _, velocity, _ = self.filter.predict(time_s / self.frame_s)
        return velocity / self.frame_s
