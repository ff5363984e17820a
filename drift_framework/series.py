"""Image series from pair measurements: which pairs to measure, and the frame positions they add up to.

Plain numpy, shared by offline correction (``drift correct``) and benchmarks on recorded series.  A measurement of
the pair ``(i, j)`` is ``d_j − d_i`` (px, the content displacement of frame ``j`` relative to frame ``i``) with its
radial 1-σ; positions are relative to frame 0.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["pair_list", "solve_positions"]


def pair_list(n: int, reference: str, max_gap: int | None) -> list[tuple[int, int]]:
    """The pairs to measure: against frame 0 (``first``), frame to frame (``previous``), or every pair at most
    ``max_gap`` frames apart (``all-pairs``)."""
    if reference == "first":
        return [(0, j) for j in range(1, n)]
    if reference == "previous":
        return [(j - 1, j) for j in range(1, n)]
    gap = n - 1 if max_gap is None else max_gap
    return [(i, j) for i in range(n) for j in range(i + 1, min(n, i + gap + 1))]


def solve_positions(n: int, pairs: list[tuple[int, int]], measured: np.ndarray, *, iterations: int = 8,
                    huber: float = 2.0) -> tuple[np.ndarray, np.ndarray, float]:
    """Positions (n, 2) with frame 0 at zero from pair measurements ``d_j − d_i``, robust weighted least squares.

    Returns ``(positions, sigma, closure)``: sigma from the weighted normal equations (radial, px), widened by the
    Birge ratio when the residuals exceed the measurements' sigmas; closure is the
    RMS length of the residuals ``measured − (d_j − d_i)`` (px), how far the measurements fail to add up around
    loops of frames.
    """
    a = np.zeros((len(pairs), n))
    for k, (i, j) in enumerate(pairs):
        a[k, j] += 1
        a[k, i] -= 1
    a = a[:, 1:]
    y = measured[:, :2]
    sig = np.maximum(measured[:, 2], 1e-3) / math.sqrt(2)  # per axis
    w = np.ones(len(pairs))
    for _ in range(iterations):
        weights = w / sig ** 2
        normal = a.T @ (a * weights[:, None])
        x = np.linalg.solve(normal, a.T @ (y * weights[:, None]))
        r = np.hypot(*(a @ x - y).T) / sig
        w = np.minimum(1.0, huber / np.maximum(r, 1e-12))
    cov = np.linalg.inv(normal)
    residual = a @ x - y
    # Birge ratio: when the measurements scatter more than their sigmas say (a distorted scan), widen the
    # positions' sigma by it rather than report a precision the data do not have
    dof = 2 * (len(pairs) - (n - 1))
    if dof > 0:
        chi2 = float(np.sum(weights[:, None] * residual ** 2))
        cov = cov * max(1.0, chi2 / dof)
    positions = np.vstack([np.zeros((1, 2)), x])
    sigma = np.concatenate([[0.0], np.sqrt(2 * np.diag(cov))])
    closure = float(np.sqrt(np.mean(np.sum(residual ** 2, axis=1))))
    return positions, sigma, closure
