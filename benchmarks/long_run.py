"""A long closed-loop run on small frames: step time and memory sampled every 1000 steps must stay flat.

    python benchmarks/long_run.py [--frames 10000] [--size 64]

(``make reliability`` runs the same check and records it in docs/reliability.md.)
"""
from __future__ import annotations

import argparse
import sys

from reliability.longrun import long_run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args(argv)
    samples, summary, size = long_run(args.frames, args.size)
    print("| step | ms per step (last 1000) | RSS MB |\n|---|---|---|")
    for step, ms, mb in samples:
        print(f"| {step} | {ms:.2f} | {mb:.1f} |")
    print(f"\n{summary.steps} steps, residual {summary.residual_rms_px:.3f} px, run file {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
