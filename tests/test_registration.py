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
    np.testing.assert_allclose(scan.shifts, scan.field.mean(axis=(1, 2)), atol=1e-4)
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
    assert hs.load(tmp_path / "out.hspy").metadata.drift_framework.model == "scan"
    with open(tmp_path / "out.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["frame"]) for r in rows] == [0, 1, 2, 3, 4] and float(rows[0]["dy_px"]) == pytest.approx(
        field[0, 0].mean(), abs=1e-3)
