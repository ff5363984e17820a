"""drift_nion: Nion Swift's instrument API (built-in plugin, extra ``nion``), tested against Nion's STEM simulator.

Frame source ``nion-scan`` (the scan hardware source), actuators ``nion-stage``,
``nion-beam-shift`` and ``nion-scan-offset`` (nm). ``connect: usim`` runs Nion's simulator (nionswift-usim) headless
in this process with a drift model switched on; ``connect: in-process`` drives the instrument of the Nion Swift
session this code runs in. To run ``drift run`` on another computer, serve a nion recipe with ``drift serve`` next
to Nion and point the ``pyro5`` source and actuator at it. Nion's packages are imported only when a component is
built.
"""
from __future__ import annotations

from drift_framework import Benchmark, Component, Param, hookimpl

__version__ = "0.1.0"

SOURCE_PARAMS = {
    "connect": Param("str", "usim", "usim: start Nion's STEM simulator in this process; in-process: the instrument "
                                    "of the running Nion Swift session", choices=("usim", "in-process")),
    "channel": Param("int", 0, "Scan channel index (usim: 0 HAADF, 1 MAADF, 2 BF, 3 ABF …)", ge=0),
    "size": Param("vector", [256, 256], "Scan size (height, width), px", length=2, ge=16, le=8192),
    "pixel_time_us": Param("float", 2.0, "Dwell time per pixel, µs", gt=0),
    "fov_nm": Param("float", 64.0, "Field of view (the longer side), nm", gt=0),
    "sample": Param("str", "particles", "usim's specimen", choices=("particles", "flake", "amorphous")),
    "drift_nm_per_s": Param("vector", [0.0, 0.0], "usim: linear specimen drift (vy, vx), nm/s", length=2),
    "random_walk_nm_per_sqrt_s": Param("float", 0.0, "usim: random-walk drift, std after 1 s, nm", ge=0),
    "seed": Param("int", None, "usim: seed of the random walk (default: run.seed)", nullable=True),
}

_ACTUATOR = {
    "scale_nm_per_px": Param("float", None, "px → nm scale of the default calibration (default: the scan's pixel "
                                            "size); drift calibrate measures the real matrix", gt=0, nullable=True),
}


def _source(params, context):
    from .devices import NionScan

    return NionScan(params, context)


def _actuator(kind):
    def factory(params, context):
        from .devices import NionActuator

        return NionActuator(params, context, kind=kind)
    return factory


@hookimpl
def drift_frame_sources():
    return [Component("nion-scan", _source, SOURCE_PARAMS,
                      "Nion Swift scan device (record_immediate): usim or the running Nion Swift",
                      example={"connect": "usim", "size": [256, 256], "fov_nm": 64,
                               "drift_nm_per_s": [0.2, -0.15]})]


@hookimpl
def drift_actuators():
    return [
        Component("nion-stage", _actuator("stage"),
                  {**_ACTUATOR, "range_nm": Param("float", 1000.0, "Hardware range from the start position (±)",
                                                  gt=0)},
                  "Nion stage position (stem_controller stage_position_m), nm"),
        Component("nion-beam-shift", _actuator("beam-shift"),
                  {**_ACTUATOR, "range_nm": Param("float", 100.0, "Beam-shift range from the start (±)", gt=0)},
                  "Nion probe/beam shift (stem_controller beam_shift_m), nm"),
        Component("nion-scan-offset", _actuator("scan-offset"),
                  {**_ACTUATOR, "range_nm": Param("float", 500.0, "Scan-offset range from the start (±)", gt=0)},
                  "Nion scan centre (the frame parameters' center_nm of the next scans), nm"),
    ]


def _bench_arguments(parser):
    from .bench import add_arguments

    add_arguments(parser)


def _bench_run(args):
    from .bench import run

    return run(args)


@hookimpl
def drift_benchmarks():
    return [Benchmark("nion", _bench_arguments, _bench_run,
                      "Nion's STEM simulator: our correction against Nion's DriftTracker on identical drift")]
