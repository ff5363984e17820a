"""``drift correct INPUT -o OUTPUT``: offline correction of a recorded series."""
from __future__ import annotations

import contextlib
import csv
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .source import CHANNELS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("correct", help="correct the drift of a recorded image series (any HyperSpy format)")
    p.add_argument("input", help="image stack: .hspy, .dm3/.dm4, .emd, .ser, .tif, .mrc …")
    p.add_argument("-o", "--output", required=True, help="aligned stack (.hspy, or any format HyperSpy writes)")
    p.add_argument("--pipeline", default="classical", help="preset name or recipe path (default: classical)")
    p.add_argument("--reference", default="first", choices=("first", "previous", "all-pairs"))
    p.add_argument("--max-gap", type=int, help="all-pairs: largest frame distance of a measured pair")
    p.add_argument("--order", type=int, default=3, help="spline order of the resampling (0–5)")
    p.add_argument("--mode", default="crop", choices=("crop", "expand", "fill"))
    p.add_argument("--shifts", help="CSV of the shifts (default: OUTPUT with .csv)")
    p.add_argument("--lazy", action="store_true", help="load lazily and process frame by frame")
    p.add_argument("--scheduler", help="dask: threads, processes or tcp://HOST:PORT (default: in-process)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never the input)")
    p.add_argument("--min-confidence", type=float, default=0.5,
                   help="frames below this confidence make the command fail unless --force (default 0.5)")
    p.add_argument("--force", action="store_true",
                   help="write the output even when frames are below --min-confidence, saturated, or the pair "
                        "measurements disagree; the warnings are kept in metadata.drift_framework.warnings")
    p.add_argument("--frame-axis", type=int,
                   help="numpy axis of the frames, for stacks read with three signal dimensions or transposed "
                        "(default: the shortest axis)")
    p.add_argument("--channel", choices=tuple(CHANNELS),
                   help="colour (RGB) stacks: the channel to use, or gray for the luminance")
    p.add_argument("--pixel-size", type=float, metavar="NM",
                   help="pixel size in nm when the file has none (a plain TIFF): fills the CSV's nm columns and "
                        "the output's axes")
    p.add_argument("--model", default="rigid", choices=("rigid", "scan"),
                   help="rigid: one shift per frame; scan: drift as a trajectory over every pixel's scan time "
                        "(needs --pixel-time-us; writes the displacement field beside the output)")
    p.add_argument("--pixel-time-us", type=float, help="--model scan: dwell time per pixel, µs")
    p.add_argument("--line-time-us", type=float, help="--model scan: time per line with the fly-back, µs "
                                                      "(default: the pixels of a line)")
    p.add_argument("--frame-time-s", type=float, help="--model scan: frame start to frame start, s "
                                                      "(default: the lines of a frame)")
    p.add_argument("--serpentine", action="store_true",
                   help="--model scan: odd lines were scanned right to left (a serpentine scan)")
    p.add_argument("--orthogonal", metavar="SECOND",
                   help="--model scan: a second series of the same area scanned with the raster turned 90°; both "
                        "are registered together, which takes the scan generator's slow-scan distortion out and "
                        "keeps the specimen's strain (writes OUTPUT-second.hspy and OUTPUT-average.hspy too)")
    p.add_argument("--orthogonal-rotation", type=float, default=90.0, metavar="DEG",
                   help="--orthogonal: the second series' scan rotation relative to INPUT's, 90 or 270 (default 90)")
    p.add_argument("--apply-to", action="append", default=[], metavar="OTHER",
                   help="apply the same correction to data acquired with INPUT (the simultaneous HAADF of an ABF "
                        "series, an EDS/EELS spectrum image per frame), on the same scan grid; written beside "
                        "OUTPUT as OUTPUT-OTHER.hspy (repeat for several)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no per-frame table")
    p.set_defaults(func=run)


def check_outputs(source: Path, outputs: list[Path], overwrite: bool) -> None:
    """Refuse to write over the input, and over existing files unless ``overwrite`` (before any work is done)."""
    for out in outputs:
        if out.exists() and source.exists() and out.resolve() == source.resolve():
            raise ValueError(f"{out} is the input: drift correct never writes over its input; choose another -o")
        if out.exists() and not overwrite:
            raise ValueError(f"{out} exists and is kept; choose another output, or pass --overwrite to replace it")


