"""HyperSpy-native correction: signals in, signals out."""
from __future__ import annotations

import copy
import math

import numpy as np

from .positions import MODES, Shifts, align_frame, estimate_shifts, output_grid
from .source import HyperSpyError, frame_count, frame_data, pixel_size_nm


def correct_signal(signal, pipeline="classical", *, reference: str = "first", max_gap: int | None = None,
                   order: int = 3, mode: str = "crop", fill: float = math.nan, scheduler: str | None = None,
                   progress=None, notes: list[str] | None = None):
    """Measure and correct the drift of an image stack.

    Parameters
    ----------
    signal : hyperspy Signal2D
        A stack (one navigation axis) of images; lazy signals are processed frame by frame.
    pipeline : str or dict
        A preset name (``classical``, ``dcnn`` …), a recipe path or a pipeline dict.
    reference : {"first", "previous", "all-pairs"}
    order : int
        Spline order of the sub-pixel resampling (0–5).
    mode : {"crop", "expand", "fill"}
        Keep the region every frame covers, the union of all frames, or the input's field of view.
    fill : float
        Value for pixels no frame covers (``expand``/``fill``).
    scheduler : str, optional
        ``threads``, ``processes``, ``synchronous`` or ``tcp://host:port`` to measure on dask.
    progress : callable, optional
        ``progress(stage, done, total)`` after every pair measured (``"measuring"``) and every frame resampled
        (``"aligning"``, in memory; a lazy output is resampled when it is computed).
    notes : list of str, optional
        Receives what was inferred about the input (e.g. the region measured on NaN-padded frames).

    Frames padded with NaN (this function's own ``mode="expand"`` output) are measured on the region every frame
    covers, and the padding stays NaN in the output.

    Returns
    -------
    aligned : Signal2D
        Same axes calibration and metadata as the input (signal axes offset by the crop), plus
        ``metadata.drift_framework`` with the shifts and the pipeline; lazy when the input is.
    shifts : Signal1D
        Per frame: ``dy, dx, sigma`` (px) and ``confidence``.
    """
    import hyperspy.api as hs

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not 0 <= order <= 5:
        raise ValueError(f"order must be 0…5, got {order}")
    n = frame_count(signal)
    if n < 2:
        raise HyperSpyError("a drift correction needs a stack of at least 2 frames; this signal has 1")
    region = _covered_region(signal, n)
    if region is not None and notes is not None:
        notes.append(f"NaN-padded frames: measured on rows {region[0].start}–{region[0].stop - 1}, columns "
                     f"{region[1].start}–{region[1].stop - 1} (covered by every frame)")
    frames = _frame_getter(signal, region)
    result = estimate_shifts(frames, n, pipeline, reference=reference, max_gap=max_gap, scheduler=scheduler,
                             progress=(lambda done, total: progress("measuring", done, total)) if progress else None)
    if notes is not None:
        notes.extend(result.notes)  # steps measured again around the series' steady drift
    shape = signal.axes_manager.signal_shape[::-1]
    origin, out_shape = output_grid(shape, result.shifts, mode)
    if getattr(signal, "_lazy", False):
        # one task per frame chunk: a graph linear in the number of frames (building it frame by frame from
        # slices of the input made it quadratic: 4 GB of graph for 2000 frames)
        shifts = result.shifts

        def align_block(block, block_info=None):
            i = block_info[0]["chunk-location"][0]
            return align_frame(block[0], shifts[i], origin, out_shape, order, fill)[None]

        frames_in = signal.data.rechunk((1, -1, -1))
        stack = frames_in.map_blocks(align_block, chunks=((1,) * n, (out_shape[0],), (out_shape[1],)),
                                     dtype=np.float32)
        aligned = hs.signals.Signal2D(stack).as_lazy()
    else:
        out = []
        for i in range(n):
            out.append(_align(frame_data(signal, i), result.shifts[i], origin, out_shape, order, fill))
            if progress is not None:
                progress("aligning", i + 1, n)
        aligned = hs.signals.Signal2D(np.stack(out))
    _copy_calibration(signal, aligned, origin)
    aligned.metadata.add_dictionary(copy.deepcopy(signal.metadata.as_dictionary()))
    aligned.metadata.set_item("drift_framework", _record(result, mode, order, pixel_size_nm(signal)))
    if signal.metadata.get_item("General.title"):
        aligned.metadata.General.title = f"{signal.metadata.General.title} (drift corrected)"
    return aligned, shifts_signal(result, signal)


