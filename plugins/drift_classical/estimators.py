"""Shift estimators: integer peak, 3-point fits, centroid, centre of symmetry,
upsampled DFT, and Newton refinement over the overlap ("gauss-newton"), which
approaches the Cramér–Rao bound.

All estimators search the peak within ``max_shift_px`` of zero (the highest
value in that disk), report a radial 1-σ ``sigma`` and a ``confidence``.
"""
from __future__ import annotations

import copy
import math
from functools import lru_cache

import numpy as np
import scipy.fft as sfft
from scipy import ndimage
from scipy.signal.windows import tukey

from drift_framework.types import CorrelationMap, Shift, doubted

from . import candidates as cand
from . import uncertainty as unc
from .correlators import WORKERS, CrossCorrelator, gaussian_weight
from .counts import stabilized_pair


@lru_cache(maxsize=32)
def _disk(shape, center, radius) -> np.ndarray:
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    mask = (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius ** 2
    mask.setflags(write=False)
    return mask


class MapEstimator:
    """Base class: peak search within ``max_shift_px``, a sub-pixel step, sigma and confidence.

    Subclasses implement :meth:`subpixel`.  ``efficiency`` (error RMS over the
    optimal correlation estimator's) and ``floor_px`` (model error, e.g. a fit's
    bias) calibrate ``sigma``; both were measured on the simulator benchmark.
    """

    method = "peak"
    efficiency = 1.0
    floor_px = math.sqrt(2 / 12)  # integer peak: uniform rounding error on each axis

    def __init__(self, *, max_shift_px: float | None = None, **_):
        self.max_shift_px = max_shift_px

    # -- peak search ---------------------------------------------------------
    def search_mask(self, cmap: CorrelationMap) -> np.ndarray | None:
        if self.max_shift_px is None:
            return None
        return _disk(cmap.data.shape, tuple(cmap.center), float(self.max_shift_px))

    def choose_peak(self, cmap: CorrelationMap, value_std: float, noise) -> tuple[tuple[int, int], cand.Contest | None]:
        """The peak and, for correlation maps, the contest between candidates that chose it (:mod:`.candidates`)."""
        if cmap.kind not in ("xcorr", "ncc") or not np.isfinite(value_std) or value_std <= 0:
            return self.find_peak(cmap, value_std), None
        return self._contest(cmap, value_std, noise, self.find_peak(cmap, value_std), keep_first=False)

    def contest_at(self, cmap: CorrelationMap, near: tuple[float, float]) -> tuple[float, tuple[tuple[float, float], ...]]:
        """Score another estimator's answer ``near`` (dy, dx) against the map's other candidates: the probability
        that it beats them all, and the shifts it does not rule out (0 when ``near`` is half a pixel or more from
        the map's peak it climbs to, or not the nearest-to-zero of its lattice translates)."""
        if cmap.raw is not None:  # a learned pipeline's map is of denoised frames: score on the raw ones
            cmap = raw_ncc(*cmap.raw)
        noise = self._noise(cmap)
        vstd = self._value_std(cmap, noise)
        if cmap.kind not in ("xcorr", "ncc") or not np.isfinite(vstd) or vstd <= 0:
            return 1.0, ()
        h, w = cmap.data.shape
        start = (int(round(near[0] + cmap.center[0])) % h, int(round(near[1] + cmap.center[1])) % w)
        peak = _climb(cmap.data, start)
        shared = (cand.SignalSpectra(cmap.reference, cmap.moving, *noise),
                  cand.OverlapComparison(cmap.reference, cmap.moving, *noise))
        _, result = self._contest(cmap, vstd, noise, peak, keep_first=True, shared=shared)
        if result is None:
            return 1.0, ()
        if np.hypot(result.chosen.shift[0] - near[0], result.chosen.shift[1] - near[1]) > 0.5:
            return 0.0, (result.chosen.shift,)  # half a pixel or more from the correlation's own peak: not it
        distinct, rivals = result.distinct, tuple(r.shift for r in result.rivals)
        # the correlation's own choice: where it starts from another peak and picks another candidate, ``near`` is
        # right at most as often as that choice is wrong (the comparison above can miss a candidate the full
        # contest weighs; from the same start, a rival that beats ``near`` has already taken its probability)
        first = self.find_peak(cmap, vstd)
        apart = math.hypot(first[0] - peak[0], first[1] - peak[1]) > 1.5  # not two summits of one noisy peak
        own = self._contest(cmap, vstd, noise, first, keep_first=False, shared=shared)[1] if apart else None
        if own is not None and np.hypot(*np.subtract(own.chosen.shift, result.chosen.shift)) > 0.5:
            distinct = min(distinct, 1.0 - own.distinct)
            rivals = (own.chosen.shift, *(r for r in rivals if r != own.chosen.shift))
        return distinct, rivals

    def _contest(self, cmap, value_std, noise, peak, *, keep_first: bool, shared=None):
        data = cmap.data
        h, w = data.shape
        py, px = peak
        c0 = float(data[py, px])
        curv = abs(float(data[(py - 1) % h, px] + data[(py + 1) % h, px]) - 2 * c0) + \
            abs(float(data[py, (px - 1) % w] + data[py, (px + 1) % w]) - 2 * c0)
        spectra, overlap = shared or (cand.SignalSpectra(cmap.reference, cmap.moving, *noise),
                                      cand.OverlapComparison(cmap.reference, cmap.moving, *noise))
        window = 10.0 * value_std + 0.25 * curv + self.RELATIVE_AMBIGUITY * abs(c0)  # peaks sampled off-top read low
        scale = 1.0 if cmap.normalized else 1.0 / max(cmap.norm or 1.0, 1e-30)  # map units → correlation coefficient
        result = cand.contest(data, cmap.center, self.search_mask(cmap), spectra, overlap, window, peak,
                              tolerance=self.RELATIVE_AMBIGUITY * abs(c0) * scale, keep_first=keep_first,
                              value_std=value_std)
        if result is None:
            return peak, None
        return result.chosen.peak, result

    def find_peak(self, cmap: CorrelationMap, value_std: float = 0.0) -> tuple[int, int]:
        """The peak nearest zero among those indistinguishable from the highest.

        A lattice correlates with itself at every lattice vector; those peaks
        differ only by noise.  Local maxima within ``AMBIGUITY`` value-noise
        standard deviations of the highest are candidates, and the one nearest
        zero shift wins (drift between frames is small).
        """
        data = cmap.data
        mask = self.search_mask(cmap)
        masked = data if mask is None else np.where(mask, data, -np.inf)
        flat = np.unravel_index(int(np.argmax(masked)), data.shape)
        best = (int(flat[0]), int(flat[1]))
        if cmap.kind not in ("xcorr", "ncc"):  # phase correlation peaks are sharp: the highest wins
            return best
        # A peak sampled half a pixel off its top reads lower by about ½·(½)²·|curvature| per axis.
        h, w = data.shape
        by, bx = best
        c0 = float(data[by, bx])
        curv = abs(float(data[(by - 1) % h, bx] + data[(by + 1) % h, bx]) - 2 * c0) + \
            abs(float(data[by, (bx - 1) % w] + data[by, (bx + 1) % w]) - 2 * c0)
        tolerance = self.AMBIGUITY * max(value_std, 0.0) + 0.125 * curv + self.RELATIVE_AMBIGUITY * abs(c0)
        threshold = c0 - tolerance
        above = masked >= threshold
        if np.count_nonzero(above) <= 1:
            return best
        # a candidate is the summit of its own hill: local maxima joined to a higher one by values all above the
        # threshold are noise on one broad peak (large probes, low dose), not a peak of their own
        labels, count = ndimage.label(above, structure=np.ones((3, 3), bool))
        if count <= 1:
            return best
        # on the labelled pixels alone: maximum_position sorts every pixel it is given (4 ms of a 256² pair)
        inside = np.flatnonzero(labels)
        summits = ndimage.maximum_position(masked.ravel()[inside], labels.ravel()[inside], np.arange(1, count + 1))
        ys, xs = np.unravel_index(inside[np.array(summits, int).ravel()], data.shape)
        dist = (ys - cmap.center[0]) ** 2 + (xs - cmap.center[1]) ** 2
        k = int(np.argmin(dist))
        return int(ys[k]), int(xs[k])

    AMBIGUITY = 3.0
    RELATIVE_AMBIGUITY = 0.0  # a fraction of the peak's height that lattice peaks may differ by (distorted scans)

    # -- the estimate ----------------------------------------------------------
    def estimate(self, cmap: CorrelationMap) -> Shift:
        noise = self._noise(cmap)
        vstd = self._value_std(cmap, noise)
        peak, contest = self.choose_peak(cmap, vstd, noise)
        d = self.subpixel(cmap, peak)
        return self._finish(cmap, peak, d, noise=noise, value_std=vstd, contest=contest)

    def subpixel(self, cmap: CorrelationMap, peak) -> np.ndarray:
        return np.array(peak, float) - cmap.center

    def _noise(self, cmap):
        vr, vm = unc.noise_std(cmap.reference) ** 2, unc.noise_std(cmap.moving) ** 2
        return vr, vm

    def _value_std(self, cmap, noise) -> float:
        vr, vm = noise
        if cmap.kind == "images":
            return 0.0
        if cmap.kind == "phase":
            return 1.4826 * float(np.median(np.abs(cmap.data - np.median(cmap.data))))
        n_eff = cmap.n_eff if cmap.n_eff is not None else cmap.reference.size
        std = unc.ncc_value_std(cmap.reference, cmap.moving, vr, vm, n_eff)
        return std if cmap.normalized else std * cmap.norm

    def _finish(self, cmap, peak, d, cov=None, noise=None, value_std=None, model_px: float = 0.0,
                contest: cand.Contest | None = None) -> Shift:
        vr, vm = noise or self._noise(cmap)
        if cov is None:
            info = unc.gradient_information(cmap.reference, cmap.moving, vr, vm)
            cov = unc.covariance(info, vr + vm, self.efficiency)
        sigma = unc.radial_sigma(cov, math.hypot(self.floor_px, model_px))
        if value_std is None:
            value_std = self._value_std(cmap, (vr, vm))
        rivals: tuple[tuple[float, float], ...] = ()
        if contest is not None:
            distinct, rivals = contest.distinct, tuple(r.shift for r in contest.rivals)
        else:
            distinct = unc.peak_distinctness(cmap.data, peak, cmap.center, self.search_mask(cmap), value_std)
            if cmap.kind == "phase":  # whitened maps give no noise model: score the answer on the NCC's candidates
                scored, rivals = self.contest_at(raw_ncc(cmap.reference, cmap.moving), (float(d[0]), float(d[1])))
                distinct = min(distinct, scored)
        meta = {"peak_distinctness": distinct, "cov": cov.tolist()}
        if self.max_shift_px is not None:
            h, w = cmap.data.shape
            py, px = peak
            around = cmap.data[np.ix_([(py - 1) % h, py, (py + 1) % h], [(px - 1) % w, px, (px + 1) % w])]
            if around.max() > cmap.data[py, px]:  # cut off by the search radius: the real peak lies beyond it
                distinct = 0.0
        meta["p_right"] = p_right = unc.confidence(distinct, sigma)
        return Shift(float(d[0]), float(d[1]), sigma, doubted(p_right, bool(rivals)), self.method, meta, rivals)


def weighted_peak(reference: np.ndarray, moving: np.ndarray, max_shift_px: float | None = None) -> np.ndarray | None:
    """The lag (dy, dx) of the highest value of the two frames' cross-correlation weighted per frequency by
    ``S/(2S + N)`` (``S`` the content's power from both frames' spectra over 3 × 3 bins less the noise's ``N``):
    the matched filter for the shift between two noisy views of one specimen, whose noise between a lattice's
    reflections meets only the other frame's noise. ``None`` when the frames show no content above noise."""
    r = reference - reference.mean(dtype=np.float64)
    m = moving - moving.mean(dtype=np.float64)
    fr, fm = sfft.rfft2(r, workers=WORKERS), sfft.rfft2(m, workers=WORKERS)
    noise = 0.5 * (unc.noise_std(reference) ** 2 + unc.noise_std(moving) ** 2) * r.size
    signal = _content_power(np.abs(fr) ** 2, np.abs(fm) ** 2, noise)
    if not np.any(signal > 0):
        return None
    c = sfft.fftshift(sfft.irfft2(np.conj(fr) * fm * (signal / (2 * signal + noise)), s=r.shape, workers=WORKERS))
    center = (r.shape[0] // 2, r.shape[1] // 2)
    if max_shift_px is not None:
        c = np.where(_disk(c.shape, center, float(max_shift_px)), c, -np.inf)
    y, x = np.unravel_index(int(np.argmax(c)), c.shape)
    return np.array([y - center[0], x - center[1]], float)


def raw_ncc(reference: np.ndarray, moving: np.ndarray) -> CorrelationMap:
    """The ``classical`` preset's map (circular NCC, the moving frame low-passed) of two raw frames."""
    return CrossCorrelator(normalize=True, window="none", lowpass_px=1.5, kind="ncc").correlate(reference, moving)


def _climb(data: np.ndarray, start: tuple[int, int]) -> tuple[int, int]:
    """The local maximum reached from ``start`` by steepest ascent over the 8 neighbours (wrapping)."""
    h, w = data.shape
    y, x = start
    for _ in range(h + w):
        ys, xs = [(y + o) % h for o in (-1, 0, 1)], [(x + o) % w for o in (-1, 0, 1)]
        patch = data[np.ix_(ys, xs)]
        k = int(np.argmax(patch))
        if k == 4:
            break
        y, x = ys[k // 3], xs[k % 3]
    return y, x


def _parabola_noise_px(data: np.ndarray, peak: tuple[int, int], value_std: float) -> float:
    """Radial std of a three-point parabola's vertex when each map value has noise ``value_std``:
    ``√2·σ / (2·|curvature|)`` per axis."""
    h, w = data.shape
    py, px = peak
    c0 = float(data[py, px])
    total = 0.0
    for lo, hi in ((data[(py - 1) % h, px], data[(py + 1) % h, px]), (data[py, (px - 1) % w], data[py, (px + 1) % w])):
        curv = abs(float(lo) + float(hi) - 2 * c0)
        total += (math.sqrt(2) * value_std / (2 * curv)) ** 2 if curv > 0 else math.inf
    return math.sqrt(total) if math.isfinite(value_std) else math.inf


def _neighbours(data, peak, axis):
    """Values at peak−1, peak, peak+1 along an axis (wrapping: maps may be circular)."""
    n = data.shape[axis]
    p = list(peak)
    out = []
    for k in (-1, 0, 1):
        q = list(p)
        q[axis] = (p[axis] + k) % n
        out.append(float(data[tuple(q)]))
    return out


class Parabolic(MapEstimator):
    """3-point parabola through the peak and its neighbours, per axis."""

    method = "parabolic"
    efficiency = 1.3
    floor_px = 0.04

    def subpixel(self, cmap, peak):
        return parabolic_subpixel(cmap, peak)


def parabolic_subpixel(cmap: CorrelationMap, peak: tuple[int, int]) -> np.ndarray:
    """The peak refined by a 3-point parabola per axis (a start for the refining estimators too)."""
    d = np.array(peak, float) - cmap.center
    for axis in (0, 1):
        lo, c0, hi = _neighbours(cmap.data, peak, axis)
        den = lo - 2 * c0 + hi
        if den < 0:
            d[axis] += float(np.clip(0.5 * (lo - hi) / den, -0.5, 0.5))
    return d


class Gaussian3(MapEstimator):
    """3-point Gaussian fit (a parabola through the log of the values), per axis."""

    method = "gaussian"
    efficiency = 1.3
    floor_px = 0.03

    def subpixel(self, cmap, peak):
        d = np.array(peak, float) - cmap.center
        for axis in (0, 1):
            vals = np.array(_neighbours(cmap.data, peak, axis))
            vals = vals - min(vals.min(), 0.0) + 1e-6 * max(abs(vals[1]), 1e-12)
            lo, c0, hi = np.log(vals)
            den = lo - 2 * c0 + hi
            if den < 0:
                d[axis] += float(np.clip(0.5 * (lo - hi) / den, -0.5, 0.5))
        return d


class Centroid(MapEstimator):
    """Centre of mass of the peak's neighbourhood (values above the neighbourhood minimum)."""

    method = "centroid"
    efficiency = 1.5
    floor_px = 0.08

    def __init__(self, *, radius_px: int = 1, **kw):
        super().__init__(**kw)
        self.radius = radius_px

    def subpixel(self, cmap, peak):
        r = self.radius
        ys = (np.arange(-r, r + 1) + peak[0]) % cmap.data.shape[0]
        xs = (np.arange(-r, r + 1) + peak[1]) % cmap.data.shape[1]
        patch = cmap.data[np.ix_(ys, xs)].astype(np.float64)
        patch = patch - patch.min()
        total = patch.sum()
        d = np.array(peak, float) - cmap.center
        if total > 0:
            k = np.arange(-r, r + 1)
            d += [float((patch.sum(axis=1) * k).sum() / total), float((patch.sum(axis=0) * k).sum() / total)]
        return d


class SymmetryCenter(MapEstimator):
    """Centre of symmetry of the correlation peak: a centroid over a disk that follows the peak.

    When the scan vibrates, each line of a frame lands a little off, so the correlation of two frames is the
    specimen's autocorrelation spread over the distribution of line-to-line displacement differences: a broad,
    flat-topped or split peak whose highest point is decided by the noise.  Its centre of symmetry is the mean
    displacement, which adds up around any loop of frames — so first-frame, frame-to-frame and all-pairs
    measurements agree.  The centroid of the map (minus its minimum on the disk) over a disk of ``radius_px`` is
    iterated with the disk centred on the last estimate; the fixed point is the point about which the peak is
    symmetric.  Slower to converge and noisier than ``gauss-newton`` on a sharp peak: use it for distorted scans.
    """

    method = "symmetry-center"
    #: its error over the optimal correlation estimator's, measured: 1.2–1.5 × the bound on sharp peaks (with 1.0, 1.5 %
    #: of the answers at SNR 0.25 were wrong at confidence ≥ 0.5)
    efficiency = 1.3
    floor_px = 0.004
    # a vibrating scan smears each lattice peak of the map differently: heights differ by ~10 %, so peaks within
    # 15 % of the highest count as the same and the one nearest zero shift wins
    RELATIVE_AMBIGUITY = 0.15
    MODEL_GAIN = 3.0

    def __init__(self, *, radius_px: float = 8.0, iterations: int = 200, **kw):
        super().__init__(**kw)
        self.radius = float(radius_px)
        self.iterations = iterations

    def estimate(self, cmap: CorrelationMap) -> Shift:
        noise = self._noise(cmap)
        vstd = self._value_std(cmap, noise)
        peak, contest = self.choose_peak(cmap, vstd, noise)
        d, spread = self.center(cmap, peak)
        vr, vm = noise
        cov = unc.covariance(unc.gradient_information(cmap.reference, cmap.moving, vr, vm), vr + vm,
                             self.efficiency)
        # noise alone moves the centre between disks by about the noise sigma; only the excess is model error
        excess = max(spread - unc.radial_sigma(cov, self.floor_px), 0.0)
        return self._finish(cmap, peak, d, cov=cov, noise=noise, value_std=vstd, model_px=self.MODEL_GAIN * excess,
                            contest=contest)

    def subpixel(self, cmap, peak):
        return self.center(cmap, peak)[0]

    def center(self, cmap, peak) -> tuple[np.ndarray, float]:
        """The centre of symmetry, and how far it moves when the disk shrinks to 0.7 × (the model error: a
        symmetric peak has the same centre on every disk, a distorted one does not)."""
        r = self.disk_radius(cmap.data, peak)
        pad = int(math.ceil(r)) + 4  # room for the disk to wander a few pixels plus the spline's support
        ys = (np.arange(-pad, pad + 1) + peak[0]) % cmap.data.shape[0]
        xs = (np.arange(-pad, pad + 1) + peak[1]) % cmap.data.shape[1]
        patch = ndimage.spline_filter(cmap.data[np.ix_(ys, xs)].astype(np.float64), order=3, mode="mirror")
        c = self._iterate(patch, pad, r, np.zeros(2))
        inner = self._iterate(patch, pad, max(0.7 * r, 1.5), c)
        spread = float(np.hypot(*(inner - c)))
        if np.max(np.abs(c)) >= self.WANDER_PX:
            # the disk walked off the chosen peak towards another one and was stopped: the centre is neither, and as
            # uncertain as the walk was long (at SNR 0.25 a side peak nearer zero was chosen; its disk walked 4 px
            # towards the true one and the answer, 1 px short of it, had confidence 1)
            spread = max(spread, float(np.hypot(*c)))
        return np.array(peak, float) - cmap.center + c, spread

    def _iterate(self, patch, pad: int, r: float, c: np.ndarray) -> np.ndarray:
        """Centroid iterations over a disk of radius ``r`` from offset ``c`` (from the integer peak) to the fixed point."""
        k = np.arange(-math.floor(r), math.floor(r) + 1, dtype=float)
        ty, tx = np.meshgrid(k, k, indexing="ij")
        inside = ty ** 2 + tx ** 2 <= r * r
        ty, tx = ty[inside], tx[inside]
        c = c.copy()
        for _ in range(self.iterations):
            coords = np.stack([ty + c[0] + pad, tx + c[1] + pad])
            v = ndimage.map_coordinates(patch, coords, order=3, mode="mirror", prefilter=False)
            v -= v.min()
            total = v.sum()
            if total <= 0:
                break
            step = np.array([(v * ty).sum(), (v * tx).sum()]) / total
            c = np.clip(c + step, -self.WANDER_PX, self.WANDER_PX)
            if abs(step[0]) + abs(step[1]) < 1e-4:
                break
        return c

    VALLEY_FRACTION = 0.8
    VALLEY_SMOOTH_PX = 1.0
    #: the farthest the disk may move from the chosen peak (px)
    WANDER_PX = 4.0

    def disk_radius(self, data: np.ndarray, peak) -> float:
        """``radius_px``, or less on a fine lattice: 0.8 × the distance to the nearest deep valley of the map.

        A disk reaching into the neighbouring lattice peaks would pull the centroid towards the points halfway
        between them, which are centres of symmetry too.  A valley (local minimum of the map smoothed over a pixel,
        below the halfway level between the peak and the map's median around it) lies about half a lattice period
        away; the saddle between the two humps of a split peak is no local minimum, so it does not shrink the disk.
        """
        n = int(math.ceil(self.radius / self.VALLEY_FRACTION)) + 2
        ys = (np.arange(-n - 1, n + 2) + peak[0]) % data.shape[0]
        xs = (np.arange(-n - 1, n + 2) + peak[1]) % data.shape[1]
        box = data[np.ix_(ys, xs)]
        # the map's noise makes local minima of its own next to the peak (at SNR 0.25 the disk shrank to 2 px there,
        # and its centre wandered by up to 1 px): valleys are looked for on the map smoothed over a pixel
        box = ndimage.gaussian_filter(box.astype(np.float64), self.VALLEY_SMOOTH_PX, mode="nearest")
        inner = box[1:-1, 1:-1]
        low = unc.local_maxima(-box)  # local minima
        top = float(inner[n, n])
        low &= inner < top - 0.5 * (top - float(np.median(inner)))
        if not low.any():
            return self.radius
        yy, xx = np.nonzero(low)
        nearest = float(np.sqrt(np.min((yy - n) ** 2 + (xx - n) ** 2)))
        return float(np.clip(self.VALLEY_FRACTION * nearest, 2.0, self.radius))


class UpsampledDFT(MapEstimator):
    """Upsampled-DFT refinement (Guizar-Sicairos et al., Opt. Lett. 33, 156, 2008).

    The correlation is evaluated by a matrix-multiply DFT on a 1.5-px region
    around the peak, ``upsample_factor`` samples per pixel (band-limited
    interpolation of the cross-power spectrum).
    """

    method = "upsampled-dft"
    efficiency = 1.2
    floor_px = 0.02

    def __init__(self, *, upsample_factor: int = 100, **kw):
        super().__init__(**kw)
        self.factor = upsample_factor

    def subpixel(self, cmap, peak):
        d0 = parabolic_subpixel(cmap, peak)
        cp = cmap.cross_power
        if cp is None:
            cp = sfft.fft2(sfft.ifftshift(cmap.data), workers=WORKERS)
        d = np.round(d0 * self.factor) / self.factor
        size = int(math.ceil(1.5 * self.factor))
        half = size // 2
        h, w = cp.shape
        offs = (np.arange(size) - half) / self.factor
        ky = np.exp(2j * np.pi * np.outer(d[0] + offs, sfft.fftfreq(h))).astype(np.complex64)
        kx = np.exp(2j * np.pi * np.outer(sfft.fftfreq(w), d[1] + offs)).astype(np.complex64)
        up = (ky @ cp.astype(np.complex64, copy=False) @ kx).real
        iy, ix = np.unravel_index(int(np.argmax(up)), up.shape)
        return d + offs[[iy, ix]]


# --------------------------------------------------------------------------- #
# Newton refinement over the overlap
# --------------------------------------------------------------------------- #


def _maximize(surface, d, iterations: int) -> np.ndarray:
    """Damped Newton ascent (Levenberg–Marquardt): steps that do not raise f are refused and damped."""
    v, g, hess = surface.at(d)
    lam = 0.0
    for _ in range(3 * iterations):
        vals = np.linalg.eigvalsh(hess)
        scale = max(float(np.abs(vals).max()), 1e-30)
        shift = max(0.0, float(vals.max()) + 1e-3 * scale) + lam
        step = -np.linalg.solve(hess - shift * np.eye(2), g)
        norm = float(np.hypot(*step))
        if norm > 0.5:
            step *= 0.5 / norm
        v_new, g_new, h_new = surface.at(d + step)
        if v_new >= v:
            d, v, g, hess = d + step, v_new, g_new, h_new
            lam *= 0.25
            if norm < 1e-6:
                break
        else:
            lam = max(4 * lam, 1e-2 * scale)
            if lam > 1e6 * scale:
                break
    return d


def _fits(shape, margins) -> bool:
    """Whether the overlap left by ``margins`` (top, bottom, left, right) is at least 8 × 8 px."""
    top, bottom, left, right = margins
    return shape[0] - top - bottom >= 8 and shape[1] - left - right >= 8


def _positive_definite(m: np.ndarray, floor: float = 0.1) -> np.ndarray:
    """Symmetric ``m`` with eigenvalues raised to at least ``floor`` × the largest (noisy curvature at low SNR)."""
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    top = max(float(np.abs(vals).max()), 1e-30)
    return (vecs * np.maximum(vals, floor * top)) @ vecs.T


@lru_cache(maxsize=16)
def _gradient_noise_gain(shape, sigma_px: float) -> tuple[float, float]:
    """``E[(∂_y (g∗n))²]/σ²`` and the same along x, for white noise n and the Gaussian low-pass g."""
    ky = 2 * np.pi * sfft.fftfreq(shape[0])[:, None]
    kx = 2 * np.pi * sfft.fftfreq(shape[1])[None, :]
    g2 = np.exp(-(sigma_px ** 2) * (ky ** 2 + kx ** 2))
    return float(np.mean(g2 * ky ** 2)), float(np.mean(g2 * kx ** 2))


def _weighted_noise_gain(shape, sigma_px: float, weight: np.ndarray) -> tuple[float, float]:
    """:func:`_gradient_noise_gain` through the Gaussian and ``weight`` (rfft half spectrum) together."""
    factors, along_y, along_x = _surface_factors(shape)
    columns = factors * (shape[0] * shape[1])  # each rfft column stands for 1 or 2
    g2 = (gaussian_weight(shape, sigma_px).astype(np.float64) * weight) ** 2 * columns
    n = shape[0] * shape[1]
    ky2, kx2 = np.abs(along_y[1]) ** 2, np.abs(along_x[:, 1]) ** 2
    return float(np.sum(g2 * ky2[:, None]) / n), float(np.sum(g2 * kx2[None, :]) / n)


def _content_power(power_r: np.ndarray, power_m: np.ndarray, noise: float) -> np.ndarray:
    """The content's power in each bin of a half spectrum: both frames' power (the same specimen), averaged over
    3 × 3 bins, less the white ``noise`` power; never below 0."""
    mean = ndimage.uniform_filter(0.5 * (power_r + power_m), 3, mode=("wrap", "nearest"))
    return np.maximum(mean - noise, 0.0)


def _content_weight(fr: np.ndarray, conj_a: np.ndarray, taper_energy: float, reference: np.ndarray,
                    moving: np.ndarray) -> np.ndarray:
    """Wiener weight ``S / (S + N)`` of the reference's half spectrum ``fr``: ``S`` the content's power, from both
    frames' power (the same specimen; the moving frame's from its tapered spectrum ``conj_a``, whose squared taper
    sums to ``taper_energy``) averaged over 3 × 3 bins less the noise's, ``N`` the reference's white noise.  A
    lattice keeps its reflections and the bins around them; the noise between them, which the correlation would
    meet with the other frame's noise, is left out (at 2 e/px in dark contrast that noise cost up to 1.9 × the
    Cramér–Rao bound).  1 at zero frequency (the profiled offset takes it)."""
    n = moving.size
    var_r, var_m = unc.noise_std(reference) ** 2, unc.noise_std(moving) ** 2
    gain = n / max(taper_energy, 1e-30)  # the tapered frame's power, as the whole frame's
    signal = _content_power(fr.real ** 2 + fr.imag ** 2, gain * (conj_a.real ** 2 + conj_a.imag ** 2),
                            0.5 * (var_r + var_m) * n)
    weight = signal / (signal + max(var_r * n, 1e-30))
    weight[0, 0] = 1.0
    return weight.astype(np.float32)


@lru_cache(maxsize=16)
def _low_weight(shape, sigma_px: float) -> np.ndarray:
    """``gaussian_weight`` restricted to the rows and columns kept on the half-resolution grid."""
    h, w = shape
    hs, ws = h // 2, w // 2
    pos, neg, cols = (hs + 1) // 2, hs // 2, ws // 2 + 1
    g = gaussian_weight(shape, sigma_px)
    out = np.concatenate([g[:pos, :cols], g[h - neg:, :cols]])
    out.setflags(write=False)
    return out


def _smooth_energy_spectrum(fr: np.ndarray, shape, sigma_px: float) -> np.ndarray:
    """rfft spectrum of ``r̄²``, ``r̄`` the reference (spectrum ``fr``) low-passed by a Gaussian of ``sigma_px``.

    ``r̄²`` has almost no energy above a quarter of the sampling rate (``sigma_px`` ≥ 1), so it is computed on a
    grid decimated by two (two FFTs of a quarter of the size) and its spectrum embedded back in the full one."""
    h, w = shape
    if sigma_px < 1.0 or min(h, w) < 64:
        smooth = sfft.irfft2(fr * gaussian_weight(shape, sigma_px), s=shape, workers=WORKERS)
        return sfft.rfft2(smooth * smooth, workers=WORKERS)
    hs, ws = h // 2, w // 2
    pos, neg = (hs + 1) // 2, hs // 2               # rows of non-negative and negative frequencies kept
    cols = ws // 2 + 1
    low = np.concatenate([fr[:pos, :cols], fr[h - neg:, :cols]])
    low *= _low_weight(shape, sigma_px) * np.float32(hs * ws / (h * w))
    smooth = sfft.irfft2(low, s=(hs, ws), workers=1)  # small transforms: threads cost more than they save
    spec_low = sfft.rfft2(smooth * smooth, workers=1)
    spec_low *= np.float32(h * w / (hs * ws))
    out = np.zeros(fr.shape, spec_low.dtype)
    out[:pos, :cols] = spec_low[:pos]
    out[h - neg:, :cols] = spec_low[hs - neg:]
    return out


@lru_cache(maxsize=16)
def _surface_factors(shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rfft columns' weights (each stands for two, but DC and Nyquist) and ``(-i·k)^n`` for n = 0, 1, 2 along y
    (3, h) and along x (w//2+1, 3)."""
    h, w = shape
    weights = np.full(w // 2 + 1, 2.0 / (h * w))
    weights[0] /= 2
    if w % 2 == 0:
        weights[-1] /= 2
    ky, kx = 2 * np.pi * sfft.fftfreq(h), 2 * np.pi * sfft.rfftfreq(w)
    along_y = np.stack([np.ones_like(ky), -1j * ky, -ky ** 2])
    along_x = np.stack([np.ones_like(kx), -1j * kx, -kx ** 2], axis=1)
    for arr in (weights, along_y, along_x):
        arr.setflags(write=False)
    return weights, along_y, along_x


class _SpectralSurface:
    """``f(d) = (1/N) Σ_k S_k e^{−2πi k·d}`` and its gradient and Hessian, from a half (rfft) spectrum, or from a
    stack of them at once (one matrix product for all their values and derivatives)."""

    #: where the gradient and the Hessian sit in the table of derivatives m[a, b] (a-th along y, b-th along x)
    _GRAD = (np.array([1, 0]), np.array([0, 1]))
    _HESS = (np.array([[2, 1], [1, 0]]), np.array([[0, 1], [1, 2]]))

    def __init__(self, spec: np.ndarray, shape):
        h, w = shape
        blocks = spec[None] if spec.ndim == 2 else spec
        weights, self.along_y, self.along_x = _surface_factors((h, w))
        self.blocks = blocks.shape[0]
        self.spec = spec
        self.s = np.multiply(blocks, weights, dtype=np.complex128).reshape(-1, blocks.shape[-1])
        self.ky = 2 * np.pi * sfft.fftfreq(h)
        self.kx = 2 * np.pi * sfft.rfftfreq(w)

    def at_all(self, d) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values (k,), gradients (k, 2) and Hessians (k, 2, 2) of every spectrum of the stack at ``d``."""
        ex = np.exp(-1j * self.kx * d[1])
        along_x = (self.s @ (self.along_x * ex[:, None])).reshape(self.blocks, -1, 3)
        m = ((self.along_y * np.exp(-1j * self.ky * d[0])) @ along_x).real
        return m[:, 0, 0], m[:, self._GRAD[0], self._GRAD[1]], m[:, self._HESS[0], self._HESS[1]]

    def at(self, d):
        v, g, hess = self.at_all(d)
        return float(v[0]), g[0], hess[0]


class GaussNewton(MapEstimator):
    """Newton refinement of the cross-correlation over the overlap region.

    Maximizes ``f(d) = Σ_Ω w(x)·m(x)·r(x − d) − ½ Σ_Ω w(x)·r̄²(x − d) + u(d)²/2W``: the least-squares objective
    with the constant offset between the frames fitted out (``u(d) = Σ w·(r(x − d) − mean)``, ``W = Σ w``), over the
    region ``Ω`` of the moving frame whose content stays inside the reference (only the side the content entered
    from is left out), under a smooth taper ``w``.  Because the moving frame's noise is independent of the
    reference's, the cross term has no pixel-locking bias (unlike the sum of squared differences, whose
    interpolated-noise energy varies with the sub-pixel phase); the energy term takes the low-passed reference
    ``r̄`` for the same reason.  Everything is evaluated exactly from spectra (band-limited), so the Newton
    iterations cost no image resampling.  A second, sharper pass (exact energy ``r²``, ``fine_lowpass_px``)
    removes the low-pass's bias where the data are good enough to show it.  The covariance is
    ``(σ_r² + σ_m²)·ρ·I⁻¹`` with the information ``I`` from the correlation's curvature.  Frames of Poisson
    counts are refined after the Anscombe transform (``stabilize_counts``), whose unit variance makes least squares
    the likelihood's weighting (:mod:`.counts`).
    """

    method = "gauss-newton"
    efficiency = 1.0
    floor_px = 0.003
    #: the largest move the sharper pass may make: the coarse pass's bias on noiseless frames of every crystal
    #: family of ``drift bench learned`` is at most 0.09 px; a larger move is the sharper pass's noise
    fine_reach_px = 0.15

    def __init__(self, *, taper_px: float = 8.0, iterations: int = 12, margin_px: int = 3,
                 lowpass_px: float | None = 2.0, fine_lowpass_px: float | None = 1.0, fine_test: float = 6.0,
                 fine_by_error: bool = True, noisy_taper_px: float | None = 2.0, noisy_lowpass_px: float | None = 1.5,
                 content_weight: bool = True, stabilize_counts: bool = True, **kw):
        super().__init__(**kw)
        self.stabilize_counts = stabilize_counts
        self.taper, self.iterations, self.margin = taper_px, iterations, margin_px
        self.noisy_taper, self.noisy_lowpass = noisy_taper_px, noisy_lowpass_px
        self.lowpass, self.content_weight = lowpass_px, content_weight
        self.fine_lowpass, self.fine_test, self.fine_by_error = fine_lowpass_px, fine_test, fine_by_error
        self._tapers: dict = {}

    def estimate(self, cmap: CorrelationMap) -> Shift:
        noise = self._noise(cmap)
        vstd = self._value_std(cmap, noise)
        peak, contest = self.choose_peak(cmap, vstd, noise)
        d0 = parabolic_subpixel(cmap, peak)
        ref, mov = self._stabilized(cmap.reference, cmap.moving)
        spectrum = cmap.reference_spectrum if ref is cmap.reference else None
        margins = self._margins(d0)
        fit = _fits(ref.shape, margins)
        refined = self._refine(ref, mov, d0, margins, spectrum) if fit else (None, None, None)
        if len(self._tapers) > 32:  # a taper + its spectrum per overlap: ~2 MB each at 512²
            self._tapers.clear()
        d, cov, _ = refined
        if cov is None:
            # The least-squares optimum is more than 1.5 px from the map's peak (a broad, noisy peak: large columns
            # at a low dose). Where it settles (refined again with the room its shift needs) is right more often
            # than the peak, but the map did not choose it: as uncertain as the peak's noise makes it, and more
            # than the distance between the two.
            model = max(_parabola_noise_px(cmap.data, peak, vstd), 1.5 if fit else 0.0)
            if d is not None:
                d = self._settle(ref, mov, d)
            shift = self._finish(cmap, peak, d0 if d is None else d, noise=noise, value_std=vstd, contest=contest,
                                 model_px=model)
        else:
            shift = self._finish(cmap, peak, d, cov, noise=noise, value_std=vstd, contest=contest)
        return self._nearer_weighted_peak(ref, mov, shift) if shift.confidence < 0.5 else shift

    def review_doubtful(self, reference: np.ndarray, moving: np.ndarray, shift: Shift) -> Shift:
        """Another pipeline's doubtful answer (confidence < 0.5), looked at as this estimator looks at its own: see
        :meth:`_nearer_weighted_peak` (a :class:`~drift_framework.types.DoubtReviewer`)."""
        if shift.confidence >= 0.5:
            return shift
        ref, mov = self._stabilized(reference, moving)
        return self._nearer_weighted_peak(ref, mov, shift)

    def _nearer_weighted_peak(self, ref, mov, shift: Shift) -> Shift:
        """A doubtful answer against the highest peak of the content-weighted correlation (:func:`weighted_peak`):
        where that peak is nearer zero and the refinement settles there, it is the answer, without confidence (the
        map did not choose it) and with ``shift`` as its rival. At 2 e/px in dark contrast the map's highest peak
        was a noise peak 12 px from the shift once in 40 pairs of perovskite and of a 2-D crystal (8–16 px cells),
        and the shift not among its candidates; the weighted map had it."""
        found = weighted_peak(ref, mov, self.max_shift_px)
        if found is None or math.hypot(*found) >= math.hypot(shift.dy, shift.dx) - 1.5 \
                or math.hypot(found[0] - shift.dy, found[1] - shift.dx) <= 1.5:
            return shift
        margins = self._margins(found)
        if not _fits(ref.shape, margins):
            return shift
        d, cov, _ = self._refine(ref, mov, found, margins)
        if cov is None or math.hypot(*(d - found)) > 1.5:
            return shift
        sigma = unc.radial_sigma(cov, self.floor_px)
        meta = {**shift.meta, "cov": cov.tolist(), "peak_distinctness": 0.0, "p_right": 0.0, "weighted_peak": True}
        return Shift(float(d[0]), float(d[1]), sigma, 0.0, shift.method or self.method, meta,
                     ((shift.dy, shift.dx), *shift.candidates))

    def for_resampled(self) -> GaussNewton:
        """This estimator for a resampled reference (a template warped from other frames): the sharper pass is taken
        only beyond its own noise, since the template's interpolation blur, which varies with the sub-pixel position,
        would pass for the first pass's bias (a series refit on smooth drift went from 0.070 to 0.093 px against
        the truth with ``fine_by_error``); and always under the wide taper (under the narrow one the same refit
        went from 0.064 to 0.100 px)."""
        variant = copy.copy(self)
        variant.fine_by_error = False
        variant.noisy_taper = None  # the template's edges are where its warp and fill are least like the frame
        return variant

    def _stabilized(self, reference, moving):
        """Frames of Poisson counts through the Anscombe transform (``stabilize_counts``), others as they are."""
        return stabilized_pair(reference, moving) if self.stabilize_counts else (reference, moving)

    def _settle(self, ref, mov, d):
        """The optimum a far Newton move reached, refined again with the margin its shift needs (None if it does
        not settle there)."""
        margins = self._margins(d)
        if not _fits(ref.shape, margins):
            return None
        settled, cov, _ = self._refine(ref, mov, d, margins)
        if cov is None or (self.max_shift_px is not None and math.hypot(*settled) > self.max_shift_px):
            return None
        return settled

    def refine(self, reference: np.ndarray, moving: np.ndarray, start) -> Shift:
        """Refine a shift already known to be in the right basin (e.g. from a learned estimator).

        Returns the refined :class:`Shift`; its confidence is ``P(|error| < 0.5 px)`` from the covariance
        only (the basin is the caller's claim).
        """
        d0 = np.asarray(start, float)
        reference, moving = self._stabilized(reference, moving)
        margins = self._margins(d0)
        d, cov = None, None
        if _fits(reference.shape, margins):
            d, cov, _ = self._refine(reference, moving, d0, margins)
        if d is None or cov is None:
            return Shift(float(d0[0]), float(d0[1]), math.nan, 0.0, self.method)
        sigma = unc.radial_sigma(cov, self.floor_px)
        return Shift(float(d[0]), float(d[1]), sigma, unc.confidence(1.0, sigma), self.method, {"cov": cov.tolist()})

    def _margins(self, d) -> tuple[int, int, int, int]:
        """Rows and columns of the moving frame left out at its top, bottom, left and right: those whose content
        at shift ``d`` lies outside the reference, plus the Newton steps' room. Only the side the content entered
        from loses pixels (a symmetric border cost up to half the overlap's information at large shifts)."""
        dy, dx = (float(v) for v in d)
        m = self.margin
        return (max(0, math.ceil(dy)) + m, max(0, math.ceil(-dy)) + m, max(0, math.ceil(dx)) + m,
                max(0, math.ceil(-dx)) + m)

    def _taper(self, shape, margins, dtype, width: float) -> tuple[np.ndarray, np.ndarray]:
        """The smooth taper (edges ``width`` px) over the overlap and ``½·conj(rfft2(taper))``, the factor of the
        least-squares terms (cached). The taper is separable, so its spectrum is the outer product of its factors'
        1-D spectra."""
        key = (shape, margins, np.dtype(dtype).str, width)
        cached = self._tapers.get(key)  # get-then-set: safe when threads share this estimator
        if cached is None:
            top, bottom, left, right = margins
            wy, wx = self._edge_taper(shape[0], top, bottom, width), self._edge_taper(shape[1], left, right, width)
            spectrum = 0.5 * np.outer(sfft.fft(wy), sfft.rfft(wx)).conj()
            cached = self._tapers[key] = (np.outer(wy, wx).astype(dtype),
                                          spectrum.astype(np.result_type(dtype, np.complex64)))
        return cached

    @staticmethod
    def _edge_taper(n: int, lo: int, hi: int, width: float) -> np.ndarray:
        """1-D: zero on the ``lo`` first and ``hi`` last samples, a Tukey window of ``width`` px edges between."""
        out = np.zeros(n, np.float32)
        inside = n - lo - hi
        alpha = min(1.0, 2 * width / inside) if width > 0 else 0.0
        out[lo:n - hi] = tukey(inside, alpha) if alpha else 1.0
        return out

    def _refine(self, ref, mov, d0, margins, ref_spectrum=None, noisy: bool = False):
        """Newton from ``d0``: ``(d, cov, (σ_r², σ_m²))``, or ``(d, None, None)`` when it left the start's basin.
        ``noisy``: under the narrow taper and light low-pass (see below)."""
        dtype = ref.dtype
        h, w = ref.shape
        taper, lowpass = self.taper, self.lowpass
        if noisy and self.noisy_taper is not None:
            taper, lowpass = self.noisy_taper, self.noisy_lowpass
        win, taper_spectrum = self._taper(ref.shape, margins, dtype, taper)
        top, bottom, left, right = margins
        inner = (slice(top, h - bottom), slice(left, w - right))  # the taper is zero outside
        wi = win[inner]
        sw = float(wi.sum(dtype=np.float64))
        mz = mov[inner] - dtype.type(np.sum(wi * mov[inner], dtype=np.float64) / sw)
        a = np.zeros_like(ref)
        a[inner] = wi * mz
        mean_r = dtype.type(np.sum(wi * ref[inner], dtype=np.float64) / sw)
        shape = ref.shape
        # The correlator's spectrum of (ref − mean) differs from that of r only at zero frequency, where
        # conj(A) is zero (a has zero weighted mean), so it can stand in for rfft2(r).
        fr = ref_spectrum if ref_spectrum is not None else sfft.rfft2(ref - mean_r, workers=WORKERS)
        conj_a = sfft.rfft2(a, workers=WORKERS).conj()
        raw = _SpectralSurface(conj_a * fr, shape)  # the frames as they are: the residual and the information
        weight = _content_weight(fr, conj_a, float(np.sum(wi * wi, dtype=np.float64)), ref, mov) \
            if self.content_weight else None
        if weight is not None:  # the reference as a template, its noise between the content's frequencies left out
            fr = fr * weight
        corr = conj_a * fr
        # u(d) = Σ w(x)·(r(x − d) − mean_r): the reference's weighted mean under the shifted overlap differs from
        # the moving frame's wherever the view holds a different part of a coarse lattice; the least-squares fit
        # takes the constant offset as a parameter (see _ProfiledSurface), or the mismatch pulls the shift by up to
        # 0.1 px on cells of 30 px.
        offset = 2 * taper_spectrum * fr  # E and u share fr's constant: the profiled objective does not see it
        # Newton maximizes f − ½ Σ w(x)·r̄²(x − d), the least-squares objective: without the second term the
        # maximum moves towards where the reference has more energy under the taper's slopes. r̄ is the
        # low-passed reference, so the term adds little noise; the price is a bias where r and r̄ differ, which
        # the second, sharper pass below removes when the data are good enough to show it.
        coarse = self._lowpass_pass(corr, fr, taper_spectrum, offset, sw, shape, lowpass, smooth_energy=True)
        d = _maximize(coarse, np.asarray(d0, float), self.iterations)
        if np.max(np.abs(d - d0)) > 1.5:
            return d, None, None  # left the start's basin: no covariance for it here
        # noise of both frames from the residual energy: Σw(m − r̃)² ≈ Σw m² + Σw r(·−d)² − 2 f(d)
        v, _, _ = raw.at(d)
        sy, sx = (int(v) for v in np.round(d))
        ri = ref[top - sy:h - bottom - sy, left - sx:w - right - sx] - mean_r  # r(x − round(d)) on Ω
        e_m = float(np.sum(wi * mz * mz, dtype=np.float64))
        e_r = float(np.sum(wi * ri * ri, dtype=np.float64))
        var_sum = max((e_m + e_r - 2 * v) / sw, 1e-30)
        rho = float(np.sum(wi * wi, dtype=np.float64)) / sw
        cov = self._covariance(raw, coarse, d, var_sum, rho, wi, shape, lowpass, weight)
        beyond_reach = float(np.linalg.eigvalsh(cov)[0]) * self.fine_test > self.fine_reach_px ** 2
        if beyond_reach and not noisy and self.noisy_taper is not None:
            # Noise this large buries the biases that the wide taper and the low-pass guard against (≤ 0.03 px at
            # 200 e/px), and they cost information: the taper's slopes hold 15 % of a 128² overlap's, the low-pass
            # the reflections beyond it. Refined again under the narrow taper and the light low-pass (2 e/px, dark
            # contrast: 1.40–1.50 → 1.31–1.47 × the Cramér–Rao bound). Not where the answer is precise: there
            # the low-pass decides what a distorted scan's shift is (on the shared real stack 1.5 px moved it
            # 0.3 px from ``distorted``'s, sigma 0.02).
            light = self._refine(ref, mov, d, margins, ref_spectrum, noisy=True)
            if light[1] is not None:
                return light
        if (self.fine_lowpass is None or lowpass is None or self.fine_lowpass >= lowpass or beyond_reach):
            # (the last: the sharper pass is the noisier one, so no move within its reach could pass the test)
            return d, cov, (var_sum / 2, var_sum / 2)
        # The sharper pass: the exact energy Σ w·r² and a narrower low-pass. At a high dose the coarse pass's bias
        # (a few 0.01 px on coarse lattices) is many of its standard errors; at a low dose the sharper answer is
        # only noisier. Take it when it moves further than its own noise explains.
        # fr is the spectrum of the reference less a constant, which its zero frequency gives
        if weight is None:
            r = ref - dtype.type((float(ref.sum(dtype=np.float64)) - float(fr[0, 0].real)) / ref.size)
        else:  # the template itself (its spectrum is fr)
            r = sfft.irfft2(fr, s=shape, workers=WORKERS).astype(dtype, copy=False)
        fine = self._lowpass_pass(corr, r, taper_spectrum, offset, sw, shape, self.fine_lowpass, smooth_energy=False)
        d_fine = _maximize(fine, d, self.iterations)
        cov_fine = self._covariance(raw, fine, d_fine, var_sum, rho, wi, shape, self.fine_lowpass, weight)
        step = d_fine - d
        # the step estimates the coarse pass's bias, plus the noise the sharper pass adds: take the sharper one when
        # that bias costs more than its extra noise (mean squared error)
        sharper = self.fine_by_error and float(step @ step) > 2.0 * (float(np.trace(cov_fine)) - float(np.trace(cov)))
        beyond_noise = float(step @ np.linalg.solve(cov_fine, step)) > self.fine_test
        if math.hypot(*step) <= self.fine_reach_px and (sharper or beyond_noise):
            return d_fine, cov_fine, (var_sum / 2, var_sum / 2)
        return d, cov, (var_sum / 2, var_sum / 2)

    def _lowpass_pass(self, corr, reference, taper_spectrum, offset, sw, shape, lowpass, *, smooth_energy):
        """The profiled least-squares objective, its spectra weighted by a Gaussian of ``lowpass`` px; its energy
        term from ``reference`` (the image, less the constant of ``offset``): low-passed (``smooth_energy``, then
        ``reference`` is its spectrum) or exact."""
        if smooth_energy:
            energy = _smooth_energy_spectrum(reference, shape, lowpass or 1.0)
        else:
            energy = sfft.rfft2(reference * reference, workers=WORKERS)
        target = corr - taper_spectrum * energy
        both = np.stack([target, offset])
        if lowpass:
            both *= gaussian_weight(shape, lowpass)
        return _ProfiledSurface(_SpectralSurface(both, shape), sw)

    @staticmethod
    def _covariance(raw, surface, d, var_sum, rho, wi, shape, lowpass, weight=None):
        """``(σ_r² + σ_m²)·ρ·H⁻¹·Q·H⁻¹`` on a low-passed surface (``H`` its curvature, ``Q`` the frames' gradient
        noise through the low-pass and the content ``weight``) plus the gradient noise of the two frames' product;
        ``(σ_r² + σ_m²)·ρ·I⁻¹`` without a low-pass, the information ``I`` from the correlation's curvature (less the
        part the offset takes)."""
        _, g_u, _ = surface.offset_at(d)
        _, _, hess_lp = surface.at(d)
        inv_lp = np.linalg.inv(_positive_definite(-hess_lp))
        if lowpass:
            # The surface Newton maximized is the correlation through the low-pass and the content weight, f = G·W: it
            # uses less than all of the frames' information, so its variance is the sandwich H⁻¹·Q·H⁻¹, Q the gradient
            # noise Σ k kᵀ·f²·|R|² of the frames' noise meeting that template (at SNR 0.15 on 256², var·I⁻¹ of the
            # raw correlation put sigma 30 % below the error, under the Cramér–Rao bound)
            filt = gaussian_weight(shape, lowpass).astype(np.float64)
            if weight is not None:
                filt = filt * weight
            _, _, hess_q = _SpectralSurface(raw.spec * filt ** 2, shape).at(d)
            cov = var_sum * rho * inv_lp @ _positive_definite(-hess_q) @ inv_lp
        else:
            _, _, hess = raw.at(d)
            cov = var_sum * rho * np.linalg.inv(_positive_definite(-hess - np.outer(g_u, g_u) / surface.weight_sum))
        if lowpass:
            # At low SNR the product of the two frames' noises adds gradient noise of its own:
            # σ_m²·σ_r²·Σw²·E[(∂(g∗n))²]/σ², on the low-passed surface that Newton maximized.
            q = _gradient_noise_gain(shape, lowpass) if weight is None else _weighted_noise_gain(shape, lowpass, weight)
            nn = (var_sum / 2) ** 2 * float(np.sum(wi * wi, dtype=np.float64)) * np.diag(q)
            cov = cov + inv_lp @ nn @ inv_lp
        return cov


class _ProfiledSurface:
    """``F(d) = t(d) + u(d)²/(2W)``: the least-squares objective ``t`` with the constant offset between the frames
    fitted out (``u`` is ``Σ w·(r(x − d) − mean)``, ``W = Σ w``); value, gradient and Hessian.  ``both`` holds the
    spectra of ``t`` and ``u``."""

    def __init__(self, both: _SpectralSurface, weight_sum: float):
        self.both, self.weight_sum = both, weight_sum

    def at(self, d):
        v, g, hess = self.both.at_all(d)
        u, g_u, h_u = v[1], g[1], hess[1]
        return (float(v[0]) + u * u / (2 * self.weight_sum), g[0] + u * g_u / self.weight_sum,
                hess[0] + (np.outer(g_u, g_u) + u * h_u) / self.weight_sum)

    def offset_at(self, d):
        v, g, hess = self.both.at_all(d)
        return float(v[1]), g[1], hess[1]
