"""drift_hyperspy: HyperSpy files as frame sources, and offline correction (built-in plugin).

Frame source ``hyperspy`` (any format HyperSpy/RosettaSciIO reads, lazy loading, pixel size and frame times from
the file), the ``drift correct`` command and the Python API :func:`correct` (signals in, signals out).
hyperspy is imported only when one of them is used.
"""
from __future__ import annotations

from drift_framework import REQUIRED, Component, Param, hookimpl

__version__ = "0.1.0"


def _source(params, context):
    from .source import HyperSpyFrames

    return HyperSpyFrames(params, context)


@hookimpl
def drift_frame_sources():
    return [Component("hyperspy", _source, {
        "path": Param("str", REQUIRED, "Image stack (relative paths: from the recipe's folder)"),
        "lazy": Param("bool", True, "Load lazily: frames are read one at a time"),
        "start": Param("int", 0, "First frame", ge=0),
        "stop": Param("int", None, "Stop before this frame (default: the last)", ge=1, nullable=True),
        "frame_time_s": Param("float", None, "Frame period when the file does not say", gt=0, nullable=True),
    }, "Replays a recorded series from any HyperSpy-readable file (open loop)",
        example={"path": "series.hspy", "lazy": True})]


@hookimpl
def drift_commands(subparsers):
    from .cli import add_parser

    add_parser(subparsers)


def correct(signal, pipeline="classical", **options):
    """Correct a HyperSpy image stack; see :func:`drift_hyperspy.api.correct_signal`."""
    from .api import correct_signal

    return correct_signal(signal, pipeline, **options)
