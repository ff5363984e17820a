"""Noise estimation, shift covariance and confidence shared by the classical estimators."""
from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr


def noise_std(image: np.ndarray) -> float:
    """Fast white-noise std estimate (Immerkær 1996): robust to smooth image structure.

    The 3×3 mask ``[[1,−2,1],[−2,4,−2],[1,−2,1]]`` is the outer product of two
    second differences, applied here as two slicing passes.
    """
    h, w = image.shape
    if h < 3 or w < 3:
        return float(np.std(image))
    img = image.astype(np.float32, copy=False)
    if h * w > 256 * 256:  # a central crop holds plenty of pixels for a 1 % estimate
        y0, x0 = max((h - 256) // 2, 0), max((w - 256) // 2, 0)
        img = img[y0:y0 + 256, x0:x0 + 256]
    dx = img[:, :-2] - 2 * img[:, 1:-1] + img[:, 2:]
    resp = dx[:-2] - 2 * dx[1:-1] + dx[2:]
    return float(math.sqrt(math.pi / 2) * np.mean(np.abs(resp), dtype=np.float64) / 6.0)


def gradient_information(reference: np.ndarray, moving: np.ndarray, var_r: float, var_m: float) -> np.ndarray:
    """Signal gradient energy ``Σ ∇μ ∇μᵀ`` estimated from two noisy frames (noise contribution removed)."""
    out = np.zeros((2, 2))
    for img, var in ((reference, var_r), (moving, var_m)):
        gy = (img[2:, 1:-1] - img[:-2, 1:-1]) * 0.5
        gx = (img[1:-1, 2:] - img[1:-1, :-2]) * 0.5
        n = gy.size
        m = np.array([[np.sum(gy * gy, dtype=np.float64), np.sum(gy * gx, dtype=np.float64)],
                      [0.0, np.sum(gx * gx, dtype=np.float64)]])
        m[1, 0] = m[0, 1]
        out += m - np.eye(2) * n * var / 2  # central differences carry σ²/2 of noise per axis
    out /= 2
    floor = 1e-9 * max(np.trace(np.abs(out)), 1e-30)
    vals, vecs = np.linalg.eigh(out)
    return (vecs * np.maximum(vals, floor)) @ vecs.T


def covariance(info: np.ndarray, var_sum: float, efficiency: float = 1.0) -> np.ndarray:
    """``efficiency² · (σ_r² + σ_m²) · H⁻¹``: the shift covariance of a correlation estimator."""
    return efficiency ** 2 * var_sum * np.linalg.inv(info)


def radial_sigma(cov: np.ndarray, floor_px: float = 0.0) -> float:
    """Radial 1-σ (``sqrt(E|error|²)``) with a model-error floor added in quadrature."""
    return float(math.sqrt(max(np.trace(cov), 0.0) + floor_px ** 2))


def local_maxima(box: np.ndarray) -> np.ndarray:
    """Mask of the interior of ``box`` (one pixel in from each edge) holding values ≥ all 8 neighbours."""
    inner = box[1:-1, 1:-1]
    local = np.ones(inner.shape, bool)
    for oy in (0, 1, 2):
        for ox in (0, 1, 2):
            if oy != 1 or ox != 1:
                local &= inner >= box[oy:oy + inner.shape[0], ox:ox + inner.shape[1]]
    return local


def peak_distinctness(cmap_data: np.ndarray, peak, center, search_mask: np.ndarray | None,
                      value_std: float) -> float:
    """Probability that the chosen peak beats every competing local maximum nearer zero shift.

    Peaks farther from zero lose by rule (a lattice repeats itself: the nearest
    of equal peaks wins), so only maxima closer to zero compete.  ``value_std``
    is the noise std of one map value; a difference of two values has ``√2`` times that.
    """
    if not np.isfinite(value_std) or value_std <= 0:
        return 1.0
    h, w = cmap_data.shape
    py, px = peak
    r2 = (py - center[0]) ** 2 + (px - center[1]) ** 2
    r = int(math.ceil(math.sqrt(r2))) + 1
    # only maxima nearer zero than the chosen peak compete: look inside that disk (plus a 1-px rim)
    ys = np.arange(center[0] - r - 1, center[0] + r + 2) % h
    xs = np.arange(center[1] - r - 1, center[1] + r + 2) % w
    box = cmap_data[np.ix_(ys, xs)]
    inner = box[1:-1, 1:-1]
    local = local_maxima(box)
    yy = (np.arange(-r, r + 1))[:, None]
    xx = (np.arange(-r, r + 1))[None, :]
    local &= yy ** 2 + xx ** 2 <= r2
    if search_mask is not None:
        local &= search_mask[np.ix_(ys[1:-1], xs[1:-1])]
    cy, cx = py - center[0] + r, px - center[1] + r
    local[max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2] = False
    if not local.any():
        return 1.0
    second = float(inner[local].max())
    z = (float(cmap_data[py, px]) - second) / (math.sqrt(2) * value_std)
    return float(ndtr(z))


def ncc_value_std(reference: np.ndarray, moving: np.ndarray, var_r: float, var_m: float,
                  n_eff: float | None = None) -> float:
    """Noise std of one value of a global NCC map of these frames (``n_eff``: effective pixel count of the window)."""
    n = n_eff or reference.size
    tot_r, tot_m = float(np.var(reference)), float(np.var(moving))
    p_r, p_m = max(tot_r - var_r, 0.0), max(tot_m - var_m, 0.0)
    var = (var_m * p_r + var_r * p_m + var_r * var_m) / n
    return math.sqrt(var) / max(math.sqrt(tot_r * tot_m), 1e-30)


def confidence(distinct: float, sigma: float) -> float:
    """``P(right peak) × P(|error| < 0.5 px)`` for a 2-D Gaussian error of radial RMS ``sigma``."""
    if not np.isfinite(sigma):
        return 0.0
    p_close = 1.0 - math.exp(-0.25 / max(sigma, 1e-9) ** 2)
    return float(np.clip(distinct * p_close, 0.0, 1.0))
