"""FFT correlators: cross-correlation (plain or normalized), phase correlation.

Map convention: ``c(L) = Σ_y ref(y) · mov(y + L)``, which peaks at the content
displacement ``L = (dy, dx)``; maps are returned with zero lag at ``center``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft as sfft
from scipy.signal.windows import tukey

from drift_framework.types import CorrelationMap

WORKERS = -1  # scipy.fft uses every core


def window(shape, kind: str, alpha: float = 0.25, dtype=np.float32) -> np.ndarray | None:
    """A separable 2-D window (``none``, ``hann`` or ``tukey``)."""
    if kind == "none":
        return None
    a = 1.0 if kind == "hann" else alpha
    return np.outer(tukey(shape[0], a), tukey(shape[1], a)).astype(dtype)


@lru_cache(maxsize=16)
def gaussian_weight(shape, sigma_px: float) -> np.ndarray:
    """Half-spectrum (rfft) weight of a Gaussian blur of ``sigma_px``: a matched low-pass for atoms."""
    fy = sfft.fftfreq(shape[0])[:, None]
    fx = sfft.rfftfreq(shape[1])[None, :]
    out = np.exp(-2 * (np.pi * sigma_px) ** 2 * (fy ** 2 + fx ** 2)).astype(np.float32)
    out.setflags(write=False)
    return out


def _zero_mean(img: np.ndarray) -> np.ndarray:
    return img - img.mean(dtype=np.float64).astype(img.dtype)


def _corr(fa_conj: np.ndarray, fb: np.ndarray, shape) -> np.ndarray:
    """Inverse real FFT of ``conj(A)·B`` (``fa_conj`` is already conjugated)."""
    return sfft.irfft2(fa_conj * fb, s=shape, workers=WORKERS)


class CrossCorrelator:
    """Zero-mean FFT cross-correlation.

    Parameters
    ----------
    normalize : bool
        Divide by the images' norms (a correlation coefficient, −1…1).  With
        ``pad`` and ``overlap_normalize``, each lag is normalized over the
        overlapping region only (masked NCC, Padfield 2012).
    window : {"none", "hann", "tukey"}
        Apodization applied to both images before correlating.
    pad : bool
        Zero-pad to a linear (not circular) correlation.
    """

    def __init__(self, *, normalize: bool = False, window: str = "tukey", tukey_alpha: float = 0.25,
                 pad: bool = False, overlap_normalize: bool = True, min_overlap: float = 0.25, kind: str = "xcorr",
                 lowpass_px: float | None = None):
        self.normalize, self.window_kind, self.alpha = normalize, window, tukey_alpha
        self.lowpass = lowpass_px
        self.pad, self.overlap_normalize, self.min_overlap, self.kind = pad, overlap_normalize, min_overlap, kind
        self._win_cache: dict = {}

    def _window(self, shape, dtype):
        """The window and its effective pixel count, cached per shape."""
        key = (shape, np.dtype(dtype).str)
        cached = self._win_cache.get(key)  # get-then-set: safe when threads share this correlator
        if cached is None:
            if len(self._win_cache) > 16:
                self._win_cache.clear()
            w = window(shape, self.window_kind, self.alpha, dtype)
            cached = self._win_cache[key] = (w, self._n_eff(w, shape))
        return cached

    def correlate(self, reference: np.ndarray, moving: np.ndarray) -> CorrelationMap:
        shape = reference.shape
        w, n_eff = self._window(shape, reference.dtype)
        spectrum = None  # passed on in meta, never kept on self: one correlator may serve several threads
        r, m = _zero_mean(reference), _zero_mean(moving)
        if w is not None:
            r, m = _zero_mean(r * w), _zero_mean(m * w)
        if self.pad:
            full = tuple(sfft.next_fast_len(2 * s - 1, real=True) for s in shape)
            if self.normalize and self.overlap_normalize:
                c = self._masked_ncc(r, m, full)
            else:
                c, spectrum = self._plain(r, m, full)
        else:
            full = shape
            c, spectrum = self._plain(r, m, full)
        data = sfft.fftshift(c)
        center = (full[0] // 2, full[1] // 2)
        norm = 1.0 if self.normalize else float(np.sqrt(np.sum(r * r, dtype=np.float64) *
                                                         np.sum(m * m, dtype=np.float64)))
        return CorrelationMap(data=data, center=center, reference=reference, moving=moving, kind=self.kind,
                              normalized=self.normalize,
                              n_eff=n_eff, norm=norm, reference_spectrum=spectrum,
                              meta={"window": self.window_kind, "padded": self.pad})

    @staticmethod
    def _n_eff(w, shape) -> float:
        if w is None:
            return float(shape[0] * shape[1])
        w2 = w.astype(np.float64) ** 2
        return float(w2.sum() ** 2 / np.sum(w2 * w2))

    def _plain(self, r, m, full):
        """The correlation and, when refinement can reuse it, the spectrum of the zero-mean reference."""
        fr = sfft.rfft2(r, s=full, workers=WORKERS)
        fm = sfft.rfft2(m, s=full, workers=WORKERS)
        spectrum = fr if full == r.shape and self.window_kind == "none" else None
        if self.lowpass:
            fm = fm * gaussian_weight(full, self.lowpass)
        c = _corr(np.conj(fr), fm, full)
        if self.normalize:
            c /= max(float(np.sqrt(np.sum(r * r, dtype=np.float64) * np.sum(m * m, dtype=np.float64))), 1e-30)
        return c, spectrum

    def _masked_ncc(self, r, m, full):
        # Padfield (2012): normalize every lag by the statistics of the overlap only.
        ones = np.ones(r.shape, r.dtype)
        f = lambda a: sfft.rfft2(a, s=full, workers=WORKERS)  # noqa: E731
        fr, fm, fo = f(r), f(m), f(ones)
        fr2, fm2 = f(r * r), f(m * m)
        n = np.maximum(np.round(_corr(np.conj(fo), fo, full)), 1.0)
        sr = _corr(np.conj(fr), fo, full)    # Σ ref over the overlap
        sm = _corr(np.conj(fo), fm, full)    # Σ mov over the overlap
        num = _corr(np.conj(fr), fm, full) - sr * sm / n
        vr = _corr(np.conj(fr2), fo, full) - sr * sr / n
        vm = _corr(np.conj(fo), fm2, full) - sm * sm / n
        den = np.sqrt(np.clip(vr, 0, None) * np.clip(vm, 0, None))
        out = np.where(den > 1e-12 * den.max(), num / np.where(den > 0, den, 1), 0.0)
        out[n < self.min_overlap * r.size] = 0.0
        return np.clip(out, -1, 1).astype(r.dtype, copy=False)


class PhaseCorrelator:
    """Phase correlation: the cross-power spectrum whitened to unit magnitude."""

    def __init__(self, *, window: str = "none", tukey_alpha: float = 0.25, eps: float = 1e-12):
        self.window_kind, self.alpha, self.eps = window, tukey_alpha, eps

    def correlate(self, reference: np.ndarray, moving: np.ndarray) -> CorrelationMap:
        w = window(reference.shape, self.window_kind, self.alpha, reference.dtype)
        r, m = (reference, moving) if w is None else (_zero_mean(reference) * w, _zero_mean(moving) * w)
        fr = sfft.fft2(r, workers=WORKERS)
        fm = sfft.fft2(m, workers=WORKERS)
        cp = fm * np.conj(fr)
        cp /= np.maximum(np.abs(cp), self.eps)
        c = sfft.ifft2(cp, workers=WORKERS).real
        shape = reference.shape
        return CorrelationMap(data=sfft.fftshift(c), center=(shape[0] // 2, shape[1] // 2), reference=reference,
                              moving=moving, cross_power=cp, kind="phase", normalized=False,
                              meta={"window": self.window_kind})


class ImagePair:
    """No correlation: hands both images to an estimator that works on images (e.g. ``skimage``)."""

    def correlate(self, reference: np.ndarray, moving: np.ndarray) -> CorrelationMap:
        return CorrelationMap(data=np.zeros((1, 1), np.float32), center=(0, 0), reference=reference, moving=moving,
                              kind="images")
