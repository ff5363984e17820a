"""Image series from pair measurements: which pairs to measure, and the frame positions they add up to.

Plain numpy, shared by offline correction (``drift correct``) and benchmarks on recorded series.  A measurement of
the pair ``(i, j)`` is ``d_j − d_i`` (px, the content displacement of frame ``j`` relative to frame ``i``) with its
radial 1-σ; positions are relative to frame 0.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["overlap_after", "pair_list", "solve_positions", "steady_steps"]


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


def overlap_after(reference: np.ndarray, moving: np.ndarray,
                  guess: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | None:
    """The parts of ``reference`` and ``moving`` that show the same content once the whole pixels ``(ly, lx)`` of
    ``guess`` (a content displacement of ``moving``) are taken out, and those pixels; None when the overlap is under
    16 px a side.  What is left to measure between them is ``guess``'s fraction, well inside half a lattice cell."""
    h, w = reference.shape[:2]
    ly, lx = (int(round(float(v))) for v in guess)
    r0, r1, c0, c1 = max(0, ly), h + min(0, ly), max(0, lx), w + min(0, lx)
    if r1 - r0 < 16 or c1 - c0 < 16:
        return None
    return reference[r0 - ly:r1 - ly, c0 - lx:c1 - lx], moving[r0:r1, c0:c1], (ly, lx)


#: a frame-to-frame step farther than this from the series' median step (and beyond 3 of its sigmas) is measured
#: again around the median, px
STEADY_STEP_PX = 1.5


def steady_steps(measured: np.ndarray,
                 remeasure: Callable[[int, np.ndarray], np.ndarray | None]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Frame-to-frame steps ``(n − 1, 4)`` (dy, dx, sigma, confidence) with those far from the steady drift
    measured again around it, and a note for each step that was far.

    A lattice makes a step known only modulo its cells: beyond half the shortest lattice vector per frame (4 px per
    frame on 8 px cells) the estimator's answer nearest zero can be a translate of the true one, confidently.  The
    series' median step predicts every step; ``remeasure(i, guess)`` measures step i → i + 1 again around the
    prediction (what is left is well inside half a cell) and returns the row, or None when nothing confident came
    of it.  A step that stays far (a real jump, or nothing confident) is kept, and said."""
    if len(measured) < 3:
        return measured, ()
    median = np.median(measured[:, :2], axis=0)
    out, notes = measured.copy(), []
    for i, (dy, dx, sigma) in enumerate(measured[:, :3]):
        if math.hypot(dy - median[0], dx - median[1]) <= max(STEADY_STEP_PX, 3 * sigma):
            continue
        again = remeasure(i, median)
        if again is not None and math.hypot(*(again[:2] - median)) <= max(STEADY_STEP_PX, 3 * again[2]):
            out[i] = again
            notes.append(f"frames {i}→{i + 1}: the step ({dy:.2f}, {dx:.2f}) px lay far from the series' steady "
                         f"drift ({median[0]:.2f}, {median[1]:.2f}) px per frame (on a lattice, a translate of it); "
                         f"measured again around it: ({again[0]:.2f}, {again[1]:.2f}) px")
        else:
            notes.append(f"frames {i}→{i + 1}: the step ({dy:.2f}, {dx:.2f}) px is far from the series' steady drift "
                         f"({median[0]:.2f}, {median[1]:.2f}) px per frame and was kept (a jump, or a lattice "
                         "translate nothing confident ruled out)")
    return out, tuple(notes)
