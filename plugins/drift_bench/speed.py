"""Median time per pair and the ratio to scikit-image, per frame size, in one run."""
from __future__ import annotations

from .accuracy import REFERENCE, evaluate, load_with_reference
from .pairs import add_source_arguments, pair_source, source_params
from .report import command_line, markdown_table, write_table


def add_arguments(p) -> None:
    add_source_arguments(p, pairs=50)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--snr", type=float, default=1.0)
    p.add_argument("--pipelines", default="classical,ncc-peak,phase,skimage-none")
    p.add_argument("--out", default="runs/bench", help="folder for speed.md and speed.csv")


def run(args) -> int:
    pipelines = load_with_reference(args.pipelines)
    rows = []
    for size in args.sizes:
        args.size = size
        source = pair_source(args.source, **source_params(args, args.snr))
        pairs = list(source.pairs(args.pairs, seed=args.seed))
        for name in pipelines:  # warm caches (windows, FFT plans) before timing
            pipelines[name].estimate(pairs[0].reference, pairs[0].moving)
        stats = evaluate(pipelines, pairs)
        ref = stats[REFERENCE]["median_ms"]
        for name, s in stats.items():
            rows.append({"size": f"{size}²", "pipeline": name, "pairs": args.pairs, "median_ms": s["median_ms"],
                         "pairs_per_s": 1e3 / s["median_ms"], "time_vs_skimage": s["median_ms"] / ref,
                         "success": s["success"]})
    command = command_line("speed")
    md, _ = write_table(rows, args.out, "speed", title="Speed per pair (one process)", command=command,
                        notes="time_vs_skimage < 1: faster than scikit-image phase_cross_correlation"
                              "(upsample_factor=100), timed pair by pair in the same run.\n")
    print(markdown_table(rows))
    print(f"written: {md} and {md.with_suffix('.csv')}")
    return 0
