"""Offline drift correction of image series (the HyperSpy-native replacement for ``estimate_shift2D`` + ``align2D``).

Shifts are measured with any pipeline (``classical`` by default) against the first frame, frame to frame, or
between many pairs (``all-pairs``), whose over-determined measurements are solved for the frame positions by
robust (Huber) weighted least squares — this cures the unit-cell slips that frame-to-frame chains suffer at low
SNR. Every shift is expressed as the content displacement of frame *i* relative to frame 0, in pixels, with our
sign convention (``frame_i[y, x] ≈ frame_0[y − dy, x − dx]``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage

from drift_framework.series import overlap_after, pair_list, solve_positions, steady_steps

REFERENCES = ("first", "previous", "all-pairs")
MODES = ("crop", "expand", "fill")


@dataclass
class Shifts:
    """Frame positions relative to frame 0 (px), their 1-σ uncertainty and the estimates' confidence."""

    shifts: np.ndarray
    sigma: np.ndarray
    confidence: np.ndarray
    reference: str
    pipeline: object
    pairs: list = field(default_factory=list)
    closure_px: float = math.nan  # all-pairs: RMS of the measurements' disagreement with the solved positions
    pair_sigma_px: float = math.nan  # all-pairs: median 1-σ of one pair measurement (what noise explains)
    notes: tuple[str, ...] = ()  # frame-to-frame steps measured again around the series' steady drift

    def as_rows(self, pixel_size_nm: float = math.nan) -> list[dict]:
        return [{"frame": i, "dy_px": float(d[0]), "dx_px": float(d[1]), "sigma_px": float(s),
                 "confidence": float(c), "dy_nm": float(d[0] * pixel_size_nm), "dx_nm": float(d[1] * pixel_size_nm)}
                for i, (d, s, c) in enumerate(zip(self.shifts, self.sigma, self.confidence))]


@lru_cache(maxsize=8)
def _pipeline(spec_key: str):
    import json

    from drift_framework.assembly import load_pipeline

    spec = json.loads(spec_key)
    return load_pipeline(spec)


def _spec_key(spec) -> str:
    """The pipeline spec as a string a worker can rebuild it from; a recipe path is made absolute here, since a
    worker of a tcp:// cluster runs in another directory."""
    import json
    from pathlib import Path

    if isinstance(spec, (str, Path)) and Path(spec).suffix in (".yaml", ".yml") and Path(spec).is_file():
        spec = str(Path(spec).resolve())
    return json.dumps(spec, sort_keys=True)


