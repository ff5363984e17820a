"""Reference pages generated from the code, so the manual cannot drift from it.

``python -m drift_framework.docgen`` (``make reference``) writes these pages to ``docs/reference/``, where they are
committed (links work on GitHub too; a test fails when they are stale):

* ``reference/recipes.md`` — every recipe section, every built-in (and installed) component with its
  parameters, defaults, bounds and an example, the presets and the trainers, from the plugins' schemas;
* ``reference/hooks.md`` — every hook of :mod:`drift_framework.hookspecs` with its docstring and example;
* ``reference/cli.md`` — every ``drift`` command with its options, from the argument parser.

``tests/test_docs.py`` checks that every hook and component appears and that every example validates.
"""
from __future__ import annotations

import argparse
import inspect
import json
import re
import textwrap
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import yaml

from .types import COMPONENT_KINDS, REQUIRED, Component, Param

if TYPE_CHECKING:
    from .registry import Registry

KIND_TITLES = {"source": "Frame sources", "denoiser": "Denoisers", "correlator": "Correlators",
               "estimator": "Shift estimators", "controller": "Controllers", "actuator": "Actuators"}

#: Limits shown in every actuator example (the engine refuses an actuator without limits).
EXAMPLE_LIMITS = {"max_step": 50.0, "travel": 1000.0}


# --------------------------------------------------------------------------- #
# Parameter tables
# --------------------------------------------------------------------------- #


def _fmt(value: Any) -> str:
    if value is REQUIRED:
        return "**required**"
    return f"`{json.dumps(value, ensure_ascii=False)}`" if value is not None else "`null`"


def _type(p: Param) -> str:
    if p.type == "vector":
        return f"vector[{p.length}]" if p.length else "vector"
    if p.type == "list" and p.item is not None:
        return f"list of {_type(p.item)}"
    return p.type


def _bounds(p: Param) -> str:
    parts = [f"{sym} {v:g}" for sym, v in (("&gt;", p.gt), ("≥", p.ge), ("&lt;", p.lt), ("≤", p.le))
             if v is not None]
    if p.choices:
        parts.append("one of " + ", ".join(f"`{c}`" for c in p.choices))
    if p.item is not None and p.item.choices:
        parts.append("items: " + ", ".join(f"`{c}`" for c in p.item.choices))
    if p.nullable:
        parts.append("nullable")
    return "; ".join(parts)


def _rows(schema: Mapping[str, Param], prefix: str = "") -> list[str]:
    rows = []
    for key, p in schema.items():
        name = f"{prefix}{key}"
        help_ = p.help.replace("|", "\\|")
        rows.append(f"| `{name}` | {_type(p)} | {_fmt(p.default)} | {_bounds(p)} | {help_} |")
        if p.fields:
            rows += _rows(p.fields, f"{name}.")
        for kind, fields in (p.variants or {}).items():
            rows.append(f"| `{name}.kind: {kind}` | | | | variant `{kind}` |")
            rows += _rows(fields, f"{name}.")
        if p.item is not None and (p.item.fields or p.item.variants):  # a list of mappings: one row per item key
            rows += _rows({"[]": p.item}, f"{name}")[1:]
    return rows


def param_table(schema: Mapping[str, Param]) -> str:
    """A markdown table of a parameter schema (nested fields and variants as dotted rows)."""
    if not schema:
        return "No parameters.\n"
    head = "| key | type | default | allowed | meaning |\n|---|---|---|---|---|\n"
    return head + "\n".join(_rows(schema)) + "\n"


# --------------------------------------------------------------------------- #
# Recipe reference
# --------------------------------------------------------------------------- #


def component_example(kind: str, name: str, component: Component) -> dict:
    """The recipe fragment that uses component ``name`` of ``kind`` (a dict ready for YAML)."""
    params = {"plugin": name, **dict(component.example or {})}
    if kind in ("denoiser", "correlator", "estimator"):
        return {"pipeline": {"preset": "classical", kind: params}}
    if kind == "actuator":
        return {"actuator": {**params, "limits": dict(EXAMPLE_LIMITS)}}
    return {kind: params}


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


