"""Limits: no sequence of commands or estimates moves an actuator beyond its step or travel limits — the engine's
``Limits`` (hypothesis), the closed loop fed frames that jump wildly, and a real Pyro5 server (its own limits)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from drift_framework.limits import Limits

from .result import Result

TOL = 1 + 1e-9


def engine_property(cases: int, result: Result, seed: int = 0) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    number = st.floats() | st.floats(-1e6, 1e6) | st.sampled_from([1e308, -1e308, 0.0, 1e-320])

    @hypothesis_seed(seed)
    @settings(max_examples=cases, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(max_step=st.floats(1e-3, 1e3), travel=st.floats(1e-3, 1e4),
           commands=st.lists(st.tuples(number, number), max_size=50))
    def one(max_step, travel, commands):
        limits, position = Limits(max_step, travel), np.zeros(2)
        result.cases += 1
        for c in commands:
            cmd, _ = limits.clip(np.array(c), position)
            position = position + cmd
            if not (np.all(np.isfinite(cmd)) and np.hypot(*cmd) <= max_step * TOL
                    and np.all(np.abs(position) <= travel * TOL)):
                result.fail(f"Limits({max_step}, {travel}): command {c} → {cmd}, position {position}")
                return

    one()


class JumpingSource:
    """Frames of a virtual microscope rolled by random jumps of up to ±``jump`` px: wild, valid estimates."""

    def __init__(self, inner, rng, jump: int):
        self.inner, self.rng, self.jump = inner, rng, jump

    def acquire(self):
        frame = self.inner.acquire()
        frame.data = np.roll(frame.data, tuple(self.rng.integers(-self.jump, self.jump + 1, 2)), axis=(0, 1))
        return frame

    def __getattr__(self, name):
        return getattr(self.inner, name)


def loop_with_wild_estimates(work: Path, runs: int, result: Result, seed: int = 0) -> None:
    import drift_framework as df
    from drift_framework.assembly import build_hardware
    from drift_framework.recipe import load_recipe

    rng = np.random.default_rng(seed)
    for k in range(runs):
        controller = ("pi", "linear-rate", "kalman")[k % 3]
        # steps of 1–10 px worth (0.03 nm/px): the ±30 px jumps always ask for more, so clipping is exercised
        # (the calibration check would stop such runs, rightly: here the limits alone are under test)
        max_step, travel = float(rng.uniform(0.03, 0.3)), float(rng.uniform(0.5, 10.0))
        recipe = load_recipe(f"""
name: wild
source: {{plugin: simulator, shape: [96, 96], spacing_px: 12, noise: {{kind: gaussian, snr: 4.0}}, seed: {k}}}
pipeline: classical
controller: {{plugin: {controller}}}
actuator: {{plugin: simulated-stage, limits: {{max_step: {max_step}, travel: {travel}}}}}
run: {{frames: 40, min_confidence: 0.0, max_sigma_px: 1000, pause_after_bad: 1000, stop_after_bad: 1000,
      check_calibration: false}}
""")
        source, actuator, _ = build_hardware(recipe)
        summary = df.run(recipe, output=work / f"wild-{k}.h5", source=JumpingSource(source, rng, 30), actuator=actuator)
        run = df.read_run(summary.output)
        result.cases += 1
        cmd = run.steps["command"]
        position = np.cumsum(cmd, axis=0)
        if not (np.all(np.hypot(*cmd.T) <= max_step * TOL) and np.all(np.abs(position) <= travel * TOL)):
            result.fail(f"loop run {k} ({controller}): a command beyond the limits")
        if run.steps["clipped"].sum() == 0:
            result.fail(f"loop run {k} ({controller}): wild estimates were never clipped (the test did not bite)")


def server_limits(work: Path, commands: int, result: Result, seed: int = 0) -> None:
    """Random and hostile commands straight to a real ``drift serve`` (no engine in between)."""
    import Pyro5.api
    import Pyro5.errors

    from .remote import SERVED, ServerProcess, free_port

    rng = np.random.default_rng(seed)
    work.mkdir(parents=True, exist_ok=True)
    (work / "served.yaml").write_text(SERVED)
    port = free_port()
    server = ServerProcess(work / "served.yaml", port, work / "limits-journal.jsonl")
    (work / "limits-journal.jsonl").unlink(missing_ok=True)
    server.start()
    hostile = [[np.nan, 0.0], [np.inf, -np.inf], [1e308, 1e308], [-1e300, 5.0], [1.0], [1, 2, 3], "left", None,
               {"x": 1}]
    position = np.zeros(2)
    try:
        with Pyro5.api.Proxy(f"PYRO:drift.microscope@127.0.0.1:{port}") as proxy:
            proxy._pyroSerializer = "msgpack"
            for i in range(commands):
                cmd = hostile[i % len(hostile)] if i % 4 == 0 else (rng.standard_cauchy(2) * 3).tolist()
                result.cases += 1
                try:
                    reply = proxy.move_by("stage", cmd, f"c{i}")
                except (ValueError, TypeError, KeyError, Pyro5.errors.PyroError):
                    continue  # refused: the stage did not move
                sent = np.asarray(reply["sent"], float)
                position += sent
                if not (np.hypot(*sent) <= 2.0 * TOL and np.all(np.abs(position) <= 50.0 * TOL)):
                    result.fail(f"server: command {cmd} → {sent}, position {position}")
    finally:
        server.stop()


def limits_suite(work: Path, cases: int, runs: int, commands: int, seed: int = 0) -> Result:
    result = Result("limits", detail=f"{cases} random command sequences (hypothesis, NaN/±inf/1e308), {runs} "
                                     f"closed-loop runs on frames jumping ±30 px, {commands} commands sent straight "
                                     "to a Pyro5 server")
    engine_property(cases, result, seed)
    loop_with_wild_estimates(work, runs, result, seed)
    server_limits(work, commands, result, seed)
    return result
