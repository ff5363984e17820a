"""register_series: rigid and scan-time (drift trajectory) registration, scored per pixel against the simulator's
truth field (the brief's metric: RMSE over pixels and frames after removing the means)."""
import numpy as np
import pytest
from conftest import simulator_source

import drift_framework as df
from drift_framework.registration import field_rmse


def _series(v, walk=0.0, snr=2.0, n=6, seed=5):
    source = simulator_source(scan_time="pixel", shape=[128, 128], spacing_px=[14], noise={"kind": "gaussian", "snr": snr},
                              drift=[{"kind": "linear", "velocity_px_per_frame": v},
                                     {"kind": "random-walk", "step_px_per_frame": walk}], seed=seed)
    frames = [source.acquire() for _ in range(n)]
    return frames, np.stack([f.meta["true_field_px"] for f in frames])


@pytest.mark.parametrize("v, walk, snr", [([2.0, -1.5], 0.0, 2.0), ([2.0, -1.5], 0.2, 2.0), ([3.0, 2.0], 0.0, 1.0)])
def test_scan_model_recovers_the_field_inside_frames_that_rigid_cannot(v, walk, snr):
    frames, truth = _series(v, walk, snr)
    rigid = df.register_series(frames, model="rigid")
    scan = df.register_series(frames, model="scan")  # timing from the frames' metadata
    assert scan.field.shape == truth.shape and scan.aligned.shape == (6, 128, 128)
    rigid_error, scan_error = field_rmse(rigid.field, truth), field_rmse(scan.field, truth)
    assert rigid_error > 0.5  # a rigid shift per frame misses the shear: drift of ~2.5 px during each frame
    assert scan_error < 0.15 and scan_error < rigid_error / 5, (rigid_error, scan_error)
    np.testing.assert_allclose(scan.shifts, scan.field.mean(axis=(1, 2), dtype=np.float64), atol=1e-4)
    # aligned frames agree with each other where both saw the specimen, better than rigidly aligned ones
    spread = lambda r: np.sqrt(np.nanmean((r.aligned[1:] - r.aligned[0]) ** 2))  # noqa: E731
    assert spread(scan) < spread(rigid)
    assert np.isfinite(scan.average).mean() > 0.8


def test_rigid_registration_of_a_plain_stack_and_timing_errors():
    frames, truth = _series([1.0, 0.5], snr=4.0, n=4)
    stack = np.stack([f.data for f in frames])
    rigid = df.register_series(stack)
    np.testing.assert_allclose(rigid.shifts - rigid.shifts[0], truth.mean(axis=(1, 2)) - truth[0].mean(axis=(0, 1)),
                               atol=0.15)
    with pytest.raises(ValueError, match="needs the scan timing"):
        df.register_series(stack, model="scan")
    with pytest.raises(ValueError, match="inconsistent scan timing"):
        df.register_series(stack, model="scan", pixel_time_s=2e-6, line_time_s=1e-6)
    timed = df.register_series(stack, model="scan", pixel_time_s=2e-6)  # line = 128 pixels, frames back to back
    assert field_rmse(timed.field, truth) < 0.15
    with pytest.raises(ValueError, match="'rigid' or 'scan'"):
        df.register_series(stack, model="elastic")


def test_drift_correct_model_scan_writes_the_aligned_stack_the_field_and_a_csv(tmp_path):
    import csv

    import hyperspy.api as hs
    from conftest import drift_cli

    frames, truth = _series([2.0, -1.5], n=5)
    hs.signals.Signal2D(np.stack([f.data for f in frames])).save(tmp_path / "raw.hspy")
    res = drift_cli("correct", str(tmp_path / "raw.hspy"), "-o", str(tmp_path / "out.hspy"), "--model", "scan")
    assert res.returncode == 2 and "--pixel-time-us" in res.stderr and "Traceback" not in res.stderr
    res = drift_cli("correct", str(tmp_path / "raw.hspy"), "-o", str(tmp_path / "out.hspy"), "--model", "scan",
                    "--pixel-time-us", "2")  # the simulator's dwell: 2 µs, no fly-back, frames back to back
    assert res.returncode == 0, res.stderr
    field = hs.load(tmp_path / "out-field.hspy").data  # (frame, dy/dx, y, x)
    assert field.shape == (5, 2, 128, 128)
    assert field_rmse(np.moveaxis(field, 1, -1), truth) < 0.15
    record = hs.load(tmp_path / "out.hspy").metadata.drift_framework
    assert record.model == "scan" and record.knots_per_frame in (2, 4, 8)
    with open(tmp_path / "out.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["frame"]) for r in rows] == [0, 1, 2, 3, 4] and float(rows[0]["dy_px"]) == pytest.approx(
        field[0, 0].mean(), abs=1e-3)


