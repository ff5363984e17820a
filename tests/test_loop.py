import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import drift_cli
from hypothesis import given, settings
from hypothesis import strategies as st

import drift_framework as df
from drift_framework.limits import Limits
from drift_framework.store import StoreError, read_run


def _recipe(tmp_path, frames=30, controller="kalman", extra_run=""):
    path = tmp_path / "loop.yaml"
    path.write_text(f"""\
name: loop
source:
  plugin: simulator
  shape: [96, 96]
  spacing_px: 10
  noise: {{kind: gaussian, snr: 2.0}}
  drift: [{{kind: linear, velocity_px_per_frame: [0.4, -0.3]}}]
  seed: 3
pipeline: classical
controller: {{plugin: {controller}}}
actuator:
  plugin: simulated-stage
  limits: {{max_step: 2.0, travel: 50.0}}
run: {{frames: {frames}, output: {tmp_path / 'run.h5'}, save_frames: true{extra_run}}}
""")
    return path


def test_closed_loop_corrects_and_the_run_file_reads_back(tmp_path):
    summary = df.run(_recipe(tmp_path, frames=40))
    assert summary.steps == 40 and summary.stop_reason == "completed"
    assert summary.residual_rms_px < 0.3 < 5 < summary.uncorrected_rms_px
    run = read_run(summary.output, frames=True)
    assert run.finished and len(run) == 40
    assert run.frames.shape == (40, 96, 96)
    assert "pipeline:" in run.attrs["recipe"] or "classical" in run.attrs["recipe"]
    assert run.summary["steps"] == 40
    np.testing.assert_array_equal(run.steps["index"], np.arange(40))
    moved = run.steps["status"] == 1
    assert moved.sum() >= 35
    # measured offsets agree with the simulator's ground truth
    err = run.steps["offset"][moved] - run.steps["true_offset"][moved]
    assert np.sqrt(np.mean(np.sum(err ** 2, axis=1))) < 0.1


def test_open_loop_measures_without_moving(tmp_path):
    path = _recipe(tmp_path, frames=10, controller="none")
    text = path.read_text().replace("actuator:\n  plugin: simulated-stage\n  limits: {max_step: 2.0, travel: 50.0}\n", "")
    path.write_text(text)
    summary = df.run(path)
    run = read_run(summary.output)
    assert set(run.steps["status"][1:]) == {2}
    np.testing.assert_allclose(run.steps["command"], 0)


@settings(max_examples=200, deadline=None)
@given(max_step=st.floats(0.01, 100), travel=st.floats(0.01, 1000),
       commands=st.lists(st.tuples(st.floats() | st.floats(-1e6, 1e6),
                                   st.floats() | st.floats(-1e6, 1e6)), max_size=30))
def test_limits_never_exceeded(max_step, travel, commands):
    limits = Limits(max_step, travel)
    position = np.zeros(2)
    for c in commands:
        cmd, _ = limits.clip(np.array(c), position)
        assert np.all(np.isfinite(cmd))
        assert np.hypot(*cmd) <= max_step * (1 + 1e-9)
        position = position + cmd
        assert np.all(np.abs(position) <= travel * (1 + 1e-9))


class _Liar:
    """An estimator that reports wild shifts: the engine must clip every command."""

    def __init__(self, rng):
        self.rng = rng

    def estimate(self, cmap):
        return df.Shift(*self.rng.uniform(-1e4, 1e4, 2), sigma=0.01, confidence=1.0)


def test_engine_clips_adversarial_estimates(tmp_path):
    pipeline = df.load_pipeline("classical")
    pipeline.estimator = _Liar(np.random.default_rng(0))
    recipe = _recipe(tmp_path, frames=20, controller="pi", extra_run=", check_calibration: false")  # limits alone
    summary = df.run(recipe, pipeline=pipeline)
    run = read_run(summary.output)
    steps = np.hypot(*run.steps["command"].T)
    assert np.all(steps <= 2.0 + 1e-9)
    assert np.all(np.abs(np.cumsum(run.steps["command"], axis=0)) <= 50.0 + 1e-9)
    assert run.steps["clipped"].sum() >= 10


