"""Remote faults: the Pyro5 microscope server killed and restarted mid-run, connections dropped and delayed by a
TCP proxy between client and server. Counted: steps lost (the run file must hold every step the loop made) and
commands applied twice (the server's command journal must hold every id once)."""
from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from .result import Result

SERVED = """\
name: served
source: {plugin: simulator, shape: [64, 64], spacing_px: 10, noise: {kind: gaussian, snr: 2.0},
         drift: [{kind: linear, velocity_px_per_frame: [0.3, -0.2]}], seed: 5}
pipeline: classical
actuator: {plugin: simulated-stage, limits: {max_step: 2.0, travel: 50.0}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FlakyProxy:
    """A TCP proxy on 127.0.0.1 that can cut every open connection and delay traffic."""

    def __init__(self, target_port: int):
        self.target, self.port = target_port, free_port()
        self.delay_s, self._conns, self._lock, self._stop = 0.0, [], threading.Lock(), False
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except OSError:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.delay_s:
                    time.sleep(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def drop_all(self) -> int:
        """Cut every open connection (both directions); returns how many were cut."""
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        return len(conns) // 2

    def close(self):
        self._stop = True
        self.drop_all()
        self._server.close()


class ServerProcess:
    def __init__(self, recipe: Path, port: int, journal: Path):
        self.args = [str(Path(sys.executable).with_name("drift")), "serve", str(recipe), "--port", str(port),
                     "--journal", str(journal)]
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("serving PYRO:"):
            raise RuntimeError(f"drift serve did not start: {line}{self.proc.stderr.read()}")

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def run_with_faults(work: Path, restarts: int, drops: int, delays: int, seed: int = 0) -> Result:
    """One closed-loop run through a flaky proxy while the server is killed/restarted, and connections are cut
    and delayed, at random moments."""
    import drift_framework as df

    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    served, journal = work / "served.yaml", work / "journal.jsonl"
    served.write_text(SERVED)
    journal.unlink(missing_ok=True)
    server_port = free_port()
    server = ServerProcess(served, server_port, journal)
    server.start()
    proxy = FlakyProxy(server_port)
    uri = f"PYRO:drift.microscope@127.0.0.1:{proxy.port}"
    recipe = (f"name: remote-faults\nsource: {{plugin: pyro5, uri: '{uri}', timeout_s: 2, retries: 40, backoff_s: 0.05}}\n"
              f"pipeline: classical\ncontroller: {{plugin: kalman}}\n"
              f"actuator: {{plugin: pyro5, uri: '{uri}', timeout_s: 2, retries: 40, backoff_s: 0.05,\n"
              f"           limits: {{max_step: 2.0, travel: 50.0}}}}\n"
              f"run: {{frames: 1000000, output: {work / 'remote.h5'}}}\n")
    steps, done, outcome = [], threading.Event(), {}

    class Watch:
        @df.hookimpl
        def drift_step_completed(self, run, step):
            steps.append(step.index)
            if done.is_set():
                run.request_stop("faults done")

    def target():
        try:
            outcome["summary"] = df.run(recipe, observers=[Watch()])
        except Exception as exc:  # reported as a failure below
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    result = Result("remote faults", detail=f"{restarts} server kills + restarts, {drops} connection cuts, "
                                            f"{delays} delays of 0.05–0.5 s, one run through a TCP proxy")
    thread = threading.Thread(target=target)
    thread.start()
    events = ["restart"] * restarts + ["drop"] * drops + ["delay"] * delays
    rng.shuffle(events)
    try:
        for event in events:
            start = len(steps)
            deadline = time.time() + 60
            while len(steps) < start + rng.randint(2, 6) and time.time() < deadline and thread.is_alive():
                time.sleep(0.01)
            result.cases += 1
            if event == "restart":
                server.kill()
                time.sleep(rng.uniform(0.0, 0.5))
                server.start()
            elif event == "drop":
                proxy.drop_all()
            else:
                proxy.delay_s = rng.uniform(0.05, 0.5)
                time.sleep(rng.uniform(0.2, 1.0))
                proxy.delay_s = 0.0
        before = len(steps)
        deadline = time.time() + 60
        while len(steps) < before + 5 and time.time() < deadline and thread.is_alive():
            time.sleep(0.01)
    finally:
        done.set()
        thread.join(timeout=120)
        server.stop()
        proxy.close()
    if "error" in outcome or "summary" not in outcome:
        result.fail(f"the run failed: {outcome.get('error', 'did not finish')}")
        return result
    run = df.read_run(outcome["summary"].output)
    if len(run) != len(steps):
        result.fail(f"{len(steps)} steps made, {len(run)} in the run file")
    ids = [json.loads(line)["id"] for line in journal.read_text().splitlines() if line.strip()]
    if len(ids) != len(set(ids)):
        result.fail(f"{len(ids) - len(set(ids))} command(s) applied twice")
    result.detail += f"; {len(run)} steps, {len(ids)} commands applied"
    return result
