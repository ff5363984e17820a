"""drift_control: closed-loop controllers (built-in plugin).

``none`` (measure only), ``pi`` (proportional-integral on the residual),
``linear-rate`` (feed-forward from a line through the last measurements), and
``kalman`` (constant-velocity Kalman filter weighted by each estimate's sigma).
"""
from __future__ import annotations

from drift_framework import Component, Param, hookimpl

__version__ = "0.1.0"


def _make(cls_name):
    def factory(p, ctx):
        from . import controllers

        return getattr(controllers, cls_name)(**p)
    return factory


@hookimpl
def drift_controllers():
    return [
        Component("none", _make("NoControl"), {}, "Measure only; never move the field of view"),
        Component("pi", _make("ProportionalIntegral"),
                  {"kp": Param("float", 1.0, "Proportional gain", ge=0, le=2),
                   "ki": Param("float", 0.0, "Integral gain", ge=0, le=1)},
                  "Proportional-integral control of the measured offset"),
        Component("linear-rate", _make("LinearRate"),
                  {"history": Param("int", 3, "Measurements in the line fit", ge=2, le=100)},
                  "Predict the drift at the next frame from a linear fit (feed-forward)"),
        Component("kalman", _make("Kalman"),
                  {"q": Param("float", 0.05, "Acceleration noise density, px²/s³", ge=0),
                   "q_pos": Param("float", 0.01, "Position random-walk density, px²/s", ge=0),
                   "initial_velocity_std": Param("float", 10.0, "Prior std of the drift velocity, px/s", gt=0),
                   "min_sigma_px": Param("float", 0.01, "Smallest measurement sigma trusted", gt=0)},
                  "Constant-velocity Kalman filter fusing each estimate with its sigma"),
    ]
