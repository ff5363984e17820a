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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .registry import RegistryError, get_registry
from .types import REQUIRED, Param, ParamError

__all__ = ["Recipe", "ComponentSpec", "RecipeError", "load_recipe", "parse_recipe", "resolve_pipeline_spec"]


class RecipeError(ValueError):
    """A recipe is malformed; ``str(err)`` is ``file:line: key.path: message``."""

    def __init__(self, message: str, *, file: str = "<recipe>", line: int | None = None, path: str = ""):
        message = " ".join(str(message).split("\n"))  # always one line, whatever a value or a library said
        self.message, self.file, self.line, self.path = message, file, line, path
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {path}: {message}" if path else f"{where}: {message}")


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


# --------------------------------------------------------------------------- #
# YAML with line numbers
# --------------------------------------------------------------------------- #


class _Doc:
    """Python data from YAML plus the line of every key path."""

    def __init__(self, file: str):
        self.file = file
        self.lines: dict[tuple, int] = {}

    def line(self, path: tuple) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def error(self, path: tuple, message: str) -> RecipeError:
        return RecipeError(message, file=self.file, line=self.line(path), path=_dotted(path))


def _dotted(path: tuple) -> str:
    out = ""
    for p in path:
        if not isinstance(p, int) and not (isinstance(p, str) and p.isprintable() and p.strip() == p and p):
            p = repr(p)  # a key with control characters, newlines or odd spacing is shown quoted
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def _load_yaml(text: str, file: str) -> tuple[Any, _Doc]:
    doc = _Doc(file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow; it has a position, not a mark
        line = text.count("\n", 0, exc.position) + 1
        raise RecipeError(f"invalid YAML: character {exc.character!r} is not allowed", file=file, line=line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"invalid YAML: {problem}", file=file, line=line) from None
    if node is None:
        raise RecipeError("the recipe is empty", file=file, line=1)
    constructor = yaml.SafeLoader("")

    def build(n, path):
        doc.lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, (yaml.MappingNode, yaml.SequenceNode)) and n.tag not in _PLAIN_TAGS:
            raise RecipeError(f"refused YAML value: tag {n.tag!r} is not allowed in recipes", file=file,
                              line=n.start_mark.line + 1, path=_dotted(path))
        if isinstance(n, yaml.MappingNode):
            out = {}
            for knode, vnode in n.value:
                if not isinstance(knode, yaml.ScalarNode):
                    raise RecipeError("keys must be plain names", file=file, line=knode.start_mark.line + 1,
                                      path=_dotted(path))
                key = knode.value
                if key == "<<":
                    raise RecipeError("YAML merge keys are not supported", file=file,
                                      line=knode.start_mark.line + 1, path=_dotted(path))
                if key in out:
                    raise RecipeError("duplicate key", file=file, line=knode.start_mark.line + 1,
                                      path=_dotted(path + (key,)))
                doc.lines[path + (key,)] = knode.start_mark.line + 1
                out[key] = build(vnode, path + (key,))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(v, path + (i,)) for i, v in enumerate(n.value)]
        try:
            return constructor.construct_object(n, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            raise RecipeError(f"refused YAML value: {problem}", file=file, line=n.start_mark.line + 1,
                              path=_dotted(path)) from None

    return build(node, ()), doc


# --------------------------------------------------------------------------- #
# Parameter validation against a Param schema
# --------------------------------------------------------------------------- #


def _type_name(v) -> str:
    return "null" if v is None else type(v).__name__


def _as_float(value, path, doc) -> float:
    try:
        return float(value)
    except OverflowError:
        raise doc.error(path, f"is too large ({len(str(value))} digits)") from None


def _check_bounds(value, p: Param, path, doc):
    if not math.isfinite(value):
        raise doc.error(path, f"must be a finite number, got {value}")
    for op, bound, ok in (
        (">", p.gt, lambda v, b: v > b), (">=", p.ge, lambda v, b: v >= b),
        ("<", p.lt, lambda v, b: v < b), ("<=", p.le, lambda v, b: v <= b),
    ):
        if bound is not None and not ok(value, bound):
            raise doc.error(path, f"must be {op} {bound:g}, got {value:g}")


def validate_value(value, p: Param, path: tuple, doc: _Doc):
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


def validate_mapping(value: Mapping, schema: Mapping[str, Param], path: tuple, doc: _Doc) -> dict:
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


def validate_component(kind: str, spec, path: tuple, doc: _Doc, *, reserved: Mapping[str, Param] = None) -> ComponentSpec:
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
    return ComponentSpec(kind, name, params, _dotted(path))


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

RUN_SCHEMA: dict[str, Param] = {
    "frames": Param("int", 100, "Number of frames to acquire", gt=0, le=10_000_000),
    "reference": Param("str", "first", "Reference frame for each estimate",
                       choices=("first", "previous", "rolling", "keyframe")),
    "rolling_every": Param("int", 20, "With reference: rolling, take a new reference every N frames", ge=1),
    "keyframe_shift": Param("float", 0.25, "With reference: keyframe, take a new reference when the content has "
                                           "moved this fraction of the frame from it", gt=0, lt=1),
    "output": Param("str", "runs/{name}.h5", "Run file ({name} is replaced by the recipe name)"),
    "overwrite": Param("bool", True, "Replace an existing run file"),
    "save_frames": Param("bool", False, "Store every frame (chunked, compressed)"),
    "correct_every": Param("int", 1, "Send a correction every N frames", ge=1),
    "correct_every_s": Param("float", 0.0, "And at most one correction per this many seconds", ge=0),
    "actuation_delay_frames": Param("int", 0, "Frames before a command shows in the images (actuator lag)",
                                    ge=0, le=100),
    "min_confidence": Param("float", 0.5, "Estimates below this confidence never move the actuator", ge=0, le=1),
    "max_sigma_px": Param("float", 1.0, "Estimates with a larger uncertainty never move the actuator", gt=0),
    "pause_after_bad": Param("int", 5, "Pause corrections after this many bad estimates in a row", ge=1),
    "resume_after_good": Param("int", 3, "Resume after this many good estimates in a row", ge=1),
    "stop_after_bad": Param("int", 50, "Stop the run after this many bad estimates in a row", ge=1),
    "seed": Param("int", None, "Seed shared with components that take one", nullable=True),
    "tracking_region": Param("mapping", None, "Measure drift on a small sub-scan acquired between frames "
                                              "(sources with acquire_region, e.g. the simulator)", nullable=True,
                             fields={
                                 "size_px": Param("int", 64, "Side of the square region, px", ge=16, le=1024),
                                 "position": Param("vector", None, "Top-left (y, x) in the frame; default: centred",
                                                   length=2, ge=0, nullable=True),
                                 "per_frame": Param("int", 1, "Sub-scans (and corrections) between two frames",
                                                    ge=1, le=100)}),
}

_TOP = ("name", "description", "source", "pipeline", "controller", "actuator", "run", "train", "bench")


def resolve_pipeline_spec(value, path: tuple, doc: _Doc) -> dict:
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


def parse_recipe(data, doc: _Doc, *, text: str = "", require_source: bool = True) -> Recipe:
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
    run = validate_mapping(data.get("run") or {}, RUN_SCHEMA, ("run",), doc)
    if not isinstance(data.get("run", {}), (dict, type(None))):
        raise doc.error(("run",), "must be a mapping")
    return Recipe(name=name, source=source, pipeline=pipeline, controller=controller, actuator=actuator,
                  limits=limits, calibration=calibration, run=run, text=text, path=doc.file,
                  extra={k: data[k] for k in ("description", "train", "bench") if k in data})


def load_recipe(path_or_text, *, require_source: bool = True) -> Recipe:
    """Load and validate a recipe from a path, a YAML string or a dict.

    Raises
    ------
    RecipeError
        With ``file:line: key.path: message``.
    """
    if isinstance(path_or_text, dict):
        doc = _Doc("<dict>")
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
    data, doc = _load_yaml(text, file)
    return parse_recipe(data, doc, text=text, require_source=require_source)


def load_train_recipe(path, trainer_name: str):
    """Load a training recipe: ``source`` (makes pairs) and a ``train`` section validated by the trainer's schema.

    Returns ``(recipe, trainer)``.
    """
    text = Path(os.fspath(path)).read_text(encoding="utf-8") if Path(os.fspath(path)).is_file() else None
    if text is None:
        raise RecipeError("no such recipe file", file=str(path))
    data, doc = _load_yaml(text, str(path))
    recipe = parse_recipe(data, doc, text=text, require_source=False)
    try:
        trainer, _ = get_registry().trainer(trainer_name)
    except RegistryError as exc:
        raise RecipeError(str(exc), file=str(path)) from None
    if recipe.source is None:
        raise doc.error((), "missing required key 'source' (the frame source that makes training pairs)")
    recipe.extra["train"] = validate_mapping(data.get("train") or {}, trainer.params, ("train",), doc)
    return recipe, trainer
