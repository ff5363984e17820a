"""Crystal specimens rendered analytically with a Gaussian probe.

Atoms (projected columns) are placed from lattice vectors and a basis, then
rendered as separable Gaussians: the image is ``Gyᵀ · diag(I) · Gx``, one matrix
product, so a displacement is exact to floating-point precision, sub-pixel, and
new content enters at the edges (no Fourier wrap-around).  The derivative of the
image with respect to a displacement is rendered the same way (used by the
Cramér–Rao bound).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

# name → (a1, a2 in units of the spacing, basis as [(f1, f2, relative intensity), ...])
LATTICES = {
    "hexagonal": ((1.0, 0.0), (0.5, math.sqrt(3) / 2), [(0.0, 0.0, 1.0)]),
    "square": ((1.0, 0.0), (0.0, 1.0), [(0.0, 0.0, 1.0)]),
    "honeycomb": ((1.0, 0.0), (0.5, math.sqrt(3) / 2), [(1 / 3, 1 / 3, 1.0), (2 / 3, 2 / 3, 1.0)]),
    # ABO3 perovskite seen along [001]: A columns at the corners, B columns at the centre.
    "perovskite": ((1.0, 0.0), (0.0, 1.0), [(0.0, 0.0, 1.0), (0.5, 0.5, 0.55)]),
    # wurtzite seen along [11-20]: dumbbells of a heavy and a light column 0.16 of the spacing apart along y
    "dumbbell": ((1.0, 0.0), (0.5, math.sqrt(3) / 2), [(0.0, 0.0, 1.0), (-0.16 / math.sqrt(3), 0.32 / math.sqrt(3), 0.45)]),
}


def unit_cell_radius(lattice: str, spacing_px: float) -> float:
    """Radius of the disk of unambiguous shifts (0.45 × the shortest lattice period)."""
    return 0.45 * spacing_px


@dataclass
class Specimen:
    """Atom positions (specimen pixels, y and x) and intensities."""

    y: np.ndarray
    x: np.ndarray
    intensity: np.ndarray
    size: tuple[int, int]
    probe_sigma_px: float
    spacing_px: float
    lattice: str

    @classmethod
    def crystal(cls, rng: np.random.Generator, *, lattice: str = "hexagonal", spacing_px: float = 12.0,
                rotation_deg: float = 0.0, size: tuple[int, int] = (1024, 1024), probe_sigma_px: float | None = None,
                intensities=None, intensity_jitter: float = 0.0, vacancy_fraction: float = 0.0,
                interstitial_fraction: float = 0.0, displacement_px: float = 0.0, origin=(0.0, 0.0)) -> Specimen:
        """Build a crystal filling a ``size`` (height, width) region.

        Parameters
        ----------
        rng : numpy Generator
            Source of randomness (vacancies, jitters, interstitials).
        lattice : {"hexagonal", "square", "honeycomb", "perovskite", "dumbbell"}
        spacing_px : float
            Length of the lattice vectors in pixels.
        rotation_deg : float
            Rotation of the lattice (counter-clockwise, in the image plane).
        probe_sigma_px : float, optional
            Standard deviation of the Gaussian probe; default ``spacing_px / 6``.
        intensities : sequence of float, optional
            Intensity of each basis site (default: the lattice's own).
        intensity_jitter : float
            Relative standard deviation of per-atom intensities.
        vacancy_fraction, interstitial_fraction : float
            Fraction of atoms removed / added at random positions.
        displacement_px : float
            Standard deviation of frozen random atom displacements.
        origin : (float, float)
            Position of the lattice origin (sets which part of the crystal is seen).
        """
        a1, a2, basis = LATTICES[lattice]
        t = math.radians(rotation_deg)
        rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        # vectors as (x, y) then rotated; image y grows downwards, which only mirrors the picture
        A = rot @ np.array([a1, a2]).T * spacing_px  # columns: a1, a2 in (x, y)
        h, w = size
        corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float).T - np.array(origin)[::-1, None]
        frac = np.linalg.solve(A, corners)
        lo = np.floor(frac.min(axis=1)) - 2
        hi = np.ceil(frac.max(axis=1)) + 2
        i, j = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
        xs, ys, amps = [], [], []
        weights = intensities if intensities is not None else [b[2] for b in basis]
        if len(weights) != len(basis):
            raise ValueError(f"lattice {lattice!r} has {len(basis)} basis sites; got {len(weights)} intensities")
        for (f1, f2, _), amp in zip(basis, weights):
            p = A @ np.stack([i.ravel() + f1, j.ravel() + f2])
            xs.append(p[0] + origin[1])
            ys.append(p[1] + origin[0])
            amps.append(np.full(p.shape[1], float(amp)))
        x, y, amp = np.concatenate(xs), np.concatenate(ys), np.concatenate(amps)
        margin = 4 * spacing_px
        keep = (x > -margin) & (x < w + margin) & (y > -margin) & (y < h + margin)
        x, y, amp = x[keep], y[keep], amp[keep]
        if vacancy_fraction > 0:
            keep = rng.random(x.size) >= vacancy_fraction
            x, y, amp = x[keep], y[keep], amp[keep]
        if displacement_px > 0:
            x = x + rng.normal(0, displacement_px, x.size)
            y = y + rng.normal(0, displacement_px, y.size)
        if interstitial_fraction > 0:
            n = rng.binomial(x.size, interstitial_fraction)
            x = np.concatenate([x, rng.uniform(-margin, w + margin, n)])
            y = np.concatenate([y, rng.uniform(-margin, h + margin, n)])
            amp = np.concatenate([amp, np.full(n, float(np.mean(weights)))])
        if intensity_jitter > 0:
            amp = amp * np.clip(1 + rng.normal(0, intensity_jitter, amp.size), 0, None)
        sigma = probe_sigma_px if probe_sigma_px else spacing_px / 6
        order = np.argsort(y, kind="stable")
        return cls(y[order], x[order], amp[order], (h, w), float(sigma), float(spacing_px), lattice)

    def mapped(self, matrix: np.ndarray, centre) -> Specimen:
        """The specimen with every atom moved to ``centre + matrix · (p − centre)`` (y, x): a strain, or the turn a
        scan rotation shows it with."""
        p = np.asarray(matrix, float) @ np.stack([self.y - centre[0], self.x - centre[1]])
        y, x = p[0] + centre[0], p[1] + centre[1]
        order = np.argsort(y, kind="stable")
        return Specimen(y[order], x[order], self.intensity[order], self.size, self.probe_sigma_px, self.spacing_px,
                        self.lattice)

    @functools.cached_property
    def brightest(self) -> float:
        """The highest value the rendered columns reach: a column's peak plus its neighbours' tails (dumbbells and
        other close pairs overlap), at the columns and half-way between close ones. A dark-column image is this
        level minus the columns, so it must never be exceeded (counts are positive)."""
        if not len(self.intensity):
            return 1.0
        from scipy.spatial import cKDTree

        pts = np.column_stack([self.y, self.x])
        atoms = cKDTree(pts)
        close = atoms.query_pairs(3 * self.probe_sigma_px, output_type="ndarray")
        if not len(close):  # columns do not overlap: the brightest column's own peak
            return float(np.max(self.intensity))
        probes = cKDTree(np.vstack([pts, 0.5 * (pts[close[:, 0]] + pts[close[:, 1]])]))
        near = probes.sparse_distance_matrix(atoms, 4 * self.probe_sigma_px, output_type="ndarray")
        tails = self.intensity[near["j"]] * np.exp(-near["v"] ** 2 / (2 * self.probe_sigma_px ** 2))
        return float(np.max(np.bincount(near["i"], tails, minlength=probes.n)))

    def _visible(self, origin, shape):
        h, w = shape
        r = 6 * self.probe_sigma_px  # atoms farther out contribute < 1.6e-8 of their peak
        lo, hi = np.searchsorted(self.y, [origin[0] - r, origin[0] + h - 1 + r])
        y, x, a = self.y[lo:hi] - origin[0], self.x[lo:hi] - origin[1], self.intensity[lo:hi]
        keep = (x > -r) & (x < w - 1 + r)
        return y[keep], x[keep], a[keep]

    #: Working memory (bytes) one render may take; larger fields of view are rendered in bands of rows.
    RENDER_BUDGET = 256 * 2 ** 20

    def render(self, origin, shape, *, derivatives: bool = False, dtype=np.float32):
        """Render the field of view whose pixel (0, 0) sees specimen point ``origin`` (y, x); see :meth:`_render`.

        The separable product needs ``atoms × (rows + columns)`` values per matrix (11 GB for one 4096² frame at a
        12 px spacing), so a field of view over :attr:`RENDER_BUDGET` is rendered in bands of rows, each with only
        the atoms it sees: the same image, in bounded memory.
        """
        h, w = shape
        origin = np.asarray(origin, float)
        n = len(self._visible(origin, shape)[0])
        need = n * (h + w) * np.dtype(dtype).itemsize * (8 if derivatives else 5)
        if need <= self.RENDER_BUDGET or h <= 16:
            return self._render(origin, shape, derivatives=derivatives, dtype=dtype)
        rows = max(16, int(h * self.RENDER_BUDGET / need))
        parts = [self._render(origin + (r0, 0.0), (min(rows, h - r0), w), derivatives=derivatives, dtype=dtype)
                 for r0 in range(0, h, rows)]
        if not derivatives:
            return np.concatenate(parts)
        return (np.concatenate([p[0] for p in parts]),
                (np.concatenate([p[1][0] for p in parts]), np.concatenate([p[1][1] for p in parts])))

    def _render(self, origin, shape, *, derivatives: bool = False, dtype=np.float32):
        """Render the field of view whose pixel (0, 0) sees specimen point ``origin`` (y, x).

        Returns
        -------
        image : ndarray
            ``shape`` image of atom intensities (no background, no noise).
        (d_dy, d_dx) : tuple of ndarray, only with ``derivatives=True``
            Analytic derivatives of the image with respect to a content
            displacement ``(dy, dx)`` (moving the content by +d means
            ``origin - d``).
        """
        h, w = shape
        y, x, a = self._visible(np.asarray(origin, float), shape)
        s2 = 2 * self.probe_sigma_px ** 2
        dy = np.arange(h, dtype=dtype)[None, :] - y[:, None].astype(dtype)
        dx = np.arange(w, dtype=dtype)[None, :] - x[:, None].astype(dtype)
        gy = np.exp(-(dy * dy) / dtype(s2))
        gx = np.exp(-(dx * dx) / dtype(s2))
        agx = a.astype(dtype)[:, None] * gx
        image = gy.T @ agx
        if not derivatives:
            return image
        # d/d(content dy) of exp(-(i - y - dy)^2 / s2) = 2 (i - y) / s2 * exp(...)
        d_dy = (gy * (dy * dtype(2 / s2))).T @ agx
        d_dx = gy.T @ (agx * (dx * dtype(2 / s2)))
        return image, (d_dy, d_dx)
