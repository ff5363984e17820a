"""Frame transport over Pyro5 on loopback: MB/s and frames/s at 256², 512², 1024² (float32).

The server runs in its own process and serves a static frame, so rendering is not measured.

    python benchmarks/transport.py [--seconds 2] [--out docs/benchmarks]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import sys
import time

import numpy as np

from drift_bench.report import markdown_table, write_table
from drift_framework.types import Frame


class StaticSource:
    def __init__(self, size):
        self.frame = Frame(data=np.random.default_rng(0).random((size, size), dtype=np.float32), index=0, time_s=0.0,
                           pixel_size_nm=0.03, meta={"source": "static"})

    def acquire(self):
        return self.frame


def _serve(size, port, serializer, ready):
    import Pyro5.api
    from Pyro5 import config

    from drift_pyro5.server import OBJECT_ID, make_service

    config.SERIALIZER = serializer
    with Pyro5.api.Daemon(host="127.0.0.1", port=port) as daemon:
        daemon.register(make_service(StaticSource(size), {}, {}), OBJECT_ID)
        ready.set()
        daemon.requestLoop()


def measure(size: int, serializer: str, seconds: float) -> dict:
    import Pyro5.api

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ready = mp.Event()
    proc = mp.Process(target=_serve, args=(size, port, serializer, ready), daemon=True)
    proc.start()
    ready.wait(30)
    try:
        with Pyro5.api.Proxy(f"PYRO:drift.microscope@127.0.0.1:{port}") as proxy:
            proxy._pyroSerializer = serializer
            proxy.acquire()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                proxy.acquire()
                n += 1
            dt = (time.perf_counter() - t0) / n
        nbytes = size * size * 4
        return {"size": f"{size}²", "serializer": serializer, "frames_per_s": 1 / dt, "MB_per_s": nbytes / dt / 1e6,
                "ms_per_frame": dt * 1e3}
    finally:
        proc.terminate()
        proc.join(5)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    p.add_argument("--out", default="runs/bench")
    args = p.parse_args(argv)
    rows = [measure(size, ser, args.seconds) for size in args.sizes for ser in ("msgpack", "marshal", "serpent")]
    write_table(rows, args.out, "transport", title="Frame transport over Pyro5 (loopback, float32)",
                command="python benchmarks/transport.py " + " ".join(sys.argv[1:]),
                notes="msgpack (what drift_pyro5 uses) and marshal carry the raw bytes; serpent (Pyro5's default) "
                      "base64-encodes them. marshal is not safe against malformed or malicious data, so drift "
                      "serve refuses it; msgpack only ever builds plain values.\n")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
