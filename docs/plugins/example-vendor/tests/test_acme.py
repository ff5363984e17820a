"""The plugin's own tests: components behave, the entry point is found, a recipe runs."""
from pathlib import Path

import numpy as np
from drift_acme.plugin import AcmeCamera, AcmeStage

import drift_framework as df

HERE = Path(__file__).parent.parent


def test_camera_frames_are_float_images_with_pixel_size():
    cam = AcmeCamera({"address": "acme://test-a", "size": 64}, None)
    frame = cam.acquire()
    assert frame.data.shape == (64, 64) and frame.data.dtype == np.float32
    assert frame.pixel_size_nm == 0.025


def test_stage_moves_the_field_of_view_by_its_calibration():
    cam = AcmeCamera({"address": "acme://test-b", "size": 96}, None)
    stage = AcmeStage({"address": "acme://test-b"}, None)
    a = cam.acquire()
    stage.move_by(stage.calibration @ np.array([2.0, -1.0]))  # field of view +2, −1 px
    b = cam.acquire()
    s = df.load_pipeline("classical").estimate(a, b)
    # the content moves opposite to the field of view (plus 0.4 px of specimen drift per axis)
    np.testing.assert_allclose(s.vector, [-2.0 + 0.4, 1.0 + 0.4], atol=0.05)


def test_registered_through_the_entry_point():
    reg = df.get_registry()
    assert reg.get("source", "acme-camera").package == "drift-acme"
    assert reg.get("actuator", "acme-stage").package == "drift-acme"


def test_recipe_runs(tmp_path):
    recipe = df.load_recipe(HERE / "acme.yaml")
    summary = df.run(recipe, output=tmp_path / "acme.h5")
    assert summary.steps == 40 and summary.corrected >= 35


def test_components_keep_drift_frameworks_contracts():
    """The same contract checks every built-in component passes (drift_framework.testing)."""
    from drift_framework.testing import check_component

    check_component("source", AcmeCamera({"address": "acme://contract", "size": 64}, None))
    check_component("actuator", AcmeStage({"address": "acme://contract"}, None))