#: ``bench:`` keys of a recipe, as ``drift compare`` reads them (the drift_bench plugin checks its defaults match).
BENCH_KEYS = (
    ("pipelines", "`dcnn,classical,phase,skimage`", "presets or recipe paths to compare (a list or a comma string)"),
    ("snr", "`[4.0, 1.0, 0.5, 0.25]`", "noise levels (SNR, or dose in e/px with `noise: poisson`)"),
    ("size", "`256`", "frame side, px"),
    ("pairs", "`100`", "pairs per level"),
    ("lattice", "`hexagonal`", "simulated lattice"),
    ("spacing", "`[8.0, 16.0]`", "lattice spacing range, px"),
    ("noise", "`uniform`", "`uniform`, `gaussian` or `poisson`"),
    ("seed", "`2026`", "pair seed"),
    ("source", "`simulator`", "source plugin that makes the pairs"),
)


def recipes_markdown(registry: Registry | None = None) -> str:
    """The recipe reference: top-level keys, ``run:``, the actuator's limits, every component, presets, trainers."""
    from .recipe import ACTUATOR_SCHEMA, RUN_SCHEMA
    from .registry import get_registry

    reg = registry or get_registry()
    out = ["# Recipe reference\n",
           "Generated from the plugins' parameter schemas by `make reference` "
           "(`drift_framework/docgen.py`), so it always matches the installed code. "
           "A recipe is a YAML mapping with these top-level keys:\n",
           "| key | what |\n|---|---|\n"
           "| `name` | run name (default: the file name); used in `{name}` of paths |\n"
           "| `description` | free text |\n"
           "| `source` | a [frame source](#frame-sources) `{plugin: NAME, ...}` |\n"
           "| `pipeline` | a [preset](#presets) name, or `{preset, denoiser, correlator, estimator}` |\n"
           "| `controller` | a [controller](#controllers) (default `none`) |\n"
           "| `actuator` | an [actuator](#actuators) with `limits` (omit it to measure only) |\n"
           "| `run` | [how the loop runs](#run) |\n"
           "| `train` | a trainer's settings (`drift train NAME RECIPE`, see [trainers](#trainers)) |\n"
           "| `bench` | settings for `drift compare RECIPE` (see [bench](#bench)) |\n",
           "## run\n", param_table(RUN_SCHEMA),
           "## bench\n",
           "`drift compare RECIPE` reads these keys from the recipe's `bench:` section; command-line options "
           "override them.\n\n"
           "| key | default | meaning |\n|---|---|---|\n" + "\n".join(f"| `{k}` | {d} | {m} |" for k, d, m in BENCH_KEYS)
           + "\n",
           "## Actuator limits and calibration\n",
           "Every `actuator:` section takes these keys besides its plugin's own parameters; `limits` is required "
           "and the engine clips every command to it.\n", param_table(ACTUATOR_SCHEMA)]
    for kind in COMPONENT_KINDS:
        out.append(f"## {KIND_TITLES[kind]}\n")
        for name in reg.names(kind):
            entry = reg.components[kind][name]
            c = entry.component
            out.append(f"### `{name}` {{ #{kind}-{name} }}\n")
            out.append(f"{c.description}  \n*{kind} from `{entry.package}`*\n")
            out.append(param_table(c.params))
            out.append("Example:\n\n```yaml\n" + _yaml(component_example(kind, name, c)) + "```\n")
    out.append("## Presets\n")
    out.append("`pipeline: NAME` selects a preset; `pipeline: {preset: NAME, estimator: ...}` overrides parts of it.\n")
    out.append("| preset | denoiser | correlator | estimator | what |\n|---|---|---|---|---|\n")
    for name, (preset, _package) in sorted(reg.presets.items()):
        cells = []
        for kind in ("denoiser", "correlator", "estimator"):
            spec = preset.pipeline.get(kind, "none")
            spec = spec if isinstance(spec, dict) else {"plugin": spec}
            extra = ", ".join(f"{k}: {v}" for k, v in spec.items() if k != "plugin")
            cells.append(f"`{spec['plugin']}`" + (f" ({extra})" if extra else ""))
        out.append(f"| `{name}` | " + " | ".join(cells) + f" | {preset.description} |\n")
    out.append("\n## Trainers\n")
    for name, (trainer, package) in sorted(reg.trainers.items()):
        out.append(f"### `{name}` {{ #trainer-{name} }}\n")
        out.append(f"{trainer.description}  \n*`drift train {name} RECIPE`, from `{package}`; keys of the "
                   f"recipe's `train:` section*\n")
        out.append(param_table(trainer.params))
    return "\n".join(out)


