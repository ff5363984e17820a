"""Client components ``pyro5`` (frame source and actuator) for a microscope served by ``drift serve``.

Every call has a timeout. When the server dies or restarts, calls are retried with exponential back-off after
reconnecting; a command keeps its id across retries, so the server applies it at most once. When the server
stays away, the call fails with one clear message and the run ends with its file intact.
"""
from __future__ import annotations

import logging
import time
import uuid

import numpy as np

from .transport import SERIALIZER, frame_from_wire

log = logging.getLogger(__name__)


class RemoteError(ConnectionError):
    """The remote microscope could not be reached."""


def _use_tls(ca: str | None, cert: str | None, key: str | None) -> None:
    """Pyro5's TLS settings are per process, and it caches the TLS context it builds from them: set them for the
    connection about to be made (plain when no certificate is named), and drop the cache when they change."""
    from Pyro5 import config, socketutil

    wanted = (bool(ca or cert), ca or "", cert or "", key or "")
    if (config.SSL, config.SSL_CACERTS, config.SSL_CLIENTCERT, config.SSL_CLIENTKEY) != wanted:
        config.SSL, config.SSL_CACERTS, config.SSL_CLIENTCERT, config.SSL_CLIENTKEY = wanted
        setattr(socketutil, "__ssl_client_context", None)


class _Remote:
    def __init__(self, params: dict):
        import Pyro5.api
        import Pyro5.errors

        self.errors = Pyro5.errors
        self.uri, self.timeout = params["uri"], params["timeout_s"]
        self.retries, self.backoff = params["retries"], params["backoff_s"]
        _use_tls(params.get("tls_ca"), params.get("tls_cert"), params.get("tls_key"))
        try:
            self.proxy = Pyro5.api.Proxy(self.uri)
        except self.errors.PyroError as exc:
            raise RemoteError(f"bad microscope URI {self.uri!r}: {exc}") from None
        self.proxy._pyroSerializer = SERIALIZER
        self.proxy._pyroTimeout = self.timeout
        self.reconnects = 0
        self.session = self.call("info").get("session")

    def call(self, method: str, *args):
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return getattr(self.proxy, method)(*args)
            except (self.errors.CommunicationError, self.errors.TimeoutError, OSError) as exc:
                if attempt == self.retries:
                    raise RemoteError(f"microscope at {self.uri} unreachable after {self.retries + 1} tries "
                                      f"({type(exc).__name__}: {exc})") from None
                log.warning("microscope at %s: %s; retrying in %.1f s", self.uri, exc, delay)
                time.sleep(delay)
                delay = min(2 * delay, 5.0)
                try:
                    self.proxy._pyroReconnect(tries=1)
                    self.reconnects += 1
                except self.errors.CommunicationError:
                    pass

    def close(self) -> None:
        self.proxy._pyroRelease()


class RemoteSource(_Remote):
    """Frame source ``pyro5``.

    Frames are numbered and timed by this client, so indices and times keep increasing whatever the server does:
    a microscope restarted between two frames (a new session: its clock and frame count start again at zero, its
    stage at home) is marked on the first frame of the new session (``meta["session_break"]``), and the engine
    takes a new reference there.  The server's own index and time are kept in ``meta``.
    """

    def __init__(self, params: dict, context=None):
        super().__init__(params)
        self.index, self.time_offset = 0, 0.0
        self.last_time: float | None = None
        self.period = 0.0

    def acquire(self):
        msg = self.call("acquire")
        frame = frame_from_wire(msg)
        frame.meta.update(remote_index=frame.index, remote_time_s=frame.time_s)
        session = msg.get("session")
        if session != self.session:
            frame.meta["session_break"] = (f"the microscope at {self.uri} restarted (session {str(self.session)[:8]}"
                                           f" → {str(session)[:8]}): its clock and stage started again")
            log.warning("%s", frame.meta["session_break"])
            self.session = session
            # continue this client's clock one period after the last frame
            self.time_offset = (self.last_time or 0.0) + self.period - frame.time_s
        frame.time_s += self.time_offset
        if self.last_time is not None:
            self.period = max(frame.time_s - self.last_time, 0.0) or self.period
        frame.index, self.index, self.last_time = self.index, self.index + 1, frame.time_s
        return frame


class RemoteActuator(_Remote):
    """Actuator ``pyro5``: commands carry ids, so a retried command is applied at most once."""

    def __init__(self, params: dict, context=None):
        super().__init__(params)
        self.name = params["actuator"]
        info = self.call("info")
        if self.name not in info["actuators"]:
            raise RemoteError(f"the microscope at {self.uri} has no actuator {self.name!r} "
                              f"(it has: {', '.join(info['actuators']) or 'none'})")
        self.units = info["actuators"][self.name]
        self.calibration = np.asarray(self.call("calibration", self.name), float)
        self.sent: list[tuple] = []

    def move_by(self, command) -> None:
        command_id = uuid.uuid4().hex
        result = self.call("move_by", self.name, [float(c) for c in command], command_id)
        self.sent.append((command_id, result))
