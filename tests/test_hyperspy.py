import csv
import re
import warnings

import hyperspy.api as hs  # noqa: E402
import numpy as np
import pytest
from conftest import REAL_DATA, drift_cli, simulator_source  # noqa: E402

import drift_framework as df
from drift_hyperspy import correct  # noqa: E402
from drift_hyperspy.source import HyperSpyError, load_images  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)


def _stack(n=6, size=96, snr=4.0, velocity=(0.6, -0.4), seed=3):
    src = simulator_source(shape=[size, size], spacing_px=11, noise={"kind": "gaussian", "snr": snr},
                           drift=[{"kind": "linear", "velocity_px_per_frame": list(velocity)}], seed=seed)
    frames = [src.acquire() for _ in range(n)]
    s = hs.signals.Signal2D(np.stack([f.data for f in frames]))
    for ax in s.axes_manager.signal_axes:
        ax.scale, ax.units = 0.03, "nm"
    s.axes_manager.navigation_axes[0].scale, s.axes_manager.navigation_axes[0].units = 0.5, "s"
    s.metadata.General.title = "test stack"
    truth = np.array([f.meta["true_offset_px"] for f in frames])
    return s, truth


@pytest.mark.parametrize("reference", ["first", "previous", "all-pairs"])
def test_correct_signal_recovers_known_drift(reference):
    s, truth = _stack()
    aligned, shifts = correct(s, "classical", reference=reference)
    np.testing.assert_allclose(shifts.data[:, :2], truth, atol=0.05)
    assert shifts.data.shape == (6, 4)
    assert aligned.axes_manager.signal_axes[0].units == "nm" and aligned.axes_manager.signal_axes[0].scale == 0.03
    assert aligned.axes_manager.navigation_axes[0].units == "s"
    assert aligned.metadata.drift_framework.reference == reference
    assert aligned.metadata.General.title == "test stack (drift corrected)"
    # aligned frames agree with each other much better than the raw ones
    a = np.asarray(aligned.data, float)
    assert np.mean(np.abs(a[-1] - a[0])) < 0.5 * np.mean(np.abs(np.asarray(s.data[-1], float)[:a.shape[1], :a.shape[2]]
                                                                 - np.asarray(s.data[0], float)[:a.shape[1], :a.shape[2]]))


@pytest.mark.parametrize("mode,shape", [("crop", None), ("expand", None), ("fill", (96, 96))])
def test_alignment_modes(mode, shape):
    s, truth = _stack()
    aligned, _ = correct(s, "classical", mode=mode, order=1)
    span = np.ptp(truth, axis=0)
    if mode == "crop":
        assert aligned.data.shape[1] <= 96 - np.floor(span[0]) and aligned.data.shape[2] <= 96 - np.floor(span[1])
    elif mode == "expand":
        assert aligned.data.shape[1] >= 96 + np.floor(span[0]) and np.isnan(aligned.data).any()
    else:
        assert aligned.data.shape[1:] == shape


@pytest.mark.parametrize("ext", ["hspy", "tif"])
def test_round_trip_through_files_and_the_cli(tmp_path, ext):
    s, truth = _stack()
    path = tmp_path / f"stack.{ext}"
    s.save(str(path))
    loaded = load_images(path)
    assert loaded.data.shape == (6, 96, 96)
    out = drift_cli("correct", str(path), "-o", str(tmp_path / "aligned.hspy"), "--reference", "all-pairs")
    assert out.returncode == 0, out.stderr
    # a progress bar per stage (all-pairs on 6 frames: 15 pairs), finished, on stderr
    assert re.search(r"measuring .* 15/15", out.stderr) and re.search(r"aligning .* 6/6", out.stderr), out.stderr
    back = hs.load(str(tmp_path / "aligned.hspy"))
    assert back.metadata.drift_framework.pipeline == "classical"
    with open(tmp_path / "aligned.csv") as fh:
        rows = list(csv.DictReader(fh))
    got = np.array([[float(r["dy_px"]), float(r["dx_px"])] for r in rows])
    np.testing.assert_allclose(got, truth, atol=0.05)


def test_every_reference_mode_follows_a_drift_beyond_half_a_lattice_cell():
    """17 px of drift over 10 frames on 12 px cells: against the first frame a lattice translate was the nearer
    answer, with confidence 1 (and all-pairs followed it); measured around the frame-to-frame chain's prediction,
    every mode finds the drift."""
    from drift_hyperspy.positions import estimate_shifts

    source = simulator_source(shape=[256, 256], spacing_px=[12.0], noise={"kind": "poisson", "dose": 50.0}, seed=3,
                              drift=[{"kind": "linear", "velocity_px_per_frame": [1.0, 1.7]}])
    frames = [source.acquire() for _ in range(10)]
    truth = np.array([f.meta["true_drift_px"] for f in frames]) - frames[0].meta["true_drift_px"]
    for reference in ("first", "previous", "all-pairs"):
        found = estimate_shifts(lambda i: frames[i].data, len(frames), "classical", reference=reference)
        assert np.abs(found.shifts - truth).max() < 0.1, (reference, found.shifts.round(2))


