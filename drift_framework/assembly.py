"""Building what a recipe names: components through their plugins' factories, the hardware, whole pipelines,
and closing them again.

Everything that instantiates a component goes through :func:`build_component`, so built-ins, vendor plugins,
the engine, the CLI and the benchmarks assemble parts the same way.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

from .pipeline import Pipeline
from .recipe import ComponentSpec, Recipe, RecipeError, resolve_pipeline_spec, validate_component
from .registry import get_registry
from .types import BuildContext, Closeable, ScanRamp
from .yamldoc import YamlDoc, load_yaml

__all__ = ["RunComponents", "build_component", "build_source", "build_hardware", "build_run_components",
           "load_pipeline", "pipeline_from_specs", "close_component"]

log = logging.getLogger(__name__)


class RunComponents(NamedTuple):
    """What a run needs, built: frame source, pipeline, controller and actuator (None when measuring only)."""

    source: Any
    pipeline: Pipeline
    controller: Any
    actuator: Any


def build_component(spec: ComponentSpec, context: BuildContext | None = None) -> Any:
    """Instantiate a validated component spec through its plugin's factory."""
    entry = get_registry().get(spec.kind, spec.plugin)
    return entry.component.factory(dict(spec.params), context or BuildContext())


def build_source(plugin: str, *, where: str = "<python>", **params: Any) -> Any:
    """A frame source from its plugin name and parameters (validated as a recipe's ``source:`` would be)."""
    spec = validate_component("source", {"plugin": plugin, **params}, ("source",), YamlDoc(where))
    return build_component(spec)


def close_component(component: Any) -> None:
    """Release a component's resources (a no-op for components without ``close``)."""
    if isinstance(component, Closeable):
        component.close()


def _context(recipe: Recipe, source: Any = None) -> BuildContext:
    return BuildContext(source=source, recipe_dir=recipe.directory, extra={"seed": recipe.run.get("seed")})


def build_hardware(recipe: Recipe) -> tuple[Any, Any, BuildContext]:
    """The recipe's frame source and actuator (None without one); the actuator may share the source's state."""
    if recipe.source is None:
        raise RecipeError("the recipe has no source", file=recipe.path)
    ctx = _context(recipe)
    source = build_component(recipe.source, ctx)
    ctx.source = source
    try:
        actuator = build_component(recipe.actuator, ctx) if recipe.actuator else None
    except BaseException:
        close_component(source)
        raise
    return source, actuator, ctx


def pipeline_from_specs(specs: dict, *, name: str = "", context: BuildContext | None = None) -> Pipeline:
    """A :class:`Pipeline` from validated denoiser/correlator/estimator specs."""
    parts = {k: build_component(s, context) for k, s in specs.items()}
    return Pipeline(parts["denoiser"], parts["correlator"], parts["estimator"], name=name, specs=specs)


def build_run_components(recipe: Recipe, *, source: Any = None, actuator: Any = None,
                         pipeline: Pipeline | None = None) -> RunComponents:
    """Build what the recipe names, except what is given already built.

    An actuator given without a source is used with the recipe's source. On an error, what was built is closed.
    """
    if source is None and actuator is None:
        source, actuator, ctx = build_hardware(recipe)
    else:
        if source is None:
            if recipe.source is None:
                raise RecipeError("the recipe has no source", file=recipe.path)
            source = build_component(recipe.source, _context(recipe))
        ctx = _context(recipe, source)
        try:
            if actuator is None and recipe.actuator:
                actuator = build_component(recipe.actuator, ctx)
        except BaseException:
            close_component(source)
            raise
    try:
        if pipeline is None:
            pipeline = pipeline_from_specs(recipe.pipeline, name=recipe.name, context=ctx)
        if recipe.controller is None:
            raise RecipeError("the recipe has no controller", file=recipe.path)
        controller = build_component(recipe.controller, ctx)
        _check_scan_ramp(recipe, actuator)
    except BaseException:
        close_component(actuator)
        close_component(source)
        raise
    return RunComponents(source, pipeline, controller, actuator)


def _check_scan_ramp(recipe: Recipe, actuator: Any) -> None:
    """``run.scan_ramp`` needs an actuator that bends the scan."""
    if recipe.settings.scan_ramp is not None and not isinstance(actuator, ScanRamp):
        what = f"the actuator {recipe.actuator.plugin!r}" if recipe.actuator else "a run without an actuator"
        raise RecipeError(f"{what} cannot bend the scan (it has no set_scan_ramp; simulated-beam-shift can)",
                          file=recipe.path, path="run.scan_ramp")


def load_pipeline(spec: str | os.PathLike | dict, *, device: str | None = None) -> Pipeline:
    """Build a pipeline from a preset name, a recipe path or a dict.

    Parameters
    ----------
    spec : str, path or dict
        A preset name (``"classical"``, ``"phase"``, ``"ncc-peak"``, ``"dcnn"`` …;
        ``drift plugins`` lists them), a YAML file whose ``pipeline`` key (or whole
        content) describes the pipeline, or a dict such as
        ``{"correlator": "ncc", "estimator": {"plugin": "parabolic", "max_shift_px": 5}}``.
    device : str, optional
        Passed to components that run on an accelerator (``"cpu"``, ``"cuda"``).

    Raises
    ------
    RecipeError
        The spec is unknown or invalid (the message lists what is available).
    """
    ctx = BuildContext(device=device)
    if isinstance(spec, dict):
        path: tuple = ("pipeline",) if "pipeline" in spec else ()
        specs = resolve_pipeline_spec(spec.get("pipeline", spec), path, YamlDoc("<dict>"))
        return pipeline_from_specs(specs, name=str(spec.get("name", "custom")), context=ctx)
    text = os.fspath(spec)
    file = Path(text)
    if text.endswith((".yaml", ".yml")) or file.is_file():
        try:
            raw = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise RecipeError(f"cannot read the pipeline file: {exc.strerror or exc}", file=text) from None
        data, doc = load_yaml(raw, text)
        nested = isinstance(data, dict) and "pipeline" in data
        name = str(data.get("name", file.stem)) if isinstance(data, dict) else file.stem
        specs = resolve_pipeline_spec(data["pipeline"] if nested else data, ("pipeline",) if nested else (), doc)
        return pipeline_from_specs(specs, name=name, context=ctx)
    return pipeline_from_specs(resolve_pipeline_spec(text, (), YamlDoc("<preset>")), name=text, context=ctx)
