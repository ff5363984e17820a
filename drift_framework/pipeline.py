"""denoiser → correlator → estimator, composed into one object, and the checks every frame passes first.

>>> import drift_framework as df
>>> pipe = df.load_pipeline("classical")          # doctest: +SKIP
>>> shift = pipe.estimate(reference, moving)       # doctest: +SKIP

Pipelines are built by :mod:`drift_framework.assembly` (``load_pipeline``).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .types import MIN_SIZE, BatchDenoiser, BatchEstimator, CentralView, CorrelationMap, FrameError, Shift

__all__ = ["Pipeline", "check_image", "check_pair", "central_crop", "saturation", "MIN_SIZE"]


def check_image(image: Any, name: str = "image") -> np.ndarray:
    """Return ``image`` as a C-contiguous float32/float64 2-D array, or raise :class:`FrameError`."""
    return _checked(image, name)[0]


def _checked(image: Any, name: str) -> tuple[np.ndarray, float]:
    """``check_image`` and the image's largest absolute value (from the min/max it computes anyway)."""
    if isinstance(image, np.ndarray):
        arr = image
    else:
        data = getattr(image, "data", image)  # a Frame
        try:
            arr = np.asarray(data)
        except Exception as exc:
            raise FrameError(f"{name} cannot be read as an array: {exc}") from None
    if arr.dtype.kind == "c":
        raise FrameError(f"{name} is complex ({arr.dtype}); pass a real image, e.g. its magnitude")
    if arr.dtype.kind not in "fiub":
        raise FrameError(f"{name} has a non-numeric dtype {arr.dtype}")
    if arr.ndim != 2:
        raise FrameError(f"{name} must be a 2-D image, got an array of shape {arr.shape}")
    if arr.size == 0:
        raise FrameError(f"{name} is empty (shape {arr.shape})")
    if min(arr.shape) < MIN_SIZE:
        raise FrameError(f"{name} is {arr.shape[0]}×{arr.shape[1]} px; at least {MIN_SIZE}×{MIN_SIZE} is needed")
    if arr.dtype != np.float64:
        arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise FrameError(f"{name} contains {bad} NaN or infinite pixel(s)")
    hi, lo = float(arr.max()), float(arr.min())
    if hi == lo:
        raise FrameError(f"{name} is constant (every pixel = {float(arr.flat[0]):g}); there is nothing to correlate")
    return np.ascontiguousarray(arr), max(abs(hi), abs(lo))


