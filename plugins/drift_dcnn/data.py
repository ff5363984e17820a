"""Training data: noiseless pairs from a source plugin (``source.pairs(..., keep_clean=True)``), with noise of
a random kind and level added here, so one recipe covers a range of SNRs."""
from __future__ import annotations

import math

import numpy as np

from drift_framework.types import PairSource

NOISE_KINDS = ("uniform", "gaussian", "poisson")


def noisy(clean: np.ndarray, kind: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """Add noise: ``level`` is the SNR for uniform/gaussian; for poisson, ``clean`` must already be the expected
    counts per pixel (see :func:`expected_counts`)."""
    if kind == "poisson":
        return rng.poisson(np.clip(clean, 0, None)).astype(np.float32)
    sigma = float(clean.std()) / level
    if kind == "uniform":
        half = math.sqrt(3) * sigma
        return (clean + rng.uniform(-half, half, clean.shape)).astype(np.float32)
    return (clean + rng.normal(0, sigma, clean.shape)).astype(np.float32)


def expected_counts(reference: np.ndarray, moving: np.ndarray, dose: float):
    """Both noiseless frames scaled to a mean ``dose`` counts/px of the reference (one gain for the pair), so the
    denoiser's target has the scale of its Poisson input."""
    gain = dose / max(float(reference.mean()), 1e-12)
    return (reference * gain).astype(np.float32), (moving * gain).astype(np.float32)


class PairStream:
    """Endless noisy training pairs with their noiseless frames and true shifts.

    Parameters
    ----------
    source :
        A built frame source with ``pairs(n, seed=…, keep_clean=True, crlb=False)``, or a list of them (each
        pair is drawn from one at random: mixed lattices).
    noise : dict
        ``{"kinds": [...], "snr": [low, high], "dose": [low, high]}``; levels are drawn log-uniformly.
    seed : int
        Makes the stream reproducible.
    """

    def __init__(self, source, noise: dict, seed: int):
        self.sources = list(source) if isinstance(source, (list, tuple)) else [source]
        if not all(isinstance(s, PairSource) for s in self.sources):
            raise ValueError("the training source cannot make pairs (it has no pairs() method)")
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.chunk = 0

    def _level(self, kind: str) -> float:
        lo, hi = self.noise["dose"] if kind == "poisson" else self.noise["snr"]
        return float(math.exp(self.rng.uniform(math.log(lo), math.log(hi))))

    def batch(self, n: int):
        """``n`` pairs: dict of ``reference``, ``moving``, ``clean_reference``, ``clean_moving`` (n, H, W),
        ``shift`` (n, 2), ``level`` (n,), ``kind`` (list)."""
        self.chunk += 1
        seed = int(self.rng.integers(2 ** 62))
        if len(self.sources) == 1:
            pairs = list(self.sources[0].pairs(n, seed=seed, keep_clean=True, crlb=False))
        else:
            which = self.rng.integers(len(self.sources), size=n)
            pairs = [None] * n
            for k, src in enumerate(self.sources):
                idx = np.flatnonzero(which == k)
                for i, p in zip(idx, src.pairs(len(idx), seed=seed + k, keep_clean=True, crlb=False)):
                    pairs[i] = p
        keys = ("reference", "moving", "clean_reference", "clean_moving", "shift", "level", "kind")
        out: dict[str, list] = {key: [] for key in keys}
        for p in pairs:
            kind = str(self.rng.choice(self.noise["kinds"]))
            level = self._level(kind)
            clean_ref, clean_mov = p.clean_reference, p.clean_moving
            if kind == "poisson":
                clean_ref, clean_mov = expected_counts(clean_ref, clean_mov, level)
            out["reference"].append(noisy(clean_ref, kind, level, self.rng))
            out["moving"].append(noisy(clean_mov, kind, level, self.rng))
            out["clean_reference"].append(np.asarray(clean_ref, np.float32))
            out["clean_moving"].append(np.asarray(clean_mov, np.float32))
            out["shift"].append(p.shift)
            out["level"].append(level)
            out["kind"].append(kind)
        return {k: (np.stack(v) if k != "kind" else v) for k, v in out.items()}


def validation_set(source, kinds, levels, n: int, seed: int, names=None) -> list[dict]:
    """Fixed validation batches, one per (source, kind, level): fresh seeds, never drawn by the training stream.

    ``source`` may be a list (mixed lattices); ``names`` then labels each source in the batch names."""
    sources = list(source) if isinstance(source, (list, tuple)) else [source]
    out = []
    for s, src in enumerate(sources):
        prefix = f"{names[s]} " if names and len(sources) > 1 else ""
        for i, level in enumerate(levels):
            for j, kind in enumerate(kinds):
                stream = PairStream(src, {"kinds": [kind], "snr": [level, level], "dose": [level, level]},
                                    seed=10_000_019 * (seed + 1) + 101 * i + j + 7919 * s)
                b = stream.batch(n)
                b["name"] = f"{prefix}{kind} {level:g}"
                out.append(b)
    return out