def _frame_getter(signal, region=None):
    if getattr(signal, "_lazy", False):
        return lambda i: signal.data[i]
    if region is not None:
        return lambda i: frame_data(signal, i)[region]
    return lambda i: frame_data(signal, i)


def _covered_region(signal, n: int) -> tuple[slice, slice] | None:
    """The rectangle every frame covers when frames are padded with NaN (an ``expand`` output), else ``None``.

    NaN inside the covered region, infinities, or a region too small to measure on are errors.
    """
    if getattr(signal, "_lazy", False):
        return None  # checked frame by frame when measured (FrameError names the frame)
    data = np.asarray(signal.data)
    if np.isinf(data).any():
        bad = [i for i in range(n) if np.isinf(data[i]).any()]
        raise HyperSpyError(f"frame(s) {bad[:10]} contain infinite pixels; remove or repair them first")
    valid = np.all(np.isfinite(data), axis=0)
    if valid.all():
        return None
    # padded frames leave a rectangle every frame covers (the intersection of the shifted fields of view)
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    region = None
    if rows.size and cols.size:
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        for _ in range(3):  # a spline-resampled edge may be ragged by a pixel
            if valid[y0:y1, x0:x1].all():
                region = (slice(y0, y1), slice(x0, x1))
                break
            y0, y1, x0, x1 = y0 + 1, y1 - 1, x0 + 1, x1 - 1
    if region is None or min(region[0].stop - region[0].start, region[1].stop - region[1].start) < 16:
        bad = [i for i in range(n) if not np.isfinite(data[i]).all()]
        raise HyperSpyError(f"frame(s) {bad[:10]} contain NaN pixels that are not a border every other frame "
                            "pads too; remove or repair them first")
    return region


def _align(frame: np.ndarray, shift, origin, out_shape, order: int, fill: float) -> np.ndarray:
    """``align_frame``, with NaN padding kept as NaN (resampled as a mask, not spread by the spline)."""
    missing = ~np.isfinite(frame)
    if not missing.any():
        return align_frame(frame, shift, origin, out_shape, order, fill)
    filled = np.where(missing, np.nanmean(frame), frame)
    out = align_frame(filled, shift, origin, out_shape, order, fill)
    moved = align_frame(missing.astype(np.float32), shift, origin, out_shape, 1, 1.0)
    out[moved > 0.01] = np.nan
    return out


def _copy_calibration(source, target, origin) -> None:
    for src, dst, o in zip(source.axes_manager.signal_axes, target.axes_manager.signal_axes, origin[::-1]):
        dst.name, dst.units, dst.scale = src.name, src.units, src.scale
        dst.offset = src.offset + o * src.scale
    for src, dst in zip(source.axes_manager.navigation_axes, target.axes_manager.navigation_axes):
        dst.name, dst.units, dst.scale, dst.offset = src.name, src.units, src.scale, src.offset


def _record(result: Shifts, mode: str, order: int, pixel_nm: float) -> dict:
    import drift_framework

    return {"pipeline": result.pipeline if isinstance(result.pipeline, str) else str(result.pipeline),
            "reference": result.reference, "mode": mode, "order": order, "version": drift_framework.__version__,
            "sign_convention": "frame_i[y, x] ≈ frame_0[y − dy, x − dx]",
            "shifts_px": result.shifts.tolist(), "sigma_px": result.sigma.tolist(),
            "confidence": result.confidence.tolist(), "pixel_size_nm": pixel_nm,
            "closure_px": result.closure_px, "pair_sigma_px": result.pair_sigma_px}


def shifts_signal(result: Shifts, like):
    """A Signal1D of ``dy, dx, sigma, confidence`` per frame, on the input's navigation axis."""
    import hyperspy.api as hs

    data = np.column_stack([result.shifts, result.sigma, result.confidence])
    s = hs.signals.Signal1D(data)
    s.metadata.General.title = "drift shifts (dy, dx, sigma px; confidence)"
    for src, dst in zip(like.axes_manager.navigation_axes, s.axes_manager.navigation_axes):
        dst.name, dst.units, dst.scale, dst.offset = src.name, src.units, src.scale, src.offset
    s.axes_manager.signal_axes[0].name = "dy, dx, sigma, confidence"
    return s
