import csv
import json
import math

import numpy as np
from conftest import drift_cli
from PIL import Image

import drift_framework as df


def _panels(path):
    img = Image.open(path)
    assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 200
    pixels = np.asarray(img.convert("L"), float)
    assert pixels.std() > 5  # not blank
    return json.loads(img.text["Panels"])


def test_report_of_a_finished_run(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
name: rep
source: {{plugin: simulator, shape: [96, 96], spacing_px: 10, noise: {{kind: gaussian, snr: 2.0}},
         drift: [{{kind: linear, velocity_px_per_frame: [0.4, -0.3]}}], seed: 3}}
pipeline: classical
controller: {{plugin: kalman}}
actuator: {{plugin: simulated-stage, limits: {{max_step: 2.0, travel: 50.0}}}}
run: {{frames: 25, output: {tmp_path / 'rep.h5'}}}
""")
    df.run(recipe)
    out = drift_cli("report", str(tmp_path / "rep.h5"), "-o", str(tmp_path / "report"))
    assert out.returncode == 0, out.stderr
    assert _panels(tmp_path / "report" / "rep-trajectories.png") == [
        "dy trajectories", "dx trajectories", "residual magnitude and skipped steps"]
    assert _panels(tmp_path / "report" / "rep-commands.png") == ["commands", "sigma with its gate",
                                                                 "confidence with its gate"]
    md = (tmp_path / "report" / "rep-report.md").read_text()
    assert "steps: 25" in md and "residual drift RMS" in md and "(finished)" in md
    assert "closed loop: pipeline none → ncc → gauss-newton, controller kalman, actuator simulated-stage" in md
    assert "gates: confidence ≥ 0.5, sigma ≤ 1 px" in md and "pixel size: 0.03 nm" in md and " nm (uncorrected" in md
    assert not (tmp_path / "report" / "rep-frames.png").exists() and "frames.png" not in md  # frames not saved


def test_report_shows_frames_and_titles_open_loop_runs_as_measurements(tmp_path):
    """With save_frames: first, last and aligned-average images; without an actuator: a measurement, not a
    correction (no correction line, 'open loop' in the title and the markdown)."""
    recipe = tmp_path / "open.yaml"
    recipe.write_text(f"""\
name: open
source: {{plugin: simulator, shape: [96, 96], spacing_px: 10, noise: {{kind: gaussian, snr: 2.0}},
         drift: [{{kind: linear, velocity_px_per_frame: [0.4, -0.3]}}], seed: 3}}
pipeline: classical
run: {{frames: 12, output: {tmp_path / 'open.h5'}, save_frames: true}}
""")
    df.run(recipe)
    from drift_framework.report import STYLES, report

    files = report(tmp_path / "open.h5", tmp_path / "report")
    assert _panels(files["frames"]) == ["first frame", "last frame", "aligned average"]
    md = files["markdown"].read_text()
    assert "open loop (measured only" in md and "![frames](open-frames.png)" in md
    assert Image.open(files["trajectories"]).text["Title"] == (
        "open: measured drift (open loop: nothing was corrected) — finished")
    styles = [json.dumps(v, sort_keys=True) for v in STYLES.values()]
    assert len(set(styles)) == len(styles)  # no two series drawn alike


def test_report_of_a_run_still_being_written(tmp_path):
    from drift_framework.store import RunWriter

    writer = RunWriter(tmp_path / "live.h5", attrs={"name": "live"})
    # the file appears only once it is in SWMR mode (built as live.h5.creating): a reader at once is safe
    assert [p.name for p in tmp_path.iterdir()] == ["live.h5"] and len(df.read_run(tmp_path / "live.h5")) == 0
    for i in range(5):
        writer.append({"index": i, "time_s": i * 0.1, "status": 1 if i else 0, "offset": (0.1 * i, 0),
                       "true_offset": (0.01, 0.0), "true_drift": (0.2 * i, 0.0), "sigma": 0.02, "confidence": 0.9})
    out = drift_cli("report", str(tmp_path / "live.h5"))  # the writer still holds the file open
    writer.close()
    assert out.returncode == 0, out.stderr
    assert "still running" in (tmp_path / "live-report.md").read_text()


def test_compare_writes_table_and_figures(tmp_path):
    out = drift_cli("compare", "--pipelines", "classical,ncc-peak", "--snr", "2", "0.5", "--size", "96",
                    "--pairs", "6", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    with open(tmp_path / "compare.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["pipeline"] for r in rows} == {"classical", "ncc-peak", "skimage"} and len(rows) == 6
    for col in ("success", "rmse_px", "bound_px", "efficiency", "median_ms", "time_vs_skimage"):
        assert col in rows[0]
    assert all(math.isfinite(float(r["bound_px"])) and float(r["bound_px"]) > 0 for r in rows)
    assert all(math.isfinite(float(r["rmse_px"])) for r in rows if r["pipeline"] != "skimage")
    panels = _panels(tmp_path / "compare-error-vs-snr.png")
    assert "bound" in panels and {"classical", "ncc-peak", "skimage"} <= set(panels)
    assert _panels(tmp_path / "compare-histograms.png") == ["histogram SNR 0.5", "histogram SNR 2"]
    assert _panels(tmp_path / "compare-time.png") == ["time per pair"]


def test_compare_reads_a_recipe_bench_section(tmp_path):
    (tmp_path / "c.yaml").write_text("name: c\nbench: {pipelines: [ncc-peak], snr: [3.0], size: 64, pairs: 4}\n")
    out = drift_cli("compare", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o"))
    assert out.returncode == 0, out.stderr
    with open(tmp_path / "o" / "compare.csv") as fh:
        assert [r["pipeline"] for r in csv.DictReader(fh)] == ["ncc-peak", "skimage"]


def _errors(cfg, scheduler):
    from drift_bench.accuracy import sweep

    return [{name: np.asarray(r["err"]) for name, r in res.items()} for res, _ in sweep(cfg, cfg.snr,
                                                                                        scheduler=scheduler)]


def test_sweep_on_a_local_cluster_and_on_threads_matches_in_process():
    """The same pairs reach every scheduler, and pipelines shared by threads give the same answers."""
    import argparse

    from distributed import LocalCluster

    cfg = argparse.Namespace(source="simulator", lattice="hexagonal", spacing=[8.0, 12.0], noise="uniform",
                             size=64, pairs=5, seed=7, snr=[2.0, 1.0, 0.5, 0.25], pipelines="classical,phase")
    local = _errors(cfg, None)
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      processes=True) as cluster:
        remote = _errors(cfg, cluster.scheduler_address)
    threads = _errors(cfg, "threads")
    for other in (remote, threads):
        for a, b in zip(local, other):
            assert a.keys() == b.keys()
            for name in a:
                np.testing.assert_array_equal(a[name], b[name])
    assert np.isfinite(local[0]["classical"]).all()


def test_unknown_scheduler_is_one_clear_error(tmp_path):
    out = drift_cli("compare", "--pipelines", "classical", "--scheduler", "mpi://x", "--out", str(tmp_path))
    assert out.returncode == 2 and "unknown scheduler 'mpi://x'" in out.stderr and "Traceback" not in out.stderr
