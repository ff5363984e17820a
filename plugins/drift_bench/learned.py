"""The learned pipeline on realistic images: crystal families, both contrasts, every shift, three decades of dose.

Each cell draws pairs of one crystal family (a basis of different column intensities where the family has one),
in bright-column (HAADF-like, intensity ~ Z^1.7) or dark-column (ABF-like: positive, below a bright background)
contrast, with Poisson counts, and shifts uniform over the whole unambiguous disk (0.45 × the cell, for cells up
to 40 px). Reported per pipeline: success, efficiency against each pair's Cramér–Rao bound, and how often an
answer with confidence ≥ 0.5 is wrong. Three sections add content the networks never saw: scikit-image's own
registration cases on its camera image, low-dose crops of real non-periodic images (against scikit-image's
plain cross-correlation), and the shared real SrTiO3 stack (agreement with ``distorted``).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from drift_framework.assembly import load_pipeline

from .accuracy import evaluate_detailed
from .metrics import SUCCESS_PX, success_at_bound, summarize
from .pairs import pair_source
from .progress import progress_bar
from .report import command_line, markdown_table, write_csv

#: family → simulator parameters. Intensities follow Z^1.7 (SrTiO3: Sr 38, Ti 22 → 0.39; GaN: Ga 31, N 7 → 0.08,
#: raised to 0.45 for ZnO-like contrast; a 2-D crystal with 5 % vacancies, 2 % adatoms and ±30 % dopant contrast).
FAMILIES: dict[str, dict[str, Any]] = {
    "hexagonal": {"lattice": "hexagonal"},
    "square (rock-salt [001])": {"lattice": "square"},
    "perovskite [001] (SrTiO3)": {"lattice": "perovskite", "intensities": [1.0, 0.39]},
    "dumbbells (wurtzite [11-20])": {"lattice": "dumbbell"},
    "2-D crystal, vacancies + dopants": {"lattice": "honeycomb", "vacancy_fraction": 0.05,
                                         "interstitial_fraction": 0.02, "intensity_jitter": 0.3},
}
SPACINGS = {"8–16 px": [8.0, 16.0], "16–40 px": [16.0, 40.0]}
CONTRASTS = ("bright", "dark")
DOSES = (2.0, 20.0, 200.0)
#: real images shipped with scikit-image, none of them a lattice: a quantitative phase image of a cell, a photograph of
#: the moon, and the Hubble deep field (bright, sparse objects on a dark background, as particles on thin carbon are
#: in HAADF). No real nanoparticle image ships in a package this project may depend on.
REAL_IMAGES = {"cell (phase image)": "cell", "moon": "moon", "Hubble deep field": "hubble_deep_field"}
LOW_DOSES = (5.0, 50.0)
#: the largest shift of the real images' pairs, as a fraction of the frame (the issue's range for non-periodic content)
REAL_REACH = 0.25
REAL_STACK = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "stem_abf_data_imagestack.hspy"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipelines", default="classical,dcnn,dcnn-general")
    p.add_argument("--pairs", type=int, default=40, help="pairs per cell")
    p.add_argument("--size", type=int, default=128, help="frame size, px (square; cells up to 40 px need ≥ 80)")
    p.add_argument("--seed", type=int, default=2026, help="pair seed (never used in training)")
    p.add_argument("--doses", default=",".join(f"{d:g}" for d in DOSES), help="Poisson doses, e/px (comma-separated)")
    p.add_argument("--families", default=None, help="comma-separated subset of the families (default: all)")
    p.add_argument("--real", default=str(REAL_STACK), help="a real image stack (.hspy) to compare against "
                                                           "'distorted' frame by frame ('' to skip)")
    p.add_argument("--real-pairs", type=int, default=40, help="pairs per real image and dose (0: skip them)")
    p.add_argument("--out", default="runs/bench", help="folder for learned.md and learned.csv")


def cell_rows(pipelines: dict, params: dict, pairs: int, seed: int, on_pair=None) -> list[dict]:
    """The metrics of every pipeline on one cell's pairs (the same pairs for each)."""
    source = pair_source("simulator", rotation_deg=None, **params)
    res, bounds = evaluate_detailed(pipelines, source.pairs(pairs, seed=seed), on_pair)
    at_bound = success_at_bound(bounds)
    rows = []
    for name, r in res.items():
        m = summarize(r["err"], r["sigma"], bounds, r["sec"])
        dist = np.hypot(*np.asarray(r["err"], float).T)
        wrong = ~(np.isfinite(dist) & (dist < SUCCESS_PX))
        confident = np.asarray(r["conf"]) >= 0.5
        rows.append({"pipeline": name, "success": m["success"], "success_at_bound": at_bound,
                     "efficiency": m["efficiency"], "confident_wrong": float(np.mean(confident & wrong)),
                     "median_ms": m["median_ms"]})
    return rows


