"""``drift correct … --apply-to OTHER``: the correction measured on one signal applied to data acquired with it.

A STEM scan records several signals at once: ABF and HAADF, or an image and an EDS/EELS spectrum per pixel.  They
share the scan, so they share the drift; the one with the best contrast is measured and the others follow.  OTHER
is an image stack of the same frames (``(N, H, W)``) or a spectrum image per frame (HyperSpy ``Signal1D`` with
navigation ``(x, y, frame)``: ``(N, H, W, C)``), on the measured frames' scan grid.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .positions import align_frame
from .source import HyperSpyError, frame_count, frame_data, load_images, read_signal

#: spectra are resampled linearly: counts stay non-negative and a channel's sum is kept (a cubic spline rings)
SPECTRUM_ORDER = 1


class CoAcquired:
    """A signal acquired with the measured frames, validated against their number and scan grid."""

    def __init__(self, path: str | Path, frames: int, shape: tuple[int, int]):
        self.path = Path(path)
        signal = read_signal(self.path)
        if isinstance(signal, list):  # a multi-signal file (Velox EMD): its spectrum-image series, else its images
            series = [s for s in signal if s.axes_manager.signal_dimension == 1
                      and s.axes_manager.navigation_dimension == 3]
            signal = series[0] if series else signal[0]
        if signal.axes_manager.signal_dimension == 1:
            nav = signal.axes_manager.navigation_shape  # (x, y, frame)
            if len(nav) != 3:
                raise HyperSpyError(f"{self.path}: a spectrum image with navigation shape {nav}; --apply-to needs "
                                    f"one per frame (x, y, frame: {shape[1]}, {shape[0]}, {frames})")
            self.spectral = True
            self.signal = signal
            grid, count = (nav[1], nav[0]), nav[2]
        else:
            self.spectral = False
            self.signal = load_images(self.path)
            grid, count = tuple(self.signal.axes_manager.signal_shape[::-1]), frame_count(self.signal)
        self.frames = count
        if count != frames or tuple(grid) != tuple(shape):
            raise HyperSpyError(f"{self.path}: {count} frame(s) of {grid[0]} × {grid[1]} pixels; the measured series "
                                f"has {frames} of {shape[0]} × {shape[1]}: --apply-to needs data on the same scan")

    def frame(self, k: int) -> np.ndarray:
        """Frame ``k``: (H, W) or, for spectra, (H, W, C): both layouts hold frames on the first array axis."""
        return np.asarray(frame_data(self.signal, k), np.float32)

    def order(self, image_order: int) -> int:
        return SPECTRUM_ORDER if self.spectral else image_order

    def shifted(self, shifts: np.ndarray, origin: np.ndarray, out_shape: tuple[int, int], order: int,
                fill: float) -> np.ndarray:
        """Rigid: every frame (and channel) moved as :func:`align_frame` moved the measured one."""
        order = self.order(order)
        out = []
        for k, shift in enumerate(shifts):
            frame = self.frame(k)
            if frame.ndim == 2:
                out.append(align_frame(frame, shift, origin, out_shape, order, fill))
            else:
                out.append(np.stack([align_frame(frame[..., c], shift, origin, out_shape, order, fill)
                                     for c in range(frame.shape[-1])], axis=-1))
        return np.stack(out)

    def resampled(self, registration: Any, order: int) -> np.ndarray:
        """Scan model: every pixel (and its spectrum) moved by the registration's displacement field."""
        return registration.apply(np.stack([self.frame(k) for k in range(self.frames)]), order=self.order(order))

    def save(self, data: np.ndarray, path: Path, origin: np.ndarray, record: dict) -> None:
        """Write ``data`` as a signal of OTHER's kind, axes and metadata (spatial axes offset by ``origin``)."""
        axes = sorted([*self.signal.axes_manager.navigation_axes, *self.signal.axes_manager.signal_axes],
                      key=lambda axis: axis.index_in_array)
        spatial = {1: 0, 2: 1}  # array index → (y, x): both layouts are (frame, y, x[, channel])
        dicts = []
        for index, axis in enumerate(axes):
            d = axis.get_axis_dictionary()
            d.pop("_type", None)
            d["size"] = data.shape[index]
            if index in spatial:
                d["offset"] = float(axis.offset + origin[spatial[index]] * axis.scale)
            dicts.append(d)
        out = type(self.signal)(data, axes=dicts, metadata=self.signal.metadata.as_dictionary(),
                                original_metadata=self.signal.original_metadata.as_dictionary())
        out.metadata.set_item("drift_framework", record)
        if out.metadata.get_item("General.title"):
            out.metadata.General.title = f"{out.metadata.General.title} (drift corrected)"
        out.save(str(path), overwrite=True)  # the caller checked: new, or --overwrite, and never an input


def applied_path(output: Path, other: Path) -> Path:
    """Where OTHER's corrected copy goes: beside OUTPUT, ``OUTPUT-OTHER.hspy``."""
    return output.with_name(f"{output.stem}-{other.stem}.hspy")
