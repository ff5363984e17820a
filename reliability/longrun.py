"""Long run: a closed loop of many steps on small frames; step time and memory sampled every 1000 steps must stay
flat (no growth with the number of steps)."""
from __future__ import annotations

import resource
import statistics
import tempfile
import time
from pathlib import Path

from .result import Result


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 1e6


def long_run(frames: int = 10_000, size: int = 64, every: int = 1000):
    """Run ``frames`` steps; returns ``(samples, summary, file_bytes)`` with samples ``(step, ms_per_step, rss_mb)``."""
    import drift_framework as df

    samples, t = [], [time.perf_counter()]

    class Sampler:
        @df.hookimpl
        def drift_step_completed(self, run, step):
            if step.index and step.index % every == 0:
                now = time.perf_counter()
                samples.append((step.index, (now - t[0]) / every * 1e3, rss_mb()))
                t[0] = now

    with tempfile.TemporaryDirectory() as tmp:
        recipe = {"name": "long", "source": {"plugin": "simulator", "shape": [size, size], "spacing_px": [10.0],
                                              "noise": {"kind": "gaussian", "snr": 2.0}, "seed": 1,
                                              "drift": [{"kind": "linear", "velocity_px_per_frame": [0.2, -0.1]},
                                                        {"kind": "random-walk", "step_px_per_frame": 0.05}]},
                  "pipeline": "classical", "controller": {"plugin": "kalman"},
                  "actuator": {"plugin": "simulated-stage", "limits": {"max_step": 5.0, "travel": 100000.0}},
                  "run": {"frames": frames, "output": str(Path(tmp) / "long.h5")}}
        summary = df.run(recipe, observers=[Sampler()])
        size_bytes = Path(summary.output).stat().st_size
    return samples, summary, size_bytes


def long_run_check(frames: int = 10_000) -> tuple[Result, list]:
    result = Result("long run", detail=f"{frames}-step closed loop on 64² frames, sampled every 1000 steps")
    samples, summary, size = long_run(frames)
    result.cases = summary.steps
    if summary.steps != frames:
        result.fail(f"{summary.steps} of {frames} steps")
    if len(samples) >= 3:
        times = [ms for _, ms, _ in samples]
        if max(times[-2:]) > 1.5 * statistics.median(times):
            result.fail(f"step time grew: {times}")
        growth = samples[-1][2] - samples[1][2]
        if growth > 20:
            result.fail(f"memory grew by {growth:.1f} MB")
        result.detail += (f": {min(times):.2f}–{max(times):.2f} ms per step, RSS {samples[0][2]:.0f}→"
                          f"{samples[-1][2]:.0f} MB, run file {size / 1e6:.1f} MB")
    return result, samples
