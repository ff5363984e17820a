"""The live page's web server: tornado (already installed with Dask's scheduler) in a thread of its own.

Routes: ``/`` the page; ``/static/…`` its script and style, and plotly.js from the installed ``plotly`` package
(nothing is fetched from the internet); ``/events`` server-sent events (step rows and the run's state, pushed as
they come); ``/frame.png`` and ``/average.png`` the latest frame and the aligned average; ``POST /control/ACTION``
pause, resume or stop (only for a run in this process).
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from drift_framework.net import is_loopback

from .feed import STATUS_LABELS, LiveFeed

log = logging.getLogger(__name__)

__all__ = ["LiveServer", "LiveViewError"]

PUSH_INTERVAL_S = 0.25


class LiveViewError(RuntimeError):
    """The live view cannot be served (address refused, port in use)."""


def _png(image: np.ndarray) -> bytes:
    """A frame as an 8-bit grey PNG, contrast from its 0.5–99.5 % percentiles."""
    import matplotlib.image

    finite = image[np.isfinite(image)]
    lo, hi = (np.percentile(finite, (0.5, 99.5)) if finite.size else (0.0, 1.0))
    buf = io.BytesIO()
    matplotlib.image.imsave(buf, np.nan_to_num(image, nan=lo), vmin=lo, vmax=hi if hi > lo else lo + 1,
                            cmap="gray", format="png")
    return buf.getvalue()


def _plotly_js() -> Path:
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.exists():
        raise LiveViewError(f"plotly.min.js is not in the installed plotly package ({path})")
    return path


class LiveServer:
    """Serves one :class:`LiveFeed` on ``host:port`` until :meth:`close`.

    Parameters
    ----------
    feed : LiveFeed
    host : str
        A loopback address unless ``allow_remote`` (the page can stop the run).
    port : int
        0 picks a free port (:attr:`url` tells which).
    control : callable, optional
        ``control(action) -> str`` for the page's pause / resume / stop buttons; without it they are disabled.
    """

    def __init__(self, feed: LiveFeed, *, host: str = "127.0.0.1", port: int = 8765,
                 allow_remote: bool = False, control: Any = None):
        if not is_loopback(host) and not allow_remote:
            raise LiveViewError(f"refusing to serve the live view on {host}: not a loopback address; pass "
                                "--live-allow-remote (drift view: --allow-remote) to let other computers see "
                                "and stop the run")
        self.feed, self.host, self.control = feed, host, control
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="drift-live-view", daemon=True)
        self._png_cache: dict[str, tuple[int, bytes]] = {}
        self._streams = threading.Condition()
        self._open, self._told_end = 0, 0  # event streams open, and those that have sent the run's end

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}/"

    def start(self) -> LiveServer:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise LiveViewError(f"cannot serve the live view on {self.host}:{self._port}: {self._error}") from None
        return self

    def linger(self, timeout_s: float = 3.0) -> None:
        """Wait (at most ``timeout_s``) until every open page has been sent the run's end."""
        with self._streams:
            self._streams.wait_for(lambda: self._told_end >= self._open, timeout_s)

    def close(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # -- the server thread -------------------------------------------------
    def _serve(self) -> None:
        import tornado.httpserver
        import tornado.netutil

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            sockets = tornado.netutil.bind_sockets(self._port, address=self.host)
            server = tornado.httpserver.HTTPServer(self._application())
            server.add_sockets(sockets)
            self._port = sockets[0].getsockname()[1]
        except Exception as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.stop()
            pending = asyncio.all_tasks(loop)  # open event streams: end them before the loop goes
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def png(self, which: str) -> bytes | None:
        """The latest frame or the aligned average as PNG (encoded once per frame, on the server's thread)."""
        frame, average, version = self.feed.images()
        image = frame if which == "frame" else average
        if image is None:
            return None
        cached = self._png_cache.get(which)
        if cached is None or cached[0] != version:
            cached = (version, _png(image))
            self._png_cache[which] = cached
        return cached[1]

    def _application(self) -> Any:
        import tornado.web

        static = files("drift_live") / "static"
        server = self

        class Page(tornado.web.RequestHandler):
            def get(self) -> None:
                self.set_header("Content-Type", "text/html; charset=utf-8")
                self.write((static / "index.html").read_text())

        class Static(tornado.web.RequestHandler):
            TYPES = {".js": "application/javascript", ".css": "text/css"}

            def get(self, name: str) -> None:
                path = _plotly_js() if name == "plotly.min.js" else Path(str(static / name))
                if name not in ("plotly.min.js", "live.js", "live.css") or not path.exists():
                    raise tornado.web.HTTPError(404)
                self.set_header("Content-Type", self.TYPES[path.suffix])
                self.set_header("Cache-Control", "max-age=3600")
                self.write(path.read_bytes())

        class Image(tornado.web.RequestHandler):
            def get(self, which: str) -> None:
                data = server.png(which)
                if data is None:
                    raise tornado.web.HTTPError(404, "no frame yet")
                self.set_header("Content-Type", "image/png")
                self.set_header("Cache-Control", "no-store")
                self.write(data)

        class Events(tornado.web.RequestHandler):
            """Server-sent events: ``meta`` once, then ``update`` whenever rows or the state changed."""

            async def get(self) -> None:
                from tornado.iostream import StreamClosedError

                self.set_header("Content-Type", "text/event-stream")
                self.set_header("Cache-Control", "no-cache")
                with server._streams:
                    server._open += 1
                told_end = False
                try:
                    while not server.feed.meta:  # served before the run started
                        await asyncio.sleep(PUSH_INTERVAL_S)
                    meta = {**server.feed.meta, "controls": server.control is not None,
                            "status_labels": STATUS_LABELS}
                    self.write(f"event: meta\ndata: {json.dumps(meta)}\n\n")
                    await self.flush()
                    cursor, last = 0, None
                    while True:
                        rows, state = server.feed.since(cursor)
                        if rows or state != last:
                            cursor, last = cursor + len(rows), state
                            self.write(f"event: update\nid: {cursor}\ndata: "
                                       f"{json.dumps({'rows': rows, 'state': state})}\n\n")
                            await self.flush()
                            if state["finished"] and not told_end:
                                told_end = True
                                with server._streams:
                                    server._told_end += 1
                                    server._streams.notify_all()
                        await asyncio.sleep(PUSH_INTERVAL_S)
                except (StreamClosedError, asyncio.CancelledError):  # the page was closed or reloaded
                    return
                finally:
                    with server._streams:
                        server._open -= 1
                        server._told_end -= told_end
                        server._streams.notify_all()

        class Control(tornado.web.RequestHandler):
            def post(self, action: str) -> None:
                if server.control is None:
                    raise tornado.web.HTTPError(409, "this view only reads a run file: it cannot pause or stop it")
                try:
                    done = server.control(action)
                except ValueError as exc:
                    raise tornado.web.HTTPError(400, str(exc)) from None
                log.warning("live view: %s", done)
                self.write({"done": done})

        return tornado.web.Application([
            (r"/", Page), (r"/static/([\w.]+)", Static), (r"/(frame|average)\.png", Image),
            (r"/events", Events), (r"/control/(\w+)", Control)])
