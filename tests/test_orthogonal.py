"""Scan rotation, scan-generator distortion and real strain in the simulator, and register_orthogonal: two series
scanned with perpendicular slow axes separate the scan's own distortion from the specimen's strain."""
import numpy as np
import pytest
from conftest import simulator_source
from scipy import ndimage
from scipy.spatial import cKDTree

import drift_framework as df
from drift_framework.orthogonal import turn_field
from drift_framework.registration import field_rmse

DISTORTION = {"slow_scale": 0.02, "shear_deg": 1.0}  # within what real scan generators show (0.4–3.6 %, ≤ 1.2°)


def _series(rotation, velocity, *, n=6, size=128, distortion=DISTORTION, strain=(0.0, 0.01, 0.0), contrast="bright",
            walk=0.05):
    source = simulator_source(scan_time="pixel", shape=[size, size], spacing_px=[14.0], rotation_deg=[20.0],
                              noise={"kind": "poisson", "dose": 20.0}, scan_distortion=distortion,
                              strain=list(strain), contrast=contrast, scan_rotation_deg=rotation, seed=5,
                              drift=[{"kind": "linear", "velocity_px_per_frame": velocity},
                                     {"kind": "random-walk", "step_px_per_frame": walk}])
    frames = [source.acquire() for _ in range(n)]
    return frames, np.stack([f.meta["true_field_px"] for f in frames])


def _lattice_distortion(average, columns, dark=False):
    from drift_bench.scan import lattice_distortion

    return lattice_distortion(average, columns, 14.0, dark)


