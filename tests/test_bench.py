import csv
import math

import numpy as np
import pytest
from conftest import drift_cli


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_bench_accuracy_writes_a_table_with_the_bound(tmp_path):
    out = drift_cli("bench", "accuracy", "--pairs", "6", "--size", "96", "--snr", "2", "0.5",
                    "--pipelines", "classical,ncc-peak", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = _rows(tmp_path / "accuracy.csv")
    assert {r["pipeline"] for r in rows} == {"classical", "ncc-peak", "skimage"}
    assert len(rows) == 6
    for r in rows:
        for col in ("bound_px", "median_ms", "time_vs_skimage"):
            assert math.isfinite(float(r[col])) and float(r[col]) > 0
    best = [r for r in rows if r["pipeline"] == "classical" and r["level"] == "2.0"][0]
    assert float(best["success"]) == 1.0 and float(best["efficiency"]) < 3
    md = (tmp_path / "accuracy.md").read_text()
    assert "drift bench accuracy" in md and "efficiency" in md.splitlines()[8]


def test_bench_speed_and_sim(tmp_path):
    out = drift_cli("bench", "speed", "--pairs", "4", "--sizes", "64", "--pipelines", "classical", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = _rows(tmp_path / "speed.csv")
    assert [r["pipeline"] for r in rows] == ["classical", "skimage"]
    assert float([r for r in rows if r["pipeline"] == "skimage"][0]["time_vs_skimage"]) == 1.0
    out = drift_cli("bench", "sim", "--frames", "3", "--sizes", "64", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert all(float(r["frames_per_s"]) > 0 for r in _rows(tmp_path / "sim.csv"))


def test_bench_scan_scores_rigid_and_scan_models_against_the_truth_field(tmp_path):
    out = drift_cli("bench", "scan", "--rates", "3", "--jitter", "0", "--doses", "200", "--contrasts", "bright",
                    "dark", "--loop-rates", "2", "--loop-frames", "25", "--loop-size", "128", "--columns-frames", "8",
                    "--columns-size", "128", "--orthogonal-frames", "5", "--orthogonal-size", "128", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = _rows(tmp_path / "scan.csv")
    assert [r["contrast"] for r in rows] == ["bright", "dark"]
    for r in rows:  # 3 px of drift per frame: the scan model removes most of the in-frame shear
        assert float(r["scan_field_rmse_px"]) < 0.2 < 0.5 < float(r["rigid_field_rmse_px"])
        assert 0 <= float(r["bound_px"]) < float(r["scan_field_rmse_px"])  # no registration beats the bound
    text = (tmp_path / "scan.md").read_text()
    assert "drift bench scan" in text
    # the shared real stack: the refit against the other frames' mean leaves its 64² patches closer together
    real = {line.split("|")[1].strip(): float(line.split("|")[3]) for line in text.splitlines()
            if line.startswith(("| rigid", "| scan"))}
    floors = {line.split("|")[1].strip(): float(line.split("|")[5]) for line in text.splitlines()
              if line.startswith(("| rigid", "| scan"))}
    assert all(0 < floors[m] < real[m] for m in real), (floors, real)  # what the patch estimates' noise leaves
    assert real["scan, 8 knots/frame, 1 template pass"] < 0.8 < real["rigid"], real
    # the chosen knots follow the stack's distortion that 2 knots leave to the line offsets (0.30 against 0.37 px)
    assert real["scan, knots chosen (default)"] < 0.9 * real["scan, 2 knots/frame"] < 0.85 * real["rigid"], real
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| ")]
    # the closed loop at 2 px/frame: centring leaves the in-frame shear, the scan ramp takes it out
    loop = {(c[0], c[2]): float(c[3]) for c in cells if len(c) == 8 and c[1] == "2"}
    for contrast in ("bright", "dark"):
        assert loop[contrast, "kalman + scan ramp"] < 0.1 < 0.5 < loop[contrast, "kalman: centring"], loop
    # columns in the average of a drifting series: near the still series' error after the scan model, misplaced
    # by the shear after a rigid alignment (8 frames of 128²: at 256² and 20 frames the gap is 4×)
    columns = {(c[0], c[1] == "still", c[2]): (float(c[3]), int(c[4])) for c in cells if len(c) == 5
               and c[0] in ("bright", "dark")}
    for contrast in ("bright", "dark"):
        scan, rigid = columns[contrast, False, "scan"], columns[contrast, False, "rigid"]
        assert scan[0] < 0.7 * rigid[0] and scan[0] < 1.3 * columns[contrast, True, "scan"][0], columns
        assert scan[1] == rigid[1] > 50, columns
    # orthogonal scans: the scan generator's distortion out of the field and the average, the real strain kept
    ortho = {(c[0], c[1]): [float(v) for v in c[2:5]] for c in cells if len(c) == 6 and "0°" in c[1]}
    for contrast in ("bright", "dark"):
        alone, both = ortho[contrast, "scan, 0° only"], ortho[contrast, "scan, 0° + 90°"]
        assert both[0] < 0.15 < 0.8 < alone[0] and both[2] < 0.003 < 0.015 < alone[2], ortho


def test_field_bound_is_the_posterior_spread_of_every_lines_offsets():
    """The scan table's bound against the joint Gaussian posterior of a walk and a jitter per line, written out
    densely: the smoother's recurrences and the jitter's marginalisation give the same number."""
    from drift_bench.scan import field_bound_px
    from drift_framework.types import Frame

    rng = np.random.default_rng(3)
    lines, walk, jitter = 12, 0.3, 0.4
    frames = [Frame(np.zeros((lines, 4), np.float32), index=k, meta={
        "scan": {"t_start_s": 2.0 * k * lines, "line_time_s": 1.5},  # a pause between frames
        "line_information_px": rng.uniform(0, 30, lines), "line_information_y_px": rng.uniform(0, 30, lines)})
        for k in range(3)]
    times = np.concatenate([f.meta["scan"]["t_start_s"] + (np.arange(lines) + 0.5) * 1.5 for f in frames])
    n, total = len(times), 0.0
    for key, sigma in (("line_information_y_px", 0.0), ("line_information_px", jitter)):
        info = np.concatenate([f.meta[key] for f in frames])
        # unknowns: the walk w and the jitter j of every line, measured as w + j; the walk's level is free
        steps = np.diff(np.eye(n), axis=0)
        walk_precision = steps.T @ np.diag(1 / (walk ** 2 / (lines * 1.5) * np.diff(times))) @ steps
        walk_precision += 1e-9 * np.eye(n)
        if sigma == 0:
            cov = np.linalg.inv(walk_precision + np.diag(info))
        else:
            both = np.hstack([np.eye(n), np.eye(n)])
            precision = np.block([[walk_precision, np.zeros((n, n))], [np.zeros((n, n)), np.eye(n) / sigma ** 2]])
            cov = both @ np.linalg.inv(precision + both.T @ np.diag(info) @ both) @ both.T
        total += np.mean(np.diag(cov)) - cov.sum() / n ** 2   # the field RMSE removes the error's mean
    assert field_bound_px(frames, walk, jitter) == pytest.approx(math.sqrt(total), rel=1e-6)


def test_bench_confidence_writes_the_table_and_reliability_diagrams(tmp_path):
    out = drift_cli("bench", "confidence", "--pairs", "6", "--size", "64", "--pipelines", "classical",
                    "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = _rows(tmp_path / "confidence.csv")
    from drift_bench.confidence import SUITES

    assert len(rows) == len(SUITES) and {r["pipeline"] for r in rows} == {"classical"}
    assert any("perovskite 0.9, dark" in r["suite"] for r in rows)
    assert all(0 <= float(r["gross_among_confident"]) <= 1 for r in rows)
    assert (tmp_path / "confidence.png").stat().st_size > 10_000


def test_bench_learned_scores_families_contrasts_camera_cases_and_the_real_stack(tmp_path):
    """The realistic benchmark of the learned pipeline, cut to one family and dose: every cell has both
    contrasts and both cell-size bands; the camera cases and the real stack's agreement are in the page."""
    from conftest import REAL_DATA

    out = drift_cli("bench", "learned", "--pairs", "3", "--doses", "20", "--families", "dumbbells (wurtzite [11-20])",
                    "--pipelines", "classical,dcnn", "--real", str(REAL_DATA / "stem_abf_data_imagestack.hspy"),
                    "--real-pairs", "2", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = _rows(tmp_path / "learned.csv")
    assert len(rows) == 2 * 2 * 2 and {(r["contrast"], r["cell"]) for r in rows} == {
        (c, b) for c in ("bright", "dark") for b in ("8–16 px", "16–40 px")}
    for r in rows:
        assert 0 <= float(r["success"]) <= 1 and 0 < float(r["efficiency"]) < 10
        assert 0 < float(r["success_at_bound"]) <= 1
    text = (tmp_path / "learned.md").read_text()
    assert "`dcnn` 13/13" in text and "`classical` 13/13" in text and "scikit-image" in text
    assert "estimator at the" in text.split("## Every cell")[0]  # how many cells the bound itself limits
    real = text.split("real SrTiO3 stack")[1]
    assert real.count("\n| ") >= 5    # header + 4 frames
    held_out = text.split("What the networks were not trained on")[1].split("## ")[0]
    assert "`dcnn`: hexagonal lattices, bright contrast" in held_out  # read from the shipped model card's recipe
    assert "| dcnn | held out | held out |" in held_out  # dumbbells in dark contrast: neither seen in training
    low_dose = text.split("Non-periodic content at a low dose")[1].split("## ")[0]
    assert low_dose.count("\n| ") == 1 + 3 * 2 and "scikit-image plain" in low_dose  # header + 3 images × 2 doses


@pytest.mark.filterwarnings("ignore:Loading old file version")
def test_compare_on_a_recorded_stack_scores_closure_and_agreement(tmp_path):
    """No truth on recorded data: the real SrTiO3 stack's vibrating scan makes `classical`'s pair measurements miss
    their loops (by 0.14 px), `distorted`'s add up (0.01 px)."""
    from conftest import REAL_DATA

    out = drift_cli("compare", "--stack", str(REAL_DATA / "stem_abf_data_imagestack.hspy"), "--pipelines",
                    "classical,distorted", "--max-gap", "2", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = {r["pipeline"]: r for r in _rows(tmp_path / "compare-recorded.csv")}
    closure = {name: float(r["loop_closure_px"]) for name, r in rows.items()}
    assert closure["distorted"] < 0.1 and closure["classical"] > 3 * closure["distorted"]
    assert all(float(r["agreement_rms_px"]) >= 0 for r in rows.values())
    positions = (tmp_path / "compare-recorded-positions.csv").read_text().splitlines()
    assert positions[0].startswith("frame,classical_dy_px") and len(positions) == 6
    bad = drift_cli("compare", "--stack", str(tmp_path / "missing.hspy"), "--out", str(tmp_path))
    assert bad.returncode != 0 and "no such file" in bad.stderr and "Traceback" not in bad.stderr
