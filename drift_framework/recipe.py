"""YAML recipes → validated :class:`Recipe` objects.

Only safe YAML is accepted (tags that construct Python objects are refused).
Every error names the file, the line and the key path::

    recipe.yaml:7: pipeline.estimator.max_shift_px: must be > 0

Each component's parameters are checked against the schema its plugin declares
(:class:`~drift_framework.types.Param`); unknown keys are errors.
"""
from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .registry import RegistryError, get_registry
from .resources import available_memory, frame_memory
from .settings import RUN_SCHEMA, RunSettings
from .types import REQUIRED, Param, ParamError, Trainer
from .yamldoc import RecipeError, YamlDoc, dotted_path, load_yaml

__all__ = ["Recipe", "ComponentSpec", "RecipeError", "load_recipe", "load_train_recipe", "parse_recipe",
           "resolve_pipeline_spec", "validate_component", "validate_mapping", "validate_value", "ACTUATOR_SCHEMA",
           "RUN_SCHEMA"]


@dataclass
class ComponentSpec:
    """A validated component: kind, plugin name and its complete parameters."""

    kind: str
    plugin: str
    params: dict
    path: str = ""

    def as_dict(self) -> dict:
        return {"plugin": self.plugin, **self.params}


@dataclass
class Recipe:
    """A validated recipe.  ``text`` is the YAML source (stored in run files)."""

    name: str
    source: ComponentSpec | None
    pipeline: dict  # kind -> ComponentSpec for denoiser, correlator, estimator
    controller: ComponentSpec | None
    actuator: ComponentSpec | None
    limits: dict | None
    calibration: Any
    run: dict
    text: str = ""
    path: str = "<recipe>"
    extra: dict = field(default_factory=dict)

    @property
    def directory(self) -> str:
        return str(Path(self.path).parent) if self.path not in ("<recipe>", "<dict>") else "."

    @property
    def settings(self) -> RunSettings:
        """The ``run:`` section as frozen, typed settings."""
        return RunSettings.from_mapping(self.run)


# --------------------------------------------------------------------------- #
# Parameter validation against a Param schema
# --------------------------------------------------------------------------- #


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _as_float(value: Any, path: tuple, doc: YamlDoc) -> float:
    try:
        return float(value)
    except OverflowError:
        raise doc.error(path, f"is too large ({len(str(value))} digits)") from None


def _check_bounds(value: float, p: Param, path: tuple, doc: YamlDoc) -> None:
    if not math.isfinite(value):
        raise doc.error(path, f"must be a finite number, got {value}")
    for op, bound, ok in (
        (">", p.gt, lambda v, b: v > b), (">=", p.ge, lambda v, b: v >= b),
        ("<", p.lt, lambda v, b: v < b), ("<=", p.le, lambda v, b: v <= b),
    ):
        if bound is not None and not ok(value, bound):
            raise doc.error(path, f"must be {op} {bound:g}, got {value:g}")


