"""The brief's accuracy metrics, computed from per-pair results."""
from __future__ import annotations

import math
import time

import numpy as np

from drift_framework.types import FrameError

SUCCESS_PX = 0.5


def summarize(errors, sigmas, bounds, seconds) -> dict:
    """Success, RMSE over successes, efficiency vs the bound, sigma calibration, median time.

    Parameters
    ----------
    errors : array (n, 2)
        Estimated minus true shift (NaN where the pipeline raised).
    sigmas : array (n,)
        Reported radial sigma.
    bounds : array (n,)
        ``trace`` of each pair's Cramér–Rao covariance bound.
    seconds : array (n,)
        Time per pair.
    """
    errors = np.asarray(errors, float)
    dist = np.hypot(errors[:, 0], errors[:, 1])
    ok = np.isfinite(dist) & (dist < SUCCESS_PX)
    rmse = float(np.sqrt(np.mean(dist[ok] ** 2))) if ok.any() else math.nan
    bound = float(np.sqrt(np.mean(bounds)))
    sig = np.asarray(sigmas, float)
    z = dist[ok] / sig[ok]
    z = z[np.isfinite(z)]
    return {
        "success": float(ok.mean()),
        "rmse_px": rmse,
        "bound_px": bound,
        "efficiency": rmse / bound if bound > 0 else math.nan,
        "sigma_calibration": float(np.sqrt(np.mean(z ** 2))) if len(z) else math.nan,
        "median_ms": float(np.median(seconds) * 1e3),
    }


def success_at_bound(bounds) -> float:
    """The success (|error| < ``SUCCESS_PX``) of an unbiased estimator whose error is Gaussian, isotropic and at each
    pair's Cramér–Rao bound (``bounds``: the traces): ``mean(1 − exp(−R²/trace))``."""
    traces = np.asarray(bounds, float)
    return float(np.mean(1.0 - np.exp(-SUCCESS_PX ** 2 / np.maximum(traces, 1e-300))))


def time_estimate(pipeline, reference, moving):
    """``(shift or None, seconds)``; a FrameError counts as a failure, not a crash."""
    t0 = time.perf_counter()
    try:
        shift = pipeline.estimate(reference, moving)
    except FrameError:
        shift = None
    return shift, time.perf_counter() - t0