def test_drift_correct_model_scan_reads_the_timing_from_the_file_and_refuses_a_contradiction(tmp_path):
    import hyperspy.api as hs
    from conftest import drift_cli

    frames, truth = _series([2.0, -1.5], n=5)
    raw = hs.signals.Signal2D(np.stack([f.data for f in frames]))
    raw.metadata.set_item("Acquisition_instrument.TEM.dwell_time", 2e-6)  # where HyperSpy puts DigiScan's
    raw.save(tmp_path / "raw.hspy")
    res = drift_cli("correct", str(tmp_path / "raw.hspy"), "-o", str(tmp_path / "bad.hspy"), "--model", "scan",
                    "--pixel-time-us", "3")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--pixel-time-us" in res.stderr and "Acquisition_instrument.TEM.dwell_time" in res.stderr
    assert not (tmp_path / "bad.hspy").exists()
    res = drift_cli("correct", str(tmp_path / "raw.hspy"), "-o", str(tmp_path / "out.hspy"), "--model", "scan")
    assert res.returncode == 0, res.stderr
    field = np.moveaxis(hs.load(tmp_path / "out-field.hspy").data, 1, -1)
    assert field_rmse(field, truth) < 0.15


def test_frames_timing_and_a_contradicting_argument_is_an_error():
    frames, _ = _series([1.0, 0.5], n=3)
    with pytest.raises(ValueError, match="contradicts the frames' own timing"):
        df.register_series(frames, model="scan", pixel_time_s=5e-6)


def test_apply_to_moves_co_acquired_images_and_spectrum_images_with_the_measured_series(tmp_path):
    """The simultaneous HAADF of a series (rigid) and an EDS-like spectrum image per frame (scan model) follow the
    correction measured on the series: a signal that is a function of the measured one stays that function."""
    import hyperspy.api as hs
    from conftest import drift_cli

    from drift_framework.registration import resample

    frames, truth = _series([2.0, -1.5], n=4)
    stack = np.stack([f.data for f in frames]).astype(np.float32)
    hs.signals.Signal2D(stack).save(tmp_path / "abf.hspy")
    haadf = hs.signals.Signal2D(5.0 - 2.0 * stack)
    haadf.metadata.General.title = "HAADF"
    haadf.save(tmp_path / "haadf.hspy")
    spectra = hs.signals.Signal1D(np.stack([stack * (c + 1) for c in range(3)], axis=-1))  # (frame, y, x, channel)
    spectra.save(tmp_path / "eds.hspy")

    res = drift_cli("correct", str(tmp_path / "abf.hspy"), "-o", str(tmp_path / "rigid.hspy"), "-q",
                    "--apply-to", str(tmp_path / "haadf.hspy"), "--force")
    assert res.returncode == 0, res.stderr
    aligned, moved = hs.load(tmp_path / "rigid.hspy"), hs.load(tmp_path / "rigid-haadf.hspy")
    assert moved.data.shape == aligned.data.shape and moved.metadata.General.title == "HAADF (drift corrected)"
    np.testing.assert_allclose(moved.data, 5.0 - 2.0 * aligned.data, atol=1e-3)
    assert moved.metadata.drift_framework.applied_from.endswith("abf.hspy")
    assert moved.axes_manager.signal_axes[0].offset == aligned.axes_manager.signal_axes[0].offset  # same crop

    res = drift_cli("correct", str(tmp_path / "abf.hspy"), "-o", str(tmp_path / "scan.hspy"), "-q", "--model", "scan",
                    "--pixel-time-us", "2", "--apply-to", str(tmp_path / "eds.hspy"))
    assert res.returncode == 0, res.stderr
    field = np.moveaxis(hs.load(tmp_path / "scan-field.hspy").data, 1, -1)
    cube = hs.load(tmp_path / "scan-eds.hspy")
    assert cube.axes_manager.signal_dimension == 1 and cube.data.shape == (4, 128, 128, 3)
    expected = resample(stack, field, order=1)  # spectra move linearly: counts stay non-negative
    for c in range(3):
        np.testing.assert_allclose(cube.data[..., c], expected * (c + 1), rtol=1e-4, atol=1e-4)
    assert field_rmse(field, truth) < 0.15

    # data on another scan (fewer frames) is refused before anything is written, naming the file
    hs.signals.Signal2D(stack[:3]).save(tmp_path / "short.hspy")
    res = drift_cli("correct", str(tmp_path / "abf.hspy"), "-o", str(tmp_path / "again.hspy"),
                    "--apply-to", str(tmp_path / "short.hspy"))
    assert res.returncode == 2 and "short.hspy: 3 frame(s)" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "again.hspy").exists()
    # two co-acquired files of one name would write one output: refused, nothing written
    (tmp_path / "b").mkdir()
    haadf.save(tmp_path / "b" / "haadf.hspy")
    res = drift_cli("correct", str(tmp_path / "abf.hspy"), "-o", str(tmp_path / "again.hspy"),
                    "--apply-to", str(tmp_path / "haadf.hspy"), "--apply-to", str(tmp_path / "b" / "haadf.hspy"))
    assert res.returncode == 2 and "same output" in res.stderr and not (tmp_path / "again.hspy").exists()