def validate_value(value: Any, p: Param, path: tuple, doc: YamlDoc) -> Any:
    """Return ``value`` checked and normalized against ``p`` (raises RecipeError)."""
    if value is None:
        if p.nullable or (p.default is None and p.type != "mapping"):
            return None
        raise doc.error(path, "must not be null")
    t = p.type
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise doc.error(path, f"must be a number, got {_type_name(value)} {value!r}")
        value = _as_float(value, path, doc)
        _check_bounds(value, p, path, doc)
    elif t == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise doc.error(path, f"must be an integer, got {_type_name(value)} {value!r}")
        _check_bounds(_as_float(value, path, doc), p, path, doc)
    elif t == "bool":
        if not isinstance(value, bool):
            raise doc.error(path, f"must be true or false, got {value!r}")
    elif t == "str":
        if not isinstance(value, str):
            raise doc.error(path, f"must be a string, got {_type_name(value)} {value!r}")
    elif t == "vector":
        if isinstance(value, (int, float)) and not isinstance(value, bool) and p.length is None:
            value = [value]
        if not isinstance(value, list):
            raise doc.error(path, f"must be a list of numbers, got {_type_name(value)} {value!r}")
        if p.length is not None and len(value) != p.length:
            raise doc.error(path, f"must have {p.length} elements, got {len(value)}")
        out = []
        for i, v in enumerate(value):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise doc.error(path + (i,), f"must be a number, got {_type_name(v)} {v!r}")
            v = _as_float(v, path + (i,), doc)
            _check_bounds(v, p, path + (i,), doc)
            out.append(v)
        value = out
    elif t == "mapping":
        if not isinstance(value, dict):
            raise doc.error(path, f"must be a mapping, got {_type_name(value)} {value!r}")
        if p.variants is not None:
            kind = value.get("kind")
            if not isinstance(kind, str) or kind not in p.variants:
                raise doc.error(path + (("kind",) if "kind" in value else ()),
                                f"kind must be one of {', '.join(sorted(p.variants))}, got {kind!r}")
            fields = dict(p.variants[kind])
            body = validate_mapping({k: v for k, v in value.items() if k != "kind"}, fields, path, doc)
            value = {"kind": kind, **body}
        elif p.fields is not None:
            value = validate_mapping(value, p.fields, path, doc)
    elif t == "list":
        if not isinstance(value, list):
            value = [value]
        if p.item is not None:
            value = [validate_value(v, p.item, path + (i,), doc) for i, v in enumerate(value)]
    if p.choices is not None and value not in p.choices:
        raise doc.error(path, f"must be one of {', '.join(map(str, p.choices))}, got {value!r}")
    return value


def validate_mapping(value: Mapping, schema: Mapping[str, Param], path: tuple, doc: YamlDoc) -> dict:
    """Validate a mapping against a schema: unknown keys and missing required keys are errors."""
    if not isinstance(value, Mapping):
        raise doc.error(path, f"must be a mapping, got {_type_name(value)} {value!r}")
    unknown = [k for k in value if k not in schema]
    if unknown:
        allowed = ", ".join(sorted(schema)) or "none"
        raise doc.error(path + (unknown[0],), f"unknown key; allowed keys: {allowed}")
    out = {}
    for key, p in schema.items():
        if key in value:
            out[key] = validate_value(value[key], p, path + (key,), doc)
        elif p.default is REQUIRED:
            raise doc.error(path, f"missing required key {key!r}")
        elif p.type == "mapping" and p.fields is not None and p.default is None and not p.nullable:
            out[key] = validate_mapping({}, p.fields, path + (key,), doc)
        else:
            out[key] = copy.deepcopy(p.default)
    return out


def validate_component(kind: str, spec: Any, path: tuple, doc: YamlDoc, *,
                       reserved: Mapping[str, Param] | None = None) -> ComponentSpec:
    """Validate ``{plugin: name, **params}`` for a component of ``kind``."""
    if isinstance(spec, str):
        spec = {"plugin": spec}
    if not isinstance(spec, dict):
        raise doc.error(path, f"must be a mapping with a 'plugin' key, got {_type_name(spec)} {spec!r}")
    if "plugin" not in spec:
        raise doc.error(path, "missing required key 'plugin'")
    name = spec["plugin"]
    if not isinstance(name, str):
        raise doc.error(path + ("plugin",), f"must be a plugin name, got {_type_name(name)} {name!r}")
    try:
        entry = get_registry().get(kind, name)
    except RegistryError as exc:
        raise doc.error(path + ("plugin",), str(exc)) from None
    schema = dict(entry.component.params)
    for key in reserved or {}:
        if key in schema:
            raise doc.error(path, f"plugin {name!r} declares a parameter {key!r} reserved by the engine")
    schema.update(reserved or {})
    params = validate_mapping({k: v for k, v in spec.items() if k != "plugin"}, schema, path, doc)
    if entry.component.check is not None:
        try:
            entry.component.check(params)
        except ParamError as exc:
            raise doc.error(path + exc.path, str(exc)) from None
    return ComponentSpec(kind, name, params, dotted_path(path))


# --------------------------------------------------------------------------- #
# Recipe structure
# --------------------------------------------------------------------------- #

