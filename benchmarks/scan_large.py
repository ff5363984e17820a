"""Time and field error of ``register_series(model="scan")`` on a large series (the issue's 20 × 1024² case).

    python benchmarks/scan_large.py [--frames 20] [--size 1024] [--dose 10] [--out docs/benchmarks]

The virtual microscope renders every pixel at its own time: 2 px/frame of drift along 60° plus a 0.2 px/√frame random
walk, Poisson noise at ``--dose`` counts/px, 14 px cells. The series is registered with the scan model, with and
without the per-line offsets, and the field is scored against the simulator's truth (the brief's metric). Only
``register_series`` is timed, not the simulation.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from drift_bench.pairs import pair_source
from drift_bench.report import markdown_table, write_table
from drift_framework.registration import field_rmse, register_series


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--dose", type=float, default=10.0)
    p.add_argument("--out", default="runs/bench")
    args = p.parse_args(argv)
    source = pair_source("simulator", scan_time="pixel", shape=[args.size, args.size], spacing_px=[14.0],
                         noise={"kind": "poisson", "dose": args.dose}, seed=1,
                         drift=[{"kind": "linear", "velocity_px_per_frame": [1.0, 1.7]},
                                {"kind": "random-walk", "step_px_per_frame": 0.2}])
    frames = [source.acquire() for _ in range(args.frames)]
    truth = np.stack([f.meta["true_field_px"] for f in frames])
    rows = []
    for line_jitter in (True, False):
        t0 = time.perf_counter()
        reg = register_series(frames, model="scan", line_jitter=line_jitter)
        rows.append({"frames": args.frames, "size": args.size, "dose": args.dose, "line_offsets": line_jitter,
                     "seconds": time.perf_counter() - t0, "field_rmse_px": field_rmse(reg.field, truth)})
        print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
    md, _ = write_table(rows, args.out, "scan-large", title="register_series(model='scan') on a large series",
                        command=f"python benchmarks/scan_large.py --frames {args.frames} --size {args.size} "
                                f"--dose {args.dose:g} --out {args.out}",
                        notes="\nseconds: register_series only (2 CPU cores), not the simulation.\n")
    print(f"written: {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