def test_scan_timing_is_read_where_the_formats_keep_it():
    import hyperspy.api as hs

    from drift_hyperspy.source import scan_timing

    velox = hs.signals.Signal2D(np.zeros((3, 8, 8)))
    velox.original_metadata.set_item("Scan.DwellTime", "4e-06")  # Velox writes strings, in seconds
    velox.original_metadata.set_item("Scan.LineTime", "3.6e-05")
    frame_axis = velox.axes_manager.navigation_axes[0]
    frame_axis.units, frame_axis.scale = "ms", 250.0
    found = scan_timing(velox)
    assert found["pixel_time_s"] == (pytest.approx(4e-6), "original_metadata.Scan.DwellTime")
    assert found["line_time_s"][0] == pytest.approx(3.6e-5) and found["frame_time_s"][0] == pytest.approx(0.25)
    nion = hs.signals.Signal2D(np.zeros((2, 8, 8)))
    nion.metadata.set_item("hardware_source.pixel_time_us", 8.0)
    assert scan_timing(nion) == {"pixel_time_s": (pytest.approx(8e-6), "metadata.hardware_source.pixel_time_us")}
    assert scan_timing(hs.signals.Signal2D(np.zeros((2, 8, 8)))) == {}


def test_line_jitter_is_in_the_truth_and_the_scan_model_measures_it():
    """Fast-scan jitter displaces whole lines: the simulator's truth field carries it, and register_series
    measures each line's offset against the other frames (the offsets common to all frames stay unknown: the
    specimen is only known as their mean). Without jitter the line offsets make nothing worse."""
    def series(jitter):
        source = simulator_source(scan_time="pixel", shape=[128, 128], spacing_px=[14], scan_jitter_px=jitter,
                                  noise={"kind": "poisson", "dose": 200.0}, seed=3,
                                  drift=[{"kind": "linear", "velocity_px_per_frame": [1.0, 1.7]}])
        frames = [source.acquire() for _ in range(8)]
        return frames, np.stack([f.meta["true_field_px"] for f in frames])

    frames, truth = series(0.3)
    assert np.std(truth[..., 1].mean(axis=2) - np.median(truth[..., 1], axis=2)) < 0.05  # one offset per line
    plain = df.register_series(frames, model="scan", line_jitter=False)
    measured = df.register_series(frames, model="scan")
    assert field_rmse(plain.field, truth) > 0.25  # the jitter is in the truth, not in a smooth trajectory
    assert field_rmse(measured.field, truth) < 0.7 * field_rmse(plain.field, truth), (
        field_rmse(plain.field, truth), field_rmse(measured.field, truth))

    frames, truth = series(0.0)
    plain = df.register_series(frames, model="scan", line_jitter=False)
    measured = df.register_series(frames, model="scan")
    assert field_rmse(measured.field, truth) < field_rmse(plain.field, truth) + 0.005  # no worse (here: better)


