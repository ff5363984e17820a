"""YAML with line numbers: every value keeps the line it came from, so errors read ``file:line: key.path: message``.

Only safe YAML is accepted: tags that construct Python objects, merge keys and duplicate keys are refused.
Plugins that read YAML of their own (benchmark settings, training files) use this layer too.
"""
from __future__ import annotations

from typing import Any

import yaml

__all__ = ["RecipeError", "YamlDoc", "dotted_path", "load_yaml"]


class RecipeError(ValueError):
    """A recipe is malformed; ``str(err)`` is ``file:line: key.path: message``."""

    def __init__(self, message: str, *, file: str = "<recipe>", line: int | None = None, path: str = ""):
        message = " ".join(str(message).split("\n"))  # always one line, whatever a value or a library said
        self.message, self.file, self.line, self.path = message, file, line, path
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {path}: {message}" if path else f"{where}: {message}")


# --------------------------------------------------------------------------- #


class YamlDoc:
    """The line of every key path of a YAML document (``line(path)``), and errors that cite it."""

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
        return RecipeError(message, file=self.file, line=self.line(path), path=dotted_path(path))


def dotted_path(path: tuple) -> str:
    """``('pipeline', 'estimator', 0)`` → ``pipeline.estimator[0]``."""
    out = ""
    for p in path:
        if not isinstance(p, int) and not (isinstance(p, str) and p.isprintable() and p.strip() == p and p):
            p = repr(p)  # a key with control characters, newlines or odd spacing is shown quoted
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def load_yaml(text: str, file: str) -> tuple[Any, YamlDoc]:
    """Parse ``text`` (safe YAML only) into plain Python data and the :class:`YamlDoc` of its lines."""
    doc = YamlDoc(file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow; it has a position, not a mark
        line = text.count("\n", 0, exc.position) + 1
        raise RecipeError(f"invalid YAML: character {exc.character!r} is not allowed", file=file, line=line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"invalid YAML: {problem}", file=file, line=mark.line + 1 if mark else None) from None
    if node is None:
        raise RecipeError("the recipe is empty", file=file, line=1)
    constructor = yaml.SafeLoader("")

    def build(n, path):
        doc.lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, (yaml.MappingNode, yaml.SequenceNode)) and n.tag not in _PLAIN_TAGS:
            raise RecipeError(f"refused YAML value: tag {n.tag!r} is not allowed in recipes", file=file,
                              line=n.start_mark.line + 1, path=dotted_path(path))
        if isinstance(n, yaml.MappingNode):
            out = {}
            for knode, vnode in n.value:
                if not isinstance(knode, yaml.ScalarNode):
                    raise RecipeError("keys must be plain names", file=file, line=knode.start_mark.line + 1,
                                      path=dotted_path(path))
                key = knode.value
                if key == "<<":
                    raise RecipeError("YAML merge keys are not supported", file=file,
                                      line=knode.start_mark.line + 1, path=dotted_path(path))
                if key in out:
                    raise RecipeError("duplicate key", file=file, line=knode.start_mark.line + 1,
                                      path=dotted_path(path + (key,)))
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
                              path=dotted_path(path)) from None

    return build(node, ()), doc
