"""Poisson counts: recognising them and stabilizing their variance (the Anscombe transform).

A frame of counts has noise whose variance is its mean, so the bright parts of a frame are noisier than the dark
ones.  A least-squares correlation weighs every pixel alike; the maximum-likelihood one weighs each by the inverse
of its variance.  The Anscombe transform ``2·√(x + 3/8)`` makes the variance ≈ 1 everywhere, after which least
squares *is* that weighting: the information of the transformed frame about a shift is ``Σ (∇λ)²/λ``, the Poisson
Fisher information (and the Cramér–Rao bound the benchmarks judge by).  It matters most for dark-column (ABF-like)
contrast, where the columns are dips below a bright, noisy background.
"""
from __future__ import annotations

import copy

import numpy as np

from . import uncertainty as unc

#: the noise's variance over the mean that a frame of counts shows (1 for Poisson; the white-noise estimate reads
#: 0.8–1.6 on simulated counts from 0.5 to 2000 per pixel). Integer images outside it (an 8-bit photograph, a
#: detector's digital units with an offset) are not counts.
COUNTS_DISPERSION = (0.3, 3.0)


def looks_like_counts(image: np.ndarray) -> bool:
    """Whether ``image`` holds Poisson counts: non-negative integers whose noise variance is about their mean.

    The integers are checked on every fourth pixel of each axis and the dispersion on the central 128² (cheap:
    a few hundred µs at most, whatever the frame's size)."""
    sample = image[::4, ::4]
    if float(sample.min()) < 0 or not np.array_equal(sample, np.floor(sample)):
        return False
    h, w = image.shape
    y0, x0 = max((h - 128) // 2, 0), max((w - 128) // 2, 0)
    centre = image[y0:y0 + 128, x0:x0 + 128]
    mean = float(centre.mean(dtype=np.float64))
    if mean <= 0:
        return False
    dispersion = unc.noise_std(centre) ** 2 / mean
    return COUNTS_DISPERSION[0] <= dispersion <= COUNTS_DISPERSION[1]


def anscombe(image: np.ndarray, counts_per_unit: float = 1.0) -> np.ndarray:
    """``2·√(c·x + 3/8)``: counts (``c·x``, negative values clipped to 0) with unit noise variance."""
    x = np.asarray(image)
    out = x.astype(np.result_type(x.dtype, np.float32), copy=True)
    if counts_per_unit != 1.0:
        out *= counts_per_unit
    np.maximum(out, 0, out=out)
    out += 0.375
    np.sqrt(out, out=out)
    out *= 2
    return out


class CountStabilizer:
    """Denoiser ``anscombe``: frames of Poisson counts through :func:`anscombe`, any other frame as it is.

    ``counts_per_unit`` converts the frame's units to counts (from the detector's calibration); with ``None`` a
    frame is transformed only when it looks like counts (:func:`looks_like_counts`).  A stack (``denoise_batch``:
    a pair, a series) is transformed only when every frame is, so two frames are never compared in different
    units.
    """

    def __init__(self, counts_per_unit: float | None = None, *, enabled: bool = True):
        self.counts_per_unit, self.enabled = counts_per_unit, enabled

    def _applies(self, frames) -> bool:
        return self.enabled and (self.counts_per_unit is not None or all(looks_like_counts(f) for f in frames))

    def denoise(self, image: np.ndarray) -> np.ndarray:
        return anscombe(image, self.counts_per_unit or 1.0) if self._applies([image]) else image

    def denoise_batch(self, frames: np.ndarray) -> np.ndarray:
        if not self._applies(frames):
            return frames
        return np.stack([anscombe(f, self.counts_per_unit or 1.0) for f in frames])

    def for_resampled(self) -> CountStabilizer:
        """Off: a template averaged from resampled frames is no longer counts, and a strip measured against it
        must stay in the template's units."""
        variant = copy.copy(self)
        variant.enabled = False
        return variant


def stabilized_pair(reference: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both frames through :func:`anscombe` when both look like counts, else both as they are."""
    if looks_like_counts(reference) and looks_like_counts(moving):
        return anscombe(reference), anscombe(moving)
    return reference, moving
