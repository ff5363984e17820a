"""Recipe fuzzing: every file in ``configs/`` mutated by hypothesis; each case validates or fails with one line
``FILE:LINE: key.path: message`` — never a traceback."""
from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import yaml

from drift_framework.recipe import RecipeError, load_recipe, load_train_recipe

from .result import Result

_TRAINER = re.compile(r"drift train (\w+)")
_BROKEN = [":", ": :", "\t", "{", "}", "[", "]", "&a ", "*b", "!!python/object/apply:os.system ['echo PWNED']",
           "- ", "? ", "%", "@", "`", "|", ">", "\x00", "\ufeff", "'", '"', "#", "\n  ", "\n\t- x"]


def config_files(root: Path) -> list[Path]:
    return sorted((root / "configs").rglob("*.yaml"))


def _paths(node, prefix=()):
    """Every key path of a parsed YAML tree (mappings and lists)."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _get(node, path):
    for key in path:
        node = node[key]
    return node


def _values(st):
    return st.one_of(st.integers(min_value=-10**30, max_value=10**30), st.floats(allow_nan=True, allow_infinity=True),
                     st.text(max_size=12), st.booleans(), st.none(), st.lists(st.integers(-5, 5), max_size=4),
                     st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
                     st.sampled_from([-1, 0, 1e308, -1e308, 10**400, 2**63, "1e5", "NaN", "∞", "ünïcödé", ""]))


def mutate(draw, st, text: str) -> tuple[str, str]:
    """A mutated recipe text and the kind of mutation."""
    kind = draw(st.sampled_from(["type", "missing", "unknown", "range", "broken", "unicode", "structure"]))
    if kind == "broken":
        lines = text.splitlines(keepends=True)
        how = draw(st.sampled_from(["truncate", "insert", "dedent", "duplicate"]))
        if how == "truncate":
            return text[:draw(st.integers(0, len(text)))], kind
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        if how == "insert":
            j = draw(st.integers(0, len(lines[i]) if lines else 0))
            junk = draw(st.one_of(st.sampled_from(_BROKEN), st.text(max_size=4)))
            lines[i] = lines[i][:j] + junk + lines[i][j:] if lines else junk
        elif how == "dedent" and lines:
            lines[i] = " " * draw(st.integers(1, 3)) + lines[i]
        elif lines:
            lines.insert(i, lines[i])
        return "".join(lines), kind
    data = yaml.safe_load(text)
    data = copy.deepcopy(data)
    paths = [p for p in _paths(data) if p]
    path = draw(st.sampled_from(paths))
    parent = _get(data, path[:-1])
    key = path[-1]
    if kind == "missing":
        del parent[key]
    elif kind == "unknown":
        target = parent if isinstance(parent, dict) else data
        target[draw(st.text(min_size=1, max_size=10))] = draw(_values(st))
    elif kind == "range":
        parent[key] = draw(st.sampled_from([-1, 0, -0.5, 1e308, -1e308, 10**30, float("nan"), float("inf"),
                                            -float("inf"), 2**63, 1e-320]))
    elif kind == "unicode":
        parent[key] = draw(st.text(min_size=1, max_size=20))
        if isinstance(parent, dict) and draw(st.booleans()):
            parent[draw(st.text(min_size=1, max_size=8))] = parent.pop(key)
    elif kind == "structure":
        parent[key] = draw(st.sampled_from([[], {}, [[[]]], {"plugin": None}, [{"kind": "x"}], "plugin"]))
    else:
        parent[key] = draw(_values(st))
    try:
        return yaml.safe_dump(data, allow_unicode=True, sort_keys=False), kind
    except (yaml.YAMLError, ValueError, OverflowError):
        return text[: len(text) // 2], "broken"


def check_text(text: str, path: Path, trainer: str | None) -> str | None:
    """None when the recipe validates or fails with one line naming the file and a line; else what went wrong."""
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_train_recipe(path, trainer) if trainer else load_recipe(path)
    except RecipeError as exc:
        msg = str(exc)
        if "\n" in msg or not re.match(re.escape(str(path)) + r":\d+: ", msg):
            return f"error without one file:line line: {msg!r}"
        return None
    except Exception as exc:  # the failure this fuzzer hunts
        import traceback

        where = traceback.extract_tb(exc.__traceback__)[-1]
        return f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})"
    return None


def fuzz(root: Path, work: Path, cases: int, cli_cases: int = 10, seed: int = 0) -> Result:
    """Run ``cases`` hypothesis-generated mutations (plus ``cli_cases`` of them through ``drift validate``)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    files = config_files(root)
    texts = {f: f.read_text() for f in files}
    trainers = {f: (m.group(1) if (m := _TRAINER.search(texts[f].splitlines()[0])) else None) for f in files}
    work.mkdir(parents=True, exist_ok=True)
    target = work / "fuzzed.yaml"
    result = Result("recipe fuzzing", detail=f"{len(files)} files in configs/, mutated by hypothesis")
    kinds: dict = {}
    cli_samples: list = []

    @hypothesis_seed(seed)
    @settings(max_examples=cases, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data):
        f = data.draw(st.sampled_from(files))
        text, kind = mutate(data.draw, st, texts[f])
        kinds[kind] = kinds.get(kind, 0) + 1
        result.cases += 1
        problem = check_text(text, target, trainers[f])
        if problem:
            result.fail(f"{f.name} ({kind}): {problem}")
        if len(cli_samples) < cli_cases and result.cases % max(1, cases // max(cli_cases, 1)) == 0:
            cli_samples.append((text, trainers[f]))

    one()
    drift = Path(sys.executable).with_name("drift")
    for i, (text, trainer) in enumerate(cli_samples):
        path = work / f"cli{i}.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        args = [str(drift), "validate", str(path)] + (["--trainer", trainer] if trainer else [])
        out = subprocess.run(args, capture_output=True, text=True, timeout=120)
        result.cases += 1
        if "Traceback" in out.stderr or (out.returncode != 0 and len(out.stderr.strip().splitlines()) != 1):
            result.fail(f"drift validate: exit {out.returncode}, {out.stderr.strip()[:300]!r}")
    result.detail += "; mutations: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    result.detail += f"; {len(cli_samples)} through `drift validate`"
    return result
