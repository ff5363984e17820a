"""Process faults: ``drift run`` killed with SIGKILL at random moments; every run file must read back with every
flushed step intact (contiguous indices, frames for every step, measured values where a step says measured)."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .result import Result

RECIPE = """\
name: killed
source: {{plugin: simulator, shape: [64, 64], spacing_px: 10, noise: {{kind: gaussian, snr: 2.0}},
         drift: [{{kind: linear, velocity_px_per_frame: [0.3, -0.2]}}], seed: 4}}
pipeline: classical
controller: {{plugin: kalman}}
actuator: {{plugin: simulated-stage, limits: {{max_step: 2.0, travel: 50.0}}}}
run: {{frames: 100000, output: {output}, save_frames: true}}
"""


def check_run_file(path: Path) -> str | None:
    """None when the (killed) run file reads back consistently; else what is wrong."""
    from drift_framework.store import read_run

    try:
        run = read_run(path, frames=True)
    except Exception as exc:
        return f"unreadable: {type(exc).__name__}: {exc}"
    n = len(run)
    if not np.array_equal(run.steps["index"], np.arange(n)):
        return "step indices are not contiguous"
    if run.frames is None or run.frames.shape[0] != n:
        return f"{n} steps but {None if run.frames is None else run.frames.shape[0]} frames"
    measured = np.isin(run.steps["status"], (1, 2))
    if not np.all(np.isfinite(run.steps["shift"][measured])):
        return "a measured step has no shift"
    if not np.all(np.isfinite(run.frames[:n].reshape(n, -1)).all(axis=1)):
        return "a stored frame is incomplete"
    return None


def kill_runs(work: Path, kills: int, seed: int = 0) -> Result:
    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    drift = str(Path(sys.executable).with_name("drift"))
    result = Result("process kills", detail=f"SIGKILL of `drift run` at {kills} random moments (0.5–6 s in)")
    steps = []
    for k in range(kills):
        output = work / f"killed-{k}.h5"
        recipe = work / "killed.yaml"
        recipe.write_text(RECIPE.format(output=output))
        proc = subprocess.Popen([drift, "run", str(recipe), "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.5, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        result.cases += 1
        if not output.exists():
            continue  # killed before the file was created: nothing recorded, nothing to lose
        problem = check_run_file(output)
        if problem:
            result.fail(f"kill {k}: {problem}")
        else:
            from drift_framework.store import read_run

            steps.append(len(read_run(output)))
    if steps:
        result.detail += f"; {min(steps)}–{max(steps)} steps on file when killed"
    return result
