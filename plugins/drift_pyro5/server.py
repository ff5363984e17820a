"""``drift serve RECIPE``: a microscope (any source and actuators built from a recipe) as a Pyro5 object.

Only the methods marked ``@expose`` are reachable. The server enforces its own actuator limits, whatever a
client sends, and applies each command id at most once (a client that retries after a lost reply cannot move
the stage twice).
"""
from __future__ import annotations

import collections
import json
import logging
import os
import threading
import uuid

import numpy as np

from drift_framework.net import is_loopback

from .transport import SERIALIZER

log = logging.getLogger(__name__)

DEFAULT_HOST, DEFAULT_PORT, OBJECT_ID = "127.0.0.1", 9091, "drift.microscope"


class ServeError(ValueError):
    """The server cannot start as asked."""


class Journal:
    """Command ids applied by this microscope, one JSON line each, written and synced *before* the command is
    applied: after a crash, a client's retry of a command that may already have moved the stage is refused
    (at most once; a command lost in the crash is never applied, and the next correction makes up for it)."""

    def __init__(self, path):
        self.path = path
        self.entries: dict = {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        entry = json.loads(line)
                        self.entries[entry["id"]] = entry["result"]
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by a crash
        self._fh = open(path, "a", encoding="utf-8")

    def record(self, command_id: str, result: dict) -> None:
        self._fh.write(json.dumps({"id": command_id, "result": result}) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.entries[command_id] = result

    def close(self) -> None:
        self._fh.close()


class _RefusedClients(logging.Filter):
    """Pyro5 reports a failed TLS handshake (a client without a valid certificate) as a socket error: say what it
    is."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "SSL" in text or "certificate" in text or "handshake" in text:
            record.msg, record.args = "refused a client: TLS handshake failed (%s)", (text,)
            record.name = __name__
        return True


def _log_refused_clients() -> None:
    # Pyro5 silences its own logging unless PYRO_LOGLEVEL is set; warnings (refused clients) must be seen
    pyro = logging.getLogger("Pyro5")
    if pyro.level > logging.WARNING:
        pyro.setLevel(logging.WARNING)
    logging.getLogger("Pyro5.threadpoolserver").addFilter(_RefusedClients())  # the logger of the accept loop


def refuse_unsafe_serializers() -> None:
    """Make this process unable to decode ``marshal``: it is not safe against malformed or malicious data, and a
    message's serializer is the sender's choice.  msgpack (ours), serpent and json build plain values only."""
    from Pyro5 import serializers

    marshal = serializers.serializers.pop("marshal", None)
    if marshal is not None:
        serializers.serializers_by_id.pop(marshal.serializer_id, None)


def make_service(source, actuators: dict, limits: dict, journal: Journal | None = None):
    """The exposed microscope object (a class built here so Pyro5 is imported only when serving)."""
    import Pyro5.api

    from drift_framework.limits import Limits

    from .transport import frame_to_wire

    session = uuid.uuid4().hex  # a new one at every start: a client can tell a restarted microscope

    @Pyro5.api.expose
    @Pyro5.api.behavior(instance_mode="single")
    class Microscope:
        def __init__(self):
            self._lock = threading.Lock()
            self._limits = {name: Limits(**limits[name]) for name in actuators}
            self._position = {name: np.zeros(2) for name in actuators}
            self._applied = collections.OrderedDict(journal.entries if journal else {})

        def info(self) -> dict:
            return {"actuators": {n: getattr(a, "units", "") for n, a in actuators.items()},
                    "limits": limits, "source": type(source).__name__, "session": session}

        def acquire(self) -> dict:
            with self._lock:
                return {**frame_to_wire(source.acquire()), "session": session}

        def calibration(self, actuator: str) -> list:
            return np.asarray(self._actuator(actuator).calibration, float).tolist()

        def move_by(self, actuator: str, command, command_id: str) -> dict:
            if not isinstance(actuator, str) or not isinstance(command_id, str) or not isinstance(command, list):
                raise TypeError("move_by(actuator: str, command: [dy, dx], command_id: str)")
            with self._lock:
                if command_id in self._applied:
                    return {**self._applied[command_id], "duplicate": True}
                act = self._actuator(actuator)
                cmd = np.asarray(command, float)
                if cmd.shape != (2,):
                    raise ValueError(f"command must be two numbers, got {command!r}")
                sent, clipped = self._limits[actuator].clip(cmd, self._position[actuator])
                result = {"sent": sent.tolist(), "clipped": bool(clipped), "duplicate": False}
                if journal is not None:
                    journal.record(command_id, result)
                act.move_by(sent)
                self._position[actuator] = self._position[actuator] + sent
                self._applied[command_id] = result
                while len(self._applied) > 100_000:
                    self._applied.popitem(last=False)
                return result

        def _actuator(self, name: str):
            if name not in actuators:
                raise KeyError(f"no actuator {name!r}; this microscope has {', '.join(actuators) or 'none'}")
            return actuators[name]

    return Microscope()


def serve(recipe, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, allow_remote: bool = False,
          nameserver: bool = False, ssl_cert: str | None = None, ssl_key: str | None = None,
          client_ca: str | None = None, no_client_auth: bool = False, journal: str | None = None, ready=None):
    """Build the recipe's source and actuator and serve them until interrupted.

    Beyond loopback, clients must authenticate: TLS with a server certificate (``ssl_cert``, ``ssl_key``) and
    client certificates signed by ``client_ca`` (mutual TLS), unless ``no_client_auth`` says otherwise.
    """
    import Pyro5.api
    import Pyro5.errors
    from Pyro5 import config

    from drift_framework.assembly import build_hardware, close_component

    if not is_loopback(host) and not allow_remote:
        raise ServeError(f"refusing to listen on {host}: not a loopback address; pass --allow-remote to expose "
                         "the microscope on the network (with --tls-cert, --tls-key and --client-ca)")
    if not is_loopback(host) and not (ssl_cert and client_ca) and not no_client_auth:
        raise ServeError(f"refusing to listen on {host} without client authentication: anyone who reaches the port "
                         "could move the stage; give --tls-cert, --tls-key and --client-ca (mutual TLS, see the "
                         "'Remote microscopes' page for making the certificates), or --no-client-auth to accept "
                         "any client")
    if client_ca and not ssl_cert:
        raise ServeError("--client-ca needs --tls-cert and --tls-key (client certificates are checked over TLS)")
    for label, path in (("--tls-cert", ssl_cert), ("--tls-key", ssl_key), ("--client-ca", client_ca)):
        if path and not os.path.isfile(path):
            raise ServeError(f"{label} {path}: no such file")
    if recipe.actuator is not None and not recipe.limits:
        raise ServeError("the served actuator needs limits")
    config.SERIALIZER = SERIALIZER
    refuse_unsafe_serializers()
    if ssl_cert:
        config.SSL, config.SSL_SERVERCERT, config.SSL_SERVERKEY = True, ssl_cert, ssl_key
    if client_ca:
        config.SSL_REQUIRECLIENTCERT, config.SSL_CACERTS = True, client_ca
    _log_refused_clients()
    if recipe.source is None:
        raise ServeError("the recipe has no source to serve")
    source, actuator, _ = build_hardware(recipe)
    actuators = {"stage": actuator} if actuator is not None else {}
    limits = {"stage": dict(recipe.limits)} if actuator is not None else {}
    log_ = Journal(journal) if journal else None
    service = make_service(source, actuators, limits, log_)

    class Daemon(Pyro5.api.Daemon):
        def validateHandshake(self, conn, data):  # noqa: N802 (Pyro5's name)
            peer = conn.sock.getpeercert() if client_ca and hasattr(conn.sock, "getpeercert") else None
            if client_ca and not peer:
                log.warning("refused a client from %s: no client certificate", conn.sock.getpeername())
                raise Pyro5.errors.SecurityError("a client certificate is required")
            if peer:
                subject = dict(item[0] for item in peer.get("subject", ()))
                log.info("client %s connected from %s", subject.get("commonName", "?"), conn.sock.getpeername())
            return super().validateHandshake(conn, data)

    try:
        with Daemon(host=host, port=port) as daemon:
            uri = daemon.register(service, OBJECT_ID)
            if nameserver:
                Pyro5.api.locate_ns().register(OBJECT_ID, uri)
            log.info("serving %s", uri)
            if ready is not None:
                ready(uri)
            daemon.requestLoop()
    finally:
        for component in (actuator, source):
            close_component(component)
        if log_ is not None:
            log_.close()
