"""Frames over Pyro5: raw bytes with shape, dtype and metadata, serialized with ``msgpack``.

Pyro5 has no pickle, and its default serializer (serpent) base64-encodes bytes: about 110 MB/s for 512² float32
frames on loopback.  ``msgpack`` carries ``bytes`` as they are (see benchmarks/transport.py) and, unlike
``marshal``, only ever builds plain values from whatever a peer sends: a malformed or malicious message is an
error, never a crash.  Metadata goes as plain values (arrays become lists).  :func:`frame_from_wire` checks a
message before it builds anything from it.
"""
from __future__ import annotations

import math

import numpy as np

from drift_framework.types import Frame

SERIALIZER = "msgpack"


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def frame_to_wire(frame: Frame) -> dict:
    data = np.ascontiguousarray(frame.data)
    return {"data": data.tobytes(), "shape": list(data.shape), "dtype": data.dtype.str, "index": int(frame.index),
            "time_s": float(frame.time_s), "pixel_size_nm": _plain(float(frame.pixel_size_nm)),
            "meta": _plain(frame.meta or {})}


class WireError(ValueError):
    """A message from the microscope is not a frame."""


_DTYPES = {np.dtype(t).str for t in ("u1", "u2", "u4", "i1", "i2", "i4", "i8", "f2", "f4", "f8", ">u2", ">i2", ">f4",
                                     ">f8")}


def frame_from_wire(msg: dict) -> Frame:
    """A :class:`Frame` from a wire message, checked first: a malformed message raises :class:`WireError`."""
    if not isinstance(msg, dict) or not isinstance(msg.get("data"), bytes):
        raise WireError(f"not a frame message: {type(msg).__name__}")
    shape, dtype = msg.get("shape"), msg.get("dtype")
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 65536 for n in shape)):
        raise WireError(f"frame message with a bad shape {shape!r}")
    if dtype not in _DTYPES:
        raise WireError(f"frame message with a refused dtype {dtype!r}")
    if np.dtype(dtype).itemsize * shape[0] * shape[1] != len(msg["data"]):
        raise WireError(f"frame message holds {len(msg['data'])} bytes, not {shape[0]}×{shape[1]} {dtype}")
    if not isinstance(msg.get("index"), int) or not isinstance(msg.get("time_s"), (int, float)):
        raise WireError("frame message without an integer index and a time")
    if not isinstance(msg.get("meta", {}), dict):
        raise WireError("frame message whose metadata is not a mapping")
    data = np.frombuffer(msg["data"], dtype=np.dtype(dtype)).reshape(shape)
    meta = dict(msg.get("meta") or {})
    for key in ("true_offset_px", "true_drift_px", "fov_px"):
        if key in meta and meta[key] is not None:
            meta[key] = np.asarray(meta[key], float)
    px = msg.get("pixel_size_nm")
    return Frame(data=data.copy(), index=msg["index"], time_s=msg["time_s"],
                 pixel_size_nm=float(px) if px is not None else math.nan, meta=meta)
