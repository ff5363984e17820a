"""Two series of one area scanned with perpendicular slow axes, registered together.

Within one series, what every frame shares cannot be measured: the scan generator's own slow-scan scale and shear
error, and the drift common to all frames, look like a strain of the specimen.  A second series scanned at 90° has
its slow axis along the first one's fast axis, so the two disagree exactly where the slow-scan errors are (after
Ophus et al., Ultramicroscopy 162, 2016).  A real strain of the specimen is in both and never shows in the
disagreement: it stays in the result.

The model: after each series is registered on its own (:func:`register_series`), the first series' average is
still displaced by ``e₁(y)``, a function of its slow-scan coordinate (its line), and the second's by ``e₂(x)``,
a function of its own line, which is the first's ``x``.  The displacement between the two averages (measured in
patches), ``d(y, x) = e₂(x) − e₁(y)``, is separable: its row part belongs to the first series, its column part to
the second.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .assembly import load_pipeline
from .registration import SeriesRegistration, _finish, _stack, register_series, resample

__all__ = ["OrthogonalRegistration", "register_orthogonal", "turn_field"]


@dataclass
class OrthogonalRegistration:
    """What :func:`register_orthogonal` found.

    ``first``, ``second``: each series' registration with the slow-scan correction in its field (each in its own
    recorded axes); ``average``: both series' aligned frames averaged, in the first series' axes;
    ``slow_scan_first`` (H, 2) and ``slow_scan_second`` (lines, 2): the displacement of each series' lines that the
    series alone could not see (px, each in its own axes; the second's includes the offset between the series);
    ``residual_px``: RMS of the patch displacements between the two corrected averages that the model leaves
    (noise, and anything not a function of a scan line); ``notes``: what makes the result doubtful (few patches
    compared, a large residual), with each series' own notes.
    """

    first: SeriesRegistration
    second: SeriesRegistration
    average: np.ndarray
    slow_scan_first: np.ndarray
    slow_scan_second: np.ndarray
    residual_px: float
    notes: tuple[str, ...] = ()  # where the two series did not agree as one area with scan-line distortions should


def turn_field(field: np.ndarray, k: int) -> np.ndarray:
    """A displacement field (…, H, W, 2) as seen in the image ``np.rot90(image, k)``: the grid turned, and each
    (dy, dx) with it (one quarter turn counter-clockwise takes (dy, dx) to (−dx, dy))."""
    out = np.asarray(field)
    for _ in range(k % 4):
        out = np.rot90(out, 1, axes=(-3, -2))
        out = np.stack([-out[..., 1], out[..., 0]], axis=-1)
    return np.ascontiguousarray(out)


def _quarter_turns(rotation_deg: float) -> int:
    turns = rotation_deg / 90.0
    if abs(turns - round(turns)) > 1e-6 or round(turns) % 2 == 0:
        raise ValueError(f"rotation_deg must be 90 or 270 (−90): the second series' slow axis must be the first's "
                         f"fast axis, got {rotation_deg:g}")
    return int(round(turns)) % 4


def _filled(image: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(image), image, np.nanmean(image))


def _separable_parts(d: np.ndarray, valid: np.ndarray, iterations: int = 10) -> tuple[np.ndarray, np.ndarray,
                                                                                   np.ndarray]:
    """``d`` (P, Q, 2) ≈ ``rows[:, None] + cols[None, :]``: alternating row and column medians over the ``valid``
    entries, then, without the entries more than 1 px off that (a patch measured a lattice translate away),
    alternating means.  Returns rows, cols (``cols`` takes the mean) and the entries used."""
    used = valid.copy()
    rows, cols = np.zeros((d.shape[0], 2)), np.zeros((d.shape[1], 2))
    with warnings.catch_warnings():  # lines without a valid entry stay NaN until filled
        warnings.simplefilter("ignore", RuntimeWarning)
        for average in (np.nanmedian, np.nanmean):
            values = np.where(used[..., None], d, np.nan)
            rows, cols = np.zeros_like(rows), np.zeros_like(cols)
            for _ in range(iterations):
                cols = np.nan_to_num(average(values - rows[:, None], axis=0))
                rows = np.nan_to_num(average(values - cols[None, :], axis=1))
            used &= np.linalg.norm(d - rows[:, None] - cols[None, :], axis=-1) <= 1.0
    mean = rows[used.any(axis=1)].mean(axis=0) if used.any() else np.zeros(2)
    return rows - mean, cols + mean, used


def _at_lines(values: np.ndarray, known: np.ndarray, centres: np.ndarray, n: int) -> np.ndarray:
    """Values (L, 2) measured at line positions ``centres`` (``known`` ones), on every one of ``n`` lines:
    interpolated between measured positions, and beyond them along the straight line fitted to all of them (a scale
    or shear error grows linearly with the line)."""
    lines = np.arange(n, dtype=float)
    out = np.zeros((n, values.shape[1]))
    if known.sum() < 2:
        return out + (values[known].mean(axis=0) if known.any() else 0.0)
    at = centres[known]
    outside = (lines < at[0]) | (lines > at[-1])
    for c in range(values.shape[1]):
        slope, intercept = np.polyfit(at, values[known, c], 1)
        out[:, c] = np.interp(lines, at, values[known, c])
        out[outside, c] = intercept + slope * lines[outside]
    return out


def _patch_displacements(reference: np.ndarray, moving: np.ndarray, pipe: Any,
                         patch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Content displacement of ``moving`` from ``reference`` in overlapping patches (half a patch apart): patch
    centres (P,) and (Q,) in px, displacements (P, Q, 2) and which were measured (both patches fully seen,
    confidence ≥ 0.5)."""
    h, w = reference.shape
    starts_y, starts_x = np.arange(0, h - patch + 1, patch // 2), np.arange(0, w - patch + 1, patch // 2)
    d = np.zeros((len(starts_y), len(starts_x), 2))
    ok = np.zeros(d.shape[:2], bool)
    for i, y0 in enumerate(starts_y):
        for j, x0 in enumerate(starts_x):
            a = reference[y0:y0 + patch, x0:x0 + patch]
            b = moving[y0:y0 + patch, x0:x0 + patch]
            if not (np.isfinite(a).all() and np.isfinite(b).all()):
                continue
            shift = pipe.estimate(a, b)
            d[i, j], ok[i, j] = shift.vector, shift.confidence >= 0.5
    return starts_y + (patch - 1) / 2, starts_x + (patch - 1) / 2, d, ok


def register_orthogonal(first: Any, second: Any, *, rotation_deg: float = 90.0, model: str = "scan",
                        pipeline: Any = "classical", iterations: int = 2,
                        **options: Any) -> OrthogonalRegistration:
    """Register two series of one area scanned with perpendicular slow axes, using each to correct the other.

    Parameters
    ----------
    first, second : (N, H, W) array or sequence of Frame
        The two series as recorded.  ``second`` was scanned with the raster turned by ``rotation_deg``, so
        ``np.rot90(second_frame, rotation_deg // 90)`` shows the specimen as ``first`` does.
    rotation_deg : {90, 270, -90}
        The second series' scan rotation relative to the first's.
    model : {"scan", "rigid"}
        How each series is registered on its own first (:func:`register_series`).
    pipeline : str, dict or Pipeline
        What measures frames, strips and the offset between the two series.
    iterations : int
        Measure-and-correct passes (the second pass takes what the first order of the first one left).
    **options
        Passed to :func:`register_series` (timing, ``knots_per_frame``, …).

    Returns
    -------
    OrthogonalRegistration
    """
    from scipy import ndimage

    k = _quarter_turns(rotation_deg)
    first, second = (s if isinstance(s, np.ndarray) else list(s) for s in (first, second))  # each is read twice
    stack_a, _ = _stack(first)
    stack_b, _ = _stack(second)
    if stack_a.shape[1:] != np.rot90(stack_b[0], k).shape:
        raise ValueError(f"the two series must show the same area: frames {stack_a.shape[1:]} and, turned back, "
                         f"{np.rot90(stack_b[0], k).shape}")
    pipe = load_pipeline(pipeline) if isinstance(pipeline, (str, dict)) else pipeline
    a = register_series(first, model=model, pipeline=pipe, **options)
    b = register_series(second, model=model, pipeline=pipe, **options)
    h, w = stack_a.shape[1:]
    line_a, line_b = np.zeros((h, 2)), np.zeros((w, 2))  # in the first series' axes: along its y and its x
    field_a, field_b = a.field.astype(np.float64), b.field.astype(np.float64)
    aligned_a, aligned_b = a.aligned, np.rot90(b.aligned, k, axes=(1, 2))
    # the offset between the series, whole cells included (a lattice translate is as good as any, but the two
    # averages must overlap where they are compared)
    offset = np.asarray(pipe.estimate(_filled(a.average), _filled(np.rot90(b.average, k))).vector, float)
    patch = max(32, min(h, w) // 8)
    residual = np.nan
    for iteration in range(iterations + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            avg_a, avg_b = np.nanmean(aligned_a, axis=0), np.nanmean(aligned_b, axis=0)
        if iteration == 0:  # the second average moved onto the first by the offset before the patches are compared
            seen = ndimage.shift(np.isfinite(avg_b).astype(float), -offset, order=0, cval=0.0) > 0.5
            avg_b = np.where(seen, ndimage.shift(_filled(avg_b), -offset, order=3, mode="nearest"), np.nan)
        centres_y, centres_x, d, measured = _patch_displacements(avg_a, avg_b, pipe, patch)
        rows, cols, used = _separable_parts(d, measured)
        resid = d - rows[:, None] - cols[None, :]
        residual = float(np.sqrt(np.mean(np.sum(resid[used] ** 2, axis=-1)))) if used.any() else np.nan
        if iteration == iterations:
            break
        if iteration == 0:
            cols = cols + offset
        # d = e₂(x) − e₁(y): the first series' lines are displaced by −rows, the second's by cols
        step_a = _at_lines(-rows, np.asarray(used.any(axis=1)), centres_y, h)
        step_b = _at_lines(cols, np.asarray(used.any(axis=0)), centres_x, w)
        line_a, line_b = line_a + step_a, line_b + step_b
        field_a = field_a + step_a[None, :, None, :]
        field_b = field_b + turn_field(np.broadcast_to(step_b[None, :, :], (h, w, 2)), -k)[None]
        aligned_a = resample(stack_a, field_a)
        aligned_b = np.rot90(resample(stack_b, field_b), k, axes=(1, 2))
    notes = [f"first series: {note}" for note in a.notes] + [f"second series: {note}" for note in b.notes]
    if used.sum() < 0.5 * used.size:
        notes.append(f"only {int(used.sum())} of {used.size} patches of the two averages agreed well enough to be "
                     "compared: are they the same area?")
    if not residual <= 0.5:
        notes.append(f"the two series disagree by {residual:.2f} px RMS beyond distortions of their scan lines: "
                     "not the same area, or distortion that changes from frame to frame")
    first_reg = _finish(stack_a, field_a, a.uncertainty, a.model, a.timing, a.notes, a.knots_per_frame)
    second_reg = _finish(stack_b, field_b, b.uncertainty, b.model, b.timing, b.notes, b.knots_per_frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        average = np.nanmean(np.concatenate([first_reg.aligned, np.rot90(second_reg.aligned, k, axes=(1, 2))]),
                             axis=0)
    # the second series' lines in its own axes: its line r is the first's column under the turn
    second_lines = turn_field(np.broadcast_to(line_b[None, :, :], (h, w, 2)), -k)
    return OrthogonalRegistration(first=first_reg, second=second_reg, average=np.asarray(average, np.float32),
                                  slow_scan_first=line_a.astype(np.float32),
                                  slow_scan_second=second_lines.mean(axis=1).astype(np.float32),
                                  residual_px=residual, notes=tuple(notes))
