"""Peak memory of ``drift correct`` on a lazily generated stack far bigger than the memory it is allowed to use.

    python benchmarks/lazy_memory.py [--frames 2000] [--size 512] [--out docs/benchmarks]

The stack (2000 × 512² float32 = 2.1 GB by default) is a dask array whose frames are rendered on demand from one
lattice image shifted by a known drift plus noise; it is never in memory as a whole. The script measures the
shifts (reference: previous, as the drift spans several lattice periods), writes the aligned stack to an .hspy file
chunk by chunk, and reports the process's peak resident memory (``ru_maxrss``) next to the stack's size, and the
error of the measured drift.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from drift_bench.pairs import pair_source
from drift_bench.report import markdown_table, write_table


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def truth(frames: int) -> np.ndarray:
    t = np.arange(frames)
    return np.column_stack([0.013 * t + 2 * np.sin(t / 150), -0.009 * t + 1.5 * np.cos(t / 230) - 1.5])


def lazy_stack(frames: int, size: int, seed: int = 0):
    """A dask array of ``frames`` noisy frames of one lattice, each shifted by ``truth`` (rendered on demand)."""
    import dask
    import dask.array as da
    from scipy import ndimage

    base = pair_source("simulator", shape=[size + 64, size + 64], spacing_px=[12.0],
                       noise={"kind": "none"}, seed=seed).acquire().data.astype(np.float32)
    shifts = truth(frames)
    sigma = float(base.std())

    def render(i):
        rng = np.random.default_rng(seed * 100_003 + i)
        moved = ndimage.shift(base, shifts[i], order=3, mode="nearest")[32:32 + size, 32:32 + size]
        return (moved + rng.normal(0, sigma, moved.shape)).astype(np.float32)

    return da.stack([da.from_delayed(dask.delayed(render)(i), shape=(size, size), dtype=np.float32)
                     for i in range(frames)]), shifts


def main(argv=None) -> int:
    import hyperspy.api as hs

    from drift_hyperspy import correct

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--out", default="runs/bench")
    args = p.parse_args(argv)
    data, shifts = lazy_stack(args.frames, args.size)
    signal = hs.signals.Signal2D(data).as_lazy()
    before = peak_mb()
    t0 = time.perf_counter()
    aligned, measured = correct(signal, "classical", reference="previous", mode="fill")
    t_measure = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "aligned.hspy"
        aligned.save(str(out), overwrite=True)
        written = out.stat().st_size
    seconds = time.perf_counter() - t0
    err = measured.data[:, :2] - (shifts - shifts[0])
    rows = [{"frames": args.frames, "size": f"{args.size}²", "stack_GB": data.nbytes / 1e9,
             "peak_RSS_GB": peak_mb() / 1e3, "RSS_before_GB": before / 1e3,
             "peak_over_stack": peak_mb() * 1e6 / data.nbytes, "rms_error_px": float(np.sqrt(np.mean(np.sum(err ** 2, 1)))),
             "measure_s": t_measure, "total_s": seconds, "written_GB": written / 1e9}]
    write_table(rows, args.out, "lazy-memory", command="python benchmarks/lazy_memory.py " + " ".join(argv or sys.argv[1:]),
                title="Peak memory of a lazy correction (stack never in memory)",
                notes="peak_RSS_GB: ru_maxrss of the whole process (Python, numpy, dask, HyperSpy included); "
                      "RSS_before_GB: the same before the correction started. The aligned stack is written to "
                      ".hspy chunk by chunk.\n")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
