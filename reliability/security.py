"""Security: hostile recipes, weights and network peers. Each case must be refused without running anything (a
marker file that a payload would create must not appear)."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

from drift_framework.recipe import RecipeError, load_recipe

from .result import Result


class _Payload:
    """Unpickling this creates ``marker``: the proof a loader ran foreign code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _yaml_payloads(marker: Path) -> dict:
    m = str(marker)
    return {
        "python/object/apply": f"name: x\nsource: !!python/object/apply:builtins.open ['{m}', 'w']\n",
        "python/object/new": f"name: !!python/object/new:builtins.open ['{m}', 'w']\n",
        "python/name": "name: !!python/name:os.system\n",
        "python/module": "name: !!python/module:os\n",
        "tagged mapping": "source: !!python/object:builtins.dict {plugin: simulator}\nname: x\n",
        "custom tag": "source: !microscope {plugin: simulator}\n",
        "tag on a list": "run: {frames: 3}\nsource: !!python/tuple [1, 2]\n",
        "merge key": "base: &b {plugin: simulator}\nsource: {<<: *b}\n",
        "billion laughs": "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                          "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                          "source: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
    }


def recipes(work: Path, result: Result) -> None:
    marker = work / "yaml-payload-ran"
    for label, text in _yaml_payloads(marker).items():
        result.cases += 1
        try:
            load_recipe(text)
            result.fail(f"YAML {label}: accepted")
        except RecipeError:
            pass
        except Exception as exc:
            result.fail(f"YAML {label}: {type(exc).__name__}: {exc}")
        if marker.exists():
            result.fail(f"YAML {label}: the payload ran")
            marker.unlink()
    for name in ("../escape", "a/b", "..", "/etc/passwd", "a\\b", "."):
        result.cases += 1
        try:
            load_recipe({"name": name, "source": {"plugin": "simulator"}, "pipeline": "classical"})
            result.fail(f"recipe name {name!r} accepted: run outputs could leave their folder")
        except RecipeError:
            pass


def weights(work: Path, result: Result) -> None:
    import torch

    from drift_dcnn import weights as w

    marker = work / "pickle-payload-ran"
    cases = {"torch.save with a payload": lambda p: torch.save({"kind": "regressor", "x": _Payload(str(marker))}, p),
             "bare pickle": lambda p: p.write_bytes(pickle.dumps(_Payload(str(marker)))),
             "payload in the state dict": lambda p: torch.save({"kind": "regressor", "config": {},
                                                                "state_dict": {"w": _Payload(str(marker))}}, p)}
    for label, make in cases.items():
        path = work / "evil.pt"
        make(path)
        result.cases += 1
        try:
            w.load("regressor", path)
            result.fail(f"weights, {label}: loaded")
        except w.WeightsError:
            pass
        except Exception as exc:
            result.fail(f"weights, {label}: {type(exc).__name__}: {exc}")
        if marker.exists():
            result.fail(f"weights, {label}: the payload ran")
            marker.unlink()


def network(work: Path, result: Result) -> None:
    import Pyro5.api
    import Pyro5.errors

    from .remote import SERVED, ServerProcess, free_port

    (work / "served.yaml").write_text(SERVED)
    port = free_port()
    server = ServerProcess(work / "served.yaml", port, work / "sec-journal.jsonl")
    server.start()
    try:
        with Pyro5.api.Proxy(f"PYRO:drift.microscope@127.0.0.1:{port}") as proxy:
            proxy._pyroSerializer = "marshal"
            proxy.info()
            for attr in ("_applied", "_actuator", "_limits", "_position", "_lock", "__dict__", "__class__",
                         "__init__"):
                result.cases += 1
                try:
                    value = getattr(proxy, attr)
                    if callable(value) and attr not in ("__class__", "__init__"):
                        value("stage")
                    if attr not in ("__class__", "__init__", "__dict__"):
                        result.fail(f"Pyro5: {attr} is reachable")
                except (AttributeError, Pyro5.errors.PyroError, TypeError):
                    pass
    finally:
        server.stop()
    drift = str(Path(sys.executable).with_name("drift"))
    for host in ("0.0.0.0", "::", _own_address()):
        if host is None:
            continue
        result.cases += 1
        out = subprocess.run([drift, "serve", str(work / "served.yaml"), "--host", host, "--port", str(free_port())],
                             capture_output=True, text=True, timeout=60)
        if out.returncode == 0 or "allow-remote" not in out.stderr or "Traceback" in out.stderr:
            result.fail(f"drift serve --host {host}: not refused ({out.returncode}, {out.stderr.strip()[:200]!r})")


def _own_address() -> str | None:
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = s.getsockname()[0]
        return None if address.startswith("127.") else address
    except OSError:
        return None


def security_suite(work: Path) -> Result:
    work.mkdir(parents=True, exist_ok=True)
    result = Result("security", detail="YAML tags/anchors that construct objects or explode, recipe names that "
                                       "leave the run folder, pickle payloads in weights, private attributes of "
                                       "the Pyro5 server, non-loopback binds without --allow-remote")
    recipes(work, result)
    weights(work, result)
    network(work, result)
    return result
