"""Ctrl-C and SIGTERM stop a run after the current step: the run file is closed and its summary written."""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["INTERRUPTED", "TERMINATED", "StopOnSignals"]

INTERRUPTED = "interrupted (Ctrl-C)"
TERMINATED = "terminated (SIGTERM)"


class StopOnSignals:
    """First Ctrl-C or SIGTERM: stop after the current step (the file is closed, the summary written).
    Second: stop now."""

    def __init__(self, request_stop: Callable[[str], None]):
        self.request_stop = request_stop
        self.reason: str | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.reason is not None:
            raise KeyboardInterrupt
        self.reason = TERMINATED if signum == signal.SIGTERM else INTERRUPTED
        self.request_stop(self.reason)

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
