"""Classical denoisers: none, Gaussian, median, and a lattice-aware Fourier band-pass."""
from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from .correlators import WORKERS


class NoDenoiser:
    def denoise(self, image: np.ndarray) -> np.ndarray:
        return image


class GaussianDenoiser:
    def __init__(self, sigma_px: float):
        self.sigma = sigma_px

    def denoise(self, image: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(image, self.sigma, mode="reflect")


class MedianDenoiser:
    def __init__(self, size_px: int):
        self.size = size_px

    def denoise(self, image: np.ndarray) -> np.ndarray:
        return ndimage.median_filter(image, size=self.size, mode="reflect")


class BraggFilter:
    """Keep only the strongest periodic components (the Bragg peaks) and the mean.

    Peaks are local maxima of the smoothed power spectrum that stand ``threshold``
    times above the spectrum's median at their frequency band; each is passed with
    a Gaussian mask of ``radius_px`` (frequency pixels).  Frames are mirrored
    before the FFT so their edges do not leak into the spectrum.
    """

    def __init__(self, *, threshold: float = 8.0, radius_px: float = 2.0, max_peaks: int = 64):
        self.threshold, self.radius, self.max_peaks = threshold, radius_px, max_peaks

    def mask(self, spectrum_power: np.ndarray) -> np.ndarray:
        p = ndimage.gaussian_filter(spectrum_power, 1.0, mode="wrap")
        h, w = p.shape
        fy, fx = np.meshgrid(sfft.fftfreq(h), sfft.fftfreq(w), indexing="ij")
        radius = np.hypot(fy, fx)
        bands = np.minimum((radius / radius.max() * 64).astype(int), 63)
        # The band's typical level: the mean of the log power (a geometric mean) — peaks are a few pixels of a
        # band, so it sits near the median, at a fraction of ndimage.median's cost.
        logp = np.log(np.maximum(p, 1e-30))
        level = np.bincount(bands.ravel(), logp.ravel(), 64) / np.maximum(np.bincount(bands.ravel(), minlength=64), 1)
        baseline = np.exp(level)[bands]
        peaks = (p == ndimage.maximum_filter(p, size=5, mode="wrap")) & (p > self.threshold * baseline)
        peaks[0, 0] = True
        ys, xs = np.nonzero(peaks)
        order = np.argsort(p[ys, xs])[::-1][: self.max_peaks]
        marker = np.zeros_like(p)
        marker[ys[order], xs[order]] = 1.0
        m = ndimage.gaussian_filter(marker, self.radius, mode="wrap")
        return np.clip(m / max(m.max(), 1e-12), 0, 1)

    def denoise(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape
        mirrored = np.block([[image, image[:, ::-1]], [image[::-1, :], image[::-1, ::-1]]])
        f = sfft.fft2(mirrored, workers=WORKERS)
        out = sfft.ifft2(f * self.mask(np.abs(f) ** 2), workers=WORKERS).real[:h, :w]
        return out.astype(image.dtype, copy=False)
