"""Frame source ``hyperspy``: replays an image series from any file HyperSpy/RosettaSciIO reads."""
from __future__ import annotations

import math

import numpy as np

from drift_framework.types import Frame, SourceExhausted

_TO_NM = {"nm": 1.0, "Å": 0.1, "A": 0.1, "angstrom": 0.1, "pm": 1e-3, "µm": 1e3, "um": 1e3, "m": 1e9}


class HyperSpyError(ValueError):
    """A file cannot be used as an image series."""


#: ``--channel`` choices for colour stacks: one component, or the luminance (ITU-R BT.601 weights).
CHANNELS = {"R": (1.0, 0.0, 0.0), "G": (0.0, 1.0, 0.0), "B": (0.0, 0.0, 1.0), "gray": (0.299, 0.587, 0.114)}


def load_images(path, *, lazy: bool = False, frame_axis: int | None = None, channel: str | None = None,
                notes: list[str] | None = None):
    """Load ``path`` as a 2-D image signal (a single image or a stack); clear errors for anything else.

    A stack HyperSpy reads with three signal dimensions (``.emd``, ``.npy``: ``(|512, 512, 5)``) or transposed
    (``(512, 512|5)``) becomes a stack along its shortest axis, or along ``frame_axis`` (a numpy axis index);
    colour stacks need ``channel`` (``R``, ``G``, ``B`` or ``gray``).  What was inferred is appended to ``notes``.
    A ``.zspy`` store is a directory.
    """
    from pathlib import Path

    path = Path(path)
    signal = read_signal(path, lazy=lazy)
    if isinstance(signal, list):
        images = [s for s in signal if s.axes_manager.signal_dimension == 2]
        if not images:
            raise HyperSpyError(f"{path}: holds {len(signal)} signals, none of them images")
        signal = images[0]
    signal = _intensities(signal, path, channel, notes)
    signal = _as_stack(signal, path, frame_axis, notes)
    if signal.data.dtype.kind == "c":
        raise HyperSpyError(f"{path}: complex images; take the amplitude or phase first")
    return signal


def read_signal(path, *, lazy: bool = False):
    """``hs.load(path)`` with one clear error for a missing or unreadable file (a list for multi-signal files)."""
    import logging
    from pathlib import Path

    import hyperspy.api as hs

    path = Path(path)
    if not (path.is_file() or (path.is_dir() and path.suffix == ".zspy")):
        raise HyperSpyError(f"{path}: no such file" if not path.exists() else
                            f"{path}: a directory (only a .zspy store is read as one)")
    hs_log = logging.getLogger("hyperspy")
    level = hs_log.level
    hs_log.setLevel(logging.CRITICAL)  # HyperSpy logs its own errors; the user gets ours, once
    try:
        signal = hs.load(str(path), lazy=lazy)
    except ImportError as exc:
        raise HyperSpyError(f"{path}: reading it needs a package that is not installed ({exc})") from None
    except Exception as exc:  # RosettaSciIO raises many kinds for unreadable files
        raise HyperSpyError(f"{path}: HyperSpy cannot read it ({type(exc).__name__}: {exc})") from None
    finally:
        hs_log.setLevel(level)
    return signal


