"""A fake vendor SDK standing in for the real one (which you would import instead).

Like many real SDKs it speaks its own units (the stage in micrometres, images as uint16 with a header), keeps a
connection object, and raises its own exception type.
"""
from __future__ import annotations

import math

import numpy as np


class AcmeError(RuntimeError):
    pass


class AcmeMicroscope:
    """Connect with ``AcmeMicroscope.connect(address)``; ``grab()`` returns (header, uint16 image)."""

    PIXEL_NM = 0.025

    def __init__(self, address: str):
        if not address.startswith("acme://"):
            raise AcmeError(f"cannot connect to {address!r}")
        self.stage_um = np.zeros(2)
        self._drift_nm = np.zeros(2)
        self._frame = 0
        self._rng = np.random.default_rng(0)

    @classmethod
    def connect(cls, address: str) -> AcmeMicroscope:
        return cls(address)

    def grab(self, size: int = 128):
        """A square-lattice image; the specimen drifts 0.01 nm per frame along y and x."""
        self._frame += 1
        self._drift_nm += 0.01
        offset_px = (self._drift_nm - self.stage_um * 1000) / self.PIXEL_NM
        yy, xx = np.mgrid[0:size, 0:size].astype(float)
        period = 12.0
        img = (np.cos(2 * math.pi * (yy - offset_px[0]) / period) + np.cos(2 * math.pi * (xx - offset_px[1]) / period))
        img = 1000 + 300 * img + self._rng.normal(0, 60, img.shape)
        header = {"frame": self._frame, "pixel_nm": self.PIXEL_NM, "exposure_s": 0.2}
        return header, np.clip(img, 0, 65535).astype(np.uint16)

    def stage_move_relative(self, dy_um: float, dx_um: float) -> None:
        if abs(dy_um) > 1 or abs(dx_um) > 1:
            raise AcmeError("ACME stages refuse relative moves above 1 µm")
        self.stage_um += (dy_um, dx_um)

    def close(self) -> None:
        pass
