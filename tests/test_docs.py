"""The manual cannot rot: generated references cover every hook and component, every example validates, every
Python snippet runs, every recipe snippet validates, and the site builds with ``mkdocs build --strict``."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT

import drift_framework as df
from drift_framework import docgen, load_recipe
from drift_framework.recipe import load_train_recipe
from drift_framework.registry import BUILTIN_PLUGINS, get_registry

DOCS = ROOT / "docs"
#: Hand-written pages whose snippets are checked (benchmarks/ are generated tables; plugins/ is a package).
PAGES = sorted(p for p in DOCS.glob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)
BASE_RECIPE = {"name": "docs", "source": {"plugin": "simulator", "shape": [64, 64], "spacing_px": 10},
               "pipeline": "classical"}


def fences(page: Path, lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(page.read_text()) if kind == lang]


def test_hook_reference_lists_every_hook_with_its_example():
    text = docgen.hooks_markdown()
    names = docgen.hook_names()
    assert len(names) >= 12
    for name in names:
        section = text.split(f"## `{name}(", 1)[1].split("\n## ", 1)[0]
        assert "```python" in section and "@hookimpl" in section, f"{name} has no example in the reference"


def test_recipe_reference_lists_every_builtin_component_preset_and_trainer():
    reg = get_registry()
    text = docgen.recipes_markdown(reg)
    builtin = 0
    for kind, entries in reg.components.items():
        for name, entry in entries.items():
            if entry.plugin in BUILTIN_PLUGINS:
                builtin += 1
                assert f"### `{name}` {{ #{kind}-{name} }}" in text, f"{kind} {name} missing from the reference"
                for key in entry.component.params:
                    assert f"| `{key}` |" in text
    assert builtin >= 27
    for name in reg.presets:
        assert f"| `{name}` |" in text
    for name in reg.trainers:
        assert f"### `{name}` {{ #trainer-{name} }}" in text
    for key in ("frames", "reference", "min_confidence", "limits.max_step", "calibration.file"):
        assert f"| `{key}` |" in text


def test_every_component_example_in_the_reference_validates():
    reg = get_registry()
    checked = 0
    for kind, entries in reg.components.items():
        for name, entry in entries.items():
            fragment = docgen.component_example(kind, name, entry.component)
            recipe = load_recipe({**BASE_RECIPE, **fragment})
            spec = recipe.source if kind == "source" else recipe.pipeline.get(kind) or getattr(recipe, kind)
            assert spec.plugin == name
            checked += 1
    assert checked == sum(len(e) for e in reg.components.values())


def test_cli_reference_has_every_command():
    text = docgen.cli_markdown()
    for cmd in ("run", "validate", "plugins", "report", "calibrate", "train", "bench", "compare", "serve", "correct"):
        assert f"## `drift {cmd}`" in text
    assert "### `drift bench accuracy`" in text and "--scheduler" in text


@pytest.mark.parametrize("page", [p for p in PAGES if fences(p, "yaml")], ids=lambda p: p.name)
def test_recipe_snippets_validate(page, tmp_path):
    """Every YAML block is a recipe (or a fragment of one) that validates; a ``# drift train NAME`` first line
    makes it a training recipe for that trainer. Blocks that include a file (--8<--) show a file tested elsewhere."""
    count = 0
    for body in fences(page, "yaml"):
        if body.startswith("--8<--"):  # the page shows a real file: it must exist (its own tests run it)
            assert (ROOT / body.split('"')[1]).is_file(), body
            count += 1
            continue
        data = yaml.safe_load(body)
        trainer = re.match(r"# drift train (\w+)", body)
        if trainer:
            path = tmp_path / f"train{count}.yaml"
            path.write_text(body)
            load_train_recipe(path, trainer.group(1))
        elif "source" in data:
            load_recipe(body)
        else:
            load_recipe({**BASE_RECIPE, **data})
        count += 1
    assert count


@pytest.mark.parametrize("page", [p for p in PAGES if fences(p, "python")], ids=lambda p: p.name)
def test_python_snippets_run(page, tmp_path, monkeypatch):
    """The Python blocks of a page run in order in one namespace, in a fresh folder that has the repo's configs."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, body in enumerate(fences(page, "python")):
        code = compile(body, f"{page.name}[python block {i + 1}]", "exec")
        exec(code, namespace)  # noqa: S102 - the docs' own snippets


def test_every_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in DOCS.glob("*.md"):
        assert f" {page.name}" in nav, f"{page.name} is not in mkdocs.yml nav"


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, DISABLE_MKDOCS_2_WARNING="true", NO_MKDOCS_2_WARNING="1"))
    # not -q: mkdocs counts strict-mode warnings only when they are logged
    assert out.returncode == 0 and "WARNING" not in out.stderr, out.stdout + out.stderr
    html = (tmp_path / "site" / "reference" / "recipes" / "index.html").read_text()
    assert "gauss-newton" in html and "dcnn-regressor" in html
    assert (tmp_path / "site" / "reference" / "hooks" / "index.html").is_file()


def test_readme_comparison_table_is_the_generated_one():
    """The README's comparison table is the one `drift compare` wrote (regenerate both together)."""
    generated = [line for line in (DOCS / "benchmarks" / "compare" / "compare.md").read_text().splitlines()
                 if line.startswith("|")]
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<details><summary>The table behind the figure</summary>", 1)[1].split("</details>", 1)[0]
    assert [line for line in block.splitlines() if line.startswith("|")] == generated


