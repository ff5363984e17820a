"""Feed-forward inside the frame (run.scan_ramp) and the trajectory prior that decides ambiguous estimates."""
import math

import numpy as np
import pytest
import yaml
from conftest import drift_cli

import drift_framework as df
from drift_framework.assembly import build_component, build_hardware, build_source
from drift_framework.policy import choose_by_trajectory
from drift_framework.recipe import RecipeError, load_recipe, validate_component
from drift_framework.registration import field_rmse, register_series
from drift_framework.trajectory import DriftTrack
from drift_framework.types import AMBIGUOUS_CONFIDENCE, BuildContext, Frame, Shift
from drift_framework.yamldoc import YamlDoc


class TruthRecorder:
    """A frame source around the simulator that keeps each frame's in-frame distortion: the RMS of the true
    per-pixel displacement about its mean (a frame scanned as a still snapshot has none)."""

    def __init__(self, source):
        self.source, self.distortion = source, []

    def acquire(self):
        frame = self.source.acquire()
        field = frame.meta["true_field_px"]
        deviation = field - field.mean(axis=(0, 1))
        self.distortion.append(float(np.sqrt(np.mean(np.sum(deviation ** 2, axis=-1)))))
        return frame

    def close(self):
        self.source.close()


def _recipe(tmp_path, *, ramp, controller="kalman", actuator="simulated-beam-shift", rate=2.0, frames=30,
            size=128, max_px_per_frame=4.0):
    angle = math.radians(30)
    run = {"frames": frames, "output": str(tmp_path / f"ramp-{ramp}.h5"), "reference": "keyframe",
           "keyframe_shift": 0.03}
    if ramp:
        run["scan_ramp"] = {"max_px_per_frame": max_px_per_frame}
    return {"name": "feed-forward",
            "source": {"plugin": "simulator", "scan_time": "pixel", "shape": [size, size], "spacing_px": [14.0],
                       "noise": {"kind": "poisson", "dose": 10.0}, "seed": 3,
                       "drift": [{"kind": "linear", "velocity_px_per_frame": [rate * math.sin(angle),
                                                                              rate * math.cos(angle)]},
                                 {"kind": "random-walk", "step_px_per_frame": 0.05}]},
            "pipeline": "classical", "controller": {"plugin": controller},
            "actuator": {"plugin": actuator, "limits": {"max_step": 5.0, "travel": 30.0}}, "run": run}


def _run(recipe_dict, observers=(), messages=None):
    recipe = load_recipe(recipe_dict)
    source, actuator, _ = build_hardware(recipe)
    recorder = TruthRecorder(source)
    progress = (lambda step: messages.append(step.message)) if messages is not None else None
    summary = df.run(recipe, source=recorder, actuator=actuator, observers=observers, progress=progress)
    return summary, np.array(recorder.distortion), df.read_run(summary.output)


def test_a_scan_ramp_at_the_drift_rate_scans_drifting_content_as_if_it_stood_still():
    source = build_source("simulator", scan_time="pixel", shape=[64, 64], spacing_px=[10.0],
                          noise={"kind": "none"}, drift=[{"kind": "linear", "velocity_px_per_frame": [1.5, -2.0]}])
    beam = build_component(validate_component("actuator", {"plugin": "simulated-beam-shift"}, ("actuator",),
                                              YamlDoc("test")), BuildContext(source=source))
    bent = source.acquire().meta["true_field_px"]
    assert np.ptp(bent[..., 0]) > 1.4 and np.ptp(bent[..., 1]) > 1.9  # drift shears a plain scan
    beam.set_scan_ramp(np.array([1.5, -2.0]) / source.frame_time_s)
    frame = source.acquire()
    field = frame.meta["true_field_px"]
    assert np.ptp(field, axis=(0, 1)).max() < 1e-3  # the probe followed the specimen: one offset for every pixel
    # the ramp bends the raster about the frame's middle, so the frame's centre is where it was without one
    np.testing.assert_allclose(field.mean(axis=(0, 1)), bent.mean(axis=(0, 1)) + [1.5, -2.0], atol=1e-3)
    np.testing.assert_allclose(frame.meta["scan"]["ramp_px_per_s"], np.array([1.5, -2.0]) / source.frame_time_s)