_LIMITS = Param("mapping", None, "Hard limits the engine enforces on every actuator command", fields={
    "max_step": Param("float", REQUIRED, "Largest single move (actuator units, Euclidean)", gt=0),
    "travel": Param("float", REQUIRED, "Largest distance from the start position (actuator units, per axis)", gt=0),
})
_CALIBRATION = Param("mapping", None, "px → actuator units; default: the actuator's own calibration",
                     nullable=True, fields={
                         "matrix": Param("list", None, "2×2 matrix mapping (dy, dx) px to actuator units",
                                         nullable=True, item=Param("vector", length=2)),
                         "rotation_deg": Param("float", 0.0, "Rotation from image to actuator axes"),
                         "scale": Param("float", None, "Actuator units per pixel", gt=0, nullable=True),
                         "file": Param("str", None, "A calibration file written by `drift calibrate`",
                                       nullable=True),
                     })

#: The engine's own keys of an ``actuator:`` section (beside the plugin's parameters).
ACTUATOR_SCHEMA: dict[str, Param] = {"limits": _LIMITS, "calibration": _CALIBRATION}

_TOP = ("name", "description", "source", "pipeline", "controller", "actuator", "run", "train", "bench")


def resolve_pipeline_spec(value: Any, path: tuple, doc: YamlDoc) -> dict:
    """Validate a pipeline: a preset name, or a mapping of denoiser/correlator/estimator (optionally on top of ``preset``)."""
    reg = get_registry()
    if isinstance(value, str):
        value = {"preset": value}
    if not isinstance(value, dict):
        raise doc.error(path, f"must be a preset name or a mapping, got {_type_name(value)} {value!r}")
    unknown = [k for k in value if k not in ("preset", "denoiser", "correlator", "estimator")]
    if unknown:
        raise doc.error(path + (unknown[0],), "unknown key; allowed keys: preset, denoiser, correlator, estimator")
    merged: dict = {}
    if "preset" in value:
        try:
            preset, _ = reg.preset(value["preset"])
        except RegistryError as exc:
            raise doc.error(path + ("preset",), str(exc)) from None
        merged = copy.deepcopy(dict(preset.pipeline))
    for kind in ("denoiser", "correlator", "estimator"):
        if kind not in value:
            continue
        override = value[kind]
        if isinstance(override, str):
            override = {"plugin": override}
        if isinstance(override, dict) and "plugin" not in override and kind in merged:
            base = merged[kind] if isinstance(merged[kind], dict) else {"plugin": merged[kind]}
            override = {**base, **override}
        merged[kind] = override
    merged.setdefault("denoiser", {"plugin": "none"})
    out = {}
    for kind in ("denoiser", "correlator", "estimator"):
        if kind not in merged:
            raise doc.error(path, f"missing required key {kind!r}")
        out[kind] = validate_component(kind, merged[kind], path + (kind,), doc)
    return out


