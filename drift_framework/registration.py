"""Series registration with time inside the frame: a scanned frame is acquired over time, so drift is a trajectory
``d(t)``, not one shift per frame.

``register_series(frames, model="scan")`` measures horizontal strips of every frame (each acquired over a known
span of line times) against the matching rows of the first frame, then fits ``d(t)`` — a piecewise-linear
trajectory with a few knots per frame and a smoothness prior, weighted by each strip's sigma — to those
measurements: the drift rate seen between frames fixes the shear inside each frame. ``model="rigid"`` is one
shift per frame. Both return the content displacement of every pixel (the brief's field: ``frame_k[y, x] ≈
ideal[y − dy, x − dx]``, ``ideal`` being the specimen scanned instantly at the first pixel's time).
"""
from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .assembly import load_pipeline
from .series import overlap_after, pair_list, solve_positions, steady_steps
from .types import Frame, ResampledReference

__all__ = ["register_series", "SeriesRegistration", "ScanTiming", "field_rmse", "line_offsets", "others_means", "resample"]


@dataclass(frozen=True)
class ScanTiming:
    """When each pixel was acquired: pixel ``(y, x)`` of frame ``k`` at ``frame_starts[k] + y·line + x·pixel``
    (``serpentine``: odd lines run right to left, ``(w − 1 − x)·pixel``)."""

    pixel_time_s: float
    line_time_s: float
    frame_starts_s: np.ndarray
    serpentine: bool = False
    ramps_px_per_s: np.ndarray | None = None  # (N, 2): the scan ramp each frame was bent by (run.scan_ramp)

    def pixel_times(self, k: int, shape: tuple[int, int]) -> np.ndarray:
        h, w = shape
        along = np.broadcast_to((np.arange(w) + 0.5) * self.pixel_time_s, (h, w))
        if self.serpentine:
            along = along.copy()
            along[1::2] = along[1::2, ::-1]
        return self.frame_starts_s[k] + np.arange(h)[:, None] * self.line_time_s + along

    def ramp(self, k: int, t: Any, rows: int) -> np.ndarray:
        """How far frame ``k``'s scan ramp had moved the probe at times ``t`` (…, 2), px: the ramp runs about the
        middle of the frame's ``rows`` lines.  The content a pixel shows is displaced by the drift minus this."""
        t = np.asarray(t, float)
        if self.ramps_px_per_s is None:
            return np.zeros(t.shape + (2,))
        middle = self.frame_starts_s[k] + rows * self.line_time_s / 2
        return (t - middle)[..., None] * self.ramps_px_per_s[k]


@dataclass
class SeriesRegistration:
    """What :func:`register_series` found.

    ``field`` (N, H, W, 2): content displacement (dy, dx) of every pixel; ``shifts`` (N, 2): its mean per frame;
    ``aligned`` (N, H, W): frames resampled onto the undistorted grid (NaN where a frame saw nothing);
    ``average``: their mean; ``uncertainty`` (N,): RMS misfit of the strip measurements of each frame (px; for
    ``rigid`` the estimates' sigma).
    """

    field: np.ndarray
    shifts: np.ndarray
    aligned: np.ndarray
    average: np.ndarray
    uncertainty: np.ndarray
    model: str
    timing: ScanTiming | None = None
    notes: tuple[str, ...] = ()  # what could not be measured, and the coarser model used there
    knots_per_frame: int | None = None  # scan: the trajectory's knots per frame time (chosen by the strips: "auto")

    def apply(self, data: Any, *, order: int = 3) -> np.ndarray:
        """Resample data acquired with the registered frames by the same field: the simultaneous HAADF of an ABF
        series (``(N, H, W)``) or a spectrum image per frame (``(N, H, W, C)``: EDS, EELS, each channel moved).
        The data must share the frames' scan grid: pixel ``(y, x)`` of frame ``k`` acquired when it was there."""
        data = np.asarray(data)
        n, h, w = self.field.shape[:3]
        if data.ndim not in (3, 4) or data.shape[:3] != (n, h, w):
            raise ValueError(f"data to apply the field to must be (N, H, W) or (N, H, W, C) with N, H, W = {n}, "
                             f"{h}, {w} (the registered frames' scan grid), got shape {data.shape}")
        return resample(data, self.field, order=order)


def _stack(frames: Any) -> tuple[np.ndarray, list[dict]]:
    if isinstance(frames, np.ndarray):
        if frames.ndim != 3:
            raise ValueError(f"frames must be a (N, H, W) stack, got shape {frames.shape}")
        return frames.astype(np.float32), [{} for _ in frames]
    items = list(frames)
    data = [np.asarray(f.data if isinstance(f, Frame) else f, np.float32) for f in items]
    if len({d.shape for d in data}) != 1 or data[0].ndim != 2:
        raise ValueError("frames must be 2-D images of one shape")
    return np.stack(data), [dict(f.meta or {}) if isinstance(f, Frame) else {} for f in items]


