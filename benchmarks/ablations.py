"""Ablations of the learned regressor, from the model cards the trainings wrote.

Every variant was trained with the same recipe except one change (configs/train/ablations/*.yaml, 1000 batches × 64
pairs; the shipped regressor: 2500 batches) and validated on the same fixed pairs (same seed): hexagonal lattices,
128², uniform noise, 64 pairs per SNR. The numbers are the network's own answer, before the refinement stage.

    drift train regressor configs/train/ablations/no-denoiser.yaml     (and bragg-denoiser, images)
    python benchmarks/ablations.py --out docs/benchmarks
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from drift_bench.report import markdown_table, write_table

VARIANTS = {
    "shipped: DCNN denoiser → NCC → regressor": "plugins/drift_dcnn/weights/regressor.json",
    "no denoiser (NCC of the raw frames)": "checkpoints/ablation-no-denoiser/regressor.json",
    "classical Bragg-filter denoiser instead": "checkpoints/ablation-bragg-denoiser/regressor.json",
    "the two denoised frames instead of the NCC": "checkpoints/ablation-images/regressor.json",
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench")
    args = p.parse_args(argv)
    rows = []
    for name, card_path in VARIANTS.items():
        path = Path(card_path)
        if not path.is_file():
            print(f"missing {path}: train it first (see the docstring)", file=sys.stderr)
            return 1
        card = json.loads(path.read_text())
        row = {"variant": name, "batches": card["batches"], "train_s": card["train_seconds"]}
        for level, m in card["validation"].items():
            row[f"success {level.split()[-1]}"] = m["success"]
            row[f"rmse {level.split()[-1]}"] = m["rmse"]
        rows.append(row)
        if name.startswith("shipped"):  # the same model at the ablations' budget, from its training history
            at = next(h for h in card["history"] if h["batch"] == 1000)
            early = {"variant": "shipped, validated at batch 1000 (equal budget)", "batches": 1000,
                     "train_s": round(at["seconds"], 1)}
            for level, m in at["metrics"].items():
                early[f"success {level.split()[-1]}"] = m["success"]
                early[f"rmse {level.split()[-1]}"] = m["rmse"]
            rows.append(early)
    write_table(rows, args.out, "ablations", title="Ablations of the learned regressor (network answer, no refinement)",
                command="python benchmarks/ablations.py " + " ".join(sys.argv[1:]),
                notes=__doc__.split("\n\n")[1] + "\n")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
