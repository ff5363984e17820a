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
        result.expect_refused(f"YAML {label}", lambda text=text: load_recipe(text), RecipeError)
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
            proxy._pyroSerializer = "msgpack"
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
        wire_fuzz(f"PYRO:drift.microscope@127.0.0.1:{port}", port, result)
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


def wire_fuzz(uri: str, port: int, result: Result, seed: int = 0) -> None:
    """Malformed and malicious wire messages: the server must answer with an error or drop the connection, and
    keep serving (checked after every case); the client must turn a malformed frame into one clear error."""
    import marshal
    import random
    import socket

    import msgpack
    import Pyro5.api
    import Pyro5.errors
    from Pyro5 import protocol

    from drift_pyro5.transport import WireError, frame_from_wire

    rng = random.Random(seed)

    def alive(label: str) -> None:
        try:
            with Pyro5.api.Proxy(uri) as p:
                p._pyroSerializer = "msgpack"
                p.info()
        except Exception as exc:  # the server died or hangs
            result.fail(f"wire, {label}: the server stopped answering ({type(exc).__name__}: {exc})")

    def raw(label: str, payload: bytes) -> None:
        result.cases += 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(payload)
                sock.settimeout(2)
                try:
                    sock.recv(65536)
                except OSError:
                    pass
        except OSError:
            pass
        alive(label)

    for k in range(6):
        raw(f"random bytes {k}", bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 16, 300, 5000]))))
    call = (protocol.MSG_INVOKE, 0, 1)
    raw("a marshal call (refused: marshal is unsafe)", protocol.SendingMessage(
        *call, 2, marshal.dumps(("drift.microscope", "info", (), {}))).data)
    raw("a truncated msgpack call", protocol.SendingMessage(
        *call, 4, msgpack.packb(("drift.microscope", "move_by", ["stage", [1.0, 0.0], "x"], {}))[:-3]).data)
    raw("msgpack garbage", protocol.SendingMessage(*call, 4, bytes(rng.getrandbits(8) for _ in range(64))).data)
    raw("a header announcing 2 GB", protocol.SendingMessage(*call, 4, b"x" * 16).data[:6] + b"\x7f\xff\xff\xff")
    with Pyro5.api.Proxy(uri) as proxy:
        proxy._pyroSerializer = "msgpack"
        for label, args in (("move_by with a string command", ("stage", "x", "id")),
                            ("move_by with numbers for names", (1, [0.0, 0.0], 2)),
                            ("move_by with a nested command", ("stage", [[1e308, 2], 3], "id2")),
                            ("move_by with three numbers", ("stage", [0.0, 0.0, 0.0], "id3"))):
            result.cases += 1
            try:
                proxy.move_by(*args)
                result.fail(f"wire, {label}: accepted")
            except (TypeError, ValueError, Pyro5.errors.PyroError):
                pass
            alive(label)
    for label, msg in (("no data", {"shape": [8, 8]}), ("short data", {"data": b"12", "shape": [8, 8], "dtype": "<f4",
                                                                        "index": 0, "time_s": 0.0}),
                       ("object dtype", {"data": b"x" * 64, "shape": [8, 8], "dtype": "|O", "index": 0,
                                         "time_s": 0.0}),
                       ("negative shape", {"data": b"", "shape": [-8, 8], "dtype": "<f4", "index": 0, "time_s": 0.0}),
                       ("not a mapping", [1, 2, 3])):
        result.expect_refused(f"client, {label}", lambda msg=msg: frame_from_wire(msg), WireError)


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
                                       "the Pyro5 server, non-loopback binds without --allow-remote, fuzzed wire "
                                       "messages to the server (raw bytes, marshal, truncated msgpack, wrong "
                                       "argument types) and malformed frames to the client")
    recipes(work, result)
    weights(work, result)
    network(work, result)
    return result