def _timing(n: int, shape: tuple[int, int], metas: list[dict], pixel_time_s: float | None,
            line_time_s: float | None, frame_time_s: float | None, serpentine: bool | None = None) -> ScanTiming:
    """Timing from the frames' metadata (``meta["scan"]``) when they carry it, else from the arguments."""
    scans: list[Any] = [m.get("scan") for m in metas]
    if all(isinstance(s, dict) and "t_start_s" in s for s in scans):
        first = scans[0]
        starts = np.array([float(s["t_start_s"]) for s in scans])
        pixel, line = float(first["pixel_time_s"]), float(first["line_time_s"])
        recorded = {"pixel_time_s": pixel, "line_time_s": line,
                    "frame_time_s": float(np.median(np.diff(starts))) if n > 1 else None}
        for name, given in (("pixel_time_s", pixel_time_s), ("line_time_s", line_time_s),
                            ("frame_time_s", frame_time_s)):
            known = recorded[name]
            if given is not None and known is not None and not math.isclose(given, known, rel_tol=0.01):
                raise ValueError(f"{name}={given:g} s contradicts the frames' own timing (meta['scan']: "
                                 f"{known:g} s); leave it out, or correct the metadata")
        recorded_serpentine = bool(first.get("serpentine", False))
        if serpentine is not None and serpentine != recorded_serpentine:
            raise ValueError(f"serpentine={serpentine} contradicts the frames' own timing (meta['scan']: "
                             f"serpentine={recorded_serpentine}); leave it out, or correct the metadata")
        ramps = np.array([s.get("ramp_px_per_s", (0.0, 0.0)) for s in scans], float)
        return ScanTiming(pixel, line, starts, recorded_serpentine, ramps if ramps.any() else None)
    if pixel_time_s is None and line_time_s is None:
        raise ValueError("model='scan' needs the scan timing: the frames carry none (meta['scan']); give "
                         "pixel_time_s (and line_time_s with the fly-back, frame_time_s with pauses between frames)")
    h, w = shape
    pixel = float(pixel_time_s) if pixel_time_s is not None else float(line_time_s) / w  # type: ignore[arg-type]
    line = float(line_time_s) if line_time_s is not None else pixel * w
    frame = float(frame_time_s) if frame_time_s is not None else line * h
    if not (pixel > 0 and line >= pixel * w and frame >= line * h):
        raise ValueError(f"inconsistent scan timing: pixel {pixel:g} s, line {line:g} s, frame {frame:g} s "
                         "(a line holds its pixels, a frame its lines)")
    return ScanTiming(pixel, line, np.arange(n) * frame, bool(serpentine))


