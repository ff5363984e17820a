import inspect

import pytest

from drift_framework import hookspecs
from drift_framework.registry import KIND_HOOKS


def _hooks():
    return [f for name, f in vars(hookspecs).items() if name.startswith("drift_") and inspect.isfunction(f)]


def test_every_hook_is_documented_with_an_example():
    hooks = _hooks()
    assert len(hooks) >= 10
    for f in hooks:
        doc = inspect.getdoc(f) or ""
        assert len(doc.splitlines()[0]) > 10, f"{f.__name__} has no summary line"
        assert "Example::" in doc, f"{f.__name__} has no example"
        assert "@hookimpl" in doc, f"{f.__name__}'s example does not show a hook implementation"


def test_one_hook_per_component_kind_and_observers():
    names = {f.__name__ for f in _hooks()}
    assert set(KIND_HOOKS.values()) <= names
    assert {"drift_run_started", "drift_step_completed", "drift_run_finished", "drift_presets"} <= names


def _example(fn) -> str:
    """The code block after ``Example::`` in a hook's docstring."""
    import textwrap

    doc = inspect.getdoc(fn)
    block = doc.split("Example::", 1)[1].splitlines()
    lines = []
    for line in block[1:]:
        if line and not line.startswith(" "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


def _example_plugin(name):
    import types

    import pluggy

    from drift_framework.registry import register_checked

    module = types.ModuleType(f"example_{name}")
    exec(compile(_example(getattr(hookspecs, name)), f"<{name} example>", "exec"), module.__dict__)
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    register_checked(pm, module, name)  # the example implements a real hook, spelled right
    return module


COMPONENT_HOOKS = {hook: kind for kind, hook in KIND_HOOKS.items()}


@pytest.mark.parametrize("hook", sorted(COMPONENT_HOOKS))
def test_component_hook_examples_run_and_keep_the_contract(hook):
    from drift_framework import Component
    from drift_framework.assembly import load_pipeline
    from drift_framework.testing import check_component

    module = _example_plugin(hook)
    (component,) = getattr(module, hook)()
    assert isinstance(component, Component)
    params = {k: p.default for k, p in component.params.items()}
    built = component.factory(params, None)
    kind = COMPONENT_HOOKS[hook]
    options = {"correlator": load_pipeline("ncc-peak").correlator} if kind == "estimator" else {}
    check_component(kind, built, **options)


def test_preset_trainer_and_command_examples_run(capsys):
    import argparse
    from types import SimpleNamespace

    from drift_framework.recipe import resolve_pipeline_spec
    from drift_framework.yamldoc import YamlDoc

    (preset,) = _example_plugin("drift_presets").drift_presets()
    specs = resolve_pipeline_spec(dict(preset.pipeline), ("pipeline",), YamlDoc("<example>"))
    assert specs["estimator"].plugin == "parabolic"
    (trainer,) = _example_plugin("drift_trainers").drift_trainers()
    assert trainer.run(SimpleNamespace(extra={"train": {"batches": 3}}), {})["batches"] == 3
    parser = argparse.ArgumentParser()
    _example_plugin("drift_commands").drift_commands(subparsers=parser.add_subparsers())
    args = parser.parse_args(["hello"])
    assert args.func(args) == 0 and capsys.readouterr().out == "hello\n"
    (bench,) = _example_plugin("drift_benchmarks").drift_benchmarks()
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.name == "my-bench" and bench.run(parser.parse_args(["--pairs", "3"])) == 0
    assert capsys.readouterr().out == "3 pairs: all fine\n"


def test_observer_examples_run_on_a_real_run(tmp_path, capsys):
    import drift_framework as df

    observers = [_example_plugin(h) for h in ("drift_run_started", "drift_step_completed", "drift_run_finished")]
    recipe = (f"name: observed\nsource: {{plugin: simulator, shape: [64, 64]}}\npipeline: classical\n"
              f"run: {{frames: 4, output: {tmp_path / 'o.h5'}}}\n")
    summary = df.run(recipe, observers=observers)
    out = capsys.readouterr().out
    assert f"recording to {tmp_path / 'o.h5'}" in out and "4 steps; stopped because: completed" in out
    assert summary.steps == 4


def test_run_option_examples_add_an_option_and_an_observer_that_runs(tmp_path):
    import argparse

    import drift_framework as df

    parser = argparse.ArgumentParser()
    _example_plugin("drift_run_arguments").drift_run_arguments(parser=parser)
    make = _example_plugin("drift_run_observers").drift_run_observers
    assert make(args=parser.parse_args([])) == []
    (beeper,) = make(args=parser.parse_args(["--beep"]))
    recipe = (f"name: beeped\nsource: {{plugin: simulator, shape: [64, 64]}}\npipeline: classical\n"
              f"run: {{frames: 3, output: {tmp_path / 'b.h5'}}}\n")
    assert df.run(recipe, observers=[beeper]).steps == 3
