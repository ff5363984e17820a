"""Fault injection and fuzzing: recipes, frames, killed processes, flaky networks, full disks, limits, security.

Quality assurance of the project, not part of the installed package: it reads the checkout's ``configs/`` and
needs the test extra (hypothesis). ``make reliability`` (``python -m reliability --long --out docs``) runs every
category and writes ``docs/reliability.md`` (the table of cases tried and failures, which must be 0);
``--quick`` is the size the test suite runs, ``--long`` adds the 10 000-step run.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from .result import Result

#: The checkout this suite belongs to (it fuzzes the shipped recipes under configs/).
ROOT = Path(__file__).resolve().parents[1]

#: What this suite found, and what was changed so that every category passes.
FOUND_AND_FIXED = """\
- Recipes: a `kind` given as a list or mapping, a section given as a number, integers beyond the float range and
  YAML reader errors (control characters) raised TypeError/OverflowError or gave multi-line errors; keys with
  newlines broke the one-line format. All are now `file:line: key: message` errors.
- Frames: a hostile *first* frame (NaN, constant, complex, 3-D) became the reference; it is now refused and the next
  good frame is taken. Frames of another shape or not images crashed the run file (save_frames); they are recorded
  without their frame, and a change of frame size starts a new reference. Intensities near 1e38 overflowed float32
  sums (NaN shifts, crashes in `dcnn` and scikit-image); both frames are now rescaled by a shared power of two.
- Storage: hitting the file-size limit mid-run crashed HDF5 (segfault while closing); the writer now stops before a
  step that would not fit (file-size limit or full disk) with one clear line, and the file stays readable.
- Remote: a command applied just before the server crashed could be applied again after its restart; `drift serve
  --journal FILE` records command ids before applying them, so retries stay at most once across restarts.
- Remote: after a server restart the frame clock starts again at zero, and the engine held every correction back
  until the clock caught up with the last correction's time (half the steps of the fault run were not corrected);
  a clock that goes backwards no longer holds corrections.
- Threads: the NCC correlator kept per-call state on itself, so pipelines shared between threads (dask) gave wrong
  answers; the state now travels with the correlation map.
- Trust: `drift correct X -o X` replaced the raw input; a run replaced an existing run file; Ctrl-C exited 0 and
  SIGTERM killed the run without a summary; a wrong calibration sign pushed the view away while the run "completed";
  saturated frames gave confident shifts; dark contrast with Poisson noise crashed. All are refused, stopped or
  flagged now (the trust category). The calibration check itself was first fooled by two identical frames at the
  start (a frozen detector reads as "no drift"): pairs without any motion no longer count.
- Remote: frames and commands travelled with marshal (unsafe against malformed data) and a restarted server was
  silently taken for the same microscope; msgpack, checked frames, session ids and mutual TLS beyond loopback now.
"""

SIZES = {  # quick: what the test suite runs; full: the published figures
    "quick": {"recipes": 300, "cli": 5, "kills": 3, "restarts": 3, "drops": 3, "delays": 2, "limit_cases": 100,
              "limit_runs": 3, "limit_commands": 40, "signal_runs": 1, "calibration_runs": 6, "dark_runs": 4,
              "centred_pairs": 25},
    "full": {"recipes": 1000, "cli": 20, "kills": 20, "restarts": 20, "drops": 20, "delays": 10,
             "limit_cases": 1000, "limit_runs": 12, "limit_commands": 300, "signal_runs": 5,
             "calibration_runs": 40, "dark_runs": 20, "centred_pairs": 100},
}


def add_arguments(p) -> None:
    p.add_argument("--quick", action="store_true", help="the test suite's sizes (a minute) instead of the full run")
    p.add_argument("--long", action="store_true", help="add the 10 000-step long run (minutes)")
    p.add_argument("--only", help="comma-separated categories: recipes,frames,process,remote,storage,limits,security,trust")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/faults", help="folder for reliability.md (docs/ publishes it)")


def run_suite(work: Path, size: str = "full", *, only=None, long: bool = False, seed: int = 0) -> list[Result]:
    """Run the fault categories; returns one :class:`Result` per category."""
    from . import frames, limits, process, recipes, remote, security, storage, trust

    n = SIZES[size]
    suites = {
        "recipes": lambda: recipes.fuzz(ROOT, work / "recipes", n["recipes"], n["cli"], seed),
        "frames": lambda: frames.frame_suite(work / "frames"),
        "process": lambda: process.kill_runs(work / "process", n["kills"], seed),
        "remote": lambda: remote.run_with_faults(work / "remote", n["restarts"], n["drops"], n["delays"], seed),
        "storage": lambda: storage.storage_faults(work / "storage"),
        "limits": lambda: limits.limits_suite(work / "limits", n["limit_cases"], n["limit_runs"],
                                              n["limit_commands"], seed),
        "security": lambda: security.security_suite(work / "security"),
        "trust": lambda: trust.trust_suite(work / "trust", n["signal_runs"], n["calibration_runs"], n["dark_runs"],
                                           seed, n["centred_pairs"]),
    }
    results = []
    for name, suite in suites.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        result = suite()
        result.seconds = time.perf_counter() - t0
        results.append(result)
    if long:
        from .longrun import long_run_check

        t0 = time.perf_counter()
        result, _ = long_run_check()
        result.seconds = time.perf_counter() - t0
        results.append(result)
    return results


def write_report(results: list[Result], out: Path, command: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Reliability: fault injection and fuzzing\n", "Made by:\n", f"```\n{command}\n```\n",
             "Every case must end in a documented outcome — a validated recipe or one `file:line` error, a "
             "`FrameError` or a skipped step, a readable run file, a completed run — never a crash, a traceback, "
             "a lost step, a repeated command or a move beyond the limits. **failures** counts the cases that "
             "did not.\n",
             "| category | cases | failures | seconds | what was tried |", "|---|---|---|---|---|"]
    for r in results:
        row = r.row()
        lines.append(f"| {row['category']} | {row['cases']} | {row['failures']} | {row['seconds']} | {row['what']} |")
    failures = [f"- {r.category}: {f}" for r in results for f in r.failures]
    if failures:
        lines += ["\n## Failures\n", *failures[:200]]
    lines += ["\n## Found by this suite, and fixed\n", FOUND_AND_FIXED]
    path = out / "reliability.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m reliability [--quick] [--long] [--only …] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    size = "quick" if args.quick else "full"
    only = set(args.only.split(",")) if args.only else None
    with tempfile.TemporaryDirectory(prefix="drift-faults-") as tmp:
        results = run_suite(Path(tmp), size, only=only, long=args.long, seed=args.seed)
    command = "python -m reliability " + shlex.join(sys.argv[1:] if argv is None else argv)
    path = write_report(results, Path(args.out), command.strip())
    for r in results:
        print(f"{r.category:16s} {r.cases:6d} cases {len(r.failures):4d} failures  {r.seconds:7.1f} s")
        for f in r.failures[:5]:
            print(f"    {f}")
    print(f"written: {path}")
    return 1 if any(r.failures for r in results) else 0
