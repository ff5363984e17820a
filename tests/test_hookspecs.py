import inspect

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
