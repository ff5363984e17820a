"""Built-in plugin: ``drift bench`` (accuracy, speed, simulator, loop) and ``drift compare``.

Every accuracy number uses the metrics of the design brief: success (Euclidean
error < 0.5 px), RMSE over successes, efficiency = RMSE / √mean(trace CRLB),
and the calibration of ``sigma`` (RMS of |error| / sigma).  Speed is quoted as
a ratio to scikit-image ``phase_cross_correlation(upsample_factor=100)``
measured in the same run, pair by pair, because machines are noisy.
"""
from __future__ import annotations

import argparse

from drift_framework import hookimpl

from . import accuracy, compare, confidence, learned, loop, scan, sim, speed
from .report import write_table

COMMANDS = {"accuracy": accuracy, "speed": speed, "sim": sim, "loop": loop, "confidence": confidence, "scan": scan,
            "learned": learned}


@hookimpl
def drift_commands(subparsers: argparse._SubParsersAction) -> None:
    add_parser(subparsers)
    compare.add_parser(subparsers)


def _plugin_benchmarks() -> dict:
    """Benchmarks other plugins register (``drift_benchmarks`` hook), by name."""
    from drift_framework.registry import plugin_manager

    return {b.name: b for found in plugin_manager().hook.drift_benchmarks() for b in found or ()}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: accuracy vs the Cramér–Rao bound, speed vs scikit-image, simulator")
    p.set_defaults(func=main)
    kinds = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, module in COMMANDS.items():
        module.add_arguments(kinds.add_parser(name, help=(module.__doc__ or name).strip().splitlines()[0]))
    for name, bench in _plugin_benchmarks().items():
        if name not in COMMANDS:
            bench.add_arguments(kinds.add_parser(name, help=bench.description))


def main(args: argparse.Namespace) -> int:
    if args.bench in COMMANDS:
        return COMMANDS[args.bench].run(args)
    return _plugin_benchmarks()[args.bench].run(args)


__all__ = ["add_parser", "main", "write_table"]
