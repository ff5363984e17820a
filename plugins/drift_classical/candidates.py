"""Which correlation peak is the shift?  Candidates, and how well the data tell them apart.

A lattice correlates with itself at every lattice vector; a lattice with a centred basis (perovskite [001]: the
centre column nearly as strong as the corner one) also at every *pseudo*-lattice vector.  The peaks then differ by
less than the noise, and the nearest-to-zero rule that is right for lattice translates is wrong for pseudo-lattice
ones whenever the true shift is the farther peak.  So:

1. **The lattice.**  The reference's reflections (significant bins of a Hann-windowed spectrum) give the reciprocal
   lattice; its dual is the real-space basis.  A pseudo-lattice shows only in weak reflections between the strong
   ones: their powers, read where an index-2 super-lattice puts them and summed, decide whether the true cell is
   twice as large (:meth:`WindowedSpectrum._superlattices`).  Candidates one lattice vector apart are the same answer.
2. **Heights compared fairly.**  Map heights carry biases larger than a centred basis's signal (a circular map's
   seam, a window's overlap, both favouring lags near zero), so two candidates are compared by their correlation
   coefficients over one common region of the reference (:class:`OverlapComparison`).
3. **The noise of a difference.**  ``ρ(a) − ρ(b) = Σ r(x)·[m(x+a) − m(x+b)]``: each frame's noise meets only the
   part of the other's content that changes under ``v = b − a`` (one noisy pixel enters both sums), plus noise ×
   noise and the edge of the region.
4. **The posterior.**  Against a noise peak, ``Φ(z)``; against a shadow of itself (a pseudo-lattice vector away,
   content differing by the fraction ``f``), the two hypotheses predict gaps ``±ρ·f``, whose likelihood ratio stays
   near even when the basis columns are nearly alike (:func:`_beats`).  Rivals a lattice vector apart are one
   answer, their evidence pooled.  The product over answers is the ``peak_distinctness`` that multiplies an
   estimator's confidence; rivals it does not rule out are listed.
5. **Super-lattices the reflections cannot show.**  At a low dose the true cell's weak reflections may not stand
   out at all; the other coset's shift is then weighed by the posterior of such a super-lattice (its reflections'
   summed excess and a prior: :class:`SuperLattice`) times the chance the correlation prefers it.  It doubts the
   pick and is listed, but never replaces it (:func:`_hidden_cosets`).
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import scipy.fft as sfft
from scipy import ndimage
from scipy.signal.windows import blackmanharris
from scipy.special import expit, ndtr

from .uncertainty import local_maxima, ncc_value_std

#: a rival beats the map's choice when it stands this many noise std above it (several rivals: few false calls).
SEPARATION_Z = 4.0
#: a half-vector whose mismatch is within this of the basis vectors' is a lattice vector too.
HALF_VECTOR_MARGIN = 0.002
#: summed super-lattice reflections this many noise std above noise: the apparent lattice is a pseudo-lattice.
SUPERLATTICE_Z = 3.5
#: half-width (frequency bins) of the Blackman–Harris taper's main lobe: super-lattice reflections nearer than this
#: to the strong ones read the strong ones' leakage, so such a super-lattice cannot be told from none.
TAPER_LOBE_BINS = 4.0
#: maxima nearer zero than the pick within this fraction of its height are its rivals (see :func:`contest`).
NEARER_FRACTION = 0.15
#: a candidate the pick beats with less than this probability is a rival: the answer is ambiguous.
RIVAL_BELOW = 0.95
#: prior odds of a super-lattice the reflections do not show: the centring of a square or rectangular cell is
#: common (two kinds of column on a centred square: perovskite, CsCl or fluorite [001], the kinds alike in some
#: contrast); any other index-2 super-lattice of an apparent lattice is rare.
CENTRED_PRIOR = 0.3
OTHER_PRIOR = 0.01
#: under a super-lattice, the z its reflections' summed excess power reads is taken as uniform up to this.
SUPERLATTICE_Z_RANGE = 8.0
#: half-width of the Lanczos kernel that interpolates map heights between samples.
LANCZOS_A = 6
#: at most this many competing maxima are scored (the highest).
MAX_CANDIDATES = 8
#: a lattice translate reads lower than the peak it repeats by the seam's and the window's fall-off (5–10 % at a
#: third of a large cell's frame); a peak below half of it is no translate, whatever the reflections said (a lattice
#: found in the noise of non-periodic content made the Hubble deep field's shift of 31 px, NCC 0.74, "the same
#: answer" as a bump of 0.005 near zero)
TRANSLATE_FRACTION = 0.5


@dataclass(frozen=True)
class Candidate:
    """One local maximum of the map: integer ``peak`` (map index), its sub-pixel lag ``shift`` (px) and ``value``."""

    peak: tuple[int, int]
    shift: tuple[float, float]
    value: float


@dataclass(frozen=True)
class Contest:
    """The chosen candidate, the probability that it beats the others, and those the data cannot rule out."""

    chosen: Candidate
    distinct: float
    rivals: tuple[Candidate, ...]

    @property
    def ambiguous(self) -> bool:
        return bool(self.rivals)


@dataclass(frozen=True)
class SuperLattice:
    """An index-2 super-lattice of an apparent lattice: its ``basis``, a ``step`` of the apparent lattice that is
    not one of its vectors (it moves content between the two cosets), the ``z`` its extra reflections read above
    noise, the ``prior`` odds that such a super-lattice hides in a lattice like this one, and the ``fraction`` of the
    reference's reflection power its extra reflections hold."""

    basis: np.ndarray
    step: np.ndarray
    z: float
    prior: float
    half: tuple[float, float] = (0.5, 0.5)  # its extra reflections' offset, in the apparent reciprocal basis
    fraction: float = 0.0  # of the reference's reflection power in its extra reflections (read once revealed)

    @property
    def coset_mismatch(self) -> float:
        """How much content changes under :attr:`step` (``mismatch`` of a lag): the extra reflections change sign."""
        return 2.0 * self.fraction

    @property
    def odds(self) -> float:
        """Posterior odds of this super-lattice against none: the prior times the Bayes factor of ``z`` (N(0, 1)
        without it; with it, N(μ, 1) for μ uniform on [0, SUPERLATTICE_Z_RANGE])."""
        z = float(np.clip(self.z, -8.0, SUPERLATTICE_Z_RANGE))
        top = SUPERLATTICE_Z_RANGE
        factor = (ndtr(z) - ndtr(z - top)) / (top * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi))
        return self.prior * float(factor)

    def other_coset(self, shift) -> np.ndarray:
        """The shift nearest zero in the other coset of ``shift``: the answer if this super-lattice is there."""
        return _nearest_zero(np.asarray(shift, float) + self.step, self.basis)


class Lattice(NamedTuple):
    """What a reference's reflections say about its lattice: the ``basis`` (``None``: no lattice), the index-2
    super-lattice they ``revealed`` (its basis is ``basis``), and the others of the apparent lattice, ``hidden``
    (not ruled out)."""

    basis: np.ndarray | None
    revealed: SuperLattice | None
    hidden: tuple[SuperLattice, ...]


