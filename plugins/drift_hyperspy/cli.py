"""``drift correct INPUT -o OUTPUT``: offline correction of a recorded series."""
from __future__ import annotations

import csv
import math
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("correct", help="correct the drift of a recorded image series (any HyperSpy format)")
    p.add_argument("input", help="image stack: .hspy, .dm3/.dm4, .emd, .ser, .tif, .mrc …")
    p.add_argument("-o", "--output", required=True, help="aligned stack (.hspy, or any format HyperSpy writes)")
    p.add_argument("--pipeline", default="classical", help="preset name or recipe path (default: classical)")
    p.add_argument("--reference", default="first", choices=("first", "previous", "all-pairs"))
    p.add_argument("--max-gap", type=int, help="all-pairs: largest frame distance of a measured pair")
    p.add_argument("--order", type=int, default=3, help="spline order of the resampling (0–5)")
    p.add_argument("--mode", default="crop", choices=("crop", "expand", "fill"))
    p.add_argument("--shifts", help="CSV of the shifts (default: OUTPUT with .csv)")
    p.add_argument("--lazy", action="store_true", help="load lazily and process frame by frame")
    p.add_argument("--scheduler", help="dask: threads, processes or tcp://HOST:PORT (default: in-process)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .api import correct_signal
    from .positions import closure_hint
    from .source import load_images, pixel_size_nm

    signal = load_images(args.input, lazy=args.lazy)
    aligned, shifts = correct_signal(signal, args.pipeline, reference=args.reference, max_gap=args.max_gap,
                                     order=args.order, mode=args.mode, scheduler=args.scheduler)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    aligned.save(str(out), overwrite=True)
    csv_path = Path(args.shifts) if args.shifts else out.with_suffix(".csv")
    record = aligned.metadata.drift_framework
    rows = [{"frame": i, "dy_px": d[0], "dx_px": d[1], "sigma_px": s, "confidence": c,
             "dy_nm": d[0] * pixel_size_nm(signal), "dx_nm": d[1] * pixel_size_nm(signal)}
            for i, (d, s, c) in enumerate(zip(record.shifts_px, record.sigma_px, record.confidence))]
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    span = [max(r[k] for r in rows) - min(r[k] for r in rows) for k in ("dy_px", "dx_px")]
    worst = max((r["sigma_px"] for r in rows), default=math.nan)
    print(f"{len(rows)} frames, drift span {span[0]:.2f} × {span[1]:.2f} px, largest sigma {worst:.3f} px "
          f"({args.reference}, {args.pipeline})")
    if math.isfinite(record.closure_px):
        print(f"loop closure of the pair measurements: {record.closure_px:.3f} px RMS")
    hint = closure_hint(record.closure_px, record.pair_sigma_px)
    if hint:
        print(f"note: {hint}")
    print(f"written: {out} and {csv_path}")
    return 0
