"""Frame source ``hyperspy``: replays an image series from any file HyperSpy/RosettaSciIO reads."""
from __future__ import annotations

import math

import numpy as np

from drift_framework.types import Frame, SourceExhausted

_TO_NM = {"nm": 1.0, "Å": 0.1, "A": 0.1, "angstrom": 0.1, "pm": 1e-3, "µm": 1e3, "um": 1e3, "m": 1e9}


class HyperSpyError(ValueError):
    """A file cannot be used as an image series."""


def load_images(path, *, lazy: bool = False):
    """Load ``path`` as a 2-D image signal (a single image or a stack); clear errors for anything else."""
    import logging
    from pathlib import Path

    import hyperspy.api as hs

    if not Path(path).is_file():
        raise HyperSpyError(f"{path}: no such file")
    hs_log = logging.getLogger("hyperspy")
    level = hs_log.level
    hs_log.setLevel(logging.CRITICAL)  # HyperSpy logs its own errors; the user gets ours, once
    try:
        signal = hs.load(str(path), lazy=lazy)
    except Exception as exc:  # RosettaSciIO raises many kinds for unreadable files
        raise HyperSpyError(f"{path}: HyperSpy cannot read it ({type(exc).__name__}: {exc})") from None
    finally:
        hs_log.setLevel(level)
    if isinstance(signal, list):
        images = [s for s in signal if s.axes_manager.signal_dimension == 2]
        if not images:
            raise HyperSpyError(f"{path}: holds {len(signal)} signals, none of them images")
        signal = images[0]
    if signal.axes_manager.signal_dimension != 2:
        if signal.axes_manager.signal_dimension == 1 and signal.axes_manager.navigation_dimension >= 1 \
                and signal.data.ndim >= 2:
            signal = signal.as_signal2D((0, 1))
        else:
            raise HyperSpyError(f"{path}: not an image or image stack (signal dimension "
                                f"{signal.axes_manager.signal_dimension})")
    if signal.axes_manager.navigation_dimension > 1:
        raise HyperSpyError(f"{path}: a {signal.axes_manager.navigation_dimension}-D series of images; "
                            "pass a single stack (e.g. s.inav[:, 0])")
    if signal.data.dtype.kind == "c":
        raise HyperSpyError(f"{path}: complex images; take the amplitude or phase first")
    return signal


def frame_count(signal) -> int:
    return signal.axes_manager.navigation_shape[0] if signal.axes_manager.navigation_dimension else 1


def pixel_size_nm(signal) -> float:
    axis = signal.axes_manager.signal_axes[0]
    factor = _TO_NM.get(str(axis.units).strip(), math.nan)
    return float(axis.scale) * factor


def frame_data(signal, index: int) -> np.ndarray:
    data = signal.data[index] if frame_count(signal) > 1 or signal.axes_manager.navigation_dimension else signal.data
    if hasattr(data, "compute"):
        data = data.compute()
    return np.asarray(data)


def frame_times(signal, default_period: float | None) -> np.ndarray:
    """Frame times from the navigation axis when it is time, else from metadata's frame time, else the index."""
    n = frame_count(signal)
    if signal.axes_manager.navigation_dimension:
        nav = signal.axes_manager.navigation_axes[0]
        if str(nav.units).strip() in ("s", "ms", "µs"):
            scale = {"s": 1.0, "ms": 1e-3, "µs": 1e-6}[str(nav.units).strip()]
            return (nav.offset + nav.scale * np.arange(n)) * scale
    period = default_period
    if period is None:
        period = signal.metadata.get_item("Acquisition_instrument.TEM.Detector.frame_time", None)
    return np.arange(1, n + 1) * float(period if period else 1.0)


class HyperSpyFrames:
    """Frame source ``hyperspy``: the frames of a file, in order; raises SourceExhausted at the end."""

    def __init__(self, params: dict, context=None):
        from pathlib import Path

        path = Path(params["path"])
        if not path.is_absolute() and context is not None:
            path = Path(getattr(context, "recipe_dir", ".")) / path
        self.signal = load_images(path, lazy=params["lazy"])
        self.n = frame_count(self.signal)
        self.start, self.stop = params["start"], min(params["stop"] or self.n, self.n)
        if self.start >= self.stop:
            raise HyperSpyError(f"{path}: frames {self.start}…{self.stop} select nothing ({self.n} frames)")
        self.times = frame_times(self.signal, params["frame_time_s"])
        self.pixel_size_nm = pixel_size_nm(self.signal)
        self.index = self.start
        self.path = str(path)

    def acquire(self) -> Frame:
        if self.index >= self.stop:
            raise SourceExhausted(f"{self.path} has no frame {self.index}")
        data = frame_data(self.signal, self.index).astype(np.float32)
        frame = Frame(data=data, index=self.index - self.start, time_s=float(self.times[self.index]),
                      pixel_size_nm=self.pixel_size_nm, meta={"source": self.path, "file_index": self.index})
        self.index += 1
        return frame

    def close(self) -> None:
        self.signal = None