_SPECTRA: OrderedDict[tuple, WindowedSpectrum] = OrderedDict()


def _reference_spectrum(reference: np.ndarray, var: float) -> WindowedSpectrum:
    """The reference's :class:`WindowedSpectrum`, kept for the next pairs against the same reference (a loop or a
    stack corrected against its first frame): keyed by the frame's bytes, so a changed frame is a new entry."""
    data = np.ascontiguousarray(reference)
    key = (data.shape, data.dtype.str, round(float(var), 12), hashlib.blake2b(data.tobytes(), digest_size=16).digest())
    found = _SPECTRA.get(key)
    if found is None:
        found = WindowedSpectrum(data, var)
        _SPECTRA[key] = found
        while len(_SPECTRA) > 8:
            _SPECTRA.popitem(last=False)
    return found


class SignalSpectra:
    """What the reference's content says about translations: its self-mismatch under a lag, its lattice basis, and
    the noise of a difference of two correlation values.  The spectrum is computed on first use."""

    def __init__(self, reference: np.ndarray, moving: np.ndarray, var_r: float, var_m: float):
        self.var_r, self.var_m = var_r, var_m
        self.p = [max(float(np.var(img)) - var, 0.0) for img, var in ((reference, var_r), (moving, var_m))]
        self._reference, self._moving = reference, moving
        self._windowed: WindowedSpectrum | None = None
        self._basis: tuple[np.ndarray | None] | None = None  # (basis,) once found
        self._hidden: tuple[SuperLattice, ...] = ()
        self._revealed: SuperLattice | None = None

    @property
    def windowed(self) -> WindowedSpectrum:
        if self._windowed is None:
            self._windowed = _reference_spectrum(self._reference, self.var_r)
        return self._windowed

    def structural_mismatch(self, v: np.ndarray) -> float:
        """How much the reference's content differs from itself moved by ``v`` (≈ 0 lattice, ≈ 1 unrelated)."""
        return self.windowed.best_mismatch(v)[0]

    @property
    def basis(self) -> np.ndarray | None:
        """The reference's lattice basis (2, 2), or ``None`` when it shows no lattice."""
        if self._basis is None:
            found = self.windowed.lattice_basis(TaperedFrame(self._moving, self.var_m, WindowedSpectrum.MAX_SIZE))
            self._basis = (found.basis,)
            self._revealed, self._hidden = found.revealed, found.hidden
        return self._basis[0]

    @property
    def revealed(self) -> SuperLattice | None:
        """The index-2 super-lattice of the apparent lattice that the reflections revealed (its basis is
        :attr:`basis`), or ``None``."""
        _ = self.basis
        return self._revealed

    @property
    def hidden(self) -> tuple[SuperLattice, ...]:
        """The index-2 super-lattices of the apparent lattice that the reflections do not rule out, besides the one
        they revealed (if any)."""
        _ = self.basis
        return self._hidden

    def hidden_posteriors(self) -> list[tuple[SuperLattice, float]]:
        """Each of :attr:`hidden` with the probability that it is the specimen's lattice (they exclude each other
        and the revealed one; none at all is the rest)."""
        odds = [sl.odds for sl in self.hidden]
        total = 1.0 + sum(odds) + (self._revealed.odds if self._revealed is not None else 0.0)
        return [(sl, o / total) for sl, o in zip(self.hidden, odds)]

    def is_lattice_vector(self, v: np.ndarray, tolerance_px: float = 1.0) -> bool:
        """Whether ``v`` is, within ``tolerance_px``, a whole-number combination of the reference's lattice basis.
        Never when the reference shows no lattice."""
        return _on_lattice(self.basis, v, tolerance_px)

    def is_coset_step(self, v: np.ndarray) -> bool:
        """Whether ``v`` moves content between the two cosets of the super-lattice the reflections revealed: a
        vector of the apparent lattice that is not one of the true one's.  Its two ends are shadows of each other."""
        return self.basis is not None and self._revealed is not None and _on_lattice(self.windowed.apparent, v) \
            and not _on_lattice(self.basis, v)

    def difference_std(self, value_std: float, v: np.ndarray, edge: float = 0.0) -> float:
        """Noise std of ``ρ(p) − ρ(p + v)`` given the noise std of one coefficient.

        ``Σ r(x)·[m(x+p) − m(x+p+v)]``: each frame's noise meets only the part of the other's content that changes
        under ``v`` (the fraction ``f``, read off the reference's spectrum: the same specimen), since one noisy
        pixel of the moving frame enters both sums, weighted by content that ``v`` maps onto itself; noise meets
        noise at every lag.  Pixels that enter only one sum (``edge``: the fraction of the region that ``v`` moves
        out of it) meet all of the reference's content.
        """
        f = float(np.clip(self.windowed.mismatch(np.asarray(v, float))[0], 0.0, 2.0))
        p_r, p_m = self.p
        vr, vm = self.var_r, self.var_m
        one = vm * p_r + vr * p_m + vr * vm
        if one <= 0:
            return math.sqrt(2) * value_std
        diff = 2.0 * (f * (vr * p_m + vm * p_r) + vr * vm + edge * max(1.0 - f, 0.0) * vm * p_r)
        return value_std * math.sqrt(diff / one)


