"""``drift compare --stack FILE``: pipelines compared on a recorded series, where there is no ground truth.

Each pipeline measures every pair of frames at most ``--max-gap`` apart; the pair measurements are solved for the
frame positions (:func:`drift_framework.series.solve_positions`).  Two scores replace the error against the truth:

- **loop closure**: how far a pipeline's own pair measurements fail to add up around loops of frames (RMS, px) —
  noise explains about its median pair sigma; more means the measurement model does not fit (a distorted scan);
- **agreement**: the RMS distance of a pipeline's positions from the median of all pipelines' positions (px) — a
  pipeline that slips by a lattice vector on some frames stands out.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from drift_framework.assembly import build_source, close_component, load_pipeline
from drift_framework.series import pair_list, solve_positions
from drift_framework.types import SourceExhausted

from .progress import progress_bar
from .report import markdown_table, write_table


def read_stack(path: str) -> tuple[list[np.ndarray], float]:
    """The frames of a recorded series, read by the ``hyperspy`` frame source, and its pixel size (nm)."""
    source = build_source("hyperspy", where="<drift compare --stack>", path=str(Path(path).resolve()))
    frames, pixel_nm = [], math.nan
    try:
        while True:
            frame = source.acquire()
            frames.append(np.asarray(frame.data, np.float32))
            pixel_nm = frame.pixel_size_nm
    except SourceExhausted:
        pass
    finally:
        close_component(source)
    if len(frames) < 3:
        raise ValueError(f"{path}: {len(frames)} frame(s); comparing on a recorded series needs at least 3")
    return frames, pixel_nm


def compare_recorded(frames: list[np.ndarray], pipelines: list[str], *, max_gap: int = 4) -> tuple[list[dict], dict]:
    """Rows (one per pipeline) and each pipeline's positions (n, 2)."""
    n = len(frames)
    pairs = pair_list(n, "all-pairs", max_gap)
    positions: dict[str, np.ndarray] = {}
    rows: list[dict] = []
    with progress_bar() as bar:
        for name in pipelines:
            pipe = load_pipeline(name)
            task = bar.add_task(name, total=len(pairs))
            measured, confident, t0 = [], 0, time.perf_counter()
            for i, j in pairs:
                s = pipe.estimate(frames[i], frames[j])
                sigma = s.sigma if math.isfinite(s.sigma) else 0.5
                measured.append((s.dy, s.dx, sigma, s.confidence))
                confident += bool(s.confidence >= 0.5)
                bar.advance(task)
            seconds = time.perf_counter() - t0
            m = np.array(measured, float)
            pos, _, closure = solve_positions(n, pairs, m)
            positions[name] = pos
            rows.append({"pipeline": name, "pairs": len(pairs), "loop_closure_px": closure,
                         "median_pair_sigma_px": float(np.median(m[:, 2])),
                         "confident": confident / len(pairs), "ms_per_pair": 1e3 * seconds / len(pairs)})
    consensus = np.median(np.stack(list(positions.values())), axis=0)
    for row in rows:
        gap = positions[str(row["pipeline"])] - consensus
        row["agreement_rms_px"] = float(np.sqrt(np.mean(np.sum(gap ** 2, axis=1))))
        row["worst_frame_px"] = float(np.max(np.hypot(*gap.T)))
    return rows, positions


def run(args, pipelines: list[str]) -> int:
    frames, pixel_nm = read_stack(args.stack)
    rows, positions = compare_recorded(frames, pipelines, max_gap=args.max_gap)
    out = Path(args.out)
    notes = ("No ground truth: loop_closure_px is how far each pipeline's pair measurements fail to add up around "
             "loops (noise explains about median_pair_sigma_px); agreement_rms_px is the RMS distance of its frame "
             f"positions from the median of all pipelines'. Pixel size {pixel_nm:.4g} nm.\n")
    md, _ = write_table(rows, out, "compare-recorded", command=f"drift compare --stack {args.stack} --pipelines "
                                                               f"{','.join(pipelines)} --max-gap {args.max_gap}",
                        title=f"Pipelines on a recorded series: {Path(args.stack).name}, {len(frames)} frames",
                        notes=notes)
    with (out / "compare-recorded-positions.csv").open("w") as fh:
        fh.write("frame," + ",".join(f"{p}_dy_px,{p}_dx_px" for p in positions) + "\n")
        for k in range(len(frames)):
            fh.write(f"{k}," + ",".join(f"{positions[p][k, 0]:.4f},{positions[p][k, 1]:.4f}" for p in positions)
                     + "\n")
    print(markdown_table(rows))
    print(f"written: {md} and {out / 'compare-recorded-positions.csv'}")
    return 0