def test_bad_frames_are_skipped_and_never_move_the_actuator(tmp_path, monkeypatch):
    import drift_simulator.microscope as micro

    real = micro.VirtualMicroscope.acquire

    def acquire(self):
        frame = real(self)
        if frame.index in (3, 4):
            frame.data[:] = np.nan
        return frame

    monkeypatch.setattr(micro.VirtualMicroscope, "acquire", acquire)
    summary = df.run(_recipe(tmp_path, frames=8))
    run = read_run(summary.output)
    assert list(run.steps["status"][3:5]) == [4, 4]
    np.testing.assert_array_equal(run.steps["command"][3:5], 0)
    assert summary.skipped == 2


def test_observer_can_stop_the_run(tmp_path):
    class StopAt5:
        @df.hookimpl
        def drift_step_completed(self, run, step):
            if step.index == 5:
                run.request_stop("observer asked")

    summary = df.run(_recipe(tmp_path, frames=30), observers=[StopAt5()])
    assert summary.steps == 6 and summary.stop_reason == "observer asked"
    assert read_run(summary.output).finished


def _start_run(tmp_path, frames):
    path = _recipe(tmp_path, frames=frames)
    exe = os.path.join(os.path.dirname(sys.executable), "drift")
    return subprocess.Popen([exe, "run", str(path), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_steps(path, n, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if len(read_run(path)) >= n:
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError("the run did not progress")


def test_killed_run_leaves_a_readable_file(tmp_path):
    proc = _start_run(tmp_path, 5000)
    _wait_for_steps(tmp_path / "run.h5", 5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    run = read_run(tmp_path / "run.h5", frames=True)
    assert len(run) >= 5 and not run.finished
    np.testing.assert_array_equal(run.steps["index"], np.arange(len(run)))
    assert run.frames.shape[0] == len(run)


def test_ctrl_c_stops_cleanly_with_a_closed_file(tmp_path):
    proc = _start_run(tmp_path, 5000)
    _wait_for_steps(tmp_path / "run.h5", 5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err                 # the shell's convention for SIGINT
    assert "interrupted" in out
    run = read_run(tmp_path / "run.h5")
    assert run.finished and run.summary["stop_reason"] == "interrupted (Ctrl-C)"
    from drift_framework.report import report

    text = report(tmp_path / "run.h5", tmp_path / "report")["markdown"].read_text()
    assert "interrupted: interrupted (Ctrl-C)" in text and "finished" not in text.split("\n")[2]


def test_sigterm_stops_like_ctrl_c_and_exits_143(tmp_path):
    proc = _start_run(tmp_path, 5000)
    _wait_for_steps(tmp_path / "run.h5", 5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in out                  # the summary was printed
    run = read_run(tmp_path / "run.h5")
    assert run.finished and run.summary["stop_reason"] == "terminated (SIGTERM)" and len(run) >= 5


@pytest.mark.parametrize("held_s", [0.5, 8.0])
def test_a_reader_holding_the_run_file_open_does_not_fail_the_run(tmp_path, held_s):
    """A viewer (another process) may hold HDF5's shared lock when the run ends: the writer waits for it, or
    after a few seconds marks the file finished without the lock; the run never fails on it (CI: drift view)."""
    from drift_framework.store import RunWriter

    path = tmp_path / "held.h5"
    writer = RunWriter(path, frame_shape=(32, 32))
    writer.append({}, np.zeros((32, 32)))
    reader = subprocess.Popen([sys.executable, "-c", f"""
import sys, time, h5py
f = h5py.File({str(path)!r}, "r", libver="latest", swmr=True)
print("open", flush=True)
time.sleep({held_s})
f.close()
"""], stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "open"
    writer.append({}, np.ones((32, 32)))
    writer.close({"stop_reason": "completed"})
    reader.wait(timeout=30)
    run = read_run(path, frames=True)
    assert run.finished and run.summary["stop_reason"] == "completed" and len(run) == 2
    assert np.all(run.frames[1] == 1)


def test_an_existing_run_file_is_kept_unless_overwrite_is_asked(tmp_path):
    path = _recipe(tmp_path, frames=3)
    first = df.run(path)
    before = (tmp_path / "run.h5").read_bytes()
    with pytest.raises(StoreError, match="exists and is kept"):
        df.run(path)
    assert (tmp_path / "run.h5").read_bytes() == before
    out = drift_cli("run", str(path), "-q")
    assert out.returncode == 2 and "exists and is kept" in out.stderr and "Traceback" not in out.stderr
    assert drift_cli("run", str(path), "-q", "--overwrite").returncode == 0
    assert read_run(first.output).finished


def test_suspender_pauses_after_bad_estimates_and_resumes(tmp_path, monkeypatch):
    import drift_simulator.microscope as micro

    real = micro.VirtualMicroscope.acquire

    def acquire(self):
        frame = real(self)
        if 5 <= frame.index < 12:  # seven unusable frames (beam blanked)
            frame.data[:] = 0.0
        return frame

    monkeypatch.setattr(micro.VirtualMicroscope, "acquire", acquire)
    path = _recipe(tmp_path, frames=25, extra_run=", pause_after_bad: 3, resume_after_good: 2")
    summary = df.run(path)
    run = read_run(summary.output)
    status = run.steps["status"]
    assert list(status[5:12]) == [4] * 7                    # bad frames: recorded, never acted on
    np.testing.assert_array_equal(run.steps["command"][5:13], 0)
    assert status[12] == 5                                  # first good estimate: still paused (held)
    assert status[13] == 1 and status[14] == 1              # resumed after 2 good ones
    assert summary.pauses == 1 and summary.stop_reason == "completed"


def test_run_stops_when_estimates_never_recover(tmp_path, monkeypatch):
    import drift_simulator.microscope as micro

    real = micro.VirtualMicroscope.acquire

    def acquire(self):
        frame = real(self)
        if frame.index >= 3:
            frame.data[:] = np.nan
        return frame

    monkeypatch.setattr(micro.VirtualMicroscope, "acquire", acquire)
    summary = df.run(_recipe(tmp_path, frames=40, extra_run=", stop_after_bad: 6"))
    assert summary.steps == 9 and "6 bad estimates in a row" in summary.stop_reason
    assert read_run(summary.output).finished


def test_keyframe_reference_follows_large_offsets(tmp_path):
    path = _recipe(tmp_path, frames=40, controller="none", extra_run=", reference: keyframe, keyframe_shift: 0.03")
    text = path.read_text().replace("actuator:\n  plugin: simulated-stage\n  limits: {max_step: 2.0, travel: 50.0}\n", "")
    path.write_text(text)
    summary = df.run(path)
    run = read_run(summary.output)
    err = run.steps["offset"][1:] - run.steps["true_offset"][1:]
    assert np.abs(run.steps["true_offset"][-1]).max() > 10      # far beyond one keyframe distance (2.9 px)
    assert len(set(np.round(run.steps["offset"][:, 0] - run.steps["shift"][:, 0], 6))) > 3  # several keyframes
    assert np.sqrt(np.mean(np.sum(err ** 2, axis=1))) < 0.1    # offsets carried across keyframes


def test_correction_every_t_seconds(tmp_path):
    frame_time = 96 * 96 * 2e-6
    summary = df.run(_recipe(tmp_path, frames=20, extra_run=f", correct_every_s: {3.5 * frame_time}"))
    run = read_run(summary.output)
    assert list(np.nonzero(run.steps["status"] == 1)[0]) == [1, 5, 9, 13, 17]


def test_tracking_region_schedule_keeps_frames_still(tmp_path):
    path = _recipe(tmp_path, frames=40, extra_run=", reference: first, tracking_region: {size_px: 48, per_frame: 2}")
    summary = df.run(path)
    run = read_run(summary.output, frames=True)
    assert summary.steps == 40 and len(run) == 120
    np.testing.assert_array_equal(run.steps["region"][:6], [0, 1, 1, 0, 1, 1])
    frames = run.steps["region"] == 0
    assert set(run.steps["status"][frames]) == {6} and run.frames.shape == (120, 96, 96)
    assert "tracking region 48 px" in run.attrs["schedule"]
    region = ~frames
    err = run.steps["offset"][region][20:] - run.steps["true_offset"][region][20:]
    assert np.sqrt(np.mean(np.sum(err ** 2, axis=1))) < 0.2          # the sub-scans measure the drift …
    assert summary.residual_rms_px < 0.3 < summary.uncorrected_rms_px  # … and keep the frames still


def test_tracking_region_needs_a_source_that_can_scan_regions(tmp_path):
    from drift_framework.assembly import build_hardware

    class FramesOnly:
        def __init__(self, inner):
            self.inner = inner

        def acquire(self):
            return self.inner.acquire()

        def close(self):
            self.inner.close()

    path = _recipe(tmp_path, frames=5, extra_run=", tracking_region: {size_px: 48}")
    recipe = df.load_recipe(path)
    source, actuator, _ = build_hardware(recipe)
    with pytest.raises(ValueError, match="cannot acquire regions"):
        df.run(recipe, source=FramesOnly(source), actuator=actuator)
    with pytest.raises(ValueError, match="does not fit"):
        df.run(_recipe(tmp_path, frames=5, extra_run=", tracking_region: {size_px: 200}"))


def test_a_clock_that_goes_backwards_does_not_hold_corrections(tmp_path):
    """A restarted microscope counts time from zero again; corrections must go on."""
    from drift_framework.assembly import build_hardware

    class Restarted:
        def __init__(self, inner):
            self.inner = inner

        def acquire(self):
            frame = self.inner.acquire()
            if frame.index >= 6:
                frame.time_s -= 1000.0
            return frame

        def __getattr__(self, name):
            return getattr(self.inner, name)

    recipe = df.load_recipe(_recipe(tmp_path, frames=12, extra_run=", correct_every_s: 0.001"))
    source, actuator, _ = build_hardware(recipe)
    run = read_run(df.run(recipe, source=Restarted(source), actuator=actuator).output)
    assert set(run.steps["status"][6:]) == {1}


def test_every_command_is_journaled_before_the_actuator_moves(tmp_path):
    """The run file holds each command before the hardware gets it: a crash mid-move still shows what was sent."""
    from drift_framework.assembly import build_hardware

    recipe = df.load_recipe(_recipe(tmp_path, frames=12))
    source, stage, _ = build_hardware(recipe)
    out = tmp_path / "run.h5"

    class Checked:
        units, calibration = stage.units, stage.calibration

        def __init__(self):
            self.moves = 0

        def move_by(self, command):
            journal = read_run(out).journal
            assert len(journal["index"]) == self.moves + 1          # this command is already on disk
            np.testing.assert_allclose(journal["command"][-1], command)
            self.moves += 1
            stage.move_by(command)

    actuator = Checked()
    run = read_run(df.run(recipe, source=source, actuator=actuator).output)
    corrected = run.steps["status"] == df.Status.CORRECTED
    assert actuator.moves == corrected.sum() >= 8
    np.testing.assert_array_equal(run.journal["index"], run.steps["index"][corrected])
    np.testing.assert_allclose(run.journal["command"], run.steps["command"][corrected])


def _rotation(deg):
    t = np.radians(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


@settings(max_examples=12, deadline=None, derandomize=True)
@given(angle=st.floats(90, 270), mirrored=st.booleans(), scale=st.sampled_from([1.0, 10.0]))
def test_a_wrong_calibration_never_pushes_the_view_away(tmp_path_factory, angle, mirrored, scale):
    """The engine uses a calibration rotated by 90–270°, maybe mirrored, maybe 10× too large; the stage is the
    real one. Corrections must stop before the view ends more than a few px beyond where no correction leaves it
    (two probes of 0.25 px: 5 px when the calibration is 10× too large)."""
    from drift_framework.assembly import build_hardware

    tmp_path = tmp_path_factory.mktemp("wrong")
    recipe = df.load_recipe(_recipe(tmp_path, frames=40))
    source, stage, _ = build_hardware(recipe)
    wrong = stage.calibration @ _rotation(angle) @ (np.diag([1.0, -1.0]) if mirrored else np.eye(2)) * scale
    recipe.calibration = {"matrix": wrong.tolist(), "rotation_deg": 0.0, "scale": None, "file": None}
    summary = df.run(recipe, source=source, actuator=stage)
    run = read_run(summary.output)
    view, uncorrected = np.hypot(*run.steps["true_offset"][-1]), np.hypot(*run.steps["true_drift"][-1])
    assert view <= uncorrected + (5.5 if scale > 1 else 3.0), summary.stop_reason
    if not summary.stop_reason.startswith("completed"):
        assert "calibration check failed" in summary.stop_reason and "actuator.calibration.matrix" in summary.stop_reason
        assert run.steps["status"][-1] == df.Status.HELD and not run.steps["command"][-1].any()


def test_a_wrong_calibration_sign_ends_the_run_with_a_clear_non_zero_exit(tmp_path):
    path = _recipe(tmp_path, frames=40)
    text = path.read_text().replace("limits: {max_step: 2.0, travel: 50.0}",
                                    "limits: {max_step: 2.0, travel: 50.0}\n  calibration: {scale: -0.03}")
    path.write_text(text.replace("calibration: {scale: -0.03}", "calibration: {matrix: [[-0.03, 0], [0, -0.03]]}"))
    out = drift_cli("run", str(path), "-q")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "calibration check failed" in out.stderr and "drift calibrate" in out.stderr
    run = read_run(tmp_path / "run.h5")
    assert run.finished and np.hypot(*run.steps["true_offset"][-1]) < np.hypot(*run.steps["true_drift"][-1]) + 3


def test_a_right_calibration_is_proven_on_probes_and_then_trusted(tmp_path):
    summary = df.run(_recipe(tmp_path, frames=40))
    run = read_run(summary.output)
    assert summary.stop_reason == "completed" and summary.residual_rms_px < 0.3
    first = np.nonzero(run.steps["status"] == df.Status.CORRECTED)[0]
    assert np.hypot(*run.steps["command"][first[0]]) < 0.25 * 0.0312  # a probe: at most 0.25 px worth


def test_saturated_frames_are_flagged_and_never_acted_on(tmp_path, monkeypatch, caplog):
    import drift_simulator.microscope as micro

    real = micro.VirtualMicroscope.acquire

    def acquire(self):
        frame = real(self)
        if frame.index in (4, 5):  # the detector saturates: 30 % of the pixels at a ceiling
            frame.data[:] = np.minimum(frame.data, np.quantile(frame.data, 0.7))
        return frame

    monkeypatch.setattr(micro.VirtualMicroscope, "acquire", acquire)
    summary = df.run(_recipe(tmp_path, frames=8))
    run = read_run(summary.output)
    assert list(run.steps["status"][4:6]) == [df.Status.LOW_CONFIDENCE] * 2
    np.testing.assert_array_equal(run.steps["command"][4:6], 0)
    assert "frame 4 is saturated" in caplog.text and "frame 5 is saturated" in caplog.text


@pytest.mark.parametrize("mode", ["new-reference", "pause"])
def test_a_restarted_microscope_starts_a_new_reference_or_pauses(tmp_path, mode):
    from drift_framework.assembly import build_hardware

    class RestartsAtFrame6:
        def __init__(self, inner):
            self.inner = inner

        def acquire(self):
            frame = self.inner.acquire()
            if frame.index == 6:
                frame.meta["session_break"] = "the microscope restarted"
            return frame

        def __getattr__(self, name):
            return getattr(self.inner, name)

    recipe = df.load_recipe(_recipe(tmp_path, frames=14, extra_run=f", on_session_break: {mode}"))
    source, actuator, _ = build_hardware(recipe)
    summary = df.run(recipe, source=RestartsAtFrame6(source), actuator=actuator)
    run = read_run(summary.output)
    assert run.steps["status"][6] == df.Status.REFERENCE and summary.session_breaks == 1
    after = list(run.steps["status"][7:10])
    assert after[:2] == ([df.Status.HELD] * 2 if mode == "pause" else after[:2]) and df.Status.HELD not in (
        after if mode == "new-reference" else [])
    assert summary.stop_reason == "completed"
