"""Nion Swift's instrument API as a frame source and actuators: the scan hardware source (``record_immediate``
with frame parameters) and the ``stem_controller``'s 2-D controls.

Sub-scans (``run.tracking_region``) are not offered: usim renders a sub-scan up to 6 px away from where the same
region lies in the full frame (measured: a half-size sub-scan centred on the frame shows its content (3.9, 6.1) px
off), so a tracking region would be corrected against a wrong reference.

Axes: frames are (y, x) as Nion returns them; a positive stage move shows the content moved the same way, a
positive beam shift or scan centre the opposite way (measured on usim), so the default px → nm calibrations are
``−s·I`` (stage) and ``+s·I`` (beam shift, scan offset) with ``s`` the pixel size; ``drift calibrate`` measures
the real ones.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np

from drift_framework.types import Frame

from .usim import UsimDrift, usim_harness

log = logging.getLogger(__name__)

__all__ = ["NionError", "NionScan", "NionActuator", "INSTALL_HINT"]

INSTALL_HINT = ("pip install 'drift_framework[nion]' (nionswift-usim 5.4, nionswift-instrumentation 23.6 on "
                "Python 3.11)")


class NionError(RuntimeError):
    """The Nion instrument cannot do what was asked (missing packages, no instrument, busy, out of range)."""


def _require_nion() -> None:
    try:
        import nion.instrumentation.scan_base  # noqa: F401
    except ImportError as exc:
        raise NionError(f"the Nion plug-in needs Nion's packages ({exc.name} is missing): {INSTALL_HINT}") from None


class NionScan:
    """Frame source ``nion-scan``: frames from a Nion scan device.

    ``connect: usim`` starts Nion's STEM simulator in this process (with the recipe's drift); ``in-process`` uses
    the instrument and scan device already registered in this process (a Nion Swift session).
    """

    def __init__(self, params: dict, context: Any = None):
        _require_nion()
        from nion.utils import Geometry

        self.p = params
        self.harness: Any = None
        self.instrument: Any = None  # Nion's stem_controller
        self.scan: Any = None  # Nion's scan hardware source
        if params["connect"] == "usim":
            seed = params["seed"] if params["seed"] is not None else (getattr(context, "extra", {}) or {}).get("seed")
            drift = UsimDrift(params["drift_nm_per_s"], params["random_walk_nm_per_sqrt_s"], seed)
            self.harness = usim_harness(drift, params["sample"], restart=True)
            self.instrument, self.scan = self.harness.instrument, self.harness.scan
        else:
            self.instrument, self.scan = _registered_devices()
        h, w = (int(v) for v in params["size"])
        fp: Any = copy.deepcopy(self.scan.get_current_frame_parameters())
        fp.size = Geometry.IntSize(h, w)
        fp.pixel_time_us = float(params["pixel_time_us"])
        fp.fov_nm = float(params["fov_nm"])
        fp.rotation_rad = 0.0
        channel = int(params["channel"])
        if not 0 <= channel < self.scan.channel_count:
            raise NionError(f"nion-scan: channel {channel} does not exist; the scan device has "
                            f"{self.scan.channel_count} ({', '.join(self._channel_names())})")
        fp.enabled_channel_indexes = [channel]
        self.frame_parameters = fp
        self.base_center_nm = np.array([fp.center_nm.y, fp.center_nm.x], float)
        self.center_nm = np.zeros(2)  # moved by the nion-scan-offset actuator
        self.pixel_size_nm = float(params["fov_nm"]) / max(h, w)
        self.shape = (h, w)
        self.index = 0
        self._t0: Any = None
        self._first_content: np.ndarray | None = None
        self._first_rendered_s: float | None = None
        self._first_drift: np.ndarray | None = None
        self.last_xdata: Any = None

    def _channel_names(self) -> list[str]:
        return [f"{i}: {self.scan.get_channel_state(i).name}" for i in range(self.scan.channel_count)]

    def _record(self, fp: Any, what: str) -> Any:
        from nion.utils import Geometry

        if self.scan.is_recording or self.scan.is_playing:
            raise NionError(f"nion-scan: the scan device is busy (view mode or another recording is running); "
                            f"stop it before {what}")
        fp.center_nm = Geometry.FloatPoint(y=float(self.base_center_nm[0] + self.center_nm[0]),
                                           x=float(self.base_center_nm[1] + self.center_nm[1]))
        try:
            xdatas = self.scan.record_immediate(fp)
        except Exception as exc:  # Nion raises assertions and device errors alike
            raise NionError(f"nion-scan: acquiring {what} failed: {type(exc).__name__}: {exc}") from None
        xdata = next((x for x in xdatas if x is not None), None)
        if xdata is None or xdata.data is None:
            raise NionError(f"nion-scan: the scan device returned no data for {what}")
        return xdata

    def _frame(self, xdata: Any, index: int) -> Frame:
        if self._t0 is None:
            self._t0 = xdata.timestamp
        calibration = xdata.dimensional_calibrations[0]
        pixel_nm = float(calibration.scale) if calibration.units == "nm" else self.pixel_size_nm
        meta: dict = {"source": "nion-scan", "nion": {k: xdata.metadata.get("hardware_source", {}).get(k)
                                                       for k in ("pixel_time_us", "line_time_us", "frame_index",
                                                                 "channel_name")}}
        if self.harness is not None:  # usim knows where it put the content (to ~0.5–1 px: whole pixels)
            content = self.harness.rendered_offset_nm(self.base_center_nm + self.center_nm)
            drift = np.asarray(self.harness.drift.rendered_drift_nm, float)
            if self._first_content is None:
                self._first_content, self._first_drift = content, drift
            assert self._first_drift is not None
            meta.update(true_offset_px=(content - self._first_content) / pixel_nm,
                        true_drift_px=(drift - self._first_drift) / pixel_nm,
                        fov_px=-self.center_nm / pixel_nm)
        time_s = (xdata.timestamp - self._t0).total_seconds()
        rendered_s = self.harness.drift.rendered_s if self.harness is not None else None
        if rendered_s is not None:
            # usim renders a frame at one instant of its drift's clock: that is when it shows the specimen.  Its
            # data's timestamp comes later by however long the host took, which a loaded machine stretches, and
            # drift rates measured between frames would carry that
            if self._first_rendered_s is None:
                self._first_rendered_s = rendered_s
            time_s = rendered_s - self._first_rendered_s
        return Frame(data=np.asarray(xdata.data, np.float32), index=index, time_s=time_s, pixel_size_nm=pixel_nm,
                     meta=meta)

    def acquire(self) -> Frame:
        """Scan the next frame (``record_immediate`` with this source's frame parameters); ``last_xdata`` keeps
        Nion's data object of it (for Nion's own tools, e.g. its DriftTracker)."""
        if self.index == 0 and self.harness is not None:
            self.harness.drift.restart_clock()  # usim's drift starts with the run's first frame
        fp = copy.deepcopy(self.frame_parameters)
        self.last_xdata = self._record(fp, f"frame {self.index}")
        frame = self._frame(self.last_xdata, self.index)
        self.index += 1
        return frame

    def close(self) -> None:
        """Stop the usim this source started (nothing to release for an in-process instrument)."""
        if self.harness is not None:
            self.harness.close()


def _registered_devices() -> tuple[Any, Any]:
    """The stem controller and scan hardware source registered in this process (a Nion Swift session)."""
    from nion.instrumentation import HardwareSource, scan_base
    from nion.utils import Registry

    instrument = Registry.get_component("stem_controller")
    scans = [s for s in HardwareSource.HardwareSourceManager().hardware_sources
             if isinstance(s, scan_base.ScanHardwareSource)]
    if instrument is None or not scans:
        raise NionError("nion-scan: no Nion instrument and scan device in this process; run inside Nion Swift "
                        "(connect: in-process), or use Nion's simulator (connect: usim)")
    return instrument, scans[0]


#: actuator kind → (the stem_controller control it moves, px → nm sign, what it is)
CONTROLS = {"stage": ("stage_position_m", -1.0, "stage position"),
            "beam-shift": ("beam_shift_m", 1.0, "probe/beam shift"),
            "scan-offset": (None, 1.0, "scan centre")}


class NionActuator:
    """Actuators ``nion-stage``, ``nion-beam-shift`` and ``nion-scan-offset``, in nm.

    Stage and beam shift are ``stem_controller`` 2-D controls (set in metres); the scan offset moves the centre of
    the source's next scans. ``range_nm`` is the hardware range: a move beyond it is refused with a clear error
    (the recipe's ``limits`` keep commands inside it).
    """

    units = "nm"

    def __init__(self, params: dict, context: Any, *, kind: str):
        source = getattr(context, "source", None)
        if not isinstance(source, NionScan):
            raise ValueError(f"nion-{kind} needs the nion-scan frame source (source: {{plugin: nion-scan}})")
        self.kind, self.source = kind, source
        self.instrument: Any = source.instrument
        self.control, sign, self.what = CONTROLS[kind]
        scale = params["scale_nm_per_px"] or source.pixel_size_nm
        self.calibration = sign * scale * np.eye(2)
        self.range_nm = float(params["range_nm"])
        self.start_nm = self.position_nm()

    def position_nm(self) -> np.ndarray:
        """(y, x) nm: the control's value (scan offset: the centre added to the frame parameters)."""
        if self.control is None:
            return self.source.center_nm.copy()
        value = self.instrument.get_value_2d(self.control)
        return np.array([value.y, value.x]) * 1e9

    def move_by(self, command) -> None:
        from nion.utils import Geometry

        command = np.asarray(command, float)
        if command.shape != (2,) or not np.all(np.isfinite(command)):
            raise ValueError(f"nion-{self.kind} command must be two finite numbers (nm), got {command!r}")
        target = self.position_nm() + command
        if np.any(np.abs(target - self.start_nm) > self.range_nm):
            raise NionError(f"nion-{self.kind}: moving the {self.what} to ({target[0]:.2f}, {target[1]:.2f}) nm is "
                            f"beyond its range (±{self.range_nm:g} nm from where the run started); nothing moved")
        if self.control is None:
            self.source.center_nm = target
            return
        if not self.instrument.set_value_2d(self.control, Geometry.FloatPoint(y=target[0] * 1e-9,
                                                                              x=target[1] * 1e-9)):
            raise NionError(f"nion-{self.kind}: the instrument refused {self.control} = ({target[0]:.2f}, "
                            f"{target[1]:.2f}) nm; nothing moved")

    def close(self) -> None:
        """Nothing to release: the instrument belongs to Nion Swift (or to the process's usim)."""