def test_line_offsets_reach_the_bound_of_a_line():
    """A line's x offset is known only from that line: with white jitter N(0, σ²) no estimator beats the Bayes
    bound 1/(F + 1/σ²) of its Fisher information F = Σ (∂ₓλ)²/λ (Poisson counts λ).  The per-line estimates,
    the part all frames share left out (unmeasurable), come within 10 % of it in both contrasts."""
    from scipy import ndimage

    from drift_framework.registration import line_offsets
    from drift_simulator.noise import line_information

    rng = np.random.default_rng(0)
    n, h, w, jitter = 20, 128, 128, 0.3
    for contrast in ("bright", "dark"):
        ideal = simulator_source(shape=[h + 32, w + 32], spacing_px=[20], contrast=contrast,
                                 noise={"kind": "none"}, seed=1).acquire().data.astype(float)
        ideal *= 10.0 / ideal.mean()  # 10 counts per pixel
        truth = rng.normal(0, jitter, (n, h))
        coeffs = ndimage.spline_filter(ideal, order=3)
        yy, xx = np.mgrid[0:h, 0:w].astype(float)
        clean = [ndimage.map_coordinates(coeffs, [yy + 16, xx + 16 - truth[k][:, None]], order=3, prefilter=False)
                 for k in range(n)]
        stack = rng.poisson(np.clip(clean, 0, None)).astype(np.float32)
        error = line_offsets(stack, np.zeros((n, h, w, 2)))[..., 1] - truth
        error -= error.mean(axis=0)  # what all frames share
        fisher = line_information({"kind": "poisson"}, ideal[16:16 + h, 16:16 + w], {"counts_per_unit": 1.0})
        bound = np.sqrt(np.mean(1.0 / (fisher + 1.0 / jitter ** 2)))
        assert np.sqrt(np.mean(error ** 2)) < 1.1 * bound, (contrast, np.sqrt(np.mean(error ** 2)), bound)


def test_a_step_a_lattice_translate_from_the_steady_drift_is_measured_again_around_it():
    """4 px per frame on 8 px cells: half the shortest lattice vector, where a frame-to-frame step is known only
    modulo the cell and the answer nearest zero can be the translate.  The series' steady drift decides, and
    says so."""
    source = simulator_source(scan_time="pixel", shape=[256, 256], spacing_px=[8], contrast="dark", seed=4,
                              noise={"kind": "poisson", "dose": 10.0},
                              drift=[{"kind": "linear", "velocity_px_per_frame": [2.0, 2 * 3 ** 0.5]},  # 4 px at 30°
                                     {"kind": "random-walk", "step_px_per_frame": 0.2}])
    frames = [source.acquire() for _ in range(10)]
    truth = np.stack([f.meta["true_field_px"] for f in frames])
    reg = df.register_series(frames, model="rigid")
    error = reg.shifts - truth.mean(axis=(1, 2))
    error -= error.mean(axis=0)
    assert np.abs(error).max() < 0.5, error.round(2)
    assert any("measured again around it" in note for note in reg.notes), reg.notes
    assert field_rmse(df.register_series(frames, model="scan").field, truth) < 0.1