def _intensities(signal, path, channel: str | None, notes: list[str] | None):
    """Colour (RGB/RGBA) data as one intensity per pixel, when ``channel`` says how."""
    names = signal.data.dtype.names
    if not names:
        if channel is not None:
            raise HyperSpyError(f"{path}: --channel {channel} given, but the images are not colour data")
        return signal
    if channel is None:
        raise HyperSpyError(f"{path}: colour ({'/'.join(names)}) images; drift needs one intensity per pixel: pass "
                            "--channel R, G, B or gray (luminance), or convert first (HyperSpy: "
                            "s.change_dtype('uint8') after s.change_dtype('rgb8') splits the channels)")
    if channel not in CHANNELS:
        raise HyperSpyError(f"{path}: --channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    data = np.asarray(signal.data)
    weights = CHANNELS[channel]
    gray = sum(w * data[name].astype(np.float32) for w, name in zip(weights, names[:3]) if w)
    out = _with_data(signal, gray, range(gray.ndim))
    if notes is not None:
        notes.append(f"colour images: using {'the luminance' if channel == 'gray' else 'channel ' + channel}")
    return out


def _as_stack(signal, path, frame_axis: int | None, notes: list[str] | None):
    """A Signal2D with at most one navigation axis, the frames along it."""

    am = signal.axes_manager
    ndim = signal.data.ndim
    plain = am.signal_dimension == 2 and am.navigation_dimension <= 1
    if plain and frame_axis is None:
        return signal
    if frame_axis is None:
        if ndim != 3:
            if am.navigation_dimension > 1 and am.signal_dimension == 2:
                raise HyperSpyError(f"{path}: a {am.navigation_dimension}-D series of images; pass a single stack "
                                    "(e.g. s.inav[:, 0])")
            raise HyperSpyError(f"{path}: not an image or image stack (signal dimension {am.signal_dimension}, "
                                f"{ndim} array dimensions)")
        sizes = signal.data.shape
        frame_axis = int(np.argmin(sizes))
        if sorted(sizes)[0] == sorted(sizes)[1]:
            raise HyperSpyError(f"{path}: cannot tell the frame axis of a {'×'.join(map(str, sizes))} array; "
                                "pass --frame-axis (the numpy axis index of the frames)")
    if not -ndim <= frame_axis < ndim or ndim != 3:
        raise HyperSpyError(f"{path}: --frame-axis {frame_axis} does not fit a {ndim}-D array of shape "
                            f"{signal.data.shape}")
    frame_axis %= ndim
    data = np.moveaxis(signal.data, frame_axis, 0)
    stack = _with_data(signal, data, [frame_axis] + [k for k in range(ndim) if k != frame_axis])
    if notes is not None:
        notes.append(f"frames along array axis {frame_axis} ({data.shape[0]} frames of "
                     f"{data.shape[1]}×{data.shape[2]} px)")
    return stack


def _with_data(signal, data, order):
    """A Signal2D of ``data`` (the last two array axes are the image) whose axis ``j`` is ``signal``'s array axis
    ``order[j]``: its name, units, scale and offset, and the metadata."""
    import hyperspy.api as hs

    out = hs.signals.Signal2D(data)
    if getattr(signal, "_lazy", False):
        out = out.as_lazy()
    axes, out_axes = _array_order(signal), _array_order(out)
    for k, dst in zip(order, out_axes):
        src = axes[k]
        dst.name, dst.units, dst.scale, dst.offset = src.name, src.units, src.scale, src.offset
    out.metadata.add_dictionary(signal.metadata.as_dictionary())
    return out


def _array_order(signal) -> list:
    am = signal.axes_manager
    return sorted([*am.navigation_axes, *am.signal_axes], key=lambda axis: axis.index_in_array)


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


#: where files keep their scan timing: (metadata path, seconds per unit). HyperSpy maps DigitalMicrograph's DigiScan
#: "Sample Time" and FEI/Zeiss SEM TIFF dwell times to ``Acquisition_instrument.*.dwell_time`` (s); Velox EMD keeps
#: its scan block in the original metadata (s); Nion Swift its hardware source's properties (µs).
_DWELL_KEYS = (("metadata", "Acquisition_instrument.TEM.dwell_time", 1.0),
               ("metadata", "Acquisition_instrument.SEM.dwell_time", 1.0),
               ("original_metadata", "Scan.DwellTime", 1.0),
               ("metadata", "hardware_source.pixel_time_us", 1e-6))
_LINE_KEYS = (("original_metadata", "Scan.LineTime", 1.0),
              ("metadata", "hardware_source.line_time_us", 1e-6))
_FRAME_KEYS = (("original_metadata", "Scan.FrameTime", 1.0),)


def scan_timing(signal) -> dict[str, tuple[float, str]]:
    """The scan timing a file records: ``{"pixel_time_s" | "line_time_s" | "frame_time_s": (seconds, where)}``,
    ``where`` naming the key it came from.  Frame start to frame start also comes from a navigation axis in time
    units (Velox writes one)."""
    found: dict[str, tuple[float, str]] = {}
    for name, keys in (("pixel_time_s", _DWELL_KEYS), ("line_time_s", _LINE_KEYS), ("frame_time_s", _FRAME_KEYS)):
        for tree, key, unit in keys:
            value = getattr(signal, tree).get_item(key, None)
            try:
                seconds = float(value) * unit
            except (TypeError, ValueError):
                continue
            if math.isfinite(seconds) and seconds > 0:
                found[name] = (seconds, f"{tree}.{key}")
                break
    if "frame_time_s" not in found and signal.axes_manager.navigation_dimension and frame_count(signal) > 1:
        nav = signal.axes_manager.navigation_axes[0]
        per = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6}.get(str(nav.units).strip())
        if per is not None and nav.scale > 0:
            found["frame_time_s"] = (float(nav.scale) * per, f"the {nav.name or 'frame'} axis ({nav.units})")
    return found


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