def estimate_pair(spec_key: str, a, b, guess=(0.0, 0.0)) -> tuple:
    """One measurement ``(dy, dx, sigma, confidence)`` of frame b against frame a (runs on dask workers too), on
    their overlap after the whole pixels of ``guess`` (a predicted content displacement: what is left to measure is
    then well inside half a lattice cell, where a lattice translate is not the nearer answer)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    a, b, (ly, lx) = overlap_after(a, b, np.asarray(guess)) or (a, b, (0, 0))
    s = _pipeline(spec_key).estimate(a, b)
    sigma = s.sigma if math.isfinite(s.sigma) else 0.5
    confidence = s.confidence if math.isfinite(s.confidence) else 0.5
    return ly + s.dy, lx + s.dx, sigma, confidence


def measure(frames, n: int, pairs, spec, *, guesses=None, scheduler: str | None = None,
            progress=None) -> np.ndarray:
    """Measure every pair; ``frames(i)`` returns frame i (an array, or a dask array for lazy data); ``guesses``
    (one per pair) are predicted displacements to measure around (:func:`estimate_pair`).

    ``scheduler``: None runs in this process, frame by frame (bounded memory); ``threads``/``processes``/
    ``synchronous`` use dask's local schedulers; ``tcp://host:port`` uses a running dask.distributed cluster.
    """
    key = _spec_key(spec)
    guesses = [(0.0, 0.0)] * len(pairs) if guesses is None else [tuple(map(float, g)) for g in guesses]
    if scheduler is None:
        out, cache = [], {}
        for k, (i, j) in enumerate(pairs):
            for idx in (i, j):
                if idx not in cache:
                    cache[idx] = np.asarray(frames(idx))
            out.append(estimate_pair(key, cache[i], cache[j], guesses[k]))
            for idx in list(cache):  # keep only the frames of the next pair: memory stays at ~3 frames
                if all(idx not in p for p in pairs[k + 1:k + 2]):
                    del cache[idx]
            if progress is not None:
                progress(k + 1, len(pairs))
        return np.array(out, float).reshape(-1, 4)
    import dask

    tasks = [dask.delayed(estimate_pair)(key, frames(i), frames(j), g) for (i, j), g in zip(pairs, guesses)]
    if scheduler.startswith("tcp://"):
        from distributed import Client

        with Client(scheduler, timeout="10s") as client:
            results = client.gather(client.compute(tasks))
    else:
        results = dask.compute(*tasks, scheduler=scheduler)
    return np.array(results, float).reshape(-1, 4)


def estimate_shifts(frames, n: int, pipeline="classical", *, reference: str = "first", max_gap: int | None = None,
                    scheduler: str | None = None, progress=None) -> Shifts:
    """Measure the positions of ``n`` frames relative to frame 0 (see the module docstring)."""
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    if n < 2:
        raise ValueError("a drift correction needs at least 2 frames; this series has 1")
    if reference == "all-pairs" and max_gap is None and n > 30:
        max_gap = 8  # 8 neighbours per frame: enough redundancy, linear cost
    pairs = pair_list(n, reference, max_gap)
    # the frame-to-frame chain first: its steps are well inside half a lattice cell, so it predicts every pair;
    # a pair measured around its prediction cannot slip by a cell (against the first frame it did once the
    # drift passed half a cell, with confidence 1)
    steps = pair_list(n, "previous", None)
    chained = set(steps)
    rest = [pair for pair in pairs if pair not in chained]  # the chain's own pairs are measured once
    total = len(steps) + len(rest)
    chain_m = measure(frames, n, steps, pipeline, scheduler=scheduler,
                      progress=(lambda done, _: progress(done, total)) if progress else None)
    chain_m, notes = steady_steps(chain_m, lambda i, guess: _confident(estimate_pair(
        _spec_key(pipeline), frames(i), frames(i + 1), guess)))
    chain = np.vstack([np.zeros((1, 2)), np.cumsum(chain_m[:, :2], axis=0)])
    # only across confident steps: across a doubtful one the chain may have slipped by a cell (at low SNR), and the
    # pair's own answer is the better one (all-pairs' cure for a chain's slips)
    trusted = chain_m[:, 3] >= 0.5
    guesses = [chain[j] - chain[i] if trusted[i:j].all() else np.zeros(2) for i, j in rest]
    rest_m = measure(frames, n, rest, pipeline, guesses=guesses, scheduler=scheduler,
                     progress=(lambda done, _: progress(len(steps) + done, total)) if progress else None)
    measured = {**dict(zip(steps, chain_m)), **dict(zip(rest, rest_m))}
    m = np.array([measured[pair] for pair in pairs], float).reshape(-1, 4)
    conf = np.ones(n)
    if reference == "first":
        pos = np.vstack([np.zeros((1, 2)), m[:, :2]])
        sigma = np.concatenate([[0.0], m[:, 2]])
        conf[1:] = m[:, 3]
    elif reference == "previous":
        pos = np.vstack([np.zeros((1, 2)), np.cumsum(m[:, :2], axis=0)])
        sigma = np.concatenate([[0.0], np.sqrt(np.cumsum(m[:, 2] ** 2))])
        conf[1:] = np.minimum.accumulate(m[:, 3])
    else:
        pos, sigma, closure = solve_positions(n, pairs, m)
        for j in range(1, n):
            conf[j] = max(m[k, 3] for k, (a, b) in enumerate(pairs) if j in (a, b))
        return Shifts(pos, sigma, conf, reference, pipeline, pairs, closure, float(np.median(m[:, 2])), notes)
    return Shifts(pos, sigma, conf, reference, pipeline, pairs, notes=notes)


def _confident(measured: tuple) -> np.ndarray | None:
    """A measurement ``(dy, dx, sigma, confidence)`` when it is confident (≥ 0.5), else None."""
    return np.array(measured, float) if measured[3] >= 0.5 else None


def closure_hint(closure_px: float, pair_sigma_px: float) -> str | None:
    """A hint when all-pairs measurements do not add up around loops (a distorted scan, not noise)."""
    if not math.isfinite(closure_px):
        return None
    expected = pair_sigma_px if math.isfinite(pair_sigma_px) else 0.0
    if closure_px < max(0.1, 3 * expected):
        return None
    return (f"the pair measurements disagree by {closure_px:.2f} px RMS around loops of frames (noise explains "
            f"~{expected:.2f} px): the scan is probably distorted (vibration, line jitter); try --pipeline distorted")


def output_grid(shape, shifts: np.ndarray, mode: str) -> tuple[np.ndarray, tuple[int, int]]:
    """Origin (in frame-0 pixel coordinates) and shape of the aligned frames."""
    h, w = shape
    if mode == "fill":
        return np.zeros(2), (h, w)
    lo = -shifts.min(axis=0) if mode == "crop" else -shifts.max(axis=0)
    hi = np.array([h - 1, w - 1]) - (shifts.max(axis=0) if mode == "crop" else shifts.min(axis=0))
    if mode == "crop":
        lo, hi = np.ceil(lo - 1e-9), np.floor(hi + 1e-9)
    else:
        lo, hi = np.floor(lo), np.ceil(hi)
    size = (hi - lo + 1).astype(int)
    if np.any(size < 2):
        raise ValueError(f"the frames do not overlap after alignment (drift {np.ptp(shifts, axis=0)} px); "
                         "use mode expand")
    return lo, (int(size[0]), int(size[1]))


def align_frame(frame, shift, origin, out_shape, order: int, cval: float) -> np.ndarray:
    """Resample one frame so its content lands where frame 0's is: out(Y, X) = frame(Y + origin + shift)."""
    data = np.asarray(frame, np.float32)
    return ndimage.affine_transform(data, np.eye(2), offset=np.asarray(origin) + np.asarray(shift),
                                    output_shape=out_shape, order=order, mode="constant", cval=cval,
                                    prefilter=order > 1).astype(np.float32)