def test_line_offsets_measure_a_frames_offset_whole_against_a_noisy_mean_and_beyond_the_first_view():
    """Offsets of whole frames beyond the field come back whole: the other frames' mean is noisy (in dark contrast
    at 10 counts/px its noise in the gradient shrank the steps to 0.3-0.5 of the offsets) and the last frames have
    drifted out of the first frame's view (they were compared on what was left of it)."""
    from drift_framework.registration import line_offsets

    source = simulator_source(scan_time="pixel", shape=[128, 128], spacing_px=[20], contrast="dark", seed=1,
                              noise={"kind": "poisson", "dose": 10.0},
                              drift=[{"kind": "linear", "velocity_px_per_frame": [3.0, 5.2]}])  # 6 px/frame
    frames = [source.acquire() for _ in range(12)]
    stack = np.stack([f.data for f in frames]).astype(float)
    field = np.stack([f.meta["true_field_px"] for f in frames]).astype(float)
    field[1::2, ..., 1] += 0.3  # every other frame misplaced along x
    measured = line_offsets(stack, field)[..., 1].mean(axis=1)
    # what all frames share is not measurable: the gap between the two halves is (the last four: 40-60 % of
    # their view lies outside the first frame's)
    for frames_ in (slice(None), slice(8, None)):
        part = measured[frames_]
        gain = (part[0::2].mean() - part[1::2].mean()) / 0.3
        # the gap is 1 + 1/11 of the offset (each mean holds the other half's frames); the filtered mean is a little
        # blurred, which adds some (1.25 and 1.12 here); the unfiltered mean on the first frame's grid gave 0.66
        assert 0.85 < gain < 1.35, (frames_, measured.round(3))


def test_a_vibration_along_the_slow_axis_is_measured_in_bands_of_lines():
    """A vibration moves the content during the scan (the truth carries it): along y, faster than the
    trajectory's knots follow, it is measured band by band (8 lines) beyond the trajectory."""
    source = simulator_source(scan_time="pixel", shape=[128, 128], spacing_px=[14], seed=3,
                              noise={"kind": "poisson", "dose": 200.0},
                              vibration={"amplitude_px": [0.5, 0.0], "frequency_hz": 100.0},  # 39 lines a period
                              drift=[{"kind": "linear", "velocity_px_per_frame": [1.0, 1.7]}])
    frames = [source.acquire() for _ in range(8)]
    truth = np.stack([f.meta["true_field_px"] for f in frames])
    assert np.ptp(truth[..., 0].mean(axis=2) - truth[..., 0].mean(axis=(1, 2))[:, None]) > 0.9  # it is in the truth
    plain = df.register_series(frames, model="scan", line_jitter=False)
    measured = df.register_series(frames, model="scan")
    assert field_rmse(measured.field, truth) < 0.4 * field_rmse(plain.field, truth), (
        field_rmse(plain.field, truth), field_rmse(measured.field, truth))


def test_template_passes_measure_every_frame_against_the_others_mean():
    """A refit against the other frames' mean (the first frame's own distortion measured like the others', with
    twice the knots) keeps the field as accurate as the first fit on smooth drift."""
    frames, truth = _series([2.0, -1.5], snr=1.0, n=6)
    first = df.register_series(frames, model="scan", line_jitter=False)
    refit = df.register_series(frames, model="scan", line_jitter=False, template_passes=1, knots_per_frame=4)
    assert field_rmse(refit.field, truth) < 0.15, field_rmse(refit.field, truth)
    assert field_rmse(refit.field, truth) < field_rmse(first.field, truth) + 0.03


def test_strips_too_noisy_to_measure_fall_back_to_the_rigid_model_and_say_so():
    """Strips of 128 rows in 128² frames leave nothing to fit inside a frame; strips too noisy to be confident
    leave frames unmeasured: the registration says which, and uses the coarser model instead of failing."""
    frames, truth = _series([1.0, 0.5], snr=4.0, n=4)
    coarse = df.register_series(frames, model="scan", strip_rows=128)
    assert coarse.model == "rigid" and "the rigid model is used instead" in coarse.notes[0]
    assert field_rmse(coarse.field, truth) < 0.5
    noisy, truth = _series([1.0, 0.5], snr=0.05, n=4)
    reg = df.register_series(noisy, model="scan")
    assert any("could be measured" in note for note in reg.notes), reg.notes


