"""Simulated pairs for benchmarks, from any source plugin that can make them (``source.pairs``)."""
from __future__ import annotations

from typing import Any

from drift_framework.assembly import build_source
from drift_framework.types import PairSource


def pair_source(plugin: str, **params: Any) -> Any:
    """Build a frame source that has a ``pairs(n, seed=…)`` method (a :class:`PairSource`; the simulator is one)."""
    source = build_source(plugin, where="<bench>", **params)
    if not isinstance(source, PairSource):
        raise ValueError(f"source {plugin!r} cannot make benchmark pairs (it has no pairs() method)")
    return source


def add_source_arguments(p, *, size=256, pairs=200) -> None:
    p.add_argument("--source", default="simulator", help="source plugin that makes pairs (default: simulator)")
    p.add_argument("--lattice", default="hexagonal")
    p.add_argument("--spacing", type=float, nargs=2, default=[8.0, 16.0], metavar=("LOW", "HIGH"))
    p.add_argument("--noise", default="uniform", choices=("uniform", "gaussian", "poisson"))
    p.add_argument("--size", type=int, default=size, help="frame size, px (square)")
    p.add_argument("--pairs", type=int, default=pairs, help="pairs per cell")
    p.add_argument("--seed", type=int, default=2026, help="pair seed (fresh seeds: never used in training)")


def source_params(args, level: float) -> dict:
    noise = {"kind": "poisson", "dose": level} if args.noise == "poisson" else {"kind": args.noise, "snr": level}
    return {"lattice": args.lattice, "spacing_px": list(args.spacing), "rotation_deg": None,
            "shape": [args.size, args.size], "noise": noise}
