"""Frames per second of the simulator source, per frame size."""
from __future__ import annotations

import time

from .pairs import pair_source
from .report import command_line, markdown_table, write_table


def add_arguments(p) -> None:
    p.add_argument("--source", default="simulator")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--spacing", type=float, default=12.0)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--out", default="runs/bench", help="folder for sim.md and sim.csv")


def run(args) -> int:
    rows = []
    for size in args.sizes:
        for noise in ({"kind": "gaussian", "snr": 1.0}, {"kind": "poisson", "dose": 10.0}):
            src = pair_source(args.source, shape=[size, size], spacing_px=[args.spacing], noise=noise, seed=0,
                              drift=[{"kind": "linear", "velocity_px_per_frame": [0.3, 0.2]}])
            src.acquire()
            t0 = time.perf_counter()
            for _ in range(args.frames):
                src.acquire()
            dt = (time.perf_counter() - t0) / args.frames
            rows.append({"size": f"{size}²", "spacing_px": args.spacing, "noise": noise["kind"],
                         "ms_per_frame": dt * 1e3, "frames_per_s": 1 / dt})
    command = command_line("sim")
    md, _ = write_table(rows, args.out, "sim", title="Simulator speed", command=command)
    print(markdown_table(rows))
    print(f"written: {md}")
    return 0