def problems(rows: list[dict], min_confidence: float, hint: str | None) -> list[str]:
    """What makes a correction untrustworthy, one line each: frames below the threshold, saturated frames, and
    pair measurements that do not add up (reference modes would disagree)."""
    out = []
    low = [r["frame"] for r in rows[1:] if not r["confidence"] >= min_confidence]
    if low:
        out.append(f"{len(low)} frame(s) below confidence {min_confidence:g}: {_frames(low)}")
    saturated = [r["frame"] for r in rows if r["saturated"] > 0]
    if saturated:
        worst = max(r["saturated"] for r in rows)
        out.append(f"{len(saturated)} saturated frame(s) (up to {worst:.1%} of the pixels at a ceiling): "
                   f"{_frames(saturated)}")
    if hint:
        out.append(hint)
    return out


def _frames(indices: list[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:20])
    return shown + (f" … (+{len(indices) - 20})" if len(indices) > 20 else "")


@contextlib.contextmanager
def _progress_bar(disable: bool):
    """A progress bar on stderr per stage of the correction (measuring pairs, aligning frames)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), disable=disable) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        yield progress


def run(args) -> int:
    from drift_framework.pipeline import saturation

    from .api import correct_signal
    from .coacquired import applied_path
    from .positions import closure_hint
    from .source import frame_count, frame_data, load_images, pixel_size_nm

    out = Path(args.output)
    csv_path = Path(args.shifts) if args.shifts else out.with_suffix(".csv")
    if args.orthogonal and args.model != "scan":
        raise ValueError("--orthogonal needs --model scan: the two series are first registered as drift in time")
    if args.model == "scan":
        return _run_scan(args, out, csv_path)
    check_outputs(Path(args.input), [out, csv_path, *_applied_outputs(args, out)], args.overwrite)
    notes: list[str] = []
    signal = load_images(args.input, lazy=args.lazy, frame_axis=args.frame_axis, channel=args.channel, notes=notes)
    if args.pixel_size is not None:
        if not args.pixel_size > 0:
            raise ValueError(f"--pixel-size must be positive, got {args.pixel_size}")
        for axis in signal.axes_manager.signal_axes:
            axis.scale, axis.units = args.pixel_size, "nm"
    elif not math.isfinite(pixel_size_nm(signal)):
        print(f"warning: {args.input} has no pixel size: the CSV's nm columns are NaN; pass --pixel-size NM",
              file=sys.stderr)
    others = _co_acquired(args, frame_count(signal), tuple(signal.axes_manager.signal_shape[::-1]))
    with _progress_bar(disable=args.quiet) as progress:
        aligned, shifts = correct_signal(signal, args.pipeline, reference=args.reference, max_gap=args.max_gap,
                                         order=args.order, mode=args.mode, scheduler=args.scheduler, notes=notes,
                                         progress=progress)
    for note in notes:
        print(f"note: {note}")
    record = aligned.metadata.drift_framework
    nm = pixel_size_nm(signal)
    rows = [{"frame": i, "dy_px": d[0], "dx_px": d[1], "sigma_px": s, "confidence": c,
             "dy_nm": d[0] * nm, "dx_nm": d[1] * nm, "saturated": saturation(np.asarray(frame_data(signal, i)))}
            for i, (d, s, c) in enumerate(zip(record.shifts_px, record.sigma_px, record.confidence))]
    assert len(rows) == frame_count(signal)
    if not args.quiet:
        print(" frame      dy px      dx px   sigma px  confidence")
        for r in rows:
            flag = "  saturated" if r["saturated"] else ("  low" if r["frame"] and not r["confidence"] >=
                                                           args.min_confidence else "")
            print(f"{r['frame']:6d} {r['dy_px']:+10.3f} {r['dx_px']:+10.3f} {r['sigma_px']:10.3f} "
                  f"{r['confidence']:11.2f}{flag}")
    span = [max(r[k] for r in rows) - min(r[k] for r in rows) for k in ("dy_px", "dx_px")]
    worst = max((r["sigma_px"] for r in rows), default=math.nan)
    print(f"{len(rows)} frames, drift span {span[0]:.2f} × {span[1]:.2f} px, largest sigma {worst:.3f} px "
          f"({args.reference}, {args.pipeline})")
    if math.isfinite(record.closure_px):
        print(f"loop closure of the pair measurements: {record.closure_px:.3f} px RMS")
    found = problems(rows, args.min_confidence, closure_hint(record.closure_px, record.pair_sigma_px))
    for line in found:
        print(f"warning: {line}", file=sys.stderr)
    if found and not args.force:
        print("error: nothing written: the correction is not trustworthy (see the warnings); --force writes it "
              "anyway, with the warnings in metadata.drift_framework.warnings", file=sys.stderr)
        return 1
    record.set_item("warnings", found)
    out.parent.mkdir(parents=True, exist_ok=True)
    aligned.save(str(out), overwrite=True)  # checked above: not the input, and new unless --overwrite
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"written: {out} and {csv_path}")
    if others:
        from .positions import output_grid

        shifts = np.asarray(record.shifts_px, float)
        origin, out_shape = output_grid(tuple(signal.axes_manager.signal_shape[::-1]), shifts, args.mode)
        applied = {"applied_from": str(args.input), **record.as_dictionary()}
        for other in others:
            target = applied_path(out, other.path)
            other.save(other.shifted(shifts, origin, out_shape, args.order, math.nan), target, origin, applied)
            print(f"written: {target} (the correction of {args.input} applied to {other.path})")
    return 0


def _applied_outputs(args, out: Path) -> list[Path]:
    from .coacquired import applied_path

    inputs = [Path(args.input), *map(Path, args.apply_to)]
    targets = [applied_path(out, Path(other)) for other in args.apply_to]
    if len(set(targets)) < len(targets):
        raise ValueError(f"--apply-to files with the same name would write the same output "
                         f"({', '.join(sorted({str(t) for t in targets if targets.count(t) > 1}))}); rename one")
    for target in targets:  # an OTHER is an input too: never written over
        if any(target.exists() and source.exists() and target.resolve() == source.resolve() for source in inputs):
            raise ValueError(f"{target} is an input: drift correct never writes over its inputs; choose another -o")
    return targets


def _co_acquired(args, frames: int, shape: tuple[int, int]) -> list:
    """The --apply-to signals, each checked against the measured series (before anything is written)."""
    from .coacquired import CoAcquired

    return [CoAcquired(other, frames, shape) for other in args.apply_to]


def _run_scan(args, out: Path, csv_path: Path) -> int:
    """``--model scan``: register the series as a drift trajectory in time; write the aligned stack, the
    displacement field (a HyperSpy signal, ``OUTPUT-field.hspy``) and a CSV of the mean shift per frame."""
    import hyperspy.api as hs

    import drift_framework as df

    from .coacquired import applied_path
    from .source import frame_count, frame_data, load_images, pixel_size_nm

    field_path = out.with_name(out.stem + "-field.hspy")
    second_path, average_path = out.with_name(out.stem + "-second.hspy"), out.with_name(out.stem + "-average.hspy")
    extra = [second_path, average_path] if args.orthogonal else []
    for source in ([Path(args.orthogonal)] if args.orthogonal else []):
        check_outputs(source, [out, csv_path, field_path, *extra], overwrite=True)  # never over the second input
    check_outputs(Path(args.input), [out, csv_path, field_path, *extra, *_applied_outputs(args, out)],
                  args.overwrite)
    signal = load_images(args.input, frame_axis=args.frame_axis, channel=args.channel)
    stack = np.stack([np.asarray(frame_data(signal, i), np.float32) for i in range(frame_count(signal))])
    others = _co_acquired(args, len(stack), stack.shape[1:])
    both = None
    if args.orthogonal:
        second = load_images(args.orthogonal, frame_axis=args.frame_axis, channel=args.channel)
        second_stack = np.stack([np.asarray(frame_data(second, i), np.float32) for i in range(frame_count(second))])
        timings = (_scan_timing(args, signal, args.input), _scan_timing(args, second, args.orthogonal))
        if timings[0] != timings[1]:
            raise ValueError(f"{args.input} and {args.orthogonal} record different scan timing ({timings[0]} and "
                             f"{timings[1]}): register them one by one, or correct the files' metadata")
        both = df.register_orthogonal(stack, second_stack, rotation_deg=args.orthogonal_rotation, model="scan",
                                      pipeline=args.pipeline, serpentine=args.serpentine,
                                      pixel_time_s=timings[0]["pixel_time_s"], line_time_s=timings[0]["line_time_s"],
                                      frame_time_s=timings[0]["frame_time_s"])
        reg = both.first
    else:
        timing = _scan_timing(args, signal, args.input)
        reg = df.register_series(stack, model="scan", pipeline=args.pipeline, serpentine=args.serpentine,
                                 pixel_time_s=timing["pixel_time_s"], line_time_s=timing["line_time_s"],
                                 frame_time_s=timing["frame_time_s"])
    nm = args.pixel_size if args.pixel_size is not None else pixel_size_nm(signal)
    aligned = hs.signals.Signal2D(reg.aligned)
    field = hs.signals.Signal2D(np.moveaxis(reg.field, -1, 1))  # (frame, dy/dx |y, x)
    for target in (aligned, field):
        _same_image_axes(signal, target)
    for note in (both.notes if both is not None else reg.notes):
        print(f"warning: {note}", file=sys.stderr)
    record = {"model": reg.model, "pipeline": str(args.pipeline), "shifts_px": reg.shifts.tolist(),
              "knots_per_frame": reg.knots_per_frame if reg.knots_per_frame is not None else "none (rigid)",
              "misfit_px": reg.uncertainty.tolist(), "field": str(field_path),
              "notes": list(both.notes if both is not None else reg.notes),
              "sign_convention": "frame_k[y, x] ≈ ideal[y − dy, x − dx]; ideal = scanned instantly at the first pixel"}
    if both is not None:
        record.update(second=str(args.orthogonal), rotation_deg=args.orthogonal_rotation,
                      slow_scan_first_px=both.slow_scan_first.tolist(),
                      slow_scan_second_px=both.slow_scan_second.tolist(), residual_px=both.residual_px)
    aligned.metadata.set_item("drift_framework", record)
    field.metadata.General.title = "content displacement (dy, dx) per pixel, px"
    field.axes_manager.navigation_axes[0].name = "component (0: dy, 1: dx)"
    out.parent.mkdir(parents=True, exist_ok=True)
    aligned.save(str(out), overwrite=True)  # checked above: not the input, and new unless --overwrite
    field.save(str(field_path), overwrite=True)
    if both is not None:
        turns = int(round(args.orthogonal_rotation / 90)) % 4  # the second series in INPUT's axes
        for data, path in ((np.rot90(both.second.aligned, turns, axes=(1, 2)), second_path),
                           (both.average, average_path)):
            written = hs.signals.Signal2D(np.ascontiguousarray(data))
            _same_image_axes(signal, written)
            written.metadata.set_item("drift_framework", record)
            written.save(str(path), overwrite=True)
        print(f"orthogonal: slow-scan distortion of {args.input} up to "
              f"{np.abs(both.slow_scan_first).max():.2f} px, residual between the series {both.residual_px:.3f} px")
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["frame", "dy_px", "dx_px", "misfit_px", "dy_nm", "dx_nm"])
        for i, ((dy, dx), misfit) in enumerate(zip(reg.shifts, reg.uncertainty)):
            writer.writerow([i, dy, dx, misfit, dy * nm, dx * nm])
    if not args.quiet:
        print(" frame      dy px      dx px  misfit px")
        for i, ((dy, dx), misfit) in enumerate(zip(reg.shifts, reg.uncertainty)):
            print(f"{i:6d} {dy:+10.3f} {dx:+10.3f} {misfit:10.3f}")
    print(f"written: {out}, {field_path} and {csv_path}" + (f"; {second_path} and {average_path}" if both else ""))
    for other in others:
        target = applied_path(out, other.path)
        other.save(other.resampled(reg, args.order), target, np.zeros(2), {"applied_from": str(args.input), **record})
        print(f"written: {target} (the field of {args.input} applied to {other.path})")
    return 0


def _same_image_axes(source, target) -> None:
    """``target``'s image axes named and calibrated as ``source``'s (both on the undistorted scan grid)."""
    for src, dst in zip(source.axes_manager.signal_axes, target.axes_manager.signal_axes):
        dst.name, dst.units, dst.scale, dst.offset = src.name, src.units, src.scale, src.offset


def _scan_timing(args, signal, path: str) -> dict[str, float | None]:
    """The scan timing of the series read from ``path``: the file's own (its metadata), else the options; an option
    that contradicts the file is an error naming both.  Neither: an error saying what to give."""
    from .source import scan_timing

    recorded = scan_timing(signal)
    given = {"pixel_time_s": None if args.pixel_time_us is None else args.pixel_time_us * 1e-6,
             "line_time_s": None if args.line_time_us is None else args.line_time_us * 1e-6,
             "frame_time_s": args.frame_time_s}
    option = {"pixel_time_s": "--pixel-time-us", "line_time_s": "--line-time-us", "frame_time_s": "--frame-time-s"}
    timing: dict[str, float | None] = {}
    for name, value in given.items():
        known = recorded.get(name)
        if value is not None and known is not None and not math.isclose(value, known[0], rel_tol=0.01):
            raise ValueError(f"{option[name]} ({value:g} s) contradicts {path}: {known[1]} = {known[0]:g} s; "
                             "leave the option out, or correct the file's metadata")
        timing[name] = value if value is not None else (known[0] if known else None)
    if timing["pixel_time_s"] is None and timing["line_time_s"] is None:
        raise ValueError(f"--model scan needs the scan timing: {path} records none (no dwell time in its "
                         "metadata); give --pixel-time-us (and --line-time-us with the fly-back, --frame-time-s "
                         "with pauses between frames)")
    return timing