def camera_cases() -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, float]]]:
    """scikit-image's registration cases on its camera image (Fourier shifts: an integer one, a sub-pixel one in
    three dtypes, zero), and crops of it displaced by up to 40 px of 256: ``(name, reference, moving, truth)``."""
    from scipy import ndimage
    from skimage import data

    cam = data.camera()

    def fourier(shift, dtype):
        return np.fft.ifftn(ndimage.fourier_shift(np.fft.fftn(cam.astype(float)), shift)).real.astype(dtype)

    cases = [("Fourier (-7, 12)", cam.astype(float), fourier((-7, 12), float), (-7.0, 12.0)),
             ("zero shift", cam, cam.copy(), (0.0, 0.0))]
    cases += [(f"Fourier (-2.4, 1.32) {np.dtype(dt).name}", cam.astype(dt), fourier((-2.4, 1.32), dt), (-2.4, 1.32))
              for dt in (np.float16, np.float32, np.float64)]
    for dy, dx in [(20, -13), (-20, 13), (5, 5), (-1, 0), (0, 1), (40, 0), (0, -40), (30, 30)]:
        cases.append((f"crop ({dy}, {dx})", cam[128:384, 128:384], cam[128 - dy:384 - dy, 128 - dx:384 - dx],
                      (float(dy), float(dx))))
    return cases


def camera_rows(pipelines: dict) -> list[dict]:
    from skimage.registration import phase_cross_correlation

    rows = []
    for name, ref, mov, truth in camera_cases():
        row: dict = {"case": name}
        for pname, pipe in pipelines.items():
            s = pipe.estimate(ref, mov)
            row[pname] = "right" if math.hypot(s.dy - truth[0], s.dx - truth[1]) < SUCCESS_PX else \
                f"wrong ({s.dy:.2f}, {s.dx:.2f})"
        sk = -phase_cross_correlation(ref.astype(np.float32), mov.astype(np.float32), upsample_factor=100)[0]
        row["scikit-image"] = "right" if math.hypot(sk[0] - truth[0], sk[1] - truth[1]) < SUCCESS_PX else "wrong"
        rows.append(row)
    return rows