def test_all_pairs_cures_a_chain_that_slipped_a_cell_at_low_snr():
    """At SNR 0.15 one frame-to-frame step of 20 slips by a cell (the chain carries it to every later frame);
    measured directly where the chain's steps are doubtful, the other pairs outvote it."""
    from drift_hyperspy.positions import estimate_shifts

    source = simulator_source(shape=[128, 128], spacing_px=[10.0], noise={"kind": "gaussian", "snr": 0.15}, seed=3,
                              drift=[{"kind": "linear", "velocity_px_per_frame": [0.2, 0.3]},
                                     {"kind": "random-walk", "step_px_per_frame": 0.3}])
    frames = [source.acquire() for _ in range(20)]
    truth = np.array([f.meta["true_drift_px"] for f in frames]) - frames[0].meta["true_drift_px"]
    error = {reference: np.hypot(*(estimate_shifts(lambda i: frames[i].data, len(frames), "classical",
                                                   reference=reference).shifts - truth).T)
             for reference in ("previous", "all-pairs")}
    assert (error["previous"] > 5).sum() > 10 and error["all-pairs"].max() < 0.5, error


def test_correct_never_writes_over_its_input_or_an_existing_file(tmp_path):
    s, _ = _stack(n=3)
    raw = tmp_path / "raw.hspy"
    s.save(str(raw))
    before = raw.read_bytes()
    same = drift_cli("correct", str(raw), "-o", str(raw))
    assert same.returncode == 2 and "never writes over its input" in same.stderr and "Traceback" not in same.stderr
    assert drift_cli("correct", str(raw), "-o", str(raw), "--overwrite").returncode == 2  # not even when asked
    assert raw.read_bytes() == before
    aligned = tmp_path / "aligned.hspy"
    assert drift_cli("correct", str(raw), "-o", str(aligned)).returncode == 0
    again = drift_cli("correct", str(raw), "-o", str(aligned))
    assert again.returncode == 2 and "exists and is kept" in again.stderr
    csv_over_input = drift_cli("correct", str(raw), "-o", str(tmp_path / "b.hspy"), "--shifts", str(raw))
    assert csv_over_input.returncode == 2 and raw.read_bytes() == before
    assert drift_cli("correct", str(raw), "-o", str(aligned), "--overwrite").returncode == 0


def test_correct_prints_every_frame_and_refuses_low_confidence_or_saturated_frames(tmp_path):
    s, truth = _stack(n=4)
    raw = tmp_path / "raw.hspy"
    s.save(str(raw))
    out = drift_cli("correct", str(raw), "-o", str(tmp_path / "a.hspy"))
    assert out.returncode == 0, out.stderr
    table = [line.split() for line in out.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in table[:4]] == [0, 1, 2, 3] and all(len(r) >= 5 for r in table[:4])
    np.testing.assert_allclose([[float(r[1]), float(r[2])] for r in table[:4]], truth, atol=0.05)
    # a detector that saturates: frames 2 and 3 clipped at a ceiling that 20 % of the pixels reach
    data = s.data.copy()
    ceiling = np.quantile(data[2:], 0.8)
    data[2:] = np.minimum(data[2:], ceiling)
    clipped = tmp_path / "clipped.hspy"
    hs.signals.Signal2D(data).save(str(clipped))
    bad = drift_cli("correct", str(clipped), "-o", str(tmp_path / "b.hspy"))
    assert bad.returncode == 1 and not (tmp_path / "b.hspy").exists(), bad.stdout + bad.stderr
    assert "2 saturated frame(s)" in bad.stderr and ": 2, 3" in bad.stderr and "Traceback" not in bad.stderr
    assert "saturated" in bad.stdout                                   # flagged in the table
    strict = drift_cli("correct", str(raw), "-o", str(tmp_path / "c.hspy"), "--min-confidence", "1.01")
    assert strict.returncode == 1 and "3 frame(s) below confidence 1.01: 1, 2, 3" in strict.stderr
    forced = drift_cli("correct", str(clipped), "-o", str(tmp_path / "b.hspy"), "--force")
    assert forced.returncode == 0
    assert any("saturated" in w for w in hs.load(str(tmp_path / "b.hspy")).metadata.drift_framework.warnings)


def test_lazy_signal_gives_the_same_shifts():
    s, _ = _stack()
    _, eager = correct(s, "classical")
    aligned, lazy = correct(s.as_lazy(), "classical")
    np.testing.assert_allclose(lazy.data, eager.data)
    assert aligned._lazy


def test_local_cluster_gives_the_same_shifts():
    from distributed import LocalCluster

    s, _ = _stack(n=5)
    _, local = correct(s, "classical", reference="all-pairs")
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      processes=True) as cluster:
        _, remote = correct(s, "classical", reference="all-pairs", scheduler=cluster.scheduler_address)
    np.testing.assert_allclose(remote.data, local.data, atol=1e-9)


