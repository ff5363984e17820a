"""Tables: markdown for people, CSV for programs."""
from __future__ import annotations

import csv
import math
from pathlib import Path


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    return str(value)


def command_line(name: str) -> str:
    """The ``drift bench NAME …`` command that is running, as a user would type it."""
    import shlex
    import sys

    return f"drift bench {name} " + shlex.join(sys.argv[3:]) if len(sys.argv) > 3 else f"drift bench {name}"


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)\n"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def write_table(rows: list[dict], out_dir, stem: str, *, title: str, command: str, notes: str = "") -> tuple[Path, Path]:
    """Write ``stem.md`` (title, the command that made it, the table, notes) and ``stem.csv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path = out / f"{stem}.md", out / f"{stem}.csv"
    md.write_text(f"# {title}\n\nMade by:\n\n```\n{command}\n```\n\n{markdown_table(rows)}\n{notes}")
    write_csv(rows, csv_path)
    return md, csv_path


def write_csv(rows: list[dict], path: Path) -> None:
    """The rows as CSV, one column per key of the first row."""
    with Path(path).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
