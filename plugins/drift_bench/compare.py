"""``drift compare``: several pipelines on identical pairs, with a table and figures.

Settings come from a recipe's ``bench`` section and/or the command line (which wins); ``--stack FILE`` compares on
a recorded series instead (:mod:`.recorded`)::

    bench: {pipelines: [dcnn, classical, phase, skimage], snr: [4, 1, 0.5, 0.25], size: 256, pairs: 200,
            lattice: hexagonal, spacing: [8, 16], noise: uniform}
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from drift_framework.report import save_figure

from .accuracy import REFERENCE, add_scheduler_argument, sweep
from .metrics import summarize
from .report import markdown_table, write_table

DEFAULTS = {"pipelines": "dcnn,classical,phase,skimage", "snr": [4.0, 1.0, 0.5, 0.25], "size": 256, "pairs": 100,
            "lattice": "hexagonal", "spacing": [8.0, 16.0], "noise": "uniform", "seed": 2026, "source": "simulator"}


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare pipelines on identical pairs: table and figures (vs the bound)")
    p.add_argument("recipe", nargs="?", help="recipe with a bench: section (optional)")
    p.add_argument("--pipelines", help=f"comma-separated presets or recipe paths (default {DEFAULTS['pipelines']})")
    p.add_argument("--snr", type=float, nargs="+")
    p.add_argument("--size", type=int)
    p.add_argument("--pairs", type=int)
    p.add_argument("--lattice")
    p.add_argument("--noise", choices=("uniform", "gaussian", "poisson"))
    p.add_argument("--seed", type=int)
    p.add_argument("--stack", help="a recorded image series (any HyperSpy format): compare on it, scored by loop "
                                   "closure and agreement between pipelines (there is no truth)")
    p.add_argument("--max-gap", type=int, default=4, help="--stack: largest frame distance of a measured pair")
    p.add_argument("--out", default="runs/compare", help="folder for compare.md/.csv and the PNG figures")
    add_scheduler_argument(p)
    p.set_defaults(func=run)


def settings(args) -> argparse.Namespace:
    cfg = dict(DEFAULTS)
    if args.recipe:
        from drift_framework.recipe import load_recipe

        bench = load_recipe(args.recipe, require_source=False).extra.get("bench") or {}
        unknown = set(bench) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"{args.recipe}: unknown bench keys {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
        cfg.update(bench)
        if isinstance(cfg["pipelines"], list):
            cfg["pipelines"] = ",".join(cfg["pipelines"])
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    return argparse.Namespace(**cfg)


def run(args) -> int:
    cfg = settings(args)
    if getattr(args, "stack", None):
        from .recorded import run as run_recorded

        return run_recorded(args, [p.strip() for p in str(cfg.pipelines).split(",") if p.strip()])
    rows, detail = [], {}
    for level, (res, bounds) in zip(cfg.snr, sweep(cfg, cfg.snr, scheduler=getattr(args, "scheduler", None))):
        detail[level] = (res, bounds)
        ref = np.median(res[REFERENCE]["sec"])
        for name, r in res.items():
            s = summarize(r["err"], r["sigma"], bounds, r["sec"])
            rows.append({"level": level, "pipeline": name, "pairs": cfg.pairs, **s,
                         "time_vs_skimage": s["median_ms"] / (ref * 1e3)})
    out = Path(args.out)
    md, _ = write_table(rows, out, "compare", command="drift compare " + " ".join(_argv()),
                        title=f"Comparison on {cfg.lattice} lattices, {cfg.size}², {cfg.noise} noise",
                        notes="Figures: compare-error-vs-snr.png (RMSE per pipeline with the Cramér–Rao bound), "
                              "compare-histograms.png, compare-time.png.\n")
    figures(rows, detail, out, cfg)
    print(markdown_table(rows))
    print(f"written: {md} and figures in {out}")
    return 0


def _argv():
    import sys

    return sys.argv[2:]


def figures(rows, detail, out: Path, cfg) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["pipeline"] for r in rows))
    levels = sorted(detail)
    paths = []
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    bound = [detail[lv][1] for lv in levels]
    ax.loglog(levels, [np.sqrt(np.mean(b)) for b in bound], "k--", lw=2, label="Cramér–Rao bound")
    for name in names:
        rmse = [next(r["rmse_px"] for r in rows if r["pipeline"] == name and r["level"] == lv) for lv in levels]
        ax.loglog(levels, rmse, "o-", label=name)
    from matplotlib.ticker import NullFormatter

    ax.set_xticks(levels)
    ax.set_xticklabels([f"{lv:g}" for lv in levels])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("SNR" if cfg.noise != "poisson" else "dose (counts/px)")
    ax.set_ylabel("RMSE over successes (px)")
    ax.set_title("error vs noise level")
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "compare-error-vs-snr.png", ["error vs SNR", "bound"] + names))
    fig, axes = plt.subplots(1, len(levels), figsize=(3.2 * len(levels), 3.2), squeeze=False)
    for a, lv in zip(axes[0], levels):
        res = detail[lv][0]
        for name in names:
            err = np.hypot(*np.asarray(res[name]["err"]).T)
            err = err[np.isfinite(err)]
            a.hist(np.clip(err, 1e-4, 10), bins=np.logspace(-4, 1, 40), histtype="step", label=name)
        a.set_xscale("log")
        a.set_title(f"SNR {lv:g}")
        a.set_xlabel("|error| (px)")
    axes[0][0].legend(fontsize=7)
    paths.append(save_figure(fig, out / "compare-histograms.png", [f"histogram SNR {lv:g}" for lv in levels]))
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    med = [np.median(np.concatenate([detail[lv][0][n]["sec"] for lv in levels])) * 1e3 for n in names]
    ax.barh(names, med)
    ax.set_xlabel("median time per pair (ms)")
    ax.set_title(f"{cfg.size}² pairs, one process")
    paths.append(save_figure(fig, out / "compare-time.png", ["time per pair"]))
    return paths

