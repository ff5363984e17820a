"""The engine's step policy, object by object, without a microscope or a pipeline."""
import numpy as np
import pytest

import drift_framework as df
from drift_framework.limits import Limits
from drift_framework.policy import Actuation, CorrectionSchedule, ReferenceStrategy, Suspender
from drift_framework.recipe import RUN_SCHEMA
from drift_framework.settings import RunSettings, TrackingRegion
from drift_framework.steps import Status, Step, step_columns
from drift_framework.store import STATUS, STEP_FIELDS


def _frame(index, shape=(100, 100)):
    return df.Frame(np.zeros(shape, np.float32), index=index, time_s=float(index))


@pytest.mark.parametrize("mode, renewed", [("first", []), ("previous", [1, 2, 3, 4, 5, 6]),
                                           ("rolling", [3, 6]), ("keyframe", [5])])
def test_reference_strategy_renews_as_its_mode_says(mode, renewed):
    strategy = ReferenceStrategy(mode, rolling_every=3, keyframe_shift=0.2)
    strategy.take(_frame(0), np.zeros(2))
    got = [i for i in range(1, 7) if strategy.after_good(_frame(i), np.array([4.0 * i, 0.0]))]
    assert got == renewed
    assert strategy.index == (renewed[-1] if renewed else 0)
    np.testing.assert_array_equal(strategy.offset, [4.0 * strategy.index, 0.0])


def test_suspender_pauses_holds_and_resumes():
    s = Suspender(pause_after=2, resume_after=2)
    assert s.bad("blank") == "blank" and not s.paused
    assert s.bad("blank") == "paused: blank" and s.paused
    assert s.bad("blank") == "blank"           # paused once, not again
    assert s.good() == (False, "held: 1 good estimate(s) of 2")
    assert s.bad("blank") == "blank" and s.good_in_row == 0
    assert s.good() == (False, "held: 1 good estimate(s) of 2")
    assert s.good() == (True, "resumed") and not s.paused
    assert s.good() == (True, "") and s.bad_in_row == 0


def test_schedule_every_n_frames_and_seconds_and_a_clock_that_goes_back():
    every_third = CorrectionSchedule(every=3)
    assert [i for i in range(10) if every_third.due(i, i * 1.0)] == [0, 3, 6, 9]
    timed = CorrectionSchedule(every=1, every_s=2.5)
    assert [i for i in range(10) if timed.due(i, i * 1.0)] == [0, 3, 6, 9]
    restarted = CorrectionSchedule(every=1, every_s=100.0)
    assert restarted.due(0, 500.0) and not restarted.due(1, 501.0)
    assert restarted.due(2, 1.0)                # the clock went back: not held


class _Recorder:
    units, calibration = "nm", np.eye(2)

    def __init__(self, log):
        self.log = log

    def move_by(self, command):
        self.log.append(("move", tuple(command)))


class _Follow:
    def update(self, time_s, drift_px, sigma_px, fov_px, next_time_s):
        return np.asarray(drift_px, float)

    def reset(self):
        pass


def test_actuation_journals_before_moving_clips_and_tracks_the_delayed_field_of_view():
    log = []
    act = Actuation(_Recorder(log), _Follow(), Limits(max_step=1.0, travel=10.0), 2 * np.eye(2), delay_frames=1,
                    journal=lambda index, command: log.append(("journal", index, tuple(command))))
    sent = act.correct(0, 0.0, np.array([3.0, 0.0]), 0.1, 1.0)
    assert sent.clipped and np.allclose(sent.requested, [6.0, 0.0]) and np.allclose(sent.command, [1.0, 0.0])
    assert log == [("journal", 0, (1.0, 0.0)), ("move", (1.0, 0.0))]   # recorded first, then moved
    np.testing.assert_allclose(act.fov, [0.5, 0.0])                    # px: command / calibration
    np.testing.assert_allclose(act.seen_fov(1), [0.0, 0.0])            # the lag: frame 1 does not show it yet
    np.testing.assert_allclose(act.seen_fov(2), [0.5, 0.0])