# --------------------------------------------------------------------------- #
# Hook reference
# --------------------------------------------------------------------------- #


def hook_names() -> list[str]:
    """Every hook specification, in the order of :mod:`drift_framework.hookspecs`."""
    from . import hookspecs

    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if name.startswith("drift_") and hasattr(fn, "drift_framework_spec")]


def _docstring_markdown(doc: str) -> str:
    """numpydoc/reST docstring → markdown: ``Example::`` blocks become fenced Python."""
    lines, in_code = inspect.cleandoc(doc).splitlines(), False
    out: list[str] = []
    for line in lines:
        if in_code and out[-1].endswith("```python") and not line.strip():
            continue  # the blank line after "Example::"
        if in_code and line and not line.startswith(" "):
            out.append("```\n")
            in_code = False
        if line.rstrip().endswith("::") and not in_code:
            out.append(line.rstrip()[:-1] + "\n\n```python")
            in_code = True
            continue
        out.append(line[4:] if in_code else re.sub(r":param (\w+):", r"**\1**:", line.replace(":return:", "**Returns:**")))
    if in_code:
        out.append("```")
    text = "\n".join(out).replace(":class:", "").replace(":data:", "").replace(":func:", "")
    return text.replace("`~", "`")


def hooks_markdown() -> str:
    """The hook reference, from the docstrings of :mod:`drift_framework.hookspecs`."""
    from . import hookspecs

    out = ["# Hook reference\n",
           "Generated from `drift_framework/hookspecs.py` by `make reference`. "
           + _docstring_markdown(hookspecs.__doc__) + "\n"]
    for name in hook_names():
        fn = getattr(hookspecs, name)
        out.append(f"## `{name}{inspect.signature(fn)}`\n")
        out.append(_docstring_markdown(fn.__doc__ or "") + "\n")
    return "\n".join(out)


# --------------------------------------------------------------------------- #
# CLI reference
# --------------------------------------------------------------------------- #


def cli_markdown() -> str:
    """Every ``drift`` command with its ``--help`` text, from the parser (plugins' commands included), wrapped at
    100 columns whatever the terminal (argparse reads ``COLUMNS``)."""
    import os

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        return _cli_markdown()
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved


def _cli_markdown() -> str:
    from .cli import build_parser

    parser = build_parser()
    out = ["# Command reference\n", "Generated from the argument parser by `make reference` "
           "(commands added by plugins through `drift_commands` included).\n",
           "```text\n" + parser.format_help() + "```\n"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(f"## `drift {name}`\n")
                out.append("```text\n" + textwrap.dedent(sub.format_help()) + "```\n")
                for sub_action in sub._actions:  # nested commands, e.g. drift bench accuracy
                    if isinstance(sub_action, argparse._SubParsersAction):
                        for sub_name, subsub in sub_action.choices.items():
                            out.append(f"### `drift {name} {sub_name}`\n")
                            out.append("```text\n" + subsub.format_help() + "```\n")
    return "\n".join(out)


def pages(registry: Registry | None = None) -> dict[str, str]:
    """``{path below docs/: markdown}`` of every generated page."""
    return {"reference/recipes.md": recipes_markdown(registry), "reference/hooks.md": hooks_markdown(),
            "reference/cli.md": cli_markdown()}


def write_pages(docs_dir: str = "docs") -> list[str]:
    """Write the generated pages below ``docs_dir`` (they are committed, so that links work on GitHub too)."""
    from pathlib import Path

    written = []
    for rel, text in pages().items():
        path = Path(docs_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(str(path))
    return written


if __name__ == "__main__":  # python -m drift_framework.docgen [DOCS_DIR]: regenerate the reference pages
    import sys

    for written_path in write_pages(sys.argv[1] if len(sys.argv) > 1 else "docs"):
        print(f"written: {written_path}")
