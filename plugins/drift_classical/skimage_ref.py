"""The scikit-image reference: ``skimage.registration.phase_cross_correlation``.

scikit-image returns the shift that registers ``moving`` onto ``reference``,
the opposite sign of this project's convention; the sign is flipped here.
"""
from __future__ import annotations

from drift_framework.types import CorrelationMap, Shift


class SkimagePhaseCrossCorrelation:
    method = "skimage"

    def __init__(self, *, upsample_factor: int = 100, normalization: str = "phase", max_shift_px=None):
        self.upsample_factor = upsample_factor
        self.normalization = None if normalization == "none" else normalization
        self.max_shift_px = max_shift_px

    def estimate(self, cmap: CorrelationMap) -> Shift:
        from skimage.registration import phase_cross_correlation

        shift, error, _ = phase_cross_correlation(cmap.reference, cmap.moving, upsample_factor=self.upsample_factor,
                                                  normalization=self.normalization)
        dy, dx = -float(shift[0]), -float(shift[1])
        # skimage's "error" is a translation-invariant normalized RMS error, not a shift uncertainty.
        return Shift(dy, dx, float("nan"), float("nan"), f"skimage-{self.normalization or 'none'}",
                     {"skimage_error": float(error)})