def _served_microscope(tmp_path, tls: bool):
    """`drift serve` of the virtual microscope on a free loopback port (with the lab PKI of the remote page)."""
    from test_pyro5 import SERVED, Server, _free_port, _pki

    (tmp_path / "served.yaml").write_text(SERVED)
    args = []
    if tls:
        pki = _pki(tmp_path)
        for src, name in (("ca.pem", "lab-ca.pem"), ("client.pem", "analysis-1.pem"), ("client.key", "analysis-1.key")):
            (tmp_path / name).write_bytes(Path(pki[src]).read_bytes())
        args = ["--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"], "--client-ca", pki["ca.pem"]]
    return Server(tmp_path / "served.yaml", _free_port(), *args).start()


@pytest.mark.parametrize("page", [p for p in PAGES if fences(p, "yaml")], ids=lambda p: p.name)
def test_recipe_snippets_run(page, tmp_path, monkeypatch):
    """Every recipe on the page runs as written (5 frames, in a fresh folder): a recorded series is written where
    the recipe names it, a served microscope (with the certificates the page tells how to make) answers where
    the recipe points, and a training recipe's source makes pairs."""
    import hyperspy.api as hs

    from drift_framework.assembly import build_source

    monkeypatch.chdir(tmp_path)
    ran = 0
    for k, body in enumerate(fences(page, "yaml")):
        if body.startswith("--8<--"):
            continue
        data = yaml.safe_load(body)
        trainer_name = re.match(r"# drift train (\w+)", body)
        if trainer_name:  # trained for real on a tiny budget, so the recipes after it find the weights it wrote
            data["train"].update(batches=4, batch_size=4, validate_every=2, validation_pairs=4,
                                 validation_levels=[1.0])
            if trainer_name.group(1) == "regressor":  # 4 batches learn nothing: a smoke test of the recipe
                data["train"]["min_success"] = 0
            path = tmp_path / f"train{k}.yaml"
            path.write_text(yaml.safe_dump(data))
            recipe, trainer = load_train_recipe(path, trainer_name.group(1))
            result = trainer.run(recipe, {"resume": False, "device": "cpu", "progress": False})
            assert Path(data["train"]["output"].replace("{name}", data["name"])).is_file(), result
            ran += 1
            continue
        text = body if "source" in data else yaml.safe_dump({**BASE_RECIPE, **data})
        source = data.get("source", {})
        server = None
        if isinstance(source, dict) and source.get("plugin") == "hyperspy":
            sim = build_source("simulator", shape=[64, 64], spacing_px=[10],
                               drift=[{"kind": "linear", "velocity_px_per_frame": [0.3, 0.2]}])
            hs.signals.Signal2D(np.stack([sim.acquire().data for _ in range(6)])).save(source["path"])
        if isinstance(source, dict) and source.get("plugin") == "pyro5":
            server = _served_microscope(tmp_path, tls="tls_cert" in source)
            text = re.sub(r"PYRO:drift\.microscope@[\w.]+:\d+", server.uri, text)
        try:
            summary = df.run(text, output=tmp_path / f"block{k}.h5", frames=5)
        finally:
            if server is not None:
                server.stop()
        assert summary.steps >= 2 and df.read_run(summary.output).finished, (page.name, k, summary.stop_reason)
        ran += 1
    assert ran or all(body.startswith("--8<--") for body in fences(page, "yaml"))


@pytest.mark.slow
def test_the_dask_cluster_script_runs_as_a_script(tmp_path):
    """docs/dask.md's LocalCluster example, saved as a file and run with python (workers import it: __main__)."""
    import subprocess
    import sys

    body = next(b for b in fences(ROOT / "docs" / "dask.md", "python") if "LocalCluster" in b)
    script = tmp_path / "cluster.py"
    script.write_text(body)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tcp://127.0.0.1:" in out.stdout
    rows = [line.strip(" []") for line in out.stdout.splitlines()[1:] if line.strip().startswith("[")]
    shifts = np.array([[float(v) for v in row.split()] for row in rows])
    assert shifts.shape == (6, 2) and np.allclose(shifts[-1], [2.5, -1.5], atol=0.3)


def test_recipe_reference_lists_every_drift_kind_and_the_bench_keys():
    from drift_bench.compare import DEFAULTS
    from drift_simulator.drift import DRIFT_KINDS

    text = docgen.recipes_markdown()
    for kind in DRIFT_KINDS:
        assert f"`drift[].kind: {kind}`" in text
    assert "`drift[].amplitude_px`" in text and "`drift[].size_px`" in text
    assert [k for k, _, _ in docgen.BENCH_KEYS] == list(DEFAULTS)
    for key, value in DEFAULTS.items():
        shown = ",".join(value) if isinstance(value, list) and isinstance(value[0], str) else value
        assert f"| `{key}` | `{shown}` |" in text


def test_committed_reference_pages_are_current():
    """docs/reference/ is committed (its links work on GitHub too) and must match the code: `make reference`."""
    for rel, text in docgen.pages().items():
        path = ROOT / "docs" / rel
        assert path.is_file(), f"{rel} missing: run make reference"
        assert path.read_text(encoding="utf-8") == text, f"{rel} is stale: run make reference"


def test_links_between_pages_resolve_on_disk():
    """Every relative link of docs/*.md points at a file of the repository (as GitHub renders them)."""
    for page in (ROOT / "docs").rglob("*.md"):
        if "example-vendor" in page.parts:
            continue
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"