def test_feed_forward_takes_the_drift_out_of_each_frame_in_the_closed_loop(tmp_path):
    summary, plain, _ = _run(_recipe(tmp_path, ramp=False))
    assert summary.residual_rms_px < 0.2  # centred, but still sheared by the drift during each frame
    assert plain[10:].mean() > 0.5
    summary, ramped, run = _run(_recipe(tmp_path, ramp=True))
    assert summary.stop_reason == "completed" and summary.residual_rms_px < 0.2
    assert np.sqrt(np.mean(ramped[10:] ** 2)) < 0.1  # the target at 2 px/frame
    # the ramp sent is the drift rate: 2 px per frame along 30°, in px/s over the frame interval
    period = float(np.median(np.diff(run.steps["time_s"])))
    sent = run.steps["ramp"][-1] * period
    np.testing.assert_allclose(sent, [2 * math.sin(math.radians(30)), 2 * math.cos(math.radians(30))], atol=0.1)


def test_the_scan_ramp_stays_within_its_limit_and_says_so(tmp_path):
    messages = []
    _, _, run = _run(_recipe(tmp_path, ramp=True, frames=15, max_px_per_frame=0.5), messages=messages)
    period = float(np.median(np.diff(run.steps["time_s"])))
    per_frame = np.hypot(*run.steps["ramp"].T) * period
    assert per_frame.max() <= 0.5 + 1e-6 and per_frame.max() > 0.49
    assert any("scan ramp clipped to 0.5 px/frame" in m for m in messages)


def test_the_scan_ramp_is_withdrawn_while_corrections_are_held(tmp_path):
    class PauseAt:
        @df.hookimpl
        def drift_step_completed(self, run, step):
            if step.index == 12:
                run.pause("the user paused")

    messages = []
    _, distortion, run = _run(_recipe(tmp_path, ramp=True, frames=20), observers=[PauseAt()], messages=messages)
    ramp = np.hypot(*run.steps["ramp"].T)
    assert ramp[8:13].min() > 0 and np.all(ramp[13:] == 0)
    assert "scan ramp withdrawn" in messages[13]
    assert distortion[-1] > 0.5  # a straight raster again: the drift shears the frames


def test_a_scan_ramp_needs_an_actuator_that_bends_the_scan(tmp_path):
    recipe = _recipe(tmp_path, ramp=True, actuator="simulated-stage")
    named = "the actuator 'simulated-stage' cannot bend the scan"
    with pytest.raises(RecipeError, match="run.scan_ramp") as err:
        df.run(recipe)
    assert named in str(err.value)
    assert not (tmp_path / "ramp-True.h5").exists()  # refused before anything ran
    path = tmp_path / "ramp.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = drift_cli("validate", str(path))
    assert result.returncode != 0 and named in result.stderr and "Traceback" not in result.stderr


