"""Training data: noiseless pairs from a source plugin (``source.pairs(..., keep_clean=True)``), with noise of
a random kind and level added here, so one recipe covers a range of SNRs."""
from __future__ import annotations

import math

import numpy as np

NOISE_KINDS = ("uniform", "gaussian", "poisson")


def noisy(clean: np.ndarray, kind: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """Add noise: ``level`` is the SNR for uniform/gaussian, the mean dose (counts/px) for poisson."""
    if kind == "poisson":
        lam = np.clip(clean, 0, None) * (level / max(float(clean.mean()), 1e-12))
        return rng.poisson(lam).astype(np.float32)
    sigma = float(clean.std()) / level
    if kind == "uniform":
        half = math.sqrt(3) * sigma
        return (clean + rng.uniform(-half, half, clean.shape)).astype(np.float32)
    return (clean + rng.normal(0, sigma, clean.shape)).astype(np.float32)


class PairStream:
    """Endless noisy training pairs with their noiseless frames and true shifts.

    Parameters
    ----------
    source :
        A built frame source with ``pairs(n, seed=…, keep_clean=True, crlb=False)``.
    noise : dict
        ``{"kinds": [...], "snr": [low, high], "dose": [low, high]}``; levels are drawn log-uniformly.
    seed : int
        Makes the stream reproducible.
    """

    def __init__(self, source, noise: dict, seed: int):
        if not hasattr(source, "pairs"):
            raise ValueError("the training source cannot make pairs (it has no pairs() method)")
        self.source, self.noise = source, noise
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
        pairs = list(self.source.pairs(n, seed=seed, keep_clean=True, crlb=False))
        out = {"reference": [], "moving": [], "clean_reference": [], "clean_moving": [], "shift": [], "level": [],
               "kind": []}
        for p in pairs:
            kind = str(self.rng.choice(self.noise["kinds"]))
            level = self._level(kind)
            out["reference"].append(noisy(p.clean_reference, kind, level, self.rng))
            out["moving"].append(noisy(p.clean_moving, kind, level, self.rng))
            out["clean_reference"].append(np.asarray(p.clean_reference, np.float32))
            out["clean_moving"].append(np.asarray(p.clean_moving, np.float32))
            out["shift"].append(p.shift)
            out["level"].append(level)
            out["kind"].append(kind)
        return {k: (np.stack(v) if k != "kind" else v) for k, v in out.items()}


def validation_set(source, kinds, levels, n: int, seed: int) -> list[dict]:
    """Fixed validation batches, one per (kind, level): fresh seeds, never drawn by the training stream."""
    out = []
    for i, level in enumerate(levels):
        for j, kind in enumerate(kinds):
            stream = PairStream(source, {"kinds": [kind], "snr": [level, level], "dose": [level, level]},
                                seed=10_000_019 * (seed + 1) + 101 * i + j)
            b = stream.batch(n)
            b["name"] = f"{kind} {level:g}"
            out.append(b)
    return out
