"""A headless Nion Swift STEM simulator (nionswift-usim) for tests, demos and benchmarks, with specimen drift on.

usim's own specimen drift is off (its ``DriftController`` multiplies the amplitude by zero). :class:`UsimDrift`
is a drift model in nm — linear plus a random walk — that usim's value manager adds to the content offset it
renders (stage position − beam shift + drift), through a subclass of usim's ``ValueManager``; Nion's code runs as
shipped. The harness is the acquisition test context Nion's own tests use (a document model in memory, the
instrumentation plug-in's hardware-source manager, usim's instrument and scan device), built without a GUI.

Truth: usim renders the content at ``stage − beam shift + drift − scan centre``; :meth:`UsimHarness.offset_nm`
returns it. usim places its features on whole pixels, so frames follow the truth to ~0.5–1 px.
"""
from __future__ import annotations

import logging
import math
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["UsimDrift", "UsimHarness", "usim_harness", "SAMPLES"]

#: usim's specimens by the names our recipes use (its sample index).
SAMPLES = {"flake": 0, "amorphous": 1, "particles": 2}


class UsimDrift:
    """Specimen drift in nm at wall-clock time: ``rate·t`` plus a random walk of ``walk·√t`` std (y, x).

    The walk is drawn on a fixed 50 ms grid from ``seed`` and interpolated, so the drift is the same function of
    time however often it is asked: runs with one seed see identical drift (the benchmark compares methods so).
    """

    GRID_S = 0.05

    def __init__(self, rate_nm_per_s=(0.0, 0.0), walk_nm_per_sqrt_s: float = 0.0, seed: int | None = None):
        self.rate = np.asarray(rate_nm_per_s, float)
        self.walk = float(walk_nm_per_sqrt_s)
        self.rng = np.random.default_rng(seed)
        self.t0 = time.perf_counter()
        self._lock = threading.Lock()
        self._walk = np.zeros((1, 2))  # the walk at 0, GRID_S, 2·GRID_S …
        #: the content offset (stage − beam shift + drift, nm) usim read for the last frame it rendered
        self.rendered_nm: np.ndarray | None = None
        self.rendered_drift_nm: np.ndarray | None = None  # its specimen-drift part
        self.rendered_s: float | None = None  # and when, on the drift's clock (usim renders a frame at one instant)

    def restart_clock(self) -> None:
        """Make now the drift's time zero (a run starts its drift when its first frame is taken)."""
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def offset_nm(self, t: float | None = None) -> np.ndarray:
        """The drift (dy, dx) in nm at ``t`` s after the start (now by default)."""
        t = max(0.0, self.elapsed() if t is None else t)
        if self.walk == 0:
            return self.rate * t
        k = t / self.GRID_S
        with self._lock:
            need = int(k) + 2 - len(self._walk)
            if need > 0:
                steps = self.rng.normal(0.0, self.walk * math.sqrt(self.GRID_S), (need, 2))
                self._walk = np.vstack([self._walk, self._walk[-1] + np.cumsum(steps, axis=0)])
            i, f = int(k), k - int(k)
            walked = (1 - f) * self._walk[i] + f * self._walk[i + 1]
        return self.rate * t + walked


def _drifting_value_manager(drift: UsimDrift) -> Any:
    """usim's ValueManager with ``drift`` as the specimen drift (its own is zero)."""
    from nion.usim_device import InstrumentDevice
    from nion.utils import Geometry

    class DriftingValueManager(InstrumentDevice.ValueManager):
        @property
        def drift_offset_m(self) -> Geometry.FloatPoint:
            dy, dx = drift.offset_nm() * 1e-9
            return Geometry.FloatPoint(y=dy, x=dx)

        @property
        def actual_offset_m(self) -> Geometry.FloatPoint:
            specimen = drift.offset_nm()
            offset = (self.stage_position_m - self.get_value_2d("beam_shift_m")
                      + Geometry.FloatPoint(y=specimen[0] * 1e-9, x=specimen[1] * 1e-9))
            # what the frame being scanned shows (usim reads this once per frame)
            drift.rendered_nm, drift.rendered_drift_nm = np.array([offset.y, offset.x]) * 1e9, specimen
            drift.rendered_s = drift.elapsed()
            return offset

    return DriftingValueManager()