def check_pair(reference: Any, moving: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check both images and that their shapes match; returns float arrays of one dtype."""
    ref, ref_peak = _checked(reference, "reference")
    mov, mov_peak = _checked(moving, "moving")
    if ref.shape != mov.shape:
        raise FrameError(f"reference and moving frames differ in shape: {ref.shape} vs {mov.shape}")
    if ref.dtype != mov.dtype:
        ref, mov = ref.astype(np.float64), mov.astype(np.float64)
    # Shifts do not depend on the intensity scale, but float32 sums of squares overflow near 1e19 and
    # underflow near 1e-19: extreme scales are brought to ~1 by one power of two shared by both frames.
    top = max(ref_peak, mov_peak)
    if top > 1e12 or top < 1e-12:
        scale = ref.dtype.type(2.0 ** -math.frexp(top)[1])
        ref, mov = ref * scale, mov * scale
    return ref, mov


def saturation(image: np.ndarray) -> float:
    """The fraction of pixels piled at a flat ceiling (a saturated or clipped detector), 0 when there is none.

    A ceiling is a spike at the maximum value: at least 0.5 % of the pixels (and 10) exactly there, more than three
    times as many as in the top 2 % of the range below it.  Two-level images (a binary mask, a dose so low that
    pixels are 0 or 1) have no ceiling to speak of.
    """
    arr = np.asarray(image)
    hi, lo = arr.max(), arr.min()
    if hi == lo:
        return 1.0
    at_top = int(np.count_nonzero(arr == hi))
    if at_top < max(10, 0.005 * arr.size):
        return 0.0
    if at_top >= 0.5 * arr.size:  # mostly ceiling: whatever lies below
        return at_top / arr.size
    below = int(np.count_nonzero(arr >= hi - 0.02 * (hi - lo))) - at_top
    between = int(np.count_nonzero((arr > lo) & (arr < hi)))
    if between < 0.01 * arr.size or at_top <= 3 * below:
        return 0.0
    return at_top / arr.size


def _with_saturation(shift: Shift, reference: np.ndarray, moving: np.ndarray) -> Shift:
    """Lower the confidence of a shift measured on saturated frames (10 % of the pixels at a ceiling: 0)."""
    fraction = max(saturation(reference), saturation(moving))
    if fraction == 0.0:
        return shift
    return dataclasses.replace(shift, confidence=shift.confidence * max(0.0, 1.0 - 10.0 * fraction),
                               meta={**shift.meta, "saturated": fraction})


def chain_text(described: dict | str) -> str:
    """A pipeline's components in order (``none → ncc → gauss-newton``), from :meth:`Pipeline.describe` or the JSON
    of it a run file stores."""
    import json

    specs = json.loads(described) if isinstance(described, str) else described
    return " → ".join(str(spec.get("plugin", "?")) for spec in specs.values() if isinstance(spec, dict)) or "?"


def central_crop(image: np.ndarray, side: int | None) -> np.ndarray:
    """The central ``side × side`` part of ``image`` (along each axis longer than ``side``); ``image`` itself for
    ``None``."""
    if side is None:
        return image
    h, w = (min(n, side) for n in image.shape)
    y0, x0 = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return image[y0:y0 + h, x0:x0 + w]


class Pipeline:
    """A shift-measuring pipeline: ``estimate(reference, moving) -> Shift``.

    Parameters
    ----------
    denoiser, correlator, estimator :
        Built components (see :mod:`drift_framework.hookspecs`).
    name : str
        A label stored in run files and comparison tables.
    specs : dict, optional
        The component specs the pipeline was built from.
    """

    def __init__(self, denoiser: Any, correlator: Any, estimator: Any, *, name: str = "",
                 specs: dict | None = None):
        self.denoiser, self.correlator, self.estimator = denoiser, correlator, estimator
        self.name = name
        self.specs = specs or {}

    def __repr__(self) -> str:
        parts = " → ".join(s.plugin for s in self.specs.values()) if self.specs else ""
        return f"Pipeline({self.name!r}: {parts})"

    def describe(self) -> dict:
        """The component specs as plain dicts (stored in run files)."""
        return {k: s.as_dict() for k, s in self.specs.items()}

    def denoise(self, image: Any) -> np.ndarray:
        img = check_image(image)
        return self.denoiser.denoise(img) if self.denoiser is not None else img

    def estimate(self, reference: Any, moving: Any) -> Shift:
        """Measure the content displacement of ``moving`` relative to ``reference``.

        Parameters
        ----------
        reference, moving : ndarray or Frame
            2-D images of the same shape.

        Returns
        -------
        Shift
            ``moving[y, x] ≈ reference[y - dy, x - dx]``.

        Raises
        ------
        FrameError
            An image is not 2-D, is too small, empty, constant, contains NaN/inf,
            or the shapes differ.
        """
        raw_ref, raw_mov = check_pair(reference, moving)
        view = self.estimator.view_px if isinstance(self.estimator, CentralView) else None
        cmap = self.correlate(raw_ref, raw_mov, view)
        return _with_saturation(self.estimator.estimate(cmap), raw_ref, raw_mov)

    def correlate(self, reference: np.ndarray, moving: np.ndarray, view: int | None = None) -> CorrelationMap:
        """The correlation map of two checked frames, denoised (of their central ``view × view`` crop, with the
        whole frames' map in ``whole``, on demand); ``raw`` holds the frames as given."""
        ref, mov = central_crop(reference, view), central_crop(moving, view)
        cropped = ref.shape != reference.shape
        if isinstance(self.denoiser, BatchDenoiser):  # one pass for both frames
            ref, mov = self.denoiser.denoise_batch(np.stack([ref, mov]))
        elif self.denoiser is not None:
            ref, mov = self.denoiser.denoise(ref), self.denoiser.denoise(mov)
        cmap = self.correlator.correlate(ref, mov)
        if cmap.raw is None:
            cmap.raw = (reference, moving)  # refinement stages may want the frames as acquired
        if cropped:
            cmap.whole = lambda: self.correlate(reference, moving)
        return cmap

    def estimate_batch(self, reference: Any, frames: Iterable) -> list[Shift]:
        """Estimate every frame of a stack against one reference."""
        if isinstance(self.estimator, BatchEstimator):
            frames = list(frames)
            shifts = self.estimator.estimate_batch(self, reference, frames)
            return [_with_saturation(s, np.asarray(reference), np.asarray(f)) for s, f in zip(shifts, frames)]
        return [self.estimate(reference, f) for f in frames]
