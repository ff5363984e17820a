"""The plugin author's manual: every hook a drift_framework plugin can implement.

A plugin is a module (or an installed package exposing one through the
``drift_framework`` entry-point group) with functions decorated by
:data:`drift_framework.hookimpl`.  Component hooks are named by the plural of
what they provide and return a list of :class:`~drift_framework.types.Component`
registrations; the loop calls the observer hooks while a run progresses.  A
function named like a hook that is not one (``drift_estimator``) is refused
when the plugin loads, with a message naming the plugin.

Built-in plugins under ``plugins/`` use exactly these hooks.  Every example
below runs as written (the test suite runs them).
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import numpy as np

    from .loop import RunContext
    from .steps import Step
    from .summary import RunSummary
    from .types import Benchmark, Component, Preset, Trainer

PROJECT = "drift_framework"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------- #
# Component hooks
# --------------------------------------------------------------------------- #


@hookspec
def drift_frame_sources() -> list[Component]:
    """Register frame sources (microscopes, files, simulators).

    :return: a list of :class:`~drift_framework.types.Component`; each factory
        returns an object with ``acquire() -> Frame`` and ``close()``.

    Example::

        import numpy as np
        from drift_framework import hookimpl, Component, Param, Frame

        class Camera:
            def __init__(self, params, context):
                self.exposure, self.index = params["exposure_s"], 0
            def acquire(self):
                image = np.random.default_rng(self.index).poisson(10, (64, 64))  # your SDK's grab()
                self.index += 1
                return Frame(data=image.astype(np.float32), index=self.index - 1,
                             time_s=self.index * self.exposure)
            def close(self):
                pass

        @hookimpl
        def drift_frame_sources():
            return [Component("my-camera", Camera,
                              {"exposure_s": Param("float", 0.5, gt=0)},
                              "Frames from my camera")]
    """


@hookspec
def drift_denoisers() -> list[Component]:
    """Register denoisers applied to both frames before correlation.

    :return: a list of :class:`~drift_framework.types.Component`; each factory
        returns an object with ``denoise(image) -> image`` (same shape, float32).

    Example::

        from scipy import ndimage
        from drift_framework import hookimpl, Component, Param

        class BoxDenoiser:
            def __init__(self, size):
                self.size = size
            def denoise(self, image):
                return ndimage.uniform_filter(image, self.size)

        @hookimpl
        def drift_denoisers():
            return [Component("box", lambda p, ctx: BoxDenoiser(p["size"]),
                              {"size": Param("int", 3, ge=1)}, "Box filter")]
    """


@hookspec
def drift_correlators() -> list[Component]:
    """Register correlators: two images in, a :class:`~drift_framework.types.CorrelationMap` out.

    :return: a list of :class:`~drift_framework.types.Component`; each factory
        returns an object with ``correlate(reference, moving) -> CorrelationMap``.

    Example::

        import numpy as np
        from drift_framework import hookimpl, Component, CorrelationMap

        class MyCorrelator:
            def correlate(self, reference, moving):
                # circular cross-correlation; zero lag in the middle of the map
                spectrum = np.conj(np.fft.fft2(reference)) * np.fft.fft2(moving)
                data = np.fft.fftshift(np.fft.ifft2(spectrum).real)
                center = (data.shape[0] // 2, data.shape[1] // 2)
                return CorrelationMap(data, center, reference, moving, kind="my-xcorr")

        @hookimpl
        def drift_correlators():
            return [Component("my-xcorr", lambda p, ctx: MyCorrelator(), {},
                              "Cross-correlation done my way")]
    """


@hookspec
def drift_estimators() -> list[Component]:
    """Register shift estimators: a correlation map in, a :class:`~drift_framework.types.Shift` out.

    Estimators honour a ``max_shift_px`` parameter where it makes sense and
    report a calibrated ``sigma`` and a ``confidence``.

    :return: a list of :class:`~drift_framework.types.Component`; each factory
        returns an object with ``estimate(cmap) -> Shift``.

    Example::

        import numpy as np
        from drift_framework import hookimpl, Component, Param, Shift

        class Argmax:
            def __init__(self, max_shift_px):
                self.max_shift_px = max_shift_px
            def estimate(self, cmap):
                data = cmap.data
                if self.max_shift_px is not None:
                    yy, xx = np.indices(data.shape)
                    far = np.hypot(yy - cmap.center[0], xx - cmap.center[1]) > self.max_shift_px
                    data = np.where(far, -np.inf, data)
                y, x = np.unravel_index(np.argmax(data), data.shape)
                # an integer peak: uniform error within ±½ px per axis
                return Shift(float(y - cmap.center[0]), float(x - cmap.center[1]),
                             sigma=np.sqrt(2 / 12), confidence=0.0, method="argmax")

        @hookimpl
        def drift_estimators():
            return [Component("argmax", lambda p, ctx: Argmax(p["max_shift_px"]),
                              {"max_shift_px": Param("float", None, gt=0, nullable=True)},
                              "Integer peak of the map")]
    """


@hookspec
def drift_controllers() -> list[Component]:
    """Register controllers that turn drift measurements into field-of-view targets.

    :return: a list of :class:`~drift_framework.types.Component`; each factory
        returns an object following :class:`~drift_framework.types.Controller`.

    Example::

        import numpy as np
        from drift_framework import hookimpl, Component

        class Follow:
            def update(self, time_s, drift_px, sigma_px, fov_px, next_time_s):
                return np.asarray(drift_px, float)  # put the field of view where the content went
            def reset(self):
                pass

        @hookimpl
        def drift_controllers():
            return [Component("follow", lambda p, ctx: Follow(), {},
                              "Move the field of view onto the last measurement")]
    """


@hookspec
def drift_actuators() -> list[Component]:
    """Register actuators (stages, beam/image shifts) that move the field of view.

    The engine clips every command to the recipe's ``limits`` and records it in the run file before calling
    ``move_by``; an actuator may enforce its own hardware limits too.  One that drives the scan generator can also
    bend the scan to follow the drift during each frame (``set_scan_ramp``,
    :class:`~drift_framework.types.ScanRamp`; recipes ask for it with ``run.scan_ramp``).

    :return: a list of :class:`~drift_framework.types.Component`; each factory
        returns an object following :class:`~drift_framework.types.Actuator`.

    Example::

        import numpy as np
        from drift_framework import hookimpl, Component, Param

        class MyStage:
            units = "nm"
            def __init__(self, params, context):
                self.calibration = np.eye(2) * params["nm_per_px"]  # (dy, dx) px -> nm
                self.position = np.zeros(2)
            def move_by(self, command):
                self.position = self.position + command  # your SDK's relative move
            def close(self):
                pass

        @hookimpl
        def drift_actuators():
            return [Component("my-stage", MyStage, {"nm_per_px": Param("float", 0.05, gt=0)},
                              "The stage of my microscope, in nm")]
    """


@hookspec
def drift_presets() -> list[Preset]:
    """Register named pipelines that ``load_pipeline(name)`` and recipes can use.

    :return: a list of :class:`~drift_framework.types.Preset`.

    Example::

        from drift_framework import hookimpl, Preset

        @hookimpl
        def drift_presets():
            return [Preset("fast", {"correlator": {"plugin": "xcorr"},
                                    "estimator": {"plugin": "parabolic"}},
                           "Cross-correlation and a 3-point fit")]
    """


@hookspec
def drift_trainers() -> list[Trainer]:
    """Register trainers that ``drift train NAME RECIPE`` runs (learned components train this way).

    :return: a list of :class:`~drift_framework.types.Trainer`; ``run(recipe, options)`` trains
        from a validated recipe whose ``train`` section follows ``params``, and returns a dict of results.

    Example::

        from drift_framework import hookimpl, Param, Trainer

        def train_my_model(recipe, options):
            batches = recipe.extra["train"]["batches"]
            return {"batches": batches, "loss": 0.0}

        @hookimpl
        def drift_trainers():
            return [Trainer("my-model", train_my_model,
                            {"batches": Param("int", 1000, gt=0)}, "Train my model on simulated pairs")]
    """


@hookspec
def drift_benchmarks() -> list[Benchmark]:
    """Register benchmarks that ``drift bench NAME`` runs (``drift bench nion`` comes from the Nion plug-in so).

    :return: a list of :class:`~drift_framework.types.Benchmark`; ``add_arguments(parser)`` adds its options,
        ``run(args)`` runs it and returns an exit status.  Import heavy libraries inside ``run``.

    Example::

        from drift_framework import Benchmark, hookimpl

        def add_arguments(parser):
            parser.add_argument("--pairs", type=int, default=10)

        def run(args):
            print(f"{args.pairs} pairs: all fine")
            return 0

        @hookimpl
        def drift_benchmarks():
            return [Benchmark("my-bench", add_arguments, run, "My instrument's benchmark")]
    """


@hookspec
def drift_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add sub-commands to the ``drift`` command line (``drift correct`` comes from a plugin this way).

    :param subparsers: the ``argparse`` sub-parser collection; set ``func`` to a callable taking the parsed
        arguments and returning an exit status.  Import heavy libraries inside ``func``, not here.

    Example::

        from drift_framework import hookimpl

        @hookimpl
        def drift_commands(subparsers):
            p = subparsers.add_parser("hello", help="say hello")
            p.set_defaults(func=lambda args: print("hello") or 0)
    """


@hookspec
def drift_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add options to ``drift run`` (read them back in :func:`drift_run_observers`).

    :param parser: the ``drift run`` sub-parser.

    Example::

        from drift_framework import hookimpl

        @hookimpl
        def drift_run_arguments(parser):
            parser.add_argument("--beep", action="store_true", help="beep at every gated step")
    """


@hookspec
def drift_run_observers(args: argparse.Namespace) -> list[object]:
    """Observers for one ``drift run``, from its parsed options (an empty list when the plugin's options are
    not given).  Each observer implements the run-observer hooks below and is registered for that run only.

    :param args: the parsed ``drift run`` options.

    Example::

        from drift_framework import hookimpl

        class Beeper:
            @hookimpl
            def drift_step_completed(self, run, step):
                if step.status.label == "low-confidence":
                    print("\\a", end="")

        @hookimpl
        def drift_run_observers(args):
            return [Beeper()] if args.beep else []
    """


# --------------------------------------------------------------------------- #
# Run observers (called by the loop)
# --------------------------------------------------------------------------- #


@hookspec
def drift_run_started(run: RunContext) -> None:
    """A closed-loop run is about to acquire its first frame.

    :param run: the :class:`~drift_framework.loop.RunContext` (recipe, output
        path, components); ``run.request_stop(reason)`` ends the run after the
        current step.

    Example::

        from drift_framework import hookimpl

        @hookimpl
        def drift_run_started(run):
            print("recording to", run.output)
    """


@hookspec
def drift_step_completed(run: RunContext, step: Step, image: np.ndarray | None) -> None:
    """A step was recorded.

    :param run: the :class:`~drift_framework.loop.RunContext`.
    :param step: the :class:`~drift_framework.steps.Step` just written to the run file.
    :param image: the frame's image (``None`` when the frame is not an image); an implementation that does not
        name this argument does not receive it.  Do not modify it.

    Example::

        from drift_framework import hookimpl

        @hookimpl
        def drift_step_completed(run, step):
            if step.shift is not None and step.shift.magnitude > 50:
                run.request_stop("drift too large, check the sample")
    """


@hookspec
def drift_run_finished(run: RunContext, summary: RunSummary) -> None:
    """The run ended (normally, on a stop request, on Ctrl-C or on an error).

    :param run: the :class:`~drift_framework.loop.RunContext`.
    :param summary: the :class:`~drift_framework.summary.RunSummary`.

    Example::

        from drift_framework import hookimpl

        @hookimpl
        def drift_run_finished(run, summary):
            print(summary.steps, "steps; stopped because:", summary.stop_reason)
    """
