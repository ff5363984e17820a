"""A third-party plugin that registers a name a built-in already uses."""
from drift_framework import Component, hookimpl


@hookimpl
def drift_frame_sources():
    return [Component("simulator", lambda p, c: None, {}, "clashes with the built-in simulator")]