def test_recorded_series_replays_through_a_recipe(tmp_path):
    s, truth = _stack()
    s.save(str(tmp_path / "stack.hspy"))
    (tmp_path / "replay.yaml").write_text(f"name: replay\nsource: {{plugin: hyperspy, path: stack.hspy}}\n"
                                          f"pipeline: classical\nrun: {{frames: 100, output: {tmp_path / 'r.h5'}}}\n")
    summary = df.run(tmp_path / "replay.yaml")
    assert summary.steps == 6 and summary.stop_reason.startswith("completed")
    run = df.read_run(summary.output)
    np.testing.assert_allclose(run.steps["offset"], truth, atol=0.05)
    assert run.attrs["pixel_size_nm"] == pytest.approx(0.03)


def test_bad_inputs_are_clear_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    for path, fragment in [(tmp_path / "missing.hspy", "no such file"), (tmp_path / "notes.txt", "cannot read")]:
        out = drift_cli("correct", str(path), "-o", str(tmp_path / "o.hspy"))
        assert out.returncode == 2 and fragment in out.stderr and "Traceback" not in out.stderr
    one = hs.signals.Signal2D(np.random.default_rng(0).random((1, 64, 64)))
    with pytest.raises(HyperSpyError, match="at least 2 frames"):
        correct(one)
    s, _ = _stack(n=3)
    s.data[1, 5, 5] = np.nan
    with pytest.raises(HyperSpyError, match=r"frame\(s\) \[1\]"):
        correct(s)
    spectrum = hs.signals.Signal1D(np.zeros(100))
    spectrum.save(str(tmp_path / "spectrum.hspy"))
    with pytest.raises(HyperSpyError, match="not an image"):
        load_images(tmp_path / "spectrum.hspy")


@pytest.mark.filterwarnings("ignore:Loading old file version")  # the shared file predates HyperSpy 2
def test_real_stem_stack_aligns_better_than_raw():
    s = hs.load(str(REAL_DATA / "stem_abf_data_imagestack.hspy"))
    aligned, shifts = correct(s, "classical", reference="first")
    a = np.asarray(aligned.data, float)
    raw = np.asarray(s.data, float)[:, :a.shape[1], :a.shape[2]]

    def ncc(x, y):
        x, y = x - x.mean(), y - y.mean()
        return float(np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y)))

    assert np.mean([ncc(a[0], a[i]) for i in range(1, 5)]) > 1.5 * np.mean([ncc(raw[0], raw[i]) for i in range(1, 5)])
    assert 2.0 < np.max(np.abs(np.diff(shifts.data[:, 1]))) < 5.0  # ~3 px/frame of real drift along x


@pytest.mark.filterwarnings("ignore:Loading old file version")
def test_real_stack_reference_modes_agree_with_the_distorted_preset():
    """The real scan vibrates (split correlation peaks): centres of symmetry add up, so every mode gives the same
    positions within 0.1 px (the least-squares fit of the frames differs by ~0.5 px, its loops miss by ~0.15 px, enough
    for `drift correct` to suggest the distorted preset)."""
    from drift_hyperspy.positions import closure_hint, estimate_shifts

    stack = np.asarray(hs.load(str(REAL_DATA / "stem_abf_data_imagestack.hspy")).data, np.float32)
    modes = {m: estimate_shifts(lambda i: stack[i], len(stack), "distorted", reference=m)
             for m in ("first", "previous", "all-pairs")}
    for a in modes.values():
        for b in modes.values():
            assert np.abs(a.shifts - b.shifts).max() < 0.1
    assert modes["all-pairs"].closure_px < 0.05
    rigid = estimate_shifts(lambda i: stack[i], len(stack), "classical", reference="all-pairs")
    assert closure_hint(rigid.closure_px, rigid.pair_sigma_px) is not None
    assert rigid.closure_px > 5 * modes["all-pairs"].closure_px


@pytest.mark.filterwarnings("ignore:Loading old file version")
def test_correct_suggests_the_distorted_preset_when_loops_do_not_close(tmp_path):
    real = str(REAL_DATA / "stem_abf_data_imagestack.hspy")
    out = drift_cli("correct", real, "-o", str(tmp_path / "rigid.hspy"), "--reference", "all-pairs")
    assert out.returncode == 1 and not (tmp_path / "rigid.hspy").exists()   # untrustworthy: nothing written
    assert "loop closure" in out.stdout and "try --pipeline distorted" in out.stderr
    forced = drift_cli("correct", real, "-o", str(tmp_path / "rigid.hspy"), "--reference", "all-pairs", "--force")
    assert forced.returncode == 0, forced.stderr
    warnings = hs.load(str(tmp_path / "rigid.hspy")).metadata.drift_framework.warnings
    assert any("try --pipeline distorted" in w for w in warnings)
    out = drift_cli("correct", real, "-o", str(tmp_path / "sym.hspy"), "--reference", "all-pairs",
                    "--pipeline", "distorted")
    assert out.returncode == 0, out.stderr
    assert "loop closure" in out.stdout and "try --pipeline" not in out.stdout + out.stderr
    record = hs.load(str(tmp_path / "sym.hspy")).metadata.drift_framework
    assert record.closure_px < 0.05 and record.pipeline == "distorted"
