import re

import numpy as np
import pytest
from conftest import drift_cli

import drift_framework as df
from drift_framework.calibration import calibrate, fit_calibration, read_calibration

RECIPE = """\
name: cal
source: {plugin: simulator, shape: [128, 128], spacing_px: 10, noise: {kind: gaussian, snr: 2.0},
         drift: [{kind: linear, velocity_px_per_frame: [0.1, 0.05]}], seed: 1}
pipeline: classical
controller: {plugin: kalman}
actuator:
  plugin: simulated-stage
  rotation_deg: 30
  scale_nm_per_px: 0.036
  limits: {max_step: 0.3, travel: 100}
run: {frames: 30}
"""


def test_calibration_recovers_rotation_and_scale(tmp_path):
    (tmp_path / "cal.yaml").write_text(RECIPE)
    cal = calibrate(df.load_recipe(tmp_path / "cal.yaml"))
    assert cal.rotation_deg == pytest.approx(30.0, abs=0.5)
    assert cal.scale == pytest.approx(0.036, rel=0.01)  # 1.2 × the 0.03 nm pixel
    assert cal.residual_px < 0.1 and abs(cal.shear) < 0.01


def test_fit_recovers_shear_and_ignores_linear_drift():
    rng = np.random.default_rng(0)
    c_true = np.array([[2.0, 0.3], [-0.4, 1.5]])  # units per px, with shear
    m = np.linalg.inv(c_true)
    p = rng.uniform(-5, 5, (30, 2))
    t = np.arange(30.0)
    offsets = -(p @ m.T) + np.outer(t, [0.05, -0.02]) + rng.normal(0, 0.01, (30, 2))
    cal = fit_calibration(p, offsets, t)
    np.testing.assert_allclose(cal.as_array(), c_true, rtol=0.02, atol=0.02)


def test_calibrate_command_writes_a_file_recipes_use(tmp_path):
    (tmp_path / "cal.yaml").write_text(RECIPE)
    out = drift_cli("calibrate", str(tmp_path / "cal.yaml"), "-o", str(tmp_path / "stage.yaml"))
    assert out.returncode == 0, out.stderr
    rotation = float(re.search(r"rotation (-?[\d.]+)°", out.stdout).group(1))
    assert abs(rotation - 30.0) < 0.1, out.stdout  # the recipe's stage is turned by 30°
    matrix = read_calibration(tmp_path / "stage.yaml")
    text = RECIPE.replace("  limits:", "  calibration: {file: stage.yaml}\n  limits:")
    text = text.replace("run: {frames: 30}", f"run: {{frames: 30, output: {tmp_path / 'r.h5'}}}")
    (tmp_path / "run.yaml").write_text(text)
    summary = df.run(tmp_path / "run.yaml")
    np.testing.assert_allclose(df.read_run(summary.output).attrs["calibration"], matrix)
    assert summary.residual_rms_px < 0.3


def test_bad_calibration_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("matrix: [[1, 2], [2, 4]]\n")
    with pytest.raises(ValueError, match="invertible"):
        read_calibration(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="does not exist"):
        read_calibration(tmp_path / "missing.yaml")
