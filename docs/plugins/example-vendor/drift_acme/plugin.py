"""The drift_framework hooks of the ACME plugin: one frame source, one actuator."""
from __future__ import annotations

import numpy as np

from drift_framework import REQUIRED, Component, Frame, Param, hookimpl

from .acme_sdk import AcmeError, AcmeMicroscope

_CONNECTIONS: dict[str, AcmeMicroscope] = {}


def _connect(address: str) -> AcmeMicroscope:
    # source and stage of one microscope share the SDK's connection
    if address not in _CONNECTIONS:
        try:
            _CONNECTIONS[address] = AcmeMicroscope.connect(address)
        except AcmeError as exc:
            raise ConnectionError(f"ACME microscope: {exc}") from None
    return _CONNECTIONS[address]


class AcmeCamera:
    """Frame source ``acme-camera``."""

    def __init__(self, params, context):
        self.scope = _connect(params["address"])
        self.size = params["size"]
        self.index = 0

    def acquire(self) -> Frame:
        header, image = self.scope.grab(self.size)
        frame = Frame(data=image.astype(np.float32), index=self.index, time_s=self.index * header["exposure_s"],
                      pixel_size_nm=header["pixel_nm"], meta={"acme_header": header})
        self.index += 1
        return frame

    def close(self) -> None:
        pass


class AcmeStage:
    """Actuator ``acme-stage``: commands in µm; a field-of-view move of (dy, dx) px is calibration @ (dy, dx) µm."""

    units = "um"

    def __init__(self, params, context):
        self.scope = _connect(params["address"])
        self.calibration = np.eye(2) * AcmeMicroscope.PIXEL_NM / 1000.0

    def move_by(self, command) -> None:
        self.scope.stage_move_relative(float(command[0]), float(command[1]))

    def close(self) -> None:
        pass


_ADDRESS = Param("str", REQUIRED, "SDK address, e.g. acme://scope-1")


@hookimpl
def drift_frame_sources():
    return [Component("acme-camera", AcmeCamera, {"address": _ADDRESS, "size": Param("int", 128, ge=16, le=4096)},
                      "ACME camera (via the ACME SDK)")]


@hookimpl
def drift_actuators():
    return [Component("acme-stage", AcmeStage, {"address": _ADDRESS}, "ACME stage, µm (via the ACME SDK)")]