def register_series(frames: Any, *, model: str = "rigid", pixel_time_s: float | None = None,
                    line_time_s: float | None = None, frame_time_s: float | None = None,
                    pipeline: Any = "classical", strip_rows: int | None = None, knots_per_frame: int | str = "auto",
                    smoothness: float = 10.0, line_jitter: bool = True,
                    template_passes: int = 0, serpentine: bool | None = None) -> SeriesRegistration:
    """Register an image series against its first frame, rigidly or as a drift trajectory in time.

    Parameters
    ----------
    frames : (N, H, W) array or sequence of Frame
        The series; :class:`Frame` objects with ``meta["scan"]`` (``t_start_s``, ``pixel_time_s``,
        ``line_time_s``) give their own timing.
    model : {"rigid", "scan"}
        One shift per frame, or a trajectory ``d(t)`` sampled at every pixel's acquisition time.
    pixel_time_s, line_time_s, frame_time_s : float, optional
        Scan timing when the frames do not carry it (line time includes the fly-back; frame time is start to
        start). ``model="scan"`` without any timing is an error.
    pipeline : str, dict or Pipeline
        What measures the frames and strips.
    strip_rows : int, optional
        Rows of each horizontal strip measured (``scan``; default ``max(32, H // 8)``: enough lattice rows for an
        unambiguous strip, eight strips of a large frame).
    knots_per_frame : int or "auto"
        Knots of the piecewise-linear trajectory per frame time (``scan``); ``"auto"`` (default): 2, 4 or 8,
        whichever predicts strips left out of the fit best (more only when at least 25 % better), chosen again at
        each template pass and kept in ``SeriesRegistration.knots_per_frame``.  On the shared real SrTiO3 stack it
        chooses 8 (64² patches disagree by 0.30 px, 0.37 with 2); on the simulator's smooth drift mostly 2.
    smoothness : float
        Weight of the trajectory's second-difference prior, in px⁻² of curvature per knot (``scan``).
    line_jitter : bool
        Also measure each scan line's offsets beyond the trajectory (fast-scan jitter, vibration and drift
        faster than the knots; ``scan``, see :func:`line_offsets`).
    serpentine : bool, optional
        Odd lines scanned right to left (``scan``; default: the frames' ``meta["scan"]``, else raster).
    template_passes : int
        Refits of the trajectory to strips measured against the other frames' mean instead of the first frame
        (``scan``; with more ``knots_per_frame``, for drift that changes within a frame).  On the shared real
        SrTiO3 stack, 8 knots and one pass take the RMS disagreement of 64² patches to 0.29 px (0.30 with the
        default knots and no pass). On the simulator's smooth drift, one pass changes it by less than 0.01 px and
        costs half again the time.

    Returns
    -------
    SeriesRegistration
    """
    if model not in ("rigid", "scan"):
        raise ValueError(f"model must be 'rigid' or 'scan', got {model!r}")
    stack, metas = _stack(frames)
    n, h, w = stack.shape
    if n < 2:
        raise ValueError("a series needs at least 2 frames")
    pipe = load_pipeline(pipeline) if isinstance(pipeline, (str, dict)) else pipeline
    # neighbours, not the first frame: on a lattice a drift beyond half a cell is only known modulo the cell (a
    # lattice translate is the same answer to the estimator), a frame-to-frame step is well inside it
    pairs = pair_list(n, "previous", None)
    measured = np.array([[*(e := pipe.estimate(stack[i], stack[j])).vector, e.sigma, e.confidence]
                         for i, j in pairs])
    measured, step_notes = steady_steps(measured, lambda i, guess: _estimate_near(pipe, stack[i], stack[i + 1],
                                                                                 guess))
    shifts, sigma, _ = solve_positions(n, pairs, measured)
    if model == "rigid":
        field = np.broadcast_to(shifts[:, None, None, :], (n, h, w, 2)).copy()
        return _finish(stack, field, sigma, model, None, step_notes)
    timing = _timing(n, (h, w), metas, pixel_time_s, line_time_s, frame_time_s, serpentine)
    rows = strip_rows if strip_rows is not None else max(32, h // 8)
    try:
        trajectory, uncertainty, knots = _fit_trajectory(stack, shifts, timing, pipe, rows, knots_per_frame,
                                                         smoothness)
    except _TooFewStrips as exc:  # the coarser model rather than none: one shift per frame
        field = np.broadcast_to(shifts[:, None, None, :], (n, h, w, 2)).copy()
        return _finish(stack, field, sigma, "rigid", timing, (*step_notes, f"{exc}: the rigid model is used instead"))
    notes = list(step_notes)
    unmeasured = [k for k in range(1, n) if not np.isfinite(uncertainty[k])]
    if unmeasured:
        notes.append(f"model='scan': no strip of frame(s) {', '.join(map(str, unmeasured))} could be measured "
                     f"({rows}-row strips, confidence < 0.5): their field follows the trajectory of the others")
    field = _field(trajectory, timing, (h, w), n)
    for _ in range(template_passes):
        try:
            trajectory, uncertainty, knots = _refit_to_template(stack, field, timing, pipe, rows, knots_per_frame,
                                                         smoothness)
        except _TooFewStrips as exc:
            notes.append(f"{exc}: the first fit is kept")
            break
        field = _field(trajectory, timing, (h, w), n)
    if line_jitter:
        field += line_offsets(stack, field)[:, :, None, :]
    return _finish(stack, field, uncertainty, model, timing, tuple(notes), knots)


def _estimate_near(pipe: Any, reference: np.ndarray, moving: np.ndarray, guess: np.ndarray) -> np.ndarray | None:
    """``(dy, dx, sigma, confidence)`` of ``moving`` against ``reference``, measured on their overlap after the
    whole pixels of ``guess`` (a content displacement); None when the overlap is under 16 px a side or the answer
    is neither confident nor decided by the prior (:func:`_decided_by_prior`)."""
    cut = overlap_after(reference, moving, guess)
    if cut is None:
        return None
    ref, mov, (ly, lx) = cut
    s = pipe.estimate(ref, mov)
    if not (np.all(np.isfinite(s.vector)) and (s.confidence >= 0.5 or _decided_by_prior(s))):
        return None
    return np.array([ly + s.dy, lx + s.dx, s.sigma, s.confidence])


def _field(trajectory: Callable[[Any], np.ndarray], timing: ScanTiming, shape: tuple[int, int], n: int) -> np.ndarray:
    """The content displacement of every pixel: the drift at its scan time, less the scan ramp there."""
    out = []
    for k in range(n):
        times = timing.pixel_times(k, shape)
        out.append(trajectory(times) - timing.ramp(k, times, shape[0]))
    return np.stack(out)


def others_means(aligned: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(k, mean of the aligned frames other than k)`` for every frame: the specimen as the rest of the series
    sees it, frame k's own noise left out (NaN where no other frame saw a pixel)."""
    seen = np.isfinite(aligned)
    total, count = np.nansum(aligned, axis=0), seen.sum(axis=0)
    for k in range(len(aligned)):
        with np.errstate(invalid="ignore", divide="ignore"):
            yield k, (total - np.where(seen[k], aligned[k], 0.0)) / (count - seen[k])


def _warped_to_frame(template: np.ndarray, field: np.ndarray,
                     margin: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """An image of the undistorted grid (NaN where unknown; ``margin`` rows and columns beyond it on each side, as
    :func:`resample` makes them) as a frame with content displacement ``field`` (H, W, 2) scanned it: frame pixel
    q shows ideal point q − field(q).  Also where that view is known."""
    from scipy import ndimage

    h, w = field.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    known = np.isfinite(template)
    where = [yy - field[..., 0] + margin[0], xx - field[..., 1] + margin[1]]
    predicted = ndimage.map_coordinates(np.where(known, template, float(np.nanmean(template))), where, order=3,
                                        mode="nearest")
    covered = ndimage.map_coordinates(known.astype(np.float32), where, order=1, mode="constant") > 0.99
    return predicted, covered


class _TooFewStrips(ValueError):
    """Fewer than two strips of the series could be measured: no trajectory can be fitted."""


#: lines whose slow-axis (y) offset :func:`line_offsets` measures together
SLOW_AXIS_BAND = 8


def line_offsets(stack: np.ndarray, field: np.ndarray, *, iterations: int = 1) -> np.ndarray:
    """Per-line offsets (N, H, 2), (dy, dx), of every frame's scan lines beyond a smooth ``field``: jitter along
    the fast-scan axis, and drift that changes faster than the trajectory follows.

    Each frame is compared line by line with what the rest of the series predicts it shows: the mean of the other
    aligned frames (its own noise left out, on a grid wide enough for every frame's view, Wiener-filtered by what
    the frames do not share), warped to where this frame scanned it.  A line displaced by ``j``
    reads ``predicted − j·∇predicted``, so ``j`` is a weighted least-squares step on the prediction's gradient, each
    pixel weighed by its noise (a straight line in the signal level, fitted to the residuals: shot noise grows with
    the signal).  The comparison is made on the frame's own lines, not on the aligned grid: an aligned row lies
    between two scan lines wherever the drift is not a whole pixel, and would mix their independent jitters.
    Lines are noisy alone, so the offsets are a model's posterior means (:func:`_smoothed_offsets`): a random walk
    over the lines (drift or vibration faster than the trajectory's knots) plus, along x, white per-line jitter,
    with the variances that make all estimates likeliest (empirical Bayes).  A series without either keeps its
    trajectory, and a line between the columns, which barely sees its offset, follows its neighbours.  Along y a
    line cannot move alone (lines would cross): y is measured on bands of :data:`SLOW_AXIS_BAND` lines, and a
    vibration faster than that (the shared real stack's, 4.7 lines a period) averages out instead of being
    followed with noise.  The other frames carry jitter of their own, which blurs the prediction: ``iterations``
    > 1 rebuilds it from the frames corrected by the last estimates (on the simulator one pass is as good).  What
    all frames share cannot be measured: the specimen is known only as their mean (up to jitter/√N).
    """
    from scipy import ndimage

    n, h, w = stack.shape
    offsets = np.zeros((n, h, 2))
    # the others' mean on a grid that holds every frame's view: a frame that drifted out of the first frame's
    # view was otherwise compared on what was left of it (31 % of the last frame at 4 px/frame over 20 frames)
    margin = (min(h, int(np.ceil(np.abs(field[..., 0]).max())) + 2),
              min(w, int(np.ceil(np.abs(field[..., 1]).max())) + 2))
    for _ in range(iterations):
        corrected = field + offsets[:, :, None, :]
        # per line and axis: the curvature Σw·g² of the misfit and the pull J·o − Σw·r·g towards the best offset
        curvature, pull = np.zeros((n, h, 2)), np.zeros((n, h, 2))
        aligned = resample(stack, corrected, order=3, margin=margin)
        count = np.isfinite(aligned).sum(axis=0)
        incoherent = _incoherent_power(aligned)
        for k, template in others_means(aligned):
            # the mean's own noise, in the gradient, would shrink every step (errors in variables: at 10
            # counts/px in dark contrast a line's offset came out at 0.3-0.5 of its size), and what the frames do
            # not share (the real stack's vibration) would steer it: Wiener-filtered by both
            others = count - np.isfinite(aligned[k])
            if not np.any(others):
                continue
            noise = incoherent * template.size * float(np.mean(1.0 / others[others > 0]))
            predicted, covered = _warped_to_frame(_wiener_filtered(template, noise), corrected[k], margin)
            valid = covered & np.roll(covered, 1, axis=1) & np.roll(covered, -1, axis=1)
            if valid.sum() < 32:
                continue
            residual = stack[k] - predicted
            weight = np.where(valid, 1.0 / _residual_variance(predicted[valid], residual[valid], predicted), 0.0)
            for axis, grad in enumerate(np.gradient(predicted)):
                curvature[k, :, axis] = np.sum(weight * grad * grad, axis=1)
                pull[k, :, axis] = (curvature[k, :, axis] * offsets[k, :, axis]
                                    - np.sum(weight * residual * grad, axis=1))
        # y: one line cannot move along the slow axis alone (lines would cross); measured on bands of
        # SLOW_AXIS_BAND lines (a vibration faster than that averages out instead of being followed), x per line
        pull_y, curvature_y = (ndimage.uniform_filter1d(a[..., 0], SLOW_AXIS_BAND, axis=1, mode="nearest")
                               for a in (pull, curvature))
        offsets[..., 0] = _smoothed_offsets(pull_y, curvature_y, white=False)
        offsets[..., 1] = _smoothed_offsets(pull[..., 1], curvature[..., 1], white=True)
    return offsets


def _incoherent_power(aligned: np.ndarray) -> np.ndarray:
    """Power per pixel of what differs between the aligned frames (rfft bins of their grid, averaged over 3 × 3):
    the differences of consecutive frames where both saw, over twice their area.  Shot noise, and whatever else
    changes from frame to frame (a vibration's sidebands, scan noise), without the specimen."""
    from scipy import fft, ndimage

    total, pairs = np.zeros((aligned.shape[1], aligned.shape[2] // 2 + 1)), 0
    for a, b in zip(aligned[:-1], aligned[1:]):
        both = np.isfinite(a) & np.isfinite(b)
        if both.sum() < 64:
            continue
        difference = np.where(both, a - b, 0.0)
        spectrum = fft.rfft2(np.where(both, difference - difference[both].mean(), 0.0))
        total += (spectrum.real ** 2 + spectrum.imag ** 2) / (2.0 * both.sum())
        pairs += 1
    return ndimage.uniform_filter(total / max(pairs, 1), 3, mode=("wrap", "nearest"))


def _wiener_filtered(image: np.ndarray, noise_power: np.ndarray) -> np.ndarray:
    """``image`` (NaN where unknown) filtered by ``S / (S + N)``: ``N`` its noise's power per rfft bin, ``S`` its
    power over 3 × 3 bins less ``N`` (a lattice keeps its reflections, the noise between them goes); NaN where it
    was.

    Averaged over 3 × 3 bins a reflection (a bin or two wide) loses some of its power, so the mean comes out a little
    blurred (steps against it overshot by up to 15 % for frames misplaced by 0.3 px); each bin's own power, where
    higher, took that away but kept what one stack's frames share beside the reflections: its 64² patches then
    disagreed by 0.42 px, against 0.30 px."""
    from scipy import fft, ndimage

    known = np.isfinite(image)
    spectrum = fft.rfft2(np.where(known, image, np.nanmean(image)))
    power = ndimage.uniform_filter(spectrum.real ** 2 + spectrum.imag ** 2, 3, mode=("wrap", "nearest"))
    signal = np.maximum(power - noise_power, 0.0)
    weight = signal / np.maximum(signal + noise_power, 1e-300)
    weight[0, 0] = 1.0
    return np.where(known, fft.irfft2(spectrum * weight, s=image.shape), np.nan)


def _residual_variance(level: np.ndarray, residual: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Noise variance as a straight line in the signal level (shot noise grows with it, read noise does not),
    fitted to the squared residuals and read at ``at``; floored at a tenth of the mean."""
    a = np.stack([np.ones_like(level), level], axis=1)
    coef, *_ = np.linalg.lstsq(a, residual ** 2, rcond=None)
    mean = float(np.mean(residual ** 2))
    return np.maximum(coef[0] + coef[1] * at, 0.1 * mean)


def _smoothed_offsets(pull: np.ndarray, curvature: np.ndarray, white: bool) -> np.ndarray:
    """Per-line offsets (N, H) along one axis from each line's measurement ``pull / curvature`` (noise
    ``1 / curvature``): a random walk over the lines (drift and vibration faster than the trajectory's knots), plus
    white per-line jitter when ``white`` (the fast-scan axis; along the slow axis lines cannot cross).  The walk's
    and the jitter's variances are the pair that makes all frames' measurements likeliest (empirical Bayes, on a
    grid); the offsets are the posterior means (a banded solve per frame: a Kalman smoother over the lines)."""
    known = curvature > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        measured = np.where(known, pull / curvature, 0.0)
        noise = np.where(known, 1.0 / curvature, np.inf)
    if not known.any():
        return np.zeros_like(pull)
    best: tuple[float, float, np.ndarray] | None = None
    for jitter in (0.0, *np.geomspace(1e-3, 1.0, 13)) if white else (0.0,):
        for step in np.geomspace(1e-7, 1e-1, 13):
            evidence, walk = _random_walk_posterior(measured, noise + jitter, known, step)
            if best is None or evidence > best[0]:
                best = (evidence, jitter, walk)
    assert best is not None
    _, jitter, walk = best
    return walk + np.where(known, jitter / (jitter + noise), 0.0) * (measured - walk)


#: prior variance of a frame's first line offset beyond the trajectory, px²
START_VARIANCE = 1.0


def _random_walk_posterior(measured: np.ndarray, variance: np.ndarray, known: np.ndarray,
                           step: float) -> tuple[float, np.ndarray]:
    """``measured`` (N, H) = w + noise of ``variance``, w a random walk over the lines with ``step`` variance per
    line: the log evidence of all frames and the posterior mean of w (tridiagonal precision, banded Cholesky)."""
    from scipy import linalg

    n, h = measured.shape
    inverse = np.where(known, 1.0 / variance, 0.0)
    prior = np.zeros((2, h))
    prior[0, :] = 2.0 / step
    prior[0, (0, -1)] = 1.0 / step
    prior[0, 0] += 1.0 / START_VARIANCE
    prior[1, :-1] = -1.0 / step
    log_det_prior = (h - 1) * np.log(1.0 / step) + np.log(1.0 / START_VARIANCE)
    evidence, walk = 0.0, np.zeros((n, h))
    for k in range(n):
        band = prior.copy()
        band[0] += inverse[k]
        factor = linalg.cholesky_banded(band, lower=True)
        b = inverse[k] * measured[k]
        walk[k] = linalg.cho_solve_banded((factor, True), b)
        seen = known[k]
        evidence -= 0.5 * (np.sum(inverse[k] * measured[k] ** 2) - b @ walk[k] + np.sum(np.log(variance[k][seen]))
                           + 2 * np.sum(np.log(factor[0])) - log_det_prior)
    return float(evidence), walk


def _fit_trajectory(stack: np.ndarray, shifts: np.ndarray, timing: ScanTiming, pipe: Any, rows: int,
                    knots_per_frame: int | str, smoothness: float) -> tuple[Callable[[Any], np.ndarray], np.ndarray,
                                                                             int]:
    """Measure strips against the first frame and fit a piecewise-linear ``d(t)`` with ``d(0) = 0``."""
    n, h, w = stack.shape
    rows = min(rows, h)
    mid = lambda k, r0: timing.frame_starts_s[k] + (r0 + rows / 2) * timing.line_time_s + w / 2 * timing.pixel_time_s  # noqa: E731
    obs: list[tuple[float, float, np.ndarray, float, int]] = []  # (t moving, t reference, measured, sigma, k)
    for k in range(1, n):
        # the rows and columns of frame 0 that show what this frame shows (the rigid solution): what is left to
        # measure per strip is the shear, well inside half a lattice cell
        ly, lx = (int(round(v)) for v in shifts[k])
        c0, c1 = max(0, lx), w + min(0, lx)
        if c1 - c0 < 16:
            continue
        for r0 in range(0, h - rows + 1, rows):
            q0 = r0 - ly
            if q0 < 0 or q0 + rows > h:
                continue
            s = pipe.estimate(stack[0, q0:q0 + rows, c0 - lx:c1 - lx], stack[k, r0:r0 + rows, c0:c1])
            if not (np.all(np.isfinite(s.vector)) and (s.confidence >= 0.5 or _decided_by_prior(s))):
                continue
            t_moving, t_reference = mid(k, r0), mid(0, q0)
            # what the strips show moved by the drift less each frame's scan ramp; the trajectory is the drift's
            ramps = timing.ramp(k, t_moving, h) - timing.ramp(0, t_reference, h)
            obs.append((t_moving, t_reference, np.array([ly + s.dy, lx + s.dx]) + ramps, max(s.sigma, 0.02), k))
    if len(obs) < 2:
        raise _TooFewStrips(f"model='scan': {len(obs)} strip(s) of {rows} rows could be measured against the "
                            "first frame (the drift moved them out of view, or the strips are too noisy)")
    trajectory, uncertainty, knots = _fit_knots(timing, n, h, obs, knots_per_frame, smoothness, anchored=True)
    uncertainty[0] = 0.0
    return trajectory, uncertainty, knots


#: a strip's answer the rigid prior decides: within this of the frame's rigid shift, every rival beyond twice it
PRIOR_NEAR_PX = 1.5


def _decided_by_prior(s: Any) -> bool:
    """Whether an unconfident strip measurement is still the right one, its lattice ambiguity resolved by the
    trajectory: a strip is measured after the frame's rigid shift is applied, so what is left is the shear inside
    the frame, well under half a cell.  An answer within :data:`PRIOR_NEAR_PX` of zero, with a sub-pixel sigma, whose
    every rival (a lattice or pseudo-lattice translate the strip cannot rule out) lies beyond twice that, is the
    one the rigid prior picks.  In dark contrast, 64-row strips of 20 px cells were all ambiguous (centred cells
    the strip cannot rule out), and the series fell back to the rigid model (0.61 px; 0.11 with this)."""
    if not (math.isfinite(s.sigma) and s.sigma < 0.5 and math.hypot(s.dy, s.dx) < PRIOR_NEAR_PX):
        return False
    rivals = [c for c in (s.candidates or ()) if math.hypot(c[0] - s.dy, c[1] - s.dx) > 0.5]
    return all(math.hypot(*c) > 2 * PRIOR_NEAR_PX for c in rivals)


#: the knot counts per frame ``knots_per_frame="auto"`` chooses from
AUTO_KNOTS = (2, 4, 8)


def _fit_knots(timing: ScanTiming, n: int, h: int, obs: list, knots_per_frame: int | str, smoothness: float,
               anchored: bool) -> tuple[Callable[[Any], np.ndarray], np.ndarray, int]:
    """Fit ``d(t)`` to the strip observations with ``knots_per_frame`` knots, or (``"auto"``) with the count of
    :data:`AUTO_KNOTS` whose leave-one-out error over the strips is lowest; more knots only when they predict
    held-out strips at least 25 % better (drift that changes within a frame, not noise: on the simulator's steady
    drift, 10 % bought knots that followed the strips' errors)."""
    best: tuple[float, Callable[[Any], np.ndarray], np.ndarray, int] | None = None
    for count in (AUTO_KNOTS if knots_per_frame == "auto" else (int(knots_per_frame),)):
        basis = _HatBasis(timing, n, h, count)
        if anchored:
            a = np.array([basis(tm) - basis(tr) for tm, tr, _, _, _ in obs])
        else:
            a = np.array([basis(o[0]) for o in obs])
        trajectory, uncertainty, held_out = _solve(basis, a, obs, n, smoothness, anchored=anchored)
        if best is None or held_out < 0.75 * best[0]:
            best = (held_out, trajectory, uncertainty, count)
    assert best is not None
    return best[1], best[2], best[3]


class _HatBasis:
    """Piecewise-linear functions of time: hat functions on ``knots_per_frame`` knots per frame time."""

    def __init__(self, timing: ScanTiming, n: int, h: int, knots_per_frame: int):
        t_end = timing.frame_starts_s[-1] + h * timing.line_time_s
        frame_s = timing.frame_starts_s[1] - timing.frame_starts_s[0] if n > 1 else t_end
        self.knots = np.linspace(0.0, t_end, max(3, int(np.ceil(t_end / frame_s * knots_per_frame)) + 1))

    def __call__(self, t: Any) -> np.ndarray:
        """Hat functions of the knots at times ``t`` (…, len(knots))."""
        knots = self.knots
        t = np.clip(np.asarray(t, float), knots[0], knots[-1])
        return np.maximum(0.0, 1.0 - np.abs(t[..., None] - knots) / np.diff(knots)[0])


def _solve(basis: _HatBasis, a: np.ndarray, obs: list, n: int, smoothness: float,
           anchored: bool) -> tuple[Callable[[Any], np.ndarray], np.ndarray, float]:
    """Weighted least squares of the knot values under a second-difference prior; ``anchored``: ``d(0) = 0`` (the
    measurements are differences, which leave the origin free).  The trajectory, each frame's RMS misfit, and the
    mean squared leave-one-out error of the strips (in units of their sigma)."""
    y = np.array([o[2] for o in obs])
    weight = 1.0 / np.array([o[3] for o in obs])
    curvature = np.diff(np.eye(len(basis.knots)), 2, axis=0) * np.sqrt(smoothness)
    design = np.vstack([a * weight[:, None], curvature])
    target = np.vstack([y * weight[:, None], np.zeros((len(curvature), 2))])
    free = design[:, 1:] if anchored else design
    solution, *_ = np.linalg.lstsq(free, target, rcond=None)
    coef = np.vstack([np.zeros((1, 2)), solution]) if anchored else solution
    residual = a @ coef - y
    which = np.array([o[-1] for o in obs])
    uncertainty = np.array([float(np.sqrt(np.mean(np.sum(residual[which == k] ** 2, axis=1))))
                            if np.any(which == k) else np.nan for k in range(n)])
    # leave-one-out residuals of a linear smoother, from the leverage of each strip (weighted units)
    measured = free[:len(y)]
    leverage = np.einsum("ij,ji->i", measured, np.linalg.pinv(free.T @ free) @ measured.T)
    held_out = float(np.mean(np.sum((residual * weight[:, None] / np.maximum(1 - leverage, 1e-3)[:, None]) ** 2,
                                    axis=1)))

    def trajectory(t: Any) -> np.ndarray:
        # the hat functions' sum is the straight line between knot values: np.interp, not a (pixels × knots)
        # matrix (1.3 GB for a 1024² frame of a 20-frame series at 8 knots per frame)
        t = np.asarray(t, float)
        return np.stack([np.interp(t, basis.knots, coef[:, c]) for c in (0, 1)], axis=-1)

    return trajectory, uncertainty, held_out


def _for_templates(pipe: Any) -> Any:
    """``pipe`` for strips measured against a resampled template: its denoiser's and estimator's variants for such
    references (:class:`~drift_framework.types.ResampledReference`), where they have one."""
    parts = {name: getattr(pipe, name) for name in ("denoiser", "estimator")}
    if not any(isinstance(part, ResampledReference) for part in parts.values()):
        return pipe
    variant = copy.copy(pipe)
    for name, part in parts.items():
        if isinstance(part, ResampledReference):
            setattr(variant, name, part.for_resampled())
    return variant


def _refit_to_template(stack: np.ndarray, field: np.ndarray, timing: ScanTiming, pipe: Any, rows: int,
                       knots_per_frame: int | str, smoothness: float) -> tuple[Callable[[Any], np.ndarray], np.ndarray,
                                                                                int]:
    """Strips of every frame (the first too) against the others' mean, warped to where this frame scanned it.

    The first fit measures strips against the first frame only: its noise enters every measurement alike, and its
    own distortion is known only through the smoothness of ``d(t)``.  Here each strip is compared with what the
    current field predicts it shows — the mean of the other aligned frames (the specimen, with this frame's noise
    left out) warped by this frame's field — and the residual shift is added to the field at the strip's time, so
    ``d(t)`` is measured directly at every strip and the fit needs no anchor.
    """
    n, h, w = stack.shape
    rows = min(rows, h)
    pipe = _for_templates(pipe)
    obs: list[tuple[float, None, np.ndarray, float, int]] = []
    for k, template in others_means(resample(stack, field)):
        times = timing.pixel_times(k, (h, w))
        predicted, covered = _warped_to_frame(template, field[k])
        for r0 in range(0, h - rows + 1, rows):
            band = slice(r0, r0 + rows)
            cols = np.flatnonzero(covered[band].all(axis=0))
            if len(cols) < 16:
                continue
            c0, c1 = int(cols[0]), int(cols[-1]) + 1
            s = pipe.estimate(predicted[band, c0:c1], stack[k, band, c0:c1])
            if not (np.all(np.isfinite(s.vector)) and (s.confidence >= 0.5 or _decided_by_prior(s))
                    and np.hypot(s.dy, s.dx) < 3.0):
                continue
            t_mid = times[r0 + rows // 2, (c0 + c1) // 2]
            here = field[k, band, c0:c1].reshape(-1, 2).mean(axis=0)
            obs.append((float(t_mid), None, here + s.vector + timing.ramp(k, t_mid, h), max(s.sigma, 0.02), k))
    if len(obs) < 2:
        raise _TooFewStrips(f"model='scan': {len(obs)} strip(s) could be compared with the series' mean")
    return _fit_knots(timing, n, h, obs, knots_per_frame, smoothness, anchored=False)


def _finish(stack: np.ndarray, field: np.ndarray, uncertainty: np.ndarray, model: str,
            timing: ScanTiming | None, notes: tuple[str, ...] = (),
            knots_per_frame: int | None = None) -> SeriesRegistration:
    """Resample every frame onto the undistorted grid: ``ideal[p] ≈ frame[p + field(p)]`` (smooth fields)."""
    aligned = resample(stack, field)
    with warnings.catch_warnings():  # pixels no frame saw stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        average = np.nanmean(aligned, axis=0)
    shifts = field.mean(axis=(1, 2))
    return SeriesRegistration(field=field.astype(np.float32), shifts=shifts, aligned=aligned,
                              average=np.asarray(average, np.float32), uncertainty=uncertainty, model=model,
                              timing=timing, notes=notes, knots_per_frame=knots_per_frame)


def resample(frames: np.ndarray, field: np.ndarray, *, order: int = 3,
             margin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Frames ``(N, H, W)`` or ``(N, H, W, C)`` moved onto the undistorted grid by ``field`` (N, H, W, 2):
    ``out[k, p] = frames[k, p + field[k, p]]`` (spline ``order``), NaN where the frame saw nothing.  Each channel
    of a spectrum image moves with its pixel.  ``margin`` (rows, columns) extends the grid on each side, to keep
    what frames saw beyond the first frame's view (out ``(N, H + 2·rows, W + 2·columns, …)``; the field beyond
    the frame is its edge's)."""
    from scipy import ndimage

    n, h, w = frames.shape[:3]
    my, mx = margin
    yy, xx = np.mgrid[-my:h + my, -mx:w + mx].astype(float)
    out = np.empty((n, h + 2 * my, w + 2 * mx) + frames.shape[3:], np.float32)
    for k in range(n):
        # the frame pixel q that shows ideal point p solves q = p + field(q): one fixed-point step from
        # q ≈ p + field(p) reads the field where the content was scanned (a line's jitter belongs to its row)
        at_p = ([field[k, ..., c] for c in (0, 1)] if margin == (0, 0) else
                [ndimage.map_coordinates(field[k, ..., c], [yy, xx], order=1, mode="nearest") for c in (0, 1)])
        guess = [yy + at_p[0], xx + at_p[1]]
        where = [(yy, xx)[c] + ndimage.map_coordinates(field[k, ..., c], guess, order=1, mode="nearest")
                 for c in (0, 1)]
        if frames.ndim == 3:
            out[k] = ndimage.map_coordinates(np.asarray(frames[k], np.float32), where, order=order,
                                             mode="constant", cval=np.nan)
            continue
        for c in range(frames.shape[3]):
            out[k, ..., c] = ndimage.map_coordinates(np.asarray(frames[k, ..., c], np.float32), where,
                                                     order=order, mode="constant", cval=np.nan)
    return out


def field_rmse(estimated: np.ndarray, truth: np.ndarray, frames: Sequence[int] | None = None) -> float:
    """RMS over pixels and frames of (estimated − true) field after removing their means (the brief's metric:
    the reference position is a free choice)."""
    sel = slice(None) if frames is None else list(frames)
    diff = np.asarray(estimated, float)[sel] - np.asarray(truth, float)[sel]
    diff = diff - diff.reshape(-1, 2).mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(diff ** 2, axis=-1))))