def test_scan_rotation_turns_the_recorded_frame_and_the_drift_with_it():
    common = dict(shape=[96, 96], spacing_px=[16], rotation_deg=[10.0], lattice="perovskite", seed=3,
                  noise={"kind": "gaussian", "snr": 1e6})
    upright = simulator_source(**common).acquire().data
    for degrees in (90, 180, 270, -90):
        turned = simulator_source(scan_rotation_deg=degrees, **common).acquire().data
        assert np.abs(np.rot90(turned, degrees // 90) - upright).max() < 1e-4 * upright.max()
    # a specimen drift (1, 0) px/frame is seen along the turned frame's axes: (0, −1)
    source = simulator_source(scan_rotation_deg=90, drift=[{"kind": "linear", "velocity_px_per_frame": [1.0, 0.0]}],
                              **common)
    frames = [source.acquire() for _ in range(3)]
    np.testing.assert_allclose(frames[2].meta["true_offset_px"], [0.0, -2.0], atol=1e-9)


def test_scan_distortion_is_the_same_in_every_frame_and_real_strain_is_in_the_columns():
    frames, truth = _series(0, [0.0, 0.0], n=2, distortion=DISTORTION, strain=(0.0, 0.0, 0.0), walk=0.0)
    rows = np.arange(128) - 63.5
    np.testing.assert_allclose(truth[0, :, 5, 0], -0.02 * rows, atol=1e-5)
    np.testing.assert_allclose(truth[1, :, 5, 1], -np.tan(np.radians(1.0)) * rows, atol=1e-5)
    # the image shows the columns where the distortion puts them: 2 % further apart along y, sheared along x
    shown = _lattice_distortion(frames[0].data, frames[0].meta["true_columns_px"])
    np.testing.assert_allclose(shown, [[-0.02, 0.0], [-np.tan(np.radians(1.0)), 0.0]], atol=0.004)
    # a real strain moves the true columns themselves: the image shows no more than they are
    strained, _ = _series(0, [0.0, 0.0], n=1, distortion={"slow_scale": 0.0, "shear_deg": 0.0},
                          strain=(0.0, 0.01, 0.0), walk=0.0)
    np.testing.assert_allclose(_lattice_distortion(strained[0].data, strained[0].meta["true_columns_px"]),
                               np.zeros((2, 2)), atol=0.003)
    plain, _ = _series(0, [0.0, 0.0], n=1, distortion={"slow_scale": 0.0, "shear_deg": 0.0}, strain=(0, 0, 0), walk=0.0)
    spacing = lambda cols: np.median(cKDTree(cols).query(cols, 2)[0][:, 1])  # noqa: E731
    assert spacing(strained[0].meta["true_columns_px"]) > spacing(plain[0].meta["true_columns_px"])


def test_turn_field_turns_displacements_with_the_image():
    image = simulator_source(shape=[64, 64], spacing_px=[12], rotation_deg=[7.0], seed=1,
                             noise={"kind": "gaussian", "snr": 1e6}).acquire().data
    field = np.zeros((64, 64, 2))
    field[..., 0], field[..., 1] = 1.5, -0.5
    moved = ndimage.shift(image, field[0, 0], order=3, mode="nearest")  # content displaced by +field
    turned = turn_field(field, 1)
    np.testing.assert_allclose(turned[0, 0], [0.5, 1.5])
    back = df.registration.resample(np.rot90(moved)[None], turned[None])[0]
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(back[inner] - np.rot90(image)[inner]).max() < 0.02 * image.max()


@pytest.mark.parametrize("contrast", ["bright", "dark"])
def test_orthogonal_series_take_out_the_scan_distortion_and_keep_the_strain(contrast):
    first, truth_first = _series(0, [1.0, 1.5], contrast=contrast)
    second, truth_second = _series(90, [-1.2, 0.8], contrast=contrast)
    alone = df.register_series(first, model="scan")
    both = df.register_orthogonal(first, second)
    # each series alone cannot see its scan generator's error: the whole distortion stays in the field
    assert field_rmse(alone.field, truth_first) > 0.8
    assert field_rmse(both.first.field, truth_first) < 0.15
    assert field_rmse(both.second.field, truth_second) < 0.15
    # per line, what the first series' lines were displaced by: the distortion (less its mean)
    lines = np.arange(128) - 63.5
    expected = np.stack([-0.02 * lines, -np.tan(np.radians(1.0)) * lines], axis=1)
    middle = slice(16, -16)
    assert np.sqrt(np.mean((both.slow_scan_first[middle] - expected[middle]) ** 2)) < 0.15
    assert both.residual_px < 0.2 and both.average.shape == (128, 128)
    assert both.first.knots_per_frame == alone.knots_per_frame and both.second.knots_per_frame is not None
    # the real 1 % strain along x stays in the combined average; the distortion does not
    columns = first[0].meta["true_columns_px"]
    dark = contrast == "dark"
    assert np.abs(_lattice_distortion(alone.average, columns, dark)).max() > 0.015
    assert np.abs(_lattice_distortion(both.average, columns, dark)).max() < 0.003


def test_orthogonal_series_without_scan_distortion_lose_nothing():
    first, truth_first = _series(0, [1.0, 1.5], distortion={"slow_scale": 0.0, "shear_deg": 0.0}, n=5)
    second, _ = _series(90, [-1.2, 0.8], distortion={"slow_scale": 0.0, "shear_deg": 0.0}, n=5)
    alone = field_rmse(df.register_series(first, model="scan").field, truth_first)
    both = field_rmse(df.register_orthogonal(first, second).first.field, truth_first)
    assert both < alone + 0.03 and both < 0.15, (alone, both)


def test_orthogonal_series_of_different_areas_say_so():
    first, _ = _series(0, [1.0, 1.5], n=4)
    elsewhere = simulator_source(scan_time="pixel", shape=[128, 128], spacing_px=[11.0], rotation_deg=[47.0],
                                 noise={"kind": "poisson", "dose": 20.0}, scan_rotation_deg=90, seed=9,
                                 lattice="square", drift=[{"kind": "linear", "velocity_px_per_frame": [0.5, 0.5]}])
    both = df.register_orthogonal(first, [elsewhere.acquire() for _ in range(4)])
    assert both.notes and any("same area" in note for note in both.notes), both.notes
    good = df.register_orthogonal(first, _series(90, [-1.2, 0.8], n=4)[0])
    assert not good.notes, good.notes


def test_orthogonal_needs_perpendicular_scans_of_one_area():
    first, _ = _series(0, [1.0, 0.0], n=3, size=96)
    with pytest.raises(ValueError, match="rotation_deg must be 90 or 270"):
        df.register_orthogonal(first, first, rotation_deg=180)
    other, _ = _series(90, [1.0, 0.0], n=3, size=128)
    with pytest.raises(ValueError, match="same area"):
        df.register_orthogonal(first, other)


def test_drift_correct_orthogonal_writes_both_series_and_their_average(tmp_path):
    import hyperspy.api as hs
    from conftest import drift_cli

    first, truth_first = _series(0, [1.0, 1.5], n=5)
    second, _ = _series(90, [-1.2, 0.8], n=5)
    for name, frames in (("first", first), ("second", second)):
        raw = hs.signals.Signal2D(np.stack([f.data for f in frames]))
        raw.metadata.set_item("Acquisition_instrument.TEM.dwell_time", 2e-6)
        raw.save(tmp_path / f"{name}.hspy")
    res = drift_cli("correct", str(tmp_path / "first.hspy"), "-o", str(tmp_path / "out.hspy"), "-q",
                    "--orthogonal", str(tmp_path / "second.hspy"))
    assert res.returncode == 2 and "--orthogonal needs --model scan" in res.stderr and "Traceback" not in res.stderr
    res = drift_cli("correct", str(tmp_path / "first.hspy"), "-o", str(tmp_path / "second.hspy"), "-q",
                    "--model", "scan", "--orthogonal", str(tmp_path / "second.hspy"))
    assert res.returncode == 2 and "never writes over its input" in res.stderr
    res = drift_cli("correct", str(tmp_path / "first.hspy"), "-o", str(tmp_path / "out.hspy"), "-q",
                    "--model", "scan", "--orthogonal", str(tmp_path / "second.hspy"))
    assert res.returncode == 0, res.stderr
    field = np.moveaxis(hs.load(tmp_path / "out-field.hspy").data, 1, -1)
    assert field_rmse(field, truth_first) < 0.15
    average = hs.load(tmp_path / "out-average.hspy")
    assert average.data.shape == (128, 128) and average.metadata.drift_framework.second.endswith("second.hspy")
    assert hs.load(tmp_path / "out-second.hspy").data.shape == (5, 128, 128)
    assert "slow-scan distortion" in res.stdout
