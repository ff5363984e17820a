"""The plugin author's manual: every hook a drift_framework plugin can implement.

A plugin is a module (or an installed package exposing one through the
``drift_framework`` entry-point group) with functions decorated by
:data:`drift_framework.hookimpl`.  Component hooks are named by the plural of
what they provide and return a list of :class:`~drift_framework.types.Component`
registrations; the loop calls the observer hooks while a run progresses.

Built-in plugins under ``plugins/`` use exactly these hooks.
"""
from __future__ import annotations

import pluggy

PROJECT = "drift_framework"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------- #
# Component hooks
# --------------------------------------------------------------------------- #


@hookspec
def drift_frame_sources():
    """Register frame sources (microscopes, files, simulators).

    :return: a list of :class:`~drift_framework.types.Component`; each factory
        returns an object with ``acquire() -> Frame`` and ``close()``.

    Example::

        from drift_framework import hookimpl, Component, Param, Frame

        class Camera:
            def __init__(self, params, context):
                self.exposure = params["exposure_s"]
            def acquire(self):
                return Frame(data=my_sdk.grab(self.exposure))
            def close(self):
                pass

        @hookimpl
        def drift_frame_sources():
            return [Component("my-camera", Camera,
                              {"exposure_s": Param("float", 0.5, gt=0)},
                              "Frames from my camera")]
    """


@hookspec
def drift_denoisers():
    """Register denoisers applied to both frames before correlation.

    :return: a list of :class:`~drift_framework.types.Component`; each factory
        returns an object with ``denoise(image) -> image`` (same shape, float32).

    Example::

        @hookimpl
        def drift_denoisers():
            return [Component("box", lambda p, ctx: BoxDenoiser(p["size"]),
                              {"size": Param("int", 3, ge=1)}, "Box filter")]
    """


@hookspec
def drift_correlators():
    """Register correlators: two images in, a :class:`~drift_framework.types.CorrelationMap` out.

    :return: a list of :class:`~drift_framework.types.Component`; each factory
        returns an object with ``correlate(reference, moving) -> CorrelationMap``.

    Example::

        @hookimpl
        def drift_correlators():
            return [Component("my-xcorr", lambda p, ctx: MyCorrelator(), {},
                              "Cross-correlation done my way")]
    """


@hookspec
def drift_estimators():
    """Register shift estimators: a correlation map in, a :class:`~drift_framework.types.Shift` out.

    Estimators honour a ``max_shift_px`` parameter where it makes sense and
    report a calibrated ``sigma`` and a ``confidence``.

    :return: a list of :class:`~drift_framework.types.Component`; each factory
        returns an object with ``estimate(cmap) -> Shift``.

    Example::

        @hookimpl
        def drift_estimators():
            return [Component("argmax", lambda p, ctx: Argmax(p["max_shift_px"]),
                              {"max_shift_px": Param("float", None, gt=0, nullable=True)},
                              "Integer peak of the map")]
    """


@hookspec
def drift_controllers():
    """Register controllers that turn drift measurements into field-of-view targets.

    :return: a list of :class:`~drift_framework.types.Component`; each factory
        returns an object following :class:`~drift_framework.types.Controller`.

    Example::

        @hookimpl
        def drift_controllers():
            return [Component("follow", lambda p, ctx: Follow(), {},
                              "Move the field of view onto the last measurement")]
    """


@hookspec
def drift_actuators():
    """Register actuators (stages, beam/image shifts) that move the field of view.

    The engine clips every command to the recipe's ``limits`` before calling
    ``move_by``; an actuator may enforce its own hardware limits too.

    :return: a list of :class:`~drift_framework.types.Component`; each factory
        returns an object following :class:`~drift_framework.types.Actuator`.

    Example::

        @hookimpl
        def drift_actuators():
            return [Component("my-stage", MyStage, {"speed": Param("float", 1.0, gt=0)},
                              "The stage of my microscope, in nm")]
    """


@hookspec
def drift_presets():
    """Register named pipelines that ``load_pipeline(name)`` and recipes can use.

    :return: a list of :class:`~drift_framework.types.Preset`.

    Example::

        @hookimpl
        def drift_presets():
            return [Preset("fast", {"correlator": {"plugin": "xcorr"},
                                    "estimator": {"plugin": "parabolic"}},
                           "Cross-correlation and a 3-point fit")]
    """


@hookspec
def drift_trainers():
    """Register trainers that ``drift train NAME RECIPE`` runs (learned components train this way).

    :return: a list of :class:`~drift_framework.types.Trainer`; ``run(recipe, options)`` trains
        from a validated recipe whose ``train`` section follows ``params``, and returns a dict of results.

    Example::

        @hookimpl
        def drift_trainers():
            return [Trainer("my-model", train_my_model,
                            {"batches": Param("int", 1000, gt=0)}, "Train my model on simulated pairs")]
    """


@hookspec
def drift_commands(subparsers):
    """Add sub-commands to the ``drift`` command line (``drift correct`` comes from a plugin this way).

    :param subparsers: the ``argparse`` sub-parser collection; set ``func`` to a callable taking the parsed
        arguments and returning an exit status.  Import heavy libraries inside ``func``, not here.

    Example::

        @hookimpl
        def drift_commands(subparsers):
            p = subparsers.add_parser("hello", help="say hello")
            p.set_defaults(func=lambda args: print("hello") or 0)
    """


# --------------------------------------------------------------------------- #
# Run observers (called by the loop)
# --------------------------------------------------------------------------- #


@hookspec
def drift_run_started(run):
    """A closed-loop run is about to acquire its first frame.

    :param run: the :class:`~drift_framework.loop.RunContext` (recipe, output
        path, components); ``run.request_stop(reason)`` ends the run after the
        current step.

    Example::

        @hookimpl
        def drift_run_started(run):
            print("recording to", run.output)
    """


@hookspec
def drift_step_completed(run, step):
    """A step was recorded.

    :param run: the :class:`~drift_framework.loop.RunContext`.
    :param step: the :class:`~drift_framework.loop.Step` just written to the run file.

    Example::

        @hookimpl
        def drift_step_completed(run, step):
            if step.shift is not None and step.shift.magnitude > 50:
                run.request_stop("drift too large, check the sample")
    """


@hookspec
def drift_run_finished(run, summary):
    """The run ended (normally, on a stop request, on Ctrl-C or on an error).

    :param run: the :class:`~drift_framework.loop.RunContext`.
    :param summary: the :class:`~drift_framework.loop.RunSummary`.

    Example::

        @hookimpl
        def drift_run_finished(run, summary):
            print(summary.steps, "steps; stopped because:", summary.stop_reason)
    """