def test_run_settings_mirror_the_schema_and_are_frozen():
    import dataclasses

    assert [f.name for f in dataclasses.fields(RunSettings)] == list(RUN_SCHEMA)
    defaults = RunSettings.from_mapping({})
    assert all(getattr(defaults, k) == p.default for k, p in RUN_SCHEMA.items())
    s = RunSettings.from_mapping({"frames": 7, "tracking_region": {"size_px": 32, "position": None, "per_frame": 2}})
    assert s.frames == 7 and s.tracking_region == TrackingRegion(32, None, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.frames = 8  # type: ignore[misc]


def test_the_store_columns_and_status_names_come_from_step():
    assert list(STEP_FIELDS) == list(step_columns())
    assert {"shift", "sigma", "confidence", "offset", "command", "region"} <= set(STEP_FIELDS)
    assert "message" not in STEP_FIELDS
    assert STATUS == {0: "reference", 1: "corrected", 2: "measured", 3: "low-confidence", 4: "bad-frame",
                      5: "held", 6: "frame"}
    row = Step(3, 1.5, Status.CORRECTED, df.Shift(0.1, 0.2, 0.01, 0.9), clipped=True).row()
    assert set(row) == set(STEP_FIELDS) and row["status"] == 1 and row["clipped"] == 1
    assert row["shift"] == (0.1, 0.2) and row["confidence"] == 0.9


def _loop(gain, frames=14, drift=(0.4, -0.3), noise=0.02, seed=0):
    """A loop without a microscope: the content drifts steadily, the field of view moves by ``gain`` × the commanded
    move (the identity when the calibration is right), the check watches, and probes limit the commands."""
    from drift_framework.policy import CalibrationCheck

    rng = np.random.default_rng(seed)
    check, true_view, fov, drift = CalibrationCheck(), np.zeros(2), np.zeros(2), np.asarray(drift, float)
    specimen = np.zeros(2)
    for k in range(frames):
        offset = specimen - true_view + rng.normal(0, noise, 2)
        check.observe(offset, fov, noise * np.sqrt(2), float(k))
        if check.failure():
            break
        if k >= 1:  # follow the measured drift, as the controllers do
            move = offset + 0.0
            cap = check.probe(1.0)
            if cap is not None and np.hypot(*move) > cap:
                move = move * cap / np.hypot(*move)
            fov, true_view = fov + move, true_view + np.asarray(gain) @ move
        specimen = specimen + drift
    return check, k


def test_calibration_check_proves_a_right_calibration_and_then_lifts_the_probe_limit():
    check, _ = _loop(np.eye(2))
    assert check.proven and check.failure() is None and check.probe(1.0) is None


@pytest.mark.parametrize("gain", [-np.eye(2), [[0, -1], [1, 0]], [[0, 1], [1, 0]], 10 * np.eye(2)],
                         ids=["sign", "rotated 90°", "mirrored", "10× too large"])
def test_calibration_check_catches_a_wrong_calibration_within_a_few_frames(gain):
    check, frame = _loop(np.asarray(gain, float))
    message = check.failure()
    assert message is not None and ("their own size" in message or "its own size" in message)
    assert frame <= 6 and not check.proven


def test_calibration_check_probes_are_small_until_proven():
    from drift_framework.policy import CalibrationCheck

    check = CalibrationCheck()
    assert check.probe(1.0) == CalibrationCheck.PROBE_PX        # before any drift was seen
    check.observe(np.zeros(2), np.zeros(2), 0.01, 0.0)
    check.observe(np.array([2.0, 0.0]), np.zeros(2), 0.01, 1.0)  # a fast drift: 2 px per second
    assert check.probe(1.0) == pytest.approx(1.0)               # half of it for the first probes
    assert check.probe(0.25) == CalibrationCheck.PROBE_PX       # the drift over a short interval is small
