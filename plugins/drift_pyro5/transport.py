"""Frames over Pyro5: raw bytes with shape, dtype and metadata, serialized with ``marshal``.

Pyro5 has no pickle, and its default serializer (serpent) base64-encodes bytes: about 140 MB/s for 512² float32
frames on loopback. ``marshal`` carries ``bytes`` as they are: about 600 MB/s here, with no side channel to
secure separately. Metadata goes as plain JSON-able values (arrays become lists).
"""
from __future__ import annotations

import math

import numpy as np

from drift_framework.types import Frame

SERIALIZER = "marshal"


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


def frame_from_wire(msg: dict) -> Frame:
    data = np.frombuffer(msg["data"], dtype=np.dtype(msg["dtype"])).reshape(msg["shape"])
    meta = dict(msg.get("meta") or {})
    for key in ("true_offset_px", "true_drift_px", "fov_px"):
        if key in meta and meta[key] is not None:
            meta[key] = np.asarray(meta[key], float)
    px = msg.get("pixel_size_nm")
    return Frame(data=data.copy(), index=msg["index"], time_s=msg["time_s"],
                 pixel_size_nm=float(px) if px is not None else math.nan, meta=meta)
