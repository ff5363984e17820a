"""drift_live: watch a run in the browser (built-in plugin).

``drift run RECIPE --live [PORT]`` serves a page on http://127.0.0.1:PORT/ while the run goes: the latest frame and
the aligned running average, the drift trajectory (nm, with px), sigma and confidence against the run's gates, what
each step did, frames per second, and pause / resume / stop buttons that act through the engine's own pause and
stop.  ``drift view RUN.h5`` serves the same page for a run file being written (by this computer or another) or
finished, view only.  :class:`~drift_live.notebook.LivePlot` draws the same trajectory in a notebook.  The web
server (tornado) and the plots (plotly.js from the installed ``plotly`` package) are imported only when a view is
served: nothing is fetched from the internet.
"""
from __future__ import annotations

import argparse
import sys

from drift_framework import hookimpl

__version__ = "0.1.0"

DEFAULT_PORT = 8765


@hookimpl
def drift_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--live", nargs="?", type=int, const=DEFAULT_PORT, default=None, metavar="PORT",
                        help=f"watch the run in a browser at http://127.0.0.1:PORT/ (default {DEFAULT_PORT}; "
                             "0: any free port), with pause, resume and stop")
    parser.add_argument("--live-host", default="127.0.0.1", help="address of the live view (default 127.0.0.1)")
    parser.add_argument("--live-allow-remote", action="store_true",
                        help="allow a non-loopback --live-host: anyone who reaches it can pause and stop the run")


@hookimpl
def drift_run_observers(args: argparse.Namespace) -> list[object]:
    if getattr(args, "live", None) is None:  # a Namespace built by hand (tests, scripts) may lack our options
        return []
    return [serve_live_run(host=args.live_host, port=args.live, allow_remote=args.live_allow_remote)]


def serve_live_run(*, host: str = "127.0.0.1", port: int = DEFAULT_PORT, allow_remote: bool = False,
                   announce: bool = True):
    """A run observer with its live view already served (so a busy port fails before the run starts).

    Pass it to :func:`drift_framework.run` as one of ``observers``; its ``server.url`` is the page.
    """
    from .feed import LiveObserver
    from .server import LiveServer

    holder: dict = {}

    def finished() -> None:  # let the open pages see the end, then stop serving
        holder["server"].linger()
        holder["server"].close()

    observer = LiveObserver(on_finish=finished)
    server = LiveServer(observer.feed, host=host, port=port, allow_remote=allow_remote,
                        control=observer.control).start()
    holder["server"] = observer.server = server
    if announce:
        print(f"live view: {server.url}  (pause, resume, stop)", file=sys.stderr, flush=True)
    return observer


@hookimpl
def drift_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("view", help="watch a run file in a browser (being written, or finished)")
    p.add_argument("run", help="run file (.h5)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between reads of the file (default 0.5)")
    p.set_defaults(func=_view)


def _view(args: argparse.Namespace) -> int:
    import threading

    from .feed import RunFileFollower
    from .server import LiveServer

    follower = RunFileFollower(args.run, interval_s=args.interval).start()
    server = LiveServer(follower.feed, host=args.host, port=args.port, allow_remote=args.allow_remote).start()
    print(f"viewing {args.run}: {server.url}  (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("view closed", file=sys.stderr)
    finally:
        follower.close()
        server.close()
    return 0