def _nearest_zero(place: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """The translate of ``place`` by whole vectors of ``basis`` nearest zero."""
    reach = int(np.ceil(np.hypot(*place) / max(float(np.min(np.hypot(*basis.T))), 1e-9))) + 2
    n = np.arange(-reach, reach + 1)
    places = place + np.stack(np.meshgrid(n, n, indexing="ij"), -1).reshape(-1, 2) @ basis
    return places[int(np.argmin(np.hypot(*places.T)))]


def _full_power(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``|fft2(image, s=shape)|²`` of a real image, from its half (rfft) spectrum: the other half mirrors it
    (``P(ky, kx) = P(−ky, −kx)``), at half the cost of the complex transform."""
    half = sfft.rfft2(image, s=shape, workers=-1)
    power = half.real ** 2 + half.imag ** 2
    h, w = shape
    rest = w - power.shape[1]  # the columns w//2 + 1 … w − 1
    mirror = power[(-np.arange(h)) % h, 1:rest + 1][:, ::-1]
    return np.concatenate([power, mirror], axis=1)


def _powers(z: np.ndarray, half: int) -> np.ndarray:
    """``z**j`` for ``j = −half…half`` (len(z), 2·half + 1), for unit-modulus ``z`` (``z**−j`` is the conjugate)."""
    up = [z]
    for _ in range(half - 1):
        up.append(up[-1] * z)
    return np.stack([*(np.conj(u) for u in up[::-1]), np.ones_like(z), *up], axis=1)


def _on_lattice(basis: np.ndarray | None, v: np.ndarray, tolerance_px: float = 1.0) -> bool:
    """Whether ``v`` is within ``tolerance_px`` of a whole-number combination of ``basis`` (never for ``None``)."""
    if basis is None:
        return False
    v = np.asarray(v, float)
    residual = v - np.round(np.linalg.solve(basis.T, v)) @ basis
    return bool(np.hypot(*residual) < tolerance_px)


class WindowedSpectrum:
    """The significant part of a Hann-windowed power spectrum: a denoised autocorrelation at any sub-pixel lag.

    For a lattice vector ``v`` the windowed image's autocorrelation falls only as the window's own does (the window
    moves, the content maps onto itself); ``mismatch(v)`` is what falls beyond that: ≈ 0 for lattice vectors, the
    super-lattice power fraction (×2) for a pseudo-lattice vector.  Only bins well above the noise floor are kept, so
    noise does not blur the comparison.
    """

    MAX_BINS = 1500
    MAX_SIZE = 192  # a central crop this large holds the lattice many times over, at a tenth of the cost at 512²

    def __init__(self, image: np.ndarray, var: float):
        h, w = (min(n, self.MAX_SIZE) for n in image.shape)
        y0, x0 = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
        image = image[y0:y0 + h, x0:x0 + w]
        wy, wx = np.hanning(h), np.hanning(w)
        windowed = (image - image.mean(dtype=np.float64)) * np.outer(wy, wx)
        noise = var * float(np.sum(wy ** 2) * np.sum(wx ** 2))
        # detect reflections on the plain grid (independent bins: ~1 noise bin in the whole spectrum passes
        # ln(N) noise floors), then read them on a zero-padded grid (a linear autocorrelation, nothing wraps around)
        found = _full_power(windowed, (h, w)) > (math.log(h * w) + 2.0) * noise
        found = ndimage.maximum_filter(found, size=3, mode="wrap")  # the reflections' leakage into neighbours
        keep = np.repeat(np.repeat(found, 2, axis=0), 2, axis=1)  # the padded grid's bins around each
        keep = np.roll(keep, (-1, -1), axis=(0, 1)) | keep
        iy, ix = np.nonzero(keep)
        power = np.clip(_full_power(windowed, (2 * h, 2 * w))[iy, ix] - noise, 0.0, None)
        # the strongest bins holding 99.5 % of the signal power are enough, and much faster to evaluate
        order = np.argsort(power)[::-1]
        cut = int(np.searchsorted(np.cumsum(power[order]), 0.995 * power.sum())) + 1
        order = order[:min(cut, self.MAX_BINS)]
        iy, ix, power = iy[order], ix[order], power[order]
        self._shape2, self._index = keep.shape, (iy, ix)
        self.k = np.stack([2 * np.pi * sfft.fftfreq(2 * h)[iy], 2 * np.pi * sfft.fftfreq(2 * w)[ix]], axis=1)
        self.power = power
        self.tapered = TaperedFrame(image, var, self.MAX_SIZE)
        self._apparent: tuple[np.ndarray | None] | None = None  # (basis,) once computed
        self._window = [(2 * np.pi * sfft.fftfreq(2 * n), np.abs(sfft.fft(win, 2 * n)) ** 2)
                        for n, win in ((h, wy), (w, wx))]

    def mismatch(self, lags: np.ndarray) -> np.ndarray:
        """The fall of the autocorrelation beyond the window's at each lag of ``lags`` (m, 2)."""
        lags = np.atleast_2d(lags)
        total = float(self.power.sum())
        if total <= 0:
            return np.ones(len(lags))
        auto = (self.power @ np.cos(self.k @ lags.T)) / total
        window = np.ones(len(lags))
        for (k, pw), lag in zip(self._window, lags.T):
            window *= (pw @ np.cos(np.outer(k, lag))) / pw.sum()
        return 1.0 - auto / np.maximum(window, 1e-12)

    def best_mismatch(self, v: np.ndarray, reach_px: float = 1.0) -> tuple[float, np.ndarray]:
        """The least mismatch within ``reach_px`` of ``v``: the autocorrelation peak near ``v`` (measured peak
        positions carry their own noise; the image's self-similarity peaks exactly at its lattice vectors)."""
        values, centres = self.best_mismatches(np.asarray(v, float)[None], reach_px)
        return float(values[0]), centres[0]

    def best_mismatches(self, lags: np.ndarray, reach_px: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`best_mismatch` of each lag of ``lags`` (m, 2), searched together: (m,) values, (m, 2) lags."""
        centres, step = np.array(lags, float).reshape(-1, 2), reach_px / 2
        n = np.arange(-2, 3)
        values = np.ones(len(centres))
        for _ in range(3):  # coarse to fine: 5×5 grids, each a quarter of the last one's step around its best
            grids = self._grid_mismatch(centres, step).reshape(len(centres), -1)
            iy, ix = np.unravel_index(np.argmin(grids, axis=1), (5, 5))
            values = grids[np.arange(len(centres)), iy * 5 + ix]
            centres, step = centres + step * np.stack([n[iy], n[ix]], axis=1), step / 4
        return values, centres

    def _grid_mismatch(self, centres: np.ndarray, step: float, half: int = 2) -> np.ndarray:
        """:meth:`mismatch` on the grids ``centres[m] + step·(i, j)``, ``i, j = −half…half`` (m, 2·half + 1,
        2·half + 1), by separable phase factors: per bin and axis one complex exponential, raised to the grid's
        powers, instead of one cosine per bin and lag."""
        side = 2 * half + 1
        total = float(self.power.sum())
        if total <= 0:
            return np.ones((len(centres), side, side))
        weighted = self.power * np.exp(1j * (centres @ self.k.T))  # (m, bins)
        ey, ex = (_powers(np.exp(1j * step * k), half) for k in self.k.T)  # (bins, side) each
        auto = np.matmul((weighted[:, :, None] * ey).transpose(0, 2, 1), ex).real / total
        lags = centres[:, :, None] + step * np.arange(-half, half + 1)  # (m, 2, side)
        (ky, py), (kx, px) = self._window
        wy = np.cos(lags[:, 0, :, None] * ky) @ py / py.sum()  # (m, side)
        wx = np.cos(lags[:, 1, :, None] * kx) @ px / px.sum()
        return 1.0 - auto / np.maximum(wy[:, :, None] * wx[:, None, :], 1e-12)

    @property
    def apparent(self) -> np.ndarray | None:
        """:meth:`apparent_basis`, computed once per reference."""
        if self._apparent is None:
            self._apparent = (self.apparent_basis(),)
        return self._apparent[0]

    def lattice_basis(self, also: TaperedFrame | None = None) -> Lattice:
        """The basis of :meth:`apparent_basis`, or of the super-lattice its weak reflections reveal (with ``also``,
        the other frame, read too); and, when none is revealed, the super-lattices not ruled out."""
        apparent = self.apparent
        if apparent is None:
            return Lattice(None, None, ())
        candidates = self._superlattices(apparent, also)
        best = max(candidates, key=lambda sl: sl.z, default=None)
        if best is not None and best.z > SUPERLATTICE_Z:  # the others stay in doubt: noise may have chosen this one
            recip, k_max = 2 * np.pi * np.linalg.inv(apparent).T, self._k_max()
            extra = max(self.tapered.power(recip, best.half, k_max), 0.0)
            strong = max(self.tapered.power(recip, (0.0, 0.0), k_max), 1e-300)
            return Lattice(best.basis, replace(best, fraction=extra / (extra + strong)),
                           tuple(sl for sl in candidates if sl is not best))
        return Lattice(apparent, None, tuple(candidates))

    def apparent_basis(self) -> np.ndarray | None:
        """The real-space lattice basis (2, 2) dual to the image's reflections; ``None`` when they form no lattice.

        Reflections are read off the significant part of the spectrum (power-weighted centroids of its connected
        bins), which stays geometric and exact at doses where autocorrelation values are too noisy to compare.
        The two shortest independent reflections span the reciprocal lattice once every strong reflection indexes
        to whole numbers on them (a reflection halfway between means a finer reciprocal, a coarser real, lattice).
        """
        spots, power = self._reflections()
        strong = power >= 0.05 * power.max() if len(power) else np.zeros(0, bool)
        spots = spots[strong]
        if len(spots) < 2:
            return None
        order = np.argsort(np.hypot(*spots.T))
        g1 = spots[order[0]]
        others = [spots[k] for k in order[1:] if abs(np.linalg.det(np.array([g1, spots[k]]))) > 0.3 * np.dot(g1, g1)]
        if not others:
            return None
        recip = np.array([g1, others[0]])
        for _ in range(2):  # at most two halvings: centred and doubled cells
            index = spots @ np.linalg.inv(recip)
            off = np.abs(index - np.round(index))
            if np.all(off < 0.15):
                return self._finest(2 * np.pi * np.linalg.inv(recip).T)
            bad = index[np.argmax(off.max(axis=1))]
            halves = np.abs(bad - np.round(bad)) > 0.35
            g1, g2 = recip
            recip = np.array([(g1 + g2) / 2, g2]) if halves.all() else \
                np.array([g1 / 2, g2]) if halves[0] else np.array([g1, g2 / 2])
        return None

    def _reflections(self) -> tuple[np.ndarray, np.ndarray]:
        """Angular frequencies (n, 2) and powers (n,) of the reflections, one of each Friedel pair."""
        h2, w2 = self._shape2
        grid = np.zeros((h2, w2))
        grid[self._index] = self.power
        grid = sfft.fftshift(grid)
        labels, count = ndimage.label(grid > 0)
        if count == 0:
            return np.zeros((0, 2)), np.zeros(0)
        ys, xs = np.nonzero(labels)
        lab, weight = labels[ys, xs], grid[ys, xs]
        total = np.bincount(lab, weight, count + 1)[1:]  # power-weighted centroid of each reflection
        safe = np.maximum(total, 1e-300)
        centre = np.stack([np.bincount(lab, weight * ys, count + 1)[1:] / safe - h2 // 2,
                           np.bincount(lab, weight * xs, count + 1)[1:] / safe - w2 // 2], axis=1)
        k = 2 * np.pi * centre / np.array([h2, w2])
        # one of each Friedel pair, and no slow background (thickness, contamination: periods over half the crop)
        keep = ((k[:, 0] > 0) | ((k[:, 0] == 0) & (k[:, 1] > 0))) & (np.hypot(*k.T) > 2 * np.pi * 4 / min(h2, w2))
        return k[keep], np.asarray(total)[keep]

    def _finest(self, basis: np.ndarray) -> np.ndarray:
        """The reduced basis, halved while a half-vector maps the image onto itself as well as the basis does
        (a reflection too weak to see in a small frame leaves the dual basis a super-lattice's)."""
        for _ in range(2):
            b1, b2 = _reduced(basis)
            halves = (((b1 + b2) / 2, b1), ((b2 - b1) / 2, b1), (b1 / 2, b2), (b2 / 2, b1))
            values = self.best_mismatches(np.array([b1, b2, *(h for h, _ in halves)]))[0]  # one search for all
            level = max(values[0], values[1], 0.0) + HALF_VECTOR_MARGIN
            for (h, other), value in zip(halves, values[2:]):
                if np.hypot(*h) >= 2.0 and value <= level:
                    basis = np.array([h, other])
                    break
            else:
                return np.array([b1, b2])
        return _reduced(basis)

    def _superlattices(self, basis: np.ndarray, also: TaperedFrame | None = None) -> list[SuperLattice]:
        """The index-2 super-lattices of ``basis``, each with the evidence its extra reflections give.

        A centred basis whose corner and centre columns are nearly alike looks like a lattice half the cell's size;
        the true cell shows only in weak reflections between the strong ones.  Each is too weak to detect alone,
        so their powers, read at the positions the super-lattice predicts, are summed: a χ²-like test, over both
        frames when ``also`` is given.  Super-lattices whose reflections the frame cannot resolve are left out.
        """
        b1, b2 = basis
        recip = 2 * np.pi * np.linalg.inv(basis).T  # rows g1, g2 with g_i · b_j = 2π δ_ij
        k_max = self._k_max()
        size = min(self.tapered.shape)
        rectangular = abs(float(np.dot(b1, b2))) < math.sin(math.radians(5.0)) * float(np.hypot(*b1) * np.hypot(*b2))
        found = []
        for members, step, half in (((b1 + b2, b1 - b2), b1, (0.5, 0.5)), ((2 * b1, b2), b1, (0.5, 0.0)),
                                    ((b1, 2 * b2), b2, (0.0, 0.5))):
            # the extra reflections lie half a reciprocal vector from the strong ones (both diagonals for a centring)
            offsets = [np.asarray(half) @ recip] if half != (0.5, 0.5) else [(recip[0] + recip[1]) / 2,
                                                                            (recip[0] - recip[1]) / 2]
            if min(float(np.hypot(*o)) for o in offsets) * size / (2 * np.pi) < TAPER_LOBE_BINS:
                continue  # too few cells in the frame to resolve them
            z = self.tapered.excess(recip, half, k_max)
            if also is not None:  # the other frame shows the same specimen with its own noise
                z = (z + also.excess(recip, half, k_max)) / math.sqrt(2)
            prior = CENTRED_PRIOR if rectangular and half == (0.5, 0.5) else OTHER_PRIOR
            found.append(SuperLattice(np.array(members), np.asarray(step, float), float(z), prior, half))
        return found

    def _k_max(self) -> float:
        """The highest frequency of the significant bins: reflections are read up to it."""
        return float(np.max(np.hypot(*self.k.T))) if len(self.k) else 0.0


class TaperedFrame:
    """A frame (a central crop of it) tapered with a Blackman–Harris window, for reading the power of weak
    reflections at any frequency: its sidelobes (−92 dB) keep strong reflections from leaking half a reciprocal
    spacing away, as they would through a Hann window's (−31 dB)."""

    def __init__(self, image: np.ndarray, var: float, size: int):
        h, w = (min(n, size) for n in image.shape)
        y0, x0 = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
        crop = np.asarray(image[y0:y0 + h, x0:x0 + w], np.float64)
        wy, wx = blackmanharris(h), blackmanharris(w)
        self._tapered = (crop - crop.mean()) * np.outer(wy, wx)
        self._tapered32 = self._tapered.astype(np.float32)
        self.shape = self._tapered.shape
        self._noise = var * float(np.sum(wy ** 2) * np.sum(wx ** 2))
        self._power: np.ndarray | None = None
        self._levels: dict[bytes, np.ndarray] = {}  # noise level per annulus, by the lattice tested

    def excess(self, recip: np.ndarray, half: tuple[float, float], k_max: float) -> float:
        """z-score of the summed power at the reflections ``(h + half₀)·g₁ + (k + half₁)·g₂`` within ``k_max``
        (one of each Friedel pair) over what noise alone gives there."""
        power, noise = self._read(recip, half, k_max)
        if len(power) == 0:
            return 0.0
        excess = power / noise - 1.0  # noise alone: mean 0, std 1 each
        return float(excess.sum() / math.sqrt(len(power)))

    def power(self, recip: np.ndarray, half: tuple[float, float], k_max: float) -> float:
        """The summed power at those reflections less what noise gives there (the same taper for every set, so
        sets compare)."""
        power, noise = self._read(recip, half, k_max)
        return float(np.sum(power - noise))

    def _read(self, recip: np.ndarray, half: tuple[float, float], k_max: float) -> tuple[np.ndarray, np.ndarray]:
        g = self._positions(recip, half, k_max)
        if len(g) == 0:
            return np.zeros(0), np.zeros(0)
        values = self._values(g)
        # white noise at the level the frame's pixel noise gives; resampled frames (an aligned stack) have smoothed,
        # coloured noise whose low frequencies that level underrates: then the spectrum's own level there rules
        noise = np.maximum(self._noise, 0.5 * self._noise_at(np.hypot(*g.T), recip))
        return values.real ** 2 + values.imag ** 2, noise

    def _noise_at(self, radius: np.ndarray, recip: np.ndarray) -> np.ndarray:
        """The noise power at spatial frequencies ``|k| = radius``: from the lower quartile of the power over each
        annulus of the spectrum, away from every point of the lattice ``recip / 2`` (reflections and the
        super-lattice positions under test).  Resampled frames (an aligned stack) have coloured noise
        that a single white-noise level would mistake for weak reflections."""
        edges = np.linspace(0.0, np.pi, 25)
        key = np.asarray(recip, np.float64).tobytes()
        level = self._levels.get(key)
        if level is None:  # the three super-lattices of one basis share it: computed once
            if len(self._levels) > 8:  # a reference kept for a long run meets many bases
                self._levels.clear()
            level = self._levels[key] = self._annulus_levels(recip, edges)
        return np.maximum(np.interp(radius, 0.5 * (edges[1:] + edges[:-1]), level), 1e-300)

    def _annulus_levels(self, recip: np.ndarray, edges: np.ndarray) -> np.ndarray:
        h, w = self._tapered.shape
        freqs, which, order = _frequency_grid(h, w, len(edges) - 1)
        if self._power is None:
            # a real frame's spectrum is Hermitian: the half spectrum holds every power once (in annulus order)
            self._power = (np.abs(sfft.rfft2(self._tapered, workers=-1)) ** 2).ravel()[order]
        index = freqs @ np.linalg.inv(recip / 2)  # lattice coordinates of each bin
        nearest = np.round(index) @ (recip / 2)
        gap = np.hypot(freqs[:, 0] - nearest[:, 0], freqs[:, 1] - nearest[:, 1])
        clear = gap > 2 * np.pi * 1.5 / min(h, w)
        level = np.full(24, self._noise)
        # the lower quartile of each annulus (diffuse structure lifts the upper part of the distribution), where it
        # holds 8 independent bins or more
        quartile, count = lower_quartiles(which[clear], self._power[clear], 24)
        enough = count >= 8
        level[enough] = quartile[enough] / -math.log(0.75)
        return level

    @staticmethod
    def _positions(recip: np.ndarray, offset, k_max: float) -> np.ndarray:
        n = int(np.ceil(k_max / max(min(np.hypot(*recip[0]), np.hypot(*recip[1])), 1e-9))) + 1
        hk = np.stack(np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij"), -1).reshape(-1, 2)
        g = (hk + np.asarray(offset)) @ recip
        radius = np.hypot(*g.T)
        g = g[(radius <= k_max) & (radius > 0)]
        return g[(g[:, 0] > 0) | ((g[:, 0] == 0) & (g[:, 1] > 0))]

    def _values(self, g: np.ndarray) -> np.ndarray:
        """The Blackman–Harris-tapered frame's Fourier transform at angular frequencies ``g`` (a direct DFT:
        off-grid)."""
        if len(g) == 0:
            return np.zeros(0, complex)
        h, w = self._tapered.shape
        # the frame is real: Σ_y e^{−i g_y y}·T is two real matrix products (BLAS, in single precision: its
        # rounding is ~1e-7 of the noise there), then the x phase; a quarter of a complex product's work
        tapered = self._tapered32
        phase_y = np.outer(g[:, 0], np.arange(h))
        cos_y = np.cos(phase_y).astype(np.float32) @ tapered
        sin_y = np.sin(phase_y).astype(np.float32) @ tapered
        phase_x = np.outer(g[:, 1], np.arange(w))
        cos_x, sin_x = np.cos(phase_x), np.sin(phase_x)
        return (np.sum(cos_y * cos_x - sin_y * sin_x, axis=1)
                - 1j * np.sum(cos_y * sin_x + sin_y * cos_x, axis=1))


@lru_cache(maxsize=8)
def _frequency_grid(h: int, w: int, annuli: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The angular frequencies (h·(w//2 + 1), 2) of an ``h × w`` real FFT's bins (the half spectrum) and the
    annulus of each (``annuli`` rings of equal width up to π), in the order of their annuli, with that order (the
    bins' raveled indices): the same for every frame of a size, so computed and sorted once."""
    ky, kx = np.meshgrid(2 * np.pi * sfft.fftfreq(h), 2 * np.pi * sfft.rfftfreq(w), indexing="ij")
    which = np.digitize(np.hypot(ky.ravel(), kx.ravel()), np.linspace(0.0, np.pi, annuli + 1)) - 1
    order = np.argsort(which, kind="stable")
    freqs = np.stack([ky.ravel()[order], kx.ravel()[order]], 1)
    which = which[order]
    for a in (freqs, which, order):
        a.setflags(write=False)
    return freqs, which, order


def lower_quartiles(groups: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.quantile(values[groups == g], 0.25)`` for every group ``g < n`` (NaN where a group is empty), and the
    size of each group; ``groups`` in ascending order (each group's values one slice), two order statistics
    partitioned out of each slice."""
    inside = (groups >= 0) & (groups < n)
    groups, values = groups[inside], values[inside]
    count = np.bincount(groups, minlength=n)[:n]
    ends = np.cumsum(count)
    quartile = np.full(n, np.nan)
    for g in np.flatnonzero(count):
        position = 0.25 * (count[g] - 1)
        low = int(position)
        high = min(low + 1, count[g] - 1)
        part = np.partition(values[ends[g] - count[g]:ends[g]], (low, high))
        a, b, t = part[low], part[high], position - low
        quartile[g] = a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t)  # np.quantile's own interpolation
    return quartile, count


def _reduced(basis: np.ndarray) -> np.ndarray:
    """Lagrange–Gauss reduction: the two shortest vectors spanning the same 2-D lattice."""
    b1, b2 = (np.asarray(b, float) for b in basis)
    for _ in range(32):
        if b1 @ b1 > b2 @ b2:
            b1, b2 = b2, b1
        m = round(float(b1 @ b2) / float(b1 @ b1))
        if m == 0:
            break
        b2 = b2 - m * b1
    return np.array([b1, b2])


def _lanczos(offsets: np.ndarray, taps: np.ndarray, a: int = LANCZOS_A) -> np.ndarray:
    """Lanczos-``a`` interpolation weights (len(offsets), len(taps)) of samples at ``taps`` for points ``offsets``."""
    x = offsets[:, None] - taps[None, :]
    return np.where(np.abs(x) < a, np.sinc(x) * np.sinc(x / a), 0.0)


def refined_peak(data: np.ndarray, peak: tuple[int, int], steps: int = 9) -> tuple[float, float, float]:
    """``(value, y, x)``: the map's maximum within half a pixel of the integer ``peak`` and where it is.

    A peak sampled off its top reads low by up to ``⅛·|curvature|`` and sits up to half a pixel off, more than the
    differences that matter here.  The map is interpolated (Lanczos, a band-limited kernel: local, so the cost does
    not grow with the frame) on a ``steps``² grid and the grid's maximum refined by a parabola.
    """
    h, w = data.shape
    a = LANCZOS_A
    taps = np.arange(-a - 1, a + 2)
    patch = data[np.ix_((peak[0] + taps) % h, (peak[1] + taps) % w)].astype(np.float64)
    step = 1.0 / (steps - 1)
    offsets = np.linspace(-0.5 - step, 0.5 + step, steps + 2)
    weights = _lanczos(offsets, taps)
    grid = weights @ patch @ weights.T
    iy, ix = np.unravel_index(int(np.argmax(grid[1:-1, 1:-1])), (steps, steps))
    iy, ix = iy + 1, ix + 1
    out = [float(peak[0] + offsets[iy]), float(peak[1] + offsets[ix])]
    value = float(grid[iy, ix])
    for axis, (lo, hi) in enumerate(((grid[iy - 1, ix], grid[iy + 1, ix]), (grid[iy, ix - 1], grid[iy, ix + 1]))):
        curv = lo + hi - 2 * value
        if curv < 0:
            t = 0.5 * (lo - hi) / curv
            out[axis] += step * float(np.clip(t, -0.5, 0.5))
            value -= 0.125 * (hi - lo) ** 2 / curv
    return value, out[0], out[1]


def _beats(z: float, height: float, mismatch: float, sd: float, shadow_only: bool = False) -> float:
    """Probability that the chosen peak, ``z`` noise std above a rival, is the right one.

    Against a peak of noise, ``Φ(z)``.  Against a shadow of itself (a pseudo-lattice vector away, where the
    content differs by the fraction ``mismatch``), the two hypotheses predict gaps of ``±height·mismatch``: the
    posterior odds are ``exp(2·μ·gap/sd²)``, which stay near even when the basis columns are nearly alike.  A gap
    more than 2 sd beyond ``μ`` shows a larger difference than the mismatch measured (a distorted or small frame):
    ``μ`` grows to match.  ``shadow_only``: the rival is known to be a shadow (a step between the cosets of the
    super-lattice the reflections revealed), so only the second applies.
    """
    # a gap far beyond what the measured mismatch predicts says the content differs more than it shows: take it
    mu = max(max(height, 0.0) * max(mismatch, 0.0), abs(z * sd) - 2.0 * sd)
    shadow = float(expit(2.0 * (mu / sd) * z))
    return shadow if shadow_only else min(float(ndtr(z)), shadow)


class OverlapComparison:
    """Correlation coefficients of the reference with the moving frame moved back by candidate shifts, each pair of
    candidates compared over the same region of the reference.

    The map's own heights are not comparable at this level: a circular map pays a seam (the wrapped strip as wide as
    the lag) and a windowed one the window's overlap, both favouring lags near zero by more than a centred basis
    tells its columns apart.  Over a common region neither bias exists.
    """

    def __init__(self, reference: np.ndarray, moving: np.ndarray, var_r: float, var_m: float):
        self.reference = np.asarray(reference, np.float64)
        self._moving = moving
        self._coeffs: np.ndarray | None = None  # spline coefficients, on first use
        self.var_r, self.var_m = var_r, var_m
        self._moving_var = float(np.var(moving))
        self._moved: dict[tuple[float, float], np.ndarray] = {}

    def _moved_back(self, d: tuple[float, float]) -> np.ndarray:
        out = self._moved.get(d)
        if self._coeffs is None:
            self._coeffs = ndimage.spline_filter(np.asarray(self._moving, np.float64), order=3, mode="mirror")
        if out is None:  # moving(x + d): the reference's content where it sits in the moving frame
            out = self._moved[d] = ndimage.shift(self._coeffs, (-d[0], -d[1]), order=3, mode="mirror",
                                                 prefilter=False)
        return out

    def gap(self, a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float, float]:
        """``(ρ_a − ρ_b, the noise std of one coefficient, the fraction of the common region that the lag b − a
        moves out of it)``, or nans when the two shifts leave less than a quarter of the frame in common."""
        h, w = self.reference.shape
        lo = [int(math.ceil(max(0.0, -a[k], -b[k]))) + 2 for k in (0, 1)]
        hi = [int(math.floor(min(n - 1.0, n - 1 - a[k], n - 1 - b[k]))) - 1 for k, n in ((0, h), (1, w))]
        size = (hi[0] - lo[0], hi[1] - lo[1])
        if size[0] * size[1] < 0.25 * h * w:
            return math.nan, math.nan, math.nan
        kept = [max(n - abs(b[k] - a[k]), 0.0) / n for k, n in enumerate(size)]
        region = np.s_[lo[0]:hi[0], lo[1]:hi[1]]
        r = self.reference[region] - self.reference[region].mean()
        # one denominator for both: the interpolated frame's own norm varies with the sub-pixel phase (smoothed
        # noise), a bias larger than the differences at stake
        denom = max(math.sqrt(np.sum(r * r) * r.size * self._moving_var), 1e-30)
        values = [float(np.sum(r * self._moved_back(d)[region]) / denom) for d in (a, b)]
        one = ncc_value_std(self.reference[region], self._moved_back(a)[region], self.var_r, self.var_m)
        return values[0] - values[1], one, 1.0 - kept[0] * kept[1]


def _nearest_translate(data: np.ndarray, center, search_mask: np.ndarray | None, pick: Candidate,
                       basis: np.ndarray | None, value_std: float) -> Candidate | None:
    """The map's peak one or more lattice vectors from ``pick`` that is nearest zero, when it is nearer than ``pick``
    (the candidate list holds the highest maxima; a translate nearer zero may read lower and not be among them)
    and as high as a translate is (:func:`_alike`)."""
    if basis is None:
        return None
    best = _nearest_zero(np.asarray(pick.shift, float), basis)
    if np.hypot(*best) >= np.hypot(*pick.shift) - 0.5:
        return None
    found = _peak_near(data, center, search_mask, best)
    return found if found is not None and _alike(found.value, pick.value, value_std) else None


def _alike(value: float, of: float, value_std: float) -> bool:
    """Whether a peak of height ``value`` can be a lattice translate of one of height ``of``: lower by no more than
    the seam's and the window's fall-off allow (:data:`TRANSLATE_FRACTION`) or than the map's noise explains."""
    return value >= of - max(TRANSLATE_FRACTION * abs(of), 4.0 * value_std)


def _peak_near(data: np.ndarray, center, search_mask: np.ndarray | None, place: np.ndarray) -> Candidate | None:
    """The map's local maximum within 1.5 px of the lag ``place``, refined; ``None`` when there is none there or
    ``place`` lies outside the search."""
    h, w = data.shape
    y, x = int(round(place[0] + center[0])) % h, int(round(place[1] + center[1])) % w
    if search_mask is not None and not search_mask[y, x]:
        return None
    for _ in range(3):  # climb to the local maximum
        ys, xs = [(y + o) % h for o in (-1, 0, 1)], [(x + o) % w for o in (-1, 0, 1)]
        k = int(np.argmax(data[np.ix_(ys, xs)]))
        if k == 4:
            break
        y, x = ys[k // 3], xs[k % 3]
    value, ry, rx = refined_peak(data, (y, x))
    shift = (ry - center[0], rx - center[1])
    if np.hypot(shift[0] - place[0], shift[1] - place[1]) > 1.5:
        return None
    return Candidate((y, x), shift, value)


def _hidden_cosets(data: np.ndarray, center, search_mask: np.ndarray | None, pick: Candidate,
                   spectra: SignalSpectra, overlap: OverlapComparison) -> list[tuple[Candidate, float]]:
    """The answers ``pick`` would be were one of the super-lattices the reflections cannot rule out there (the
    other coset's shift nearest zero), each with the probability that it, not ``pick``, is right: the super-
    lattice's posterior times the probability that the two frames' correlation over a common region prefers it
    (``Φ`` of its gap over the gap's noise, the magnitude a super-lattice this faint would give unknown).
    Super-lattices less probable than 5 % are not compared: the frames are taken to tell nothing about them."""
    out = []
    for sl, posterior in spectra.hidden_posteriors():
        rival = _peak_near(data, center, search_mask, sl.other_coset(pick.shift))
        if rival is None:
            continue
        if posterior < 1.0 - RIVAL_BELOW:  # never a rival: not worth comparing (a spline of the frame per pair)
            out.append((rival, 0.5 * posterior))  # what a comparison that told nothing would leave
            continue
        gap, one, edge = overlap.gap(pick.shift, rival.shift)
        v = np.subtract(rival.shift, pick.shift)
        z = 0.0 if not np.isfinite(gap) else gap / max(spectra.difference_std(one, v, edge), 1e-30)
        out.append((rival, posterior * float(ndtr(-z))))
    return out


def contest(data: np.ndarray, center, search_mask: np.ndarray | None, spectra: SignalSpectra,
            overlap: OverlapComparison, window: float, first: tuple[int, int], tolerance: float = 0.0,
            keep_first: bool = False, value_std: float = 0.0) -> Contest | None:
    """Score the local maxima within ``window`` of the highest one and pick the shift.

    Candidates one lattice vector apart are the same answer (the nearest to zero is the convention).  Any other
    two are compared over their common region; one beats the other when it stands ``SEPARATION_Z`` noise std (of
    the difference) plus ``tolerance`` (a fraction of the peak's height that does not count: smeared scans) above
    it.  The pick is ``first`` (the map's own choice) unless rivals beat it; then the one of those nearest zero
    (``keep_first``: always ``first``, to score another estimator's answer).  When none beats it, a rival that is
    neither a translate nor a pseudo-translate of it and stands higher over their common region is the pick (one
    of the two is a noise peak; the higher is the likelier), with ``first`` as its rival.  ``distinct`` is the
    product over the rest of the probability that the pick beats each (:func:`_beats`).

    When the reference shows no lattice the images cannot tell lattice translates from rivals (a small tracking
    region, a strongly distorted scan, three or four cells of a coarse lattice): then, as for any lattice, peaks
    farther from zero than the pick do not compete, and of the peaks nearer zero that the map's choice does not
    beat the nearest is the answer, with the map's choice as its rival.  When the reflections leave a super-lattice
    in doubt, the other coset's shift is weighed too (:func:`_hidden_cosets`).  ``None`` when the map has no peak.
    """
    masked = data if search_mask is None else np.where(search_mask, data, -np.inf)
    top = float(np.max(masked))
    if not np.isfinite(top):
        return None
    padded = np.pad(masked, 1, mode="wrap")
    # maxima nearer zero than the pick compete from further down: a circular map's heights fall with the seam
    # (by 5–10 % at a third of a large cell's frame), which the common-region comparison does not see
    maxima = local_maxima(padded) & (masked >= top - max(window, NEARER_FRACTION * abs(top)))
    ys, xs = np.nonzero(maxima)
    if len(ys) == 0:
        return None
    keep = ~((ys == first[0]) & (xs == first[1]))
    ys, xs = ys[keep], xs[keep]
    radius = np.hypot(ys - center[0], xs - center[1])
    pick_radius = math.hypot(first[0] - center[0], first[1] - center[1])
    kept = (masked[ys, xs] >= top - window) | (radius < pick_radius)
    ys, xs, radius = ys[kept], xs[kept], radius[kept]
    # the highest maxima, and always those nearer zero than the pick (they are its rivals whatever the lattice)
    order = np.argsort(masked[ys, xs])[::-1]
    nearer = order[radius[order] < pick_radius][:MAX_CANDIDATES // 2]
    taken = set(nearer.tolist())
    rest = [k for k in order if k not in taken][:MAX_CANDIDATES - 1 - len(nearer)]
    pick = np.concatenate([nearer, np.asarray(rest, int)]).astype(int)
    ys, xs = np.concatenate([[first[0]], ys[pick]]), np.concatenate([[first[1]], xs[pick]])
    cands = []
    for y, x in zip(ys, xs):
        value, ry, rx = refined_peak(data, (int(y), int(x)))
        cands.append(Candidate((int(y), int(x)), (ry - center[0], rx - center[1]), value))
    n = len(cands)

    def compare(a: int, b: int) -> tuple[float, float] | None:
        """``(z, sd)`` of ``a`` over ``b``; ``None`` for lattice translates (the same answer)."""
        v = np.subtract(cands[b].shift, cands[a].shift)
        if spectra.is_lattice_vector(v):
            return None
        gap, one, edge = overlap.gap(cands[a].shift, cands[b].shift)
        if not np.isfinite(gap):
            return 0.0, 1.0  # too far apart to compare over a common region: neither is ruled out
        sd = max(spectra.difference_std(one, v, edge), 1e-30)
        return gap / sd, sd

    def beats(z_sd: tuple[float, float] | None, height: float) -> bool:
        return z_sd is not None and z_sd[0] * z_sd[1] > SEPARATION_Z * z_sd[1] + tolerance

    basis = spectra.basis
    known = basis is not None
    scoring = keep_first
    keep_first = keep_first or not known
    # the map's own choice (index 0) stands unless rivals beat it; then the one nearest zero of those no other beats.
    # A rival farther from zero than the map's choice can take over only from within the cell (a pseudo-lattice
    # vector is shorter than the shortest lattice vector); farther ones are translates of a scan's distortion
    reach = 0.75 * float(np.min(np.hypot(*basis.T))) if basis is not None else 0.0
    against_first = {} if keep_first else {
        k: compare(k, 0) for k in range(1, n)
        if np.hypot(*cands[k].shift) <= np.hypot(*cands[0].shift)
        or np.hypot(*np.subtract(cands[k].shift, cands[0].shift)) < reach}
    better = [k for k, r in against_first.items() if beats(r, cands[k].value)]
    winners = [0]
    if better and not keep_first:
        winners = [k for k in better if not any(beats(compare(j, k), cands[j].value) for j in better if j != k)] \
            or better
    elif basis is not None and not keep_first:
        # A peak no lattice or half-lattice vector from the map's choice is neither a translate nor a pseudo-translate
        # of it (a centred cell's, a hidden super-lattice's): one of the two is the noise's. The map's choice took the
        # one nearer zero, as for translates; the likelier is the higher over their common region (hexagonal, 256²,
        # SNR 0.1: 70 → 92 % of the shifts found). It stays a rival either way.
        likelier = {k: r[0] for k, r in against_first.items()
                    if r is not None and r[0] > 0 and r[0] * r[1] > tolerance
                    and not _on_lattice(basis / 2, np.subtract(cands[k].shift, cands[0].shift), 1.0)}
        if likelier:
            winners = [max(likelier, key=lambda k: likelier[k])]
    chosen = 0
    if not keep_first:
        # a winner's lattice translates are the same answer: the convention takes the one nearest zero
        pool = {j for k in winners for j in range(n)
                if j == k or (spectra.is_lattice_vector(np.subtract(cands[j].shift, cands[k].shift))
                              and _alike(cands[j].value, cands[k].value, value_std))}
        chosen = min(pool, key=lambda k: cands[k].shift[0] ** 2 + cands[k].shift[1] ** 2)
    if not known and not scoring:
        # No lattice to tell translates from rivals: of the peaks nearer zero that the map's choice does not beat,
        # the nearest (on a lattice too coarse to index, the translate the convention reports). The map's choice
        # stays a rival below.
        equal = [k for k in range(1, n) if np.hypot(*cands[k].shift) < np.hypot(*cands[0].shift) - 0.5
                 and not beats(compare(0, k), cands[0].value)]
        if equal:
            chosen = min(equal, key=lambda k: cands[k].shift[0] ** 2 + cands[k].shift[1] ** 2)
    nearest = _nearest_translate(data, center, search_mask, cands[chosen], basis, value_std)
    distinct, rivals = 1.0, []
    if nearest is not None and keep_first and basis is not None:
        # another estimator's answer one or more lattice vectors from the nearest-to-zero equivalent: right modulo
        # the cell, but not the shift the convention reports
        distinct, rivals = 0.0, [nearest]
    elif nearest is not None and not keep_first:
        cands.append(nearest)
        chosen, n = len(cands) - 1, n + 1
    # the other coset of a revealed super-lattice is the pick's closest rival, whether or not the map's heights
    # (seam, window) put it among the highest maxima
    other = _peak_near(data, center, search_mask, spectra.revealed.other_coset(cands[chosen].shift)) \
        if spectra.revealed is not None else None
    if other is not None and all(np.hypot(*np.subtract(other.shift, c.shift)) > 0.5 for c in cands):
        cands.append(other)
        n += 1
    # a super-lattice the reflections cannot rule out makes the other coset an answer too. It doubts the pick but
    # never replaces it: taking the other coset when it was likelier turned right answers wrong where no
    # super-lattice was there (rock-salt [001], 2 of 40 pairs) for one gained in 200 where one was
    hidden = _hidden_cosets(data, center, search_mask, cands[chosen], spectra, overlap) if known else []
    distinct *= max(1.0 - sum(p for _, p in hidden), 0.0)
    rivals += [c for c, p in hidden if p > 1.0 - RIVAL_BELOW]
    answers: list[list[tuple[int, float, float, float, bool]]] = []  # (candidate, z, sd, mismatch, shadow) by answer
    for k in range(n):
        if k == chosen:
            continue
        result = compare(chosen, k)
        if result is None:
            continue
        z, sd = result
        farther = np.hypot(*cands[k].shift) > np.hypot(*cands[chosen].shift)
        if farther and not known and k != 0:
            continue  # no lattice to tell translates apart: the nearest of equal peaks wins
        beyond_cell = np.hypot(*np.subtract(cands[k].shift, cands[chosen].shift)) >= reach
        if tolerance > 0 and farther and beyond_cell and abs(z * sd) <= tolerance:
            continue  # a smeared scan's translate, as high as the pick within its tolerance: the same answer
        v = np.subtract(cands[k].shift, cands[chosen].shift)
        shadow = spectra.is_coset_step(v)  # its reflections measured the change: faint ones elude the spectrum's bins
        revealed = spectra.revealed if shadow else None
        mismatch = max(spectra.structural_mismatch(v), revealed.coset_mismatch if revealed is not None else 0.0)
        # rivals a lattice vector apart are one answer, measured more than once: their evidence is pooled
        same = next((c for c in answers if spectra.is_lattice_vector(np.subtract(cands[k].shift, cands[c[0][0]].shift))),
                    None)
        if same is None:
            answers.append(same := [])
        same.append((k, z, sd, mismatch, shadow))
    for members in answers:
        # the mean z of correlated measurements, taken as one of unit variance: no more certain than the best
        z, sd, mismatch = (float(np.mean([m[i] for m in members])) for i in (1, 2, 3))
        p_beats = _beats(z, cands[chosen].value, mismatch, sd, all(m[4] for m in members))
        distinct *= p_beats
        if p_beats < RIVAL_BELOW:
            rivals += [cands[m[0]] for m in members]
    return Contest(cands[chosen], distinct, tuple(rivals))
