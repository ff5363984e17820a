"""A long closed-loop run on small frames: step time and memory sampled every 1000 steps must stay flat.

    python benchmarks/long_run.py [--frames 10000] [--size 64]
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import drift_framework as df


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 1e6


class Sampler:
    def __init__(self, every: int):
        self.every, self.rows, self.t = every, [], time.perf_counter()

    @df.hookimpl
    def drift_step_completed(self, run, step):
        if step.index and step.index % self.every == 0:
            now = time.perf_counter()
            self.rows.append((step.index, (now - self.t) / self.every * 1e3, rss_mb()))
            self.t = now


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args(argv)
    sampler = Sampler(1000)
    with tempfile.TemporaryDirectory() as tmp:
        recipe = {"name": "long", "source": {"plugin": "simulator", "shape": [args.size, args.size], "spacing_px": [10.0],
                                              "noise": {"kind": "gaussian", "snr": 2.0}, "seed": 1,
                                              "drift": [{"kind": "linear", "velocity_px_per_frame": [0.2, -0.1]},
                                                        {"kind": "random-walk", "step_px_per_frame": 0.05}]},
                  "pipeline": "classical", "controller": {"plugin": "kalman"},
                  "actuator": {"plugin": "simulated-stage", "limits": {"max_step": 5.0, "travel": 100000.0}},
                  "run": {"frames": args.frames, "output": str(Path(tmp) / "long.h5")}}
        summary = df.run(recipe, observers=[sampler])
        size = Path(summary.output).stat().st_size
    print("| step | ms per step (last 1000) | RSS MB |\n|---|---|---|")
    for step, ms, mb in sampler.rows:
        print(f"| {step} | {ms:.2f} | {mb:.1f} |")
    print(f"\n{summary.steps} steps, residual {summary.residual_rms_px:.3f} px, run file {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