def test_the_trajectory_decides_between_lattice_equivalent_candidates():
    # the data alone: (1, 1.7) px or a lattice vector away, the estimator prefers neither much
    shift = Shift(1.0, 1.7, sigma=0.05, confidence=0.2, candidates=((1.0, -12.3), (13.1, -5.1)))
    chose = choose_by_trajectory(shift, np.array([1.1, -12.0]), 0.4)
    assert (chose.dy, chose.dx) == (1.0, -12.3) and chose.confidence > 0.99
    assert (1.0, 1.7) in chose.candidates and chose.meta["chosen_by_trajectory"]
    confirmed = choose_by_trajectory(shift, np.array([0.9, 1.9]), 0.4)
    assert (confirmed.dy, confirmed.dx) == (1.0, 1.7) and confirmed.confidence > 0.99
    # a prediction as uncertain as the candidates are apart decides nothing: the answer stays below the gate
    vague = choose_by_trajectory(shift, np.array([1.0, -5.3]), 8.0)
    assert vague.confidence < 0.5
    # a prediction far from every candidate explains none of them
    assert choose_by_trajectory(shift, np.array([30.0, 30.0]), 0.4) is None
    # an ambiguous answer's confidence is held below 0.5; its probability against the rivals is the preference, and
    # what the trajectory cannot decide stays held
    held = Shift(1.0, 1.7, sigma=0.05, confidence=AMBIGUOUS_CONFIDENCE, meta={"p_right": 0.9},
                 candidates=((1.0, -12.3),))
    undecided = choose_by_trajectory(held, np.array([1.0, -5.3]), 8.0)
    assert (undecided.dy, undecided.dx) == (1.0, 1.7) and undecided.meta["p_right"] > 0.85
    assert undecided.confidence <= AMBIGUOUS_CONFIDENCE


def test_the_drift_track_predicts_in_frames_and_its_prior_bounds_the_first_step():
    track = DriftTrack(prior_px_per_frame=2.0)
    track.add(0.0, np.zeros(2), 0.0)  # the reference, before the frame interval is known
    assert track.predict(0.5) is None  # no interval yet: no prediction
    track.set_frame_interval(0.5)
    rng = np.random.default_rng(0)
    for k in range(1, 9):
        t = 0.5 * k  # frames every 0.5 s, drifting (3, -1) px/s
        track.add(t, np.array([3.0, -1.0]) * t + rng.normal(0, 0.03, 2), 0.05)
    np.testing.assert_allclose(track.rate(4.0), [3.0, -1.0], atol=0.1)
    position, sigma = track.predict(4.5)
    np.testing.assert_allclose(position, [13.5, -4.5], atol=0.2)
    assert 0 < sigma < 0.5
    fresh = DriftTrack(prior_px_per_frame=2.0)
    fresh.add(0.0, np.zeros(2), 0.0)
    fresh.set_frame_interval(0.5)
    fresh.add(0.5, np.zeros(2) + 0.1, 0.05)
    _, one_frame = fresh.predict(1.0)
    assert 0.05 < one_frame < 3.0  # a frame later: the measured position plus the prior on the drift per frame


def test_a_series_scanned_with_a_ramp_registers_with_the_ramp_taken_out():
    """Offline, ``register_series(model="scan")`` reads each frame's ramp from ``meta["scan"]``: the content moved
    by the drift less the ramp, a sawtooth no smooth trajectory follows unless the ramp is added back."""
    source = build_source("simulator", scan_time="pixel", shape=[128, 128], spacing_px=[14.0], seed=2,
                          noise={"kind": "poisson", "dose": 20.0},
                          drift=[{"kind": "linear", "velocity_px_per_frame": [1.5, -1.0]}])
    beam = build_component(validate_component("actuator", {"plugin": "simulated-beam-shift"}, ("actuator",),
                                              YamlDoc("test")), BuildContext(source=source))
    frames = [source.acquire()]
    beam.set_scan_ramp(np.array([0.8, -0.5]) / source.frame_time_s)  # half the drift, as early in a loop
    frames += [source.acquire() for _ in range(7)]
    assert frames[0].meta["scan"]["ramp_px_per_s"] == (0.0, 0.0) and frames[1].meta["scan"]["ramp_px_per_s"][0] > 0
    truth = np.stack([f.meta["true_field_px"] for f in frames])
    with_ramp = field_rmse(register_series(frames, model="scan").field, truth)
    assert with_ramp < 0.1
    unaware = [Frame(f.data, f.index, f.time_s, f.pixel_size_nm,
                     {**f.meta, "scan": {k: v for k, v in f.meta["scan"].items() if k != "ramp_px_per_s"}})
               for f in frames]
    assert field_rmse(register_series(unaware, model="scan").field, truth) > 2 * with_ramp