def test_a_strip_the_lattice_leaves_ambiguous_is_decided_by_the_rigid_prior(monkeypatch):
    """In dark contrast, 64-row strips of 20 px cells cannot rule out a centred cell: every one is unconfident. Each
    is measured after the frame's rigid shift, so its answer near zero with rivals a cell away is the right one; without
    that, no strip counted and the series fell back to the rigid model."""
    from drift_framework import registration

    source = simulator_source(scan_time="pixel", shape=[128, 128], spacing_px=[20.0], contrast="dark", seed=1,
                              noise={"kind": "poisson", "dose": 10.0},
                              drift=[{"kind": "linear", "velocity_px_per_frame": [1.0, 1.73]},
                                     {"kind": "random-walk", "step_px_per_frame": 0.2}])
    frames = [source.acquire() for _ in range(8)]
    truth = np.stack([f.meta["true_field_px"] for f in frames])
    decided = df.register_series(frames, model="scan", strip_rows=64)
    assert decided.model == "scan" and not decided.notes, decided.notes
    assert field_rmse(decided.field, truth) < 0.2, field_rmse(decided.field, truth)
    monkeypatch.setattr(registration, "PRIOR_NEAR_PX", 0.0)  # confident strips only
    confident_only = df.register_series(frames, model="scan", strip_rows=64)
    assert confident_only.model == "rigid" and field_rmse(confident_only.field, truth) > 0.4


def test_a_serpentine_scan_is_timed_line_by_line_in_both_directions():
    """Odd lines scanned right to left: the simulator times each pixel so, the frames say so, and the scan model
    follows; assumed raster, the in-line drift of odd lines comes out reversed."""
    source = simulator_source(scan_time="pixel", shape=[128, 128], spacing_px=[14], serpentine=True, dwell_us=40.0,
                              noise={"kind": "gaussian", "snr": 4.0}, seed=4,
                              drift=[{"kind": "linear", "velocity_px_per_frame": [1.0, 3.0]}])
    frames = [source.acquire() for _ in range(5)]
    truth = np.stack([f.meta["true_field_px"] for f in frames])
    along = truth[0, 1, :, 1] - truth[0, 1, 0, 1]  # an odd line: its last pixel was scanned first
    assert along[-1] < along[0] - 0.005 and frames[0].meta["scan"]["serpentine"] is True
    followed = df.register_series(frames, model="scan", line_jitter=False)
    assert followed.timing.serpentine and field_rmse(followed.field, truth) < 0.15
    with pytest.raises(ValueError, match="serpentine=False contradicts"):
        df.register_series(frames, model="scan", serpentine=False)
    stack = np.stack([f.data for f in frames])
    raster = df.register_series(stack, model="scan", pixel_time_s=40e-6, line_jitter=False)
    serpentine = df.register_series(stack, model="scan", pixel_time_s=40e-6, serpentine=True, line_jitter=False)
    in_line = lambda reg: float(reg.field[0, 1, -1, 1] - reg.field[0, 1, 0, 1])  # noqa: E731  (odd line)
    assert in_line(serpentine) < 0 < in_line(raster)  # the truth's direction only with the scan's own timing
    assert abs(in_line(serpentine) - along[-1]) < 0.01


def test_the_strips_choose_the_knot_count_when_drift_changes_within_a_frame():
    """knots_per_frame='auto' (the default): drift that swings within a frame needs more knots than a steady one,
    and the strips left out of the fit say so."""
    source = simulator_source(scan_time="pixel", shape=[128, 128], spacing_px=[14], seed=5,
                              noise={"kind": "gaussian", "snr": 4.0},
                              drift=[{"kind": "linear", "velocity_px_per_frame": [1.0, 0.5]},
                                     {"kind": "sinusoidal", "amplitude_px": [1.5, 1.5], "period_frames": 1.5}])
    frames = [source.acquire() for _ in range(6)]
    truth = np.stack([f.meta["true_field_px"] for f in frames])
    fixed = df.register_series(frames, model="scan", knots_per_frame=2)
    chosen = df.register_series(frames, model="scan")
    assert fixed.knots_per_frame == 2 and chosen.knots_per_frame in (4, 8)
    assert field_rmse(chosen.field, truth) < 0.7 * field_rmse(fixed.field, truth)
    steady, steady_truth = _series([2.0, -1.5], n=6)
    assert field_rmse(df.register_series(steady, model="scan").field, steady_truth) < 0.15