def real_image_pairs(image: np.ndarray, size: int, dose: float, n: int, seed: int):
    """``n`` pairs of ``size``² crops of ``image`` (its minimum taken as zero), the second displaced by a shift
    uniform in the disk of ``REAL_REACH`` × ``size`` (cubic interpolation of the noiseless image), both scaled to
    ``dose`` counts per pixel on average and drawn as independent Poisson counts: ``(reference, moving, truth)``."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    img = np.asarray(image, float) - float(np.min(image))
    reach = REAL_REACH * size
    pad = int(math.ceil(reach)) + 4
    h, w = img.shape
    out = []
    for _ in range(n):
        radius, angle = reach * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
        truth = (radius * math.sin(angle), radius * math.cos(angle))
        y0, x0 = int(rng.integers(pad, h - size - pad)), int(rng.integers(pad, w - size - pad))
        around = img[y0 - pad:y0 + size + pad, x0 - pad:x0 + size + pad]
        ref = around[pad:pad + size, pad:pad + size]
        mov = ndimage.shift(around, truth, order=3, mode="nearest")[pad:pad + size, pad:pad + size]
        scale = dose / max(float(ref.mean()), 1e-12)
        out.append((rng.poisson(ref * scale).astype(np.float32),
                    rng.poisson(np.clip(mov, 0, None) * scale).astype(np.float32), truth))
    return out


def low_dose_rows(pipelines: dict, size: int, pairs: int, seed: int) -> list[dict]:
    """Success on low-dose crops of real, non-periodic images: each pipeline, and scikit-image's plain and
    phase-normalized cross-correlation on the same pairs."""
    from skimage import color, data
    from skimage.registration import phase_cross_correlation

    rows = []
    for k, (label, name) in enumerate(REAL_IMAGES.items()):
        image = getattr(data, name)()
        if image.ndim == 3:
            image = color.rgb2gray(image)
        for dose in LOW_DOSES:
            right = dict.fromkeys([*pipelines, "scikit-image plain", "scikit-image phase"], 0)
            wrong_confident = dict.fromkeys(pipelines, 0)
            for ref, mov, truth in real_image_pairs(image, size, dose, pairs, seed + 100 * k + int(dose)):
                for pname, pipe in pipelines.items():
                    s = pipe.estimate(ref, mov)
                    good = math.hypot(s.dy - truth[0], s.dx - truth[1]) < SUCCESS_PX
                    right[pname] += good
                    wrong_confident[pname] += (not good) and s.confidence >= 0.5
                for key, norm in (("scikit-image plain", None), ("scikit-image phase", "phase")):
                    sk = -phase_cross_correlation(ref, mov, upsample_factor=100, normalization=norm)[0]
                    right[key] += math.hypot(sk[0] - truth[0], sk[1] - truth[1]) < SUCCESS_PX
            rows.append({"image": label, "dose_e_per_px": dose, **{n: v / pairs for n, v in right.items()},
                         **{f"{n} confident_wrong": v / pairs for n, v in wrong_confident.items()}})
    return rows


def real_rows(pipelines: dict, path: str) -> list[dict]:
    """Each frame of a real stack against the first: every pipeline's shift minus ``distorted``'s."""
    import hyperspy.api as hs

    stack = np.asarray(hs.load(path).data, np.float32)
    reference = load_pipeline("distorted")
    rows = []
    for i in range(1, len(stack)):
        ref = reference.estimate(stack[0], stack[i])
        row: dict = {"frame": i, "distorted_px": f"({ref.dy:.2f}, {ref.dx:.2f})"}
        for name, pipe in pipelines.items():
            s = pipe.estimate(stack[0], stack[i])
            row[f"{name} − distorted, px"] = math.hypot(s.dy - ref.dy, s.dx - ref.dx)
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    pipelines = {n.strip(): load_pipeline(n.strip()) for n in args.pipelines.split(",") if n.strip()}
    families = FAMILIES if not args.families else {k: FAMILIES[k] for k in args.families.split(",")}
    doses = [float(d) for d in args.doses.split(",")]
    cells = [(fam, contrast, band, dose) for fam in families for band in SPACINGS for contrast in CONTRASTS
             for dose in doses]
    rows = []
    with progress_bar() as bar:
        task = bar.add_task("realistic pairs", total=len(cells) * args.pairs)
        for k, (fam, contrast, band, dose) in enumerate(cells):
            params = {**families[fam], "spacing_px": SPACINGS[band], "contrast": contrast,
                      "shape": [args.size, args.size], "noise": {"kind": "poisson", "dose": dose}}
            for r in cell_rows(pipelines, params, args.pairs, args.seed + k, lambda: bar.advance(task)):
                rows.append({"family": fam, "contrast": contrast, "cell": band, "dose_e_per_px": dose, **r})
    camera = camera_rows(pipelines)
    low_dose = low_dose_rows(pipelines, args.size, args.real_pairs, args.seed) if args.real_pairs > 0 else []
    real = real_rows(pipelines, args.real) if args.real and Path(args.real).exists() else []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = _markdown(rows, camera, low_dose, real, pipelines, args)
    (out / "learned.md").write_text(text)
    write_csv(rows, out / "learned.csv")
    print(text)
    print(f"written: {out / 'learned.md'} and {out / 'learned.csv'}")
    return 0


def trained_on(pipe) -> tuple[set[str], set[str]] | None:
    """The lattices and contrasts a pipeline's networks were trained on, from their model cards' recipes (``None``
    for a pipeline without networks)."""
    import json

    import yaml

    from drift_dcnn import weights

    seen_lattices: set[str] = set()
    seen_contrasts: set[str] = set()
    kinds = {"dcnn-denoiser": "denoiser", "dcnn-regressor": "regressor"}
    for spec in pipe.describe().values():
        kind = kinds.get(spec.get("plugin"))
        if kind is None:
            continue
        card = json.loads(weights.resolve(kind, spec.get("weights")).with_suffix(".json").read_text())
        recipe = yaml.safe_load(card["recipe"])
        source, train = recipe.get("source", {}), recipe.get("train", {})
        seen_lattices |= set(train.get("lattices") or [source.get("lattice", "hexagonal")])
        seen_contrasts |= set(train.get("contrasts") or [source.get("contrast", "bright")])
    return (seen_lattices, seen_contrasts) if seen_lattices else None


def _held_out(rows: list[dict], seen: dict) -> list[dict]:
    """Each learned pipeline's cells split by whether its networks saw the cell's lattice and contrast (``seen``:
    pipeline → :func:`trained_on`)."""
    out = []
    for name, (lattices, contrasts) in seen.items():
        for family_seen in (True, False):
            for contrast_seen in (True, False):
                cells = [r for r in rows if (FAMILIES[r["family"]]["lattice"] in lattices) == family_seen
                         and (r["contrast"] in contrasts) == contrast_seen]
                group = [r for r in cells if r["pipeline"] == name]
                if not group:
                    continue
                out.append({"pipeline": name, "family": "trained on" if family_seen else "held out",
                            "contrast": "trained on" if contrast_seen else "held out", "cells": len(group),
                            "worst success": min(r["success"] for r in group),
                            "mean success": float(np.mean([r["success"] for r in group])),
                            "worst efficiency": max(r["efficiency"] for r in group),
                            "cells below classical": _below(cells, name)})
    return out


def _worst(rows: list[dict], pipelines: dict) -> list[dict]:
    out = []
    for name in pipelines:
        mine = [r for r in rows if r["pipeline"] == name]
        out.append({"pipeline": name, "cells": len(mine), "worst success": min(r["success"] for r in mine),
                    "mean success": float(np.mean([r["success"] for r in mine])),
                    "worst efficiency": max(r["efficiency"] for r in mine),
                    "worst confident_wrong": max(r["confident_wrong"] for r in mine)})
    return out


def _bound_limited(rows: list[dict]) -> str:
    """How many cells even an estimator at the bound cannot solve to 99 %, and the lowest of them."""
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["family"], r["contrast"], r["cell"], r["dose_e_per_px"]), []).append(r)
    limited = {k: v for k, v in cells.items() if v[0]["success_at_bound"] < 0.99}
    if not limited:
        return "In every cell an estimator at the bound would find ≥ 99 % of the shifts."
    worst = min(limited.items(), key=lambda kv: kv[1][0]["success_at_bound"])
    return (f"In {len(limited)} of {len(cells)} cells even an estimator at the Cramér–Rao bound would find fewer "
            f"than 99 % of the shifts (the lowest: {worst[1][0]['success_at_bound']:.2f}, {worst[0][0]}, "
            f"{worst[0][1]}, {worst[0][2]}, {worst[0][3]:g} e/px).")


def _below(rows: list[dict], name: str, reference: str = "classical") -> int:
    """Cells where ``name`` finds fewer shifts than ``reference``."""
    by_cell: dict = {}
    for r in rows:
        by_cell.setdefault((r["family"], r["contrast"], r["cell"], r["dose_e_per_px"]), {})[r["pipeline"]] = r
    return sum(1 for c in by_cell.values() if name in c and reference in c and
               c[name]["success"] < c[reference]["success"])


def _markdown(rows, camera, low_dose, real, pipelines, args) -> str:
    right = {n: sum(r[n] == "right" for r in camera) for n in [*pipelines, "scikit-image"]}
    below = {n: _below(rows, n) for n in pipelines if n != "classical"}
    parts = [
        f"# The learned pipeline on realistic images ({args.size}², {args.pairs} pairs per cell)\n",
        "Made by:\n\n```\n" + command_line("learned") + "\n```\n",
        "Families × cell sizes × contrasts × Poisson doses; shifts uniform over the whole unambiguous disk "
        "(0.45 × each pair's cell). success: error < 0.5 px; success_at_bound: the success an unbiased estimator "
        "whose error is each pair's Cramér–Rao bound would have (where it is below 1, no estimator finds every "
        "shift); efficiency: RMSE of the successes over √mean trace of each pair's Cramér–Rao bound; "
        "confident_wrong: fraction of all pairs answered wrong with confidence ≥ 0.5.\n",
        "## Summary\n", markdown_table(_worst(rows, pipelines)),
        "Cells where a learned preset finds fewer shifts than `classical`: "
        + ", ".join(f"`{n}` {k}" for n, k in below.items()) + f" (of {len(rows) // max(len(pipelines), 1)}). "
        + _bound_limited(rows) + "\n",
    ]
    seen = {n: s for n, s in ((n, trained_on(p)) for n, p in pipelines.items()) if s is not None}
    held_out = _held_out(rows, seen)
    if held_out:
        told = "; ".join(f"`{n}`: {', '.join(sorted(s[0]))} lattices, {', '.join(sorted(s[1]))} contrast"
                         for n, s in seen.items())
        parts += ["## What the networks were not trained on\n",
                  f"From the model cards' recipes ({told}). The families whose lattice a network never saw and the "
                  "contrast it never saw, reported apart from the rest.\n", markdown_table(held_out)]
    parts += [
        "## Every cell\n", markdown_table(rows),
        "## Non-periodic content: scikit-image's camera cases\n",
        "Right (< 0.5 px): " + ", ".join(f"`{n}` {k}/{len(camera)}" for n, k in right.items()) + ".\n",
        markdown_table(camera),
    ]
    if low_dose:
        trailing = {n: sum(r[n] < r["scikit-image plain"] for r in low_dose) for n in pipelines}
        parts += [f"## Non-periodic content at a low dose: real images ({args.size}², {args.real_pairs} pairs each)\n",
                  "Crops of real images shipped with scikit-image (none of them a lattice; the Hubble deep field's "
                  "sparse bright objects on a dark background stand in for particles on thin carbon, since no real "
                  "nanoparticle image ships in a package this project may use), the second displaced by up to "
                  f"{REAL_REACH:.0%} of the frame, both as Poisson counts at the dose given. Fraction of shifts found "
                  "(< 0.5 px) and of answers wrong at confidence ≥ 0.5. Rows where a preset finds fewer than "
                  "scikit-image's plain cross-correlation: " + ", ".join(f"`{n}` {k}" for n, k in trailing.items())
                  + f" (of {len(low_dose)}).\n", markdown_table(low_dose)]
    if real:
        parts += ["## The shared real SrTiO3 stack (ABF, 5 × 512²)\n",
                  "Each frame against the first; the distance of each pipeline's shift from `distorted`'s (which "
                  "closes loops to 0.03 px on this stack).\n", markdown_table(real)]
    return "\n".join(parts)