def parse_recipe(data: Any, doc: YamlDoc, *, text: str = "", require_source: bool = True) -> Recipe:
    """Validate recipe data already loaded from YAML."""
    if not isinstance(data, dict):
        raise doc.error((), f"a recipe must be a mapping, got {_type_name(data)}")
    unknown = [k for k in data if k not in _TOP]
    if unknown:
        raise doc.error((unknown[0],), f"unknown key; allowed keys: {', '.join(_TOP)}")
    name = data.get("name", Path(doc.file).stem if doc.file not in ("<recipe>", "<dict>") else "run")
    if not isinstance(name, str) or not name.strip():
        raise doc.error(("name",), "must be a non-empty string")
    if any(c in name for c in "/\\") or name in (".", ".."):
        raise doc.error(("name",), "must not contain path separators")
    source = None
    if "source" in data:
        source = validate_component("source", data["source"], ("source",), doc)
    elif require_source:
        raise doc.error((), "missing required key 'source'")
    if "pipeline" not in data:
        if require_source:
            raise doc.error((), "missing required key 'pipeline'")
        pipeline = {}
    else:
        pipeline = resolve_pipeline_spec(data["pipeline"], ("pipeline",), doc)
    controller = validate_component("controller", data.get("controller", "none"), ("controller",), doc)
    actuator = limits = calibration = None
    if data.get("actuator") is not None:
        actuator = validate_component("actuator", data["actuator"], ("actuator",), doc,
                                      reserved={"limits": Param("any", REQUIRED), "calibration": Param("any", None)})
        limits = validate_value(actuator.params.pop("limits"), _LIMITS, ("actuator", "limits"), doc)
        calibration = validate_value(actuator.params.pop("calibration"), _CALIBRATION,
                                     ("actuator", "calibration"), doc)
        if calibration and calibration.get("matrix") is not None and len(calibration["matrix"]) != 2:
            raise doc.error(("actuator", "calibration", "matrix"), "must be a 2×2 matrix")
    if source is not None and isinstance(source.params.get("shape"), list) and len(source.params["shape"]) == 2:
        _check_memory(source.params["shape"], doc)
    run = validate_mapping(data.get("run") or {}, RUN_SCHEMA, ("run",), doc)
    if not isinstance(data.get("run", {}), (dict, type(None))):
        raise doc.error(("run",), "must be a mapping")
    return Recipe(name=name, source=source, pipeline=pipeline, controller=controller, actuator=actuator,
                  limits=limits, calibration=calibration, run=run, text=text, path=doc.file,
                  extra={k: data[k] for k in ("description", "train", "bench") if k in data})


def _check_memory(shape: list, doc: YamlDoc) -> None:
    """Refuse frames whose run cannot fit in this machine's memory (the estimate and what is available)."""
    need, have = frame_memory(shape), available_memory()
    if have is not None and need > have:
        raise doc.error(("source", "shape"), f"{int(shape[0])}×{int(shape[1])} frames need about {need / 2**30:.1f} "
                                             f"GiB of memory to acquire and measure; {have / 2**30:.1f} GiB is "
                                             "available on this machine")


def load_recipe(path_or_text: str | os.PathLike | dict, *, require_source: bool = True) -> Recipe:
    """Load and validate a recipe from a path, a YAML string or a dict.

    Raises
    ------
    RecipeError
        With ``file:line: key.path: message``.
    """
    if isinstance(path_or_text, dict):
        doc = YamlDoc("<dict>")
        return parse_recipe(copy.deepcopy(path_or_text), doc, text=yaml.safe_dump(path_or_text),
                            require_source=require_source)
    path = Path(os.fspath(path_or_text))
    if isinstance(path_or_text, str) and "\n" in path_or_text:
        text, file = path_or_text, "<recipe>"
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RecipeError("no such recipe file", file=str(path)) from None
        except UnicodeDecodeError:
            raise RecipeError("the recipe is not UTF-8 text", file=str(path)) from None
        except OSError as exc:
            raise RecipeError(f"cannot read the recipe: {exc.strerror}", file=str(path)) from None
        file = str(path)
    data, doc = load_yaml(text, file)
    return parse_recipe(data, doc, text=text, require_source=require_source)


def load_train_recipe(path: str | os.PathLike, trainer_name: str) -> tuple[Recipe, Trainer]:
    """Load a training recipe: ``source`` (makes pairs) and a ``train`` section validated by the trainer's schema.

    Returns ``(recipe, trainer)``.
    """
    text = Path(os.fspath(path)).read_text(encoding="utf-8") if Path(os.fspath(path)).is_file() else None
    if text is None:
        raise RecipeError("no such recipe file", file=str(path))
    data, doc = load_yaml(text, str(path))
    recipe = parse_recipe(data, doc, text=text, require_source=False)
    try:
        trainer, _ = get_registry().trainer(trainer_name)
    except RegistryError as exc:
        raise RecipeError(str(exc), file=str(path)) from None
    if recipe.source is None:
        raise doc.error((), "missing required key 'source' (the frame source that makes training pairs)")
    recipe.extra["train"] = validate_mapping(data.get("train") or {}, trainer.params, ("train",), doc)
    return recipe, trainer
