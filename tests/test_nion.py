"""The Nion plug-in against Nion's own STEM simulator (nionswift-usim, headless): the per-device contract, the
axes and truth, a closed loop, a served microscope, Nion's DriftTracker in the benchmark, and the failure modes."""
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, drift_cli

import drift_framework as df
from drift_framework.assembly import build_hardware
from drift_framework.recipe import load_recipe
from drift_framework.testing import check_actuator, check_source

NION_SOURCE = {"plugin": "nion-scan", "connect": "usim", "size": [128, 128], "fov_nm": 32, "pixel_time_us": 1,
               "sample": "particles"}


def _recipe(actuator: str | None = None, **source) -> dict:
    recipe = {"name": "nion-test", "source": {**NION_SOURCE, **source}, "pipeline": "classical"}
    if actuator:
        recipe["actuator"] = {"plugin": actuator, "limits": {"max_step": 5.0, "travel": 50.0}}
    return recipe


def test_nion_components_are_listed_and_keep_the_device_contract():
    out = drift_cli("plugins")
    for name in ("nion-scan", "nion-stage", "nion-beam-shift", "nion-scan-offset"):
        assert name in out.stdout, name
    for kind in ("nion-stage", "nion-beam-shift", "nion-scan-offset"):
        source, actuator, _ = build_hardware(load_recipe(_recipe(kind)))
        try:
            assert actuator.units == "nm"
            check_actuator(actuator)  # a half-pixel move there and back
        finally:
            source.close()
    source, _, _ = build_hardware(load_recipe(_recipe()))
    frames = check_source(source)  # frames, clock, pixel size, metadata; closes usim
    assert frames[0].pixel_size_nm == pytest.approx(0.25) and frames[0].data.shape == (128, 128)
    assert frames[0].meta["nion"]["channel_name"] == "HAADF" and frames[1].time_s > frames[0].time_s


@pytest.mark.parametrize("kind, sign", [("nion-stage", -1), ("nion-beam-shift", 1), ("nion-scan-offset", 1)])
def test_nion_actuators_move_the_content_as_their_calibration_says_and_truth_follows(kind, sign):
    """Move each actuator by its calibration's worth of (3, −2) px: the frame's content moves by −(3, −2) px (a
    field-of-view move), the estimate and usim's truth agree within usim's whole-pixel rendering."""
    source, actuator, _ = build_hardware(load_recipe(_recipe(kind)))
    try:
        np.testing.assert_allclose(actuator.calibration, sign * 0.25 * np.eye(2))
        pipe = df.load_pipeline("classical")
        first = source.acquire()
        actuator.move_by(actuator.calibration @ np.array([3.0, -2.0]))
        moved = source.acquire()
        shift = pipe.estimate(first.data, moved.data)
        np.testing.assert_allclose(shift.vector, [-3.0, 2.0], atol=0.6)
        np.testing.assert_allclose(moved.meta["true_offset_px"], [-3.0, 2.0], atol=0.6)
    finally:
        source.close()


@pytest.mark.slow
def test_nion_closed_loop_recipe_holds_usim_drift_to_a_pixel(tmp_path):
    """The shipped recipe: 60 frames on usim drifting 0.3 nm/s, classical + Kalman on the beam shift."""
    out = tmp_path / "nion.h5"
    res = drift_cli("run", str(ROOT / "configs" / "examples" / "nion-usim.yaml"), "-o", str(out), "-q")
    assert res.returncode == 0, res.stderr
    run = df.read_run(out)
    summary = run.summary
    assert summary["steps"] == 60 and summary["corrected"] >= 55
    assert summary["residual_rms_px"] <= 1.0
    assert summary["uncorrected_rms_px"] >= 10 * summary["residual_rms_px"]
    assert run.attrs["actuator"] == "nion-beam-shift" and run.attrs["actuator_units"] == "nm"


