"""The ``drift`` command: parses arguments, calls the library, prints.

Errors print one line (``error: …``) and exit non-zero; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .summary import RunSummary

EXIT_ERROR = 2


def _cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .loop import run
    from .recipe import load_recipe
    from .registry import plugin_manager

    recipe = load_recipe(args.recipe)
    # options plugins added to `drift run` (--live …) become this run's observers
    observers = [o for found in plugin_manager().hook.drift_run_observers(args=args) for o in found or ()]
    frames = args.frames or recipe.run["frames"]
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console,
                  disable=args.quiet) as bar:
        task = bar.add_task(recipe.name, total=frames, info="")

        def progress(step):
            info = f"offset {step.offset[0]:+.2f},{step.offset[1]:+.2f} px" if math.isfinite(step.offset[0]) else ""
            bar.update(task, advance=1, info=info)

        if args.overwrite:
            recipe.run["overwrite"] = True
        summary = run(recipe, output=args.output, frames=args.frames, progress=progress, observers=observers)
    _print_summary(summary)
    status = exit_status(summary.stop_reason)
    if status == 1:  # one plain line that no table wraps
        print(f"run stopped: {summary.stop_reason}", file=sys.stderr)
    return status


#: Exit statuses of ``drift run``: the shell's conventions for SIGINT (128 + 2) and SIGTERM (128 + 15).
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143


def exit_status(stop_reason: str) -> int:
    """0 for a completed run; 130 after Ctrl-C, 143 after SIGTERM; 1 for any other stop (bad estimates, errors)."""
    if stop_reason.startswith("completed"):
        return 0
    if stop_reason.startswith("interrupted"):
        return EXIT_INTERRUPTED
    if stop_reason.startswith("terminated"):
        return EXIT_TERMINATED
    return 1


def _print_summary(summary: RunSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {summary.name}: {summary.stop_reason}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    rows = [
        ("steps", f"{summary.steps}"),
        ("corrections sent", f"{summary.corrected}"),
        ("estimates gated (not acted on)", f"{summary.skipped}"),
        ("commands clipped by limits", f"{summary.clipped}"),
        ("pauses (bad estimates in a row)", f"{summary.pauses}"),
        ("microscope restarts (new reference)", f"{summary.session_breaks}"),
    ]
    if math.isfinite(summary.residual_rms_px):
        rows += [
            (f"residual drift, RMS after {summary.warmup_frames} frames", f"{summary.residual_rms_px:.3f} px"),
            ("uncorrected drift, RMS", f"{summary.uncorrected_rms_px:.3f} px"),
            ("measurement error, RMS", f"{summary.measurement_rmse_px:.3f} px"),
        ]
    rows += [("time", f"{summary.duration_s:.1f} s"), ("run file", summary.output)]
    for r in rows:
        table.add_row(*r)
    Console().print(table)


def _cmd_validate(args: argparse.Namespace) -> int:
    from .assembly import build_component, build_run_components, close_component
    from .recipe import load_recipe, load_train_recipe

    if args.trainer:
        recipe, _ = load_train_recipe(args.recipe, args.trainer)
        assert recipe.source is not None  # a training recipe always has one (load_train_recipe checks)
        if not args.no_build:
            close_component(build_component(recipe.source))
        print(f"{args.recipe}: ok (training recipe for {args.trainer}: source {recipe.source.plugin})")
        return 0
    recipe = load_recipe(args.recipe)
    if not args.no_build:
        for part in build_run_components(recipe):
            close_component(part)
    controller = recipe.controller.plugin if recipe.controller else "none"
    print(f"{args.recipe}: ok ({recipe.name}: {recipe.source.plugin if recipe.source else '-'} → "
          f"{' → '.join(s.plugin for s in recipe.pipeline.values())} → {controller}"
          f"{' → ' + recipe.actuator.plugin if recipe.actuator else ''})")
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .registry import get_registry

    reg = get_registry()
    console = Console()
    table = Table(title="components")
    for col in ("kind", "name", "package", "description"):
        table.add_column(col)
    for kind, entries in reg.components.items():
        for name in sorted(entries):
            e = entries[name]
            table.add_row(kind, name, e.package, e.component.description)
    console.print(table)
    presets = Table(title="pipeline presets")
    for col in ("name", "pipeline", "package", "description"):
        presets.add_column(col)
    for name in sorted(reg.presets):
        preset, package = reg.presets[name]
        chain = " → ".join(str(v["plugin"] if isinstance(v, dict) else v) for v in preset.pipeline.values())
        presets.add_row(name, chain, package, preset.description)
    console.print(presets)
    if reg.trainers:
        trainers = Table(title="trainers (drift train NAME RECIPE)")
        for col in ("name", "package", "description"):
            trainers.add_column(col)
        for name in sorted(reg.trainers):
            trainer, package = reg.trainers[name]
            trainers.add_row(name, package, trainer.description)
        console.print(trainers)
    for kind_name, (a, b) in reg.clashes.items():
        console.print(f"[yellow]warning:[/] {kind_name[0]} {kind_name[1]!r} is registered by both {a} and {b}")
    for name, package, error in reg.broken:
        console.print(f"[yellow]warning:[/] plugin {name} ({package}) was skipped: {error}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibration import calibrate, write_calibration
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe)
    cal = calibrate(recipe, steps=args.steps, step=args.step, radius=args.radius)
    out = write_calibration(cal, args.output or f"{recipe.name}-calibration.yaml")
    print(f"rotation {cal.rotation_deg:.2f}°, scale {cal.scale:.5g} {cal.units}/px (x/y ratio {cal.scale_ratio:.4f}, "
          f"shear {cal.shear:.4f}), residual {cal.residual_px:.3f} px over {cal.steps} positions")
    print(f"written: {out}  (use it with actuator.calibration: {{file: {out}}})")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import report

    files = report(args.run, args.output)
    print("written: " + ", ".join(str(f) for f in files.values()))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import json

    from .recipe import load_train_recipe

    recipe, trainer = load_train_recipe(args.recipe, args.trainer)
    result = trainer.run(recipe, {"resume": args.resume, "device": args.device, "progress": not args.quiet})
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_training(result)
    return 0


def _print_training(result: dict) -> None:
    """What a training produced, at a glance: the weights and the validation metrics (the card has the rest)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"trained: {result.get('output', '?')}", show_header=True)
    table.add_column("validation set")
    metrics = result.get("validation") or {}
    columns = sorted({k for m in metrics.values() if isinstance(m, dict) for k in m})
    for col in columns:
        table.add_column(col, justify="right")
    for name, m in metrics.items():
        if isinstance(m, dict):
            table.add_row(name, *(f"{m[c]:.4g}" if isinstance(m.get(c), (int, float)) else "" for c in columns))
        else:
            table.add_row(name, f"{m:.4g}" if isinstance(m, (int, float)) else str(m))
    console = Console()
    console.print(table)
    console.print(f"{result.get('pairs_seen', '?')} pairs in {result.get('seconds', '?')} s; "
                  f"{result.get('bytes', '?')} bytes, sha256 {str(result.get('sha256', '?'))[:12]}…; "
                  "the model card (JSON) is beside the weights")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drift", description="Measure and correct microscope drift.")
    parser.add_argument("--version", action="version", version=f"drift_framework {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run a closed-loop correction recipe")
    p.add_argument("recipe")
    p.add_argument("-o", "--output", help="run file (overrides run.output)")
    p.add_argument("--frames", type=int, help="number of frames (overrides run.frames)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run file (run.overwrite: true)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_run)
    run_parser = p

    p = sub.add_parser("validate", help="validate a recipe and build every component (dry run)")
    p.add_argument("recipe")
    p.add_argument("--no-build", action="store_true", help="only validate, do not build components")
    p.add_argument("--trainer", help="validate a training recipe against this trainer's schema")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("plugins", help="list components by kind, with their package, and presets")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser("report", help="figures and a markdown summary of a run file (also while it runs)")
    p.add_argument("run")
    p.add_argument("-o", "--output", help="folder (default: beside the run file)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("calibrate", help="fit the actuator's px → actuator-units matrix by moving it")
    p.add_argument("recipe")
    p.add_argument("--steps", type=int, default=12, help="positions visited (default 12)")
    p.add_argument("--step", type=float, help="largest single move, actuator units (default: 2 px worth)")
    p.add_argument("--radius", type=float, help="radius of the visited circle, actuator units (default: 4 steps)")
    p.add_argument("-o", "--output", help="calibration file (default: NAME-calibration.yaml)")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("train", help="train a learned component (drift plugins lists the trainers)")
    p.add_argument("trainer", help="trainer name, e.g. denoiser or regressor")
    p.add_argument("recipe")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: the recipe's, else cuda when available)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a summary table")
    p.set_defaults(func=_cmd_train)

    from .registry import plugin_manager

    pm = plugin_manager()
    pm.hook.drift_run_arguments(parser=run_parser)  # drift run --live … (plugins)
    pm.hook.drift_commands(subparsers=sub)  # drift correct, serve, bench, compare, view … (plugins)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line for the user; --debug for the traceback
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