def _configuration(drift: UsimDrift, sample_index: int, settings: Path) -> Any:
    """usim's acquisition-context configuration (as ``DeviceConfiguration`` builds it) with a drifting specimen."""
    import gettext

    from nion.device_kit import CameraDevice
    from nion.usim_device import (
        DeviceConfiguration,
        EELSCameraSimulator,
        InstrumentDevice,
        RonchigramCameraSimulator,
        ScanDevice,
    )
    from nion.utils import Geometry

    _ = gettext.gettext

    class DriftingConfiguration(DeviceConfiguration.AcquisitionContextConfiguration):
        def __init__(self) -> None:  # DeviceConfiguration's constructor, with our value manager
            self.configuration_location = str(settings)
            self.instrument_id = "usim_stem_controller"
            value_manager = _drifting_value_manager(drift)
            generator = InstrumentDevice.ScanDataGenerator(sample_index=sample_index)
            instrument = InstrumentDevice.Instrument(self.instrument_id, value_manager, InstrumentDevice.AxisManager(),
                                                     generator)
            self._instrument = self.instrument = instrument
            self.ronchigram_camera_device_id, self.eels_camera_device_id = "usim_ronchigram_camera", "usim_eels_camera"
            self._scan_module = self.scan_module = ScanDevice.ScanModule(instrument)
            ronchigram = RonchigramCameraSimulator.RonchigramCameraSimulator(
                instrument, Geometry.IntSize.make(instrument.camera_sensor_dimensions("ronchigram")),
                instrument.counts_per_electron, instrument.stage_size_nm)
            self._ronchigram_camera_device = CameraDevice.Camera(self.ronchigram_camera_device_id, "ronchigram",
                                                                 _("uSim Ronchigram Camera"), ronchigram, instrument)
            self._ronchigram_camera_settings = CameraDevice.CameraSettings(self.ronchigram_camera_device_id)
            eels = EELSCameraSimulator.EELSCameraSimulator(
                instrument, Geometry.IntSize.make(instrument.camera_sensor_dimensions("eels")),
                instrument.counts_per_electron)
            self._eels_camera_device = CameraDevice.Camera(self.eels_camera_device_id, "eels", _("uSim EELS Camera"),
                                                           eels, instrument)
            self._eels_camera_settings = CameraDevice.CameraSettings(self.eels_camera_device_id)
            self.ronchigram_camera_device = self._ronchigram_camera_device
            self.ronchigram_camera_settings = self._ronchigram_camera_settings
            self.eels_camera_device = self._eels_camera_device
            self.eels_camera_settings = self._eels_camera_settings
            value_manager.ronchigram_camera = self._ronchigram_camera_device
            value_manager.eels_camera = self._eels_camera_device

    return DriftingConfiguration()


class UsimHarness:
    """usim running headless in this process: its instrument (``stem_controller``) and scan hardware source.

    Parameters
    ----------
    drift : UsimDrift
        The specimen drift (zero drift: ``UsimDrift()``).
    sample : str
        One of :data:`SAMPLES` (``particles``: nanoparticles, which every correction method can track).
    """

    def __init__(self, drift: UsimDrift, sample: str = "particles"):
        from nion.instrumentation.test import AcquisitionTestContext
        from nion.swift import Facade  # noqa: F401  (registers the panels a document controller needs)
        from nion.swift.test import TestContext

        if sample not in SAMPLES:
            raise ValueError(f"usim sample {sample!r}: choose one of {', '.join(SAMPLES)}")
        self.drift, self.sample = drift, sample
        self._settings = Path(tempfile.mkdtemp(prefix="drift-usim-"))  # Nion keeps scan settings in a folder
        self._setup = TestContext.TestSetup()  # the application object and event loop Nion's tests use
        configuration = _configuration(drift, SAMPLES[sample], self._settings)
        try:
            self._context = AcquisitionTestContext.AcquisitionTestContext(configuration)
        except BaseException:
            # the cameras' acquisition threads started with the configuration: stop them, or the process hangs
            for camera in (configuration.ronchigram_camera_device, configuration.eels_camera_device):
                camera.close()
            shutil.rmtree(self._settings, ignore_errors=True)
            raise
        self.instrument: Any = self._context.instrument
        self.scan: Any = self._context.scan_hardware_source
        self.closed = False

    def rendered_offset_nm(self, center_nm) -> np.ndarray:
        """Where usim put the content of the frame it rendered last, (dy, dx) nm in image axes: stage − beam
        shift + drift − scan centre (the frame's content moves by this over the pixel size)."""
        if self.drift.rendered_nm is None:
            raise RuntimeError("usim has not rendered a frame yet")
        return self.drift.rendered_nm - np.asarray(center_nm, float)

    def close(self) -> None:
        """Stop usim (its threads keep a process alive until then)."""
        if not self.closed:
            self.closed = True
            self._context.close()
            shutil.rmtree(self._settings, ignore_errors=True)


_HARNESS: UsimHarness | None = None
_HARNESS_LOCK = threading.Lock()


def usim_harness(drift: UsimDrift | None = None, sample: str = "particles", *, restart: bool = False) -> UsimHarness:
    """The process's usim (Nion's registry holds one instrument per process): started on first use, or again
    with ``restart`` (a new drift, a new sample)."""
    global _HARNESS
    with _HARNESS_LOCK:
        if _HARNESS is not None and not _HARNESS.closed and restart:
            _HARNESS.close()
        if _HARNESS is None or _HARNESS.closed:
            _HARNESS = UsimHarness(drift or UsimDrift(), sample)
        return _HARNESS