def test_nion_microscope_served_over_pyro5_is_corrected_from_another_process(tmp_path):
    """drift serve runs usim next to Nion's API; drift run elsewhere drives it through the pyro5 components."""
    served = tmp_path / "served.yaml"
    # ~1 px of drift per frame: the engine's probe corrections are then larger than usim's whole-pixel rendering
    served.write_text(yaml.safe_dump({**_recipe("nion-beam-shift", drift_nm_per_s=[1.0, 0.8]), "name": "served"}))
    exe = Path(sys.executable).with_name("drift")
    server = subprocess.Popen([str(exe), "serve", str(served), "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        uri = re.search(r"PYRO:\S+", line)
        assert uri, line + server.stderr.read()
        client = {"name": "remote-nion", "source": {"plugin": "pyro5", "uri": uri.group(0)}, "pipeline": "classical",
                  "controller": {"plugin": "kalman"},
                  "actuator": {"plugin": "pyro5", "uri": uri.group(0), "limits": {"max_step": 5.0, "travel": 50.0}},
                  "run": {"frames": 25, "output": str(tmp_path / "remote.h5")}}
        summary = df.run(client)
        assert summary.stop_reason == "completed" and summary.corrected >= 20
        assert summary.residual_rms_px <= 1.0 and summary.uncorrected_rms_px >= 5 * summary.residual_rms_px
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_nion_failure_modes_give_one_clear_message(tmp_path, monkeypatch):
    """A busy scan device, an actuator out of range, no instrument in the process, Nion's packages missing."""
    from drift_nion.devices import NionError, _require_nion

    source, actuator, _ = build_hardware(load_recipe(_recipe("nion-stage")))
    try:
        source.scan.start_playing()
        for _ in range(100):
            if source.scan.is_playing:
                break
            time.sleep(0.05)
        with pytest.raises(NionError, match="busy"):
            source.acquire()
        source.scan.stop_playing(sync_timeout=10)
        for _ in range(100):
            if not source.scan.is_playing:
                break
            time.sleep(0.05)
        assert source.acquire().data.shape == (128, 128)
        with pytest.raises(NionError, match="beyond its range"):
            actuator.move_by([2000.0, 0.0])
    finally:
        source.close()
    recipe = tmp_path / "far.yaml"
    far = _recipe("nion-stage")
    far["actuator"] = {"plugin": "nion-stage", "range_nm": 0.1, "limits": {"max_step": 5.0, "travel": 50.0}}
    far["source"]["drift_nm_per_s"] = [2.0, 0.0]
    far["controller"] = {"plugin": "kalman"}
    far["run"] = {"frames": 8, "output": str(tmp_path / "far.h5"), "check_calibration": False}
    recipe.write_text(yaml.safe_dump(far))
    res = drift_cli("run", str(recipe), "-q")
    assert res.returncode == 2 and "beyond its range" in res.stderr and "Traceback" not in res.stderr
    assert df.read_run(tmp_path / "far.h5").finished  # the run file is closed and readable
    inprocess = tmp_path / "inprocess.yaml"
    inprocess.write_text(yaml.safe_dump({**_recipe(), "source": {**NION_SOURCE, "connect": "in-process"}}))
    res = drift_cli("validate", str(inprocess))
    assert res.returncode == 2 and "no Nion instrument" in res.stderr and "Traceback" not in res.stderr
    monkeypatch.setitem(sys.modules, "nion.instrumentation.scan_base", None)  # as if Nion were not installed
    with pytest.raises(NionError, match=r"drift_framework\[nion\]"):
        _require_nion()


@pytest.mark.slow
def test_nion_bench_compares_with_nions_drift_tracker_on_identical_drift(tmp_path):
    res = drift_cli("bench", "nion", "--methods", "none,nion-drifttracker,classical", "--frames", "18",
                    "--out", str(tmp_path), timeout=600)
    assert res.returncode == 0, res.stderr
    table = (tmp_path / "nion.md").read_text()
    rows = {m: float(v) for m, v in re.findall(r"^\| (\S+) \| ([\d.]+) \|", table, re.M)}
    assert set(rows) == {"none", "nion-drifttracker", "classical"}
    assert rows["classical"] < rows["nion-drifttracker"] < rows["none"], rows
    assert rows["classical"] <= 1.0 and "Regenerate: `drift bench nion" in table
