"""drift_simulator: the virtual microscope (built-in plugin).

Provides the frame source ``simulator`` (a drifting crystal under a Gaussian
probe, with detector noise, background, scan jitter and vibration, ground truth in
``Frame.meta``, and a pair generator with Cramér–Rao bounds) and the actuators
``simulated-stage`` and ``simulated-beam-shift`` that share its state.
"""
from __future__ import annotations

from drift_framework import REQUIRED, Component, Param, hookimpl
from drift_framework.types import ParamError

from .drift import DRIFT_KINDS
from .noise import NOISE_KINDS
from .specimen import LATTICES

__version__ = "0.1.0"

_NOISE = {
    "none": {},
    "uniform": {"snr": Param("float", REQUIRED, "std(noiseless) / std(noise)", gt=0)},
    "gaussian": {"snr": Param("float", REQUIRED, "std(noiseless) / std(noise)", gt=0)},
    "poisson": {"dose": Param("float", REQUIRED, "Mean electron counts per pixel", gt=0),
                "read_noise": Param("float", 0.0, "Gaussian read noise, counts", ge=0)},
}
assert set(_NOISE) == set(NOISE_KINDS)

_DRIFT = {
    "linear": {"velocity_px_per_frame": Param("vector", None, "(vy, vx) per frame", length=2, nullable=True),
               "velocity_px_per_s": Param("vector", None, "(vy, vx) per second", length=2, nullable=True)},
    "random-walk": {"step_px_per_frame": Param("float", None, "Std of the step per frame", ge=0, nullable=True),
                    "step_px_per_sqrt_s": Param("float", None, "Std after one second", ge=0, nullable=True)},
    "sinusoidal": {"amplitude_px": Param("vector", REQUIRED, "(ay, ax)", length=2),
                   "period_s": Param("float", None, "Period in seconds", gt=0, nullable=True),
                   "period_frames": Param("float", None, "Period in frames", gt=0, nullable=True),
                   "phase_deg": Param("float", 0.0, "Phase")},
    "jumps": {"rate_per_frame": Param("float", None, "Mean jumps per frame", ge=0, nullable=True),
              "rate_per_s": Param("float", None, "Mean jumps per second", ge=0, nullable=True),
              "size_px": Param("float", REQUIRED, "Jump length", gt=0)},
    "settling": {"fraction": Param("float", 0.05, "Creep as a fraction of each stage move", ge=0, le=1),
                 "tau_s": Param("float", 2.0, "Relaxation time", gt=0)},
}
assert set(_DRIFT) == set(DRIFT_KINDS)
_EITHER = {"linear": ("velocity_px_per_frame", "velocity_px_per_s"),
           "random-walk": ("step_px_per_frame", "step_px_per_sqrt_s"),
           "sinusoidal": ("period_frames", "period_s"), "jumps": ("rate_per_frame", "rate_per_s")}

SOURCE_PARAMS = {
    "lattice": Param("str", "hexagonal", "Crystal lattice", choices=tuple(LATTICES)),
    "spacing_px": Param("vector", [12.0], "Lattice spacing, px: a value or a [low, high] range", gt=0),
    "rotation_deg": Param("vector", [0.0], "Lattice rotation: a value, a [low, high] range, or null for random",
                          nullable=True),
    "shape": Param("vector", [256, 256], "Frame (height, width), px", length=2, ge=8, le=16384),
    "specimen_px": Param("vector", None, "Specimen (height, width), px; default 4 × the frame", length=2,
                         gt=0, nullable=True),
    "probe_sigma_px": Param("float", None, "Gaussian probe std, px; default spacing / 6", gt=0, nullable=True),
    "intensities": Param("vector", None, "Intensity of each basis site", ge=0, nullable=True),
    "intensity_jitter": Param("float", 0.05, "Relative std of per-atom intensity", ge=0, le=1),
    "vacancy_fraction": Param("float", 0.0, "Fraction of missing atoms", ge=0, lt=1),
    "interstitial_fraction": Param("float", 0.0, "Fraction of extra atoms at random positions", ge=0, le=1),
    "displacement_px": Param("float", 0.0, "Std of frozen random atom displacements", ge=0),
    "contrast": Param("str", "bright", "bright (HAADF-like) or dark (ABF-like) atoms", choices=("bright", "dark")),
    "baseline": Param("float", 0.1, "Signal level between atoms (bright contrast) or in the darkest column (dark "
                                    "contrast: the background is this plus the brightest column's peak)", ge=0),
    "noise": Param("mapping", {"kind": "gaussian", "snr": 1.0}, "Detector noise", variants=_NOISE),
    "background": Param("mapping", None, "Slow background fixed to the detector", fields={
        "amplitude": Param("float", 0.0, "Peak amplitude (atom peak = 1)", ge=0),
        "scale_px": Param("float", 200.0, "Wavelength", gt=0)}),
    "scan_jitter_px": Param("float", 0.0, "Std of the x offset of each scan line", ge=0),
    "vibration": Param("mapping", None, "Vibration of the specimen against the probe, felt pixel by pixel "
                                        "during the scan (smears and splits correlation peaks)", fields={
        "amplitude_px": Param("vector", [0.0, 0.0], "(ay, ax): amplitude along y and x, px", length=2),
        "frequency_hz": Param("float", 50.0, "Frequency", gt=0)}),
    "drift": Param("list", [], "Drift models, summed", item=Param("mapping", variants=_DRIFT)),
    "dwell_us": Param("float", 2.0, "Pixel dwell time, µs", gt=0),
    "flyback_us": Param("float", 0.0, "Line fly-back time, µs", ge=0),
    "serpentine": Param("bool", False, "Scan odd lines right to left (a serpentine scan: no fly-back needed); "
                                       "with scan_time: pixel, each pixel's time follows"),
    "scan_rotation_deg": Param("float", 0.0, "Scan rotation: the raster turned on the specimen, so the recorded frame "
                                             "shows it turned back (at 90: np.rot90(frame, 1) shows it as at 0); "
                                             "drift, moves and truth are all in the recorded frame's axes"),
    "scan_distortion": Param("mapping", None, "The scan generator's own error, the same in every frame: felt as a "
                                              "strain along the slow-scan axis, part of the truth field", fields={
        "slow_scale": Param("float", 0.0, "Slow-scan step error, a fraction (0.02: lines 2 % too far apart)",
                            gt=-0.2, lt=0.2),
        "shear_deg": Param("float", 0.0, "Slow-scan axis tilted from perpendicular to the lines", gt=-10, lt=10)}),
    "strain": Param("vector", None, "A real uniform strain of the specimen (eyy, exx, exy), fractions: unlike a "
                                    "scan distortion, it turns with the specimen under a scan rotation", length=3,
                    gt=-0.2, lt=0.2, nullable=True),
    "pixel_size_nm": Param("float", 0.03, "Pixel size, nm", gt=0),
    "seed": Param("int", None, "Random seed (default: run.seed)", nullable=True),
    "scan_time": Param("str", "frame", "frame: each frame is rendered at its mid-time (a rigid snapshot); pixel: every "
                                       "pixel at its own acquisition time, so drift shears and stretches the frame "
                                       "(truth per pixel in Frame.meta['true_field_px'], the columns' undistorted "
                                       "positions in 'true_columns_px')", choices=("frame", "pixel")),
    "realtime": Param("bool", False, "Take each scan's time (dwell, fly-back) in wall-clock time, as a microscope "
                                     "does: for demos and the live view"),
}


def _check_source(p: dict) -> None:
    if len(p["spacing_px"]) not in (1, 2) or (len(p["spacing_px"]) == 2 and p["spacing_px"][0] > p["spacing_px"][1]):
        raise ParamError(("spacing_px",), "must be a value or a [low, high] range")
    if p["rotation_deg"] is not None and len(p["rotation_deg"]) not in (1, 2):
        raise ParamError(("rotation_deg",), "must be a value, a [low, high] range or null")
    if any(s != int(s) for s in p["shape"]):
        raise ParamError(("shape",), f"must be whole pixels, got {p['shape']}")
    if p["specimen_px"] is not None and any(s < f for s, f in zip(p["specimen_px"], p["shape"])):
        raise ParamError(("specimen_px",), f"the specimen {p['specimen_px']} is smaller than the field of view "
                                           f"{p['shape']}")
    if max(p["spacing_px"]) > min(p["shape"]) / 2:
        raise ParamError(("spacing_px",), f"lattice spacing {max(p['spacing_px'])} px leaves fewer than 2 cells "
                                          f"in a {p['shape']} frame")
    n_sites = len(LATTICES[p["lattice"]][2])
    if p["intensities"] is not None and len(p["intensities"]) != n_sites:
        raise ParamError(("intensities",), f"lattice {p['lattice']} has {n_sites} basis site(s); "
                                           f"give {n_sites} intensities")
    for i, d in enumerate(p["drift"]):
        pair = _EITHER.get(d["kind"])
        if pair and (d[pair[0]] is None) == (d[pair[1]] is None):
            raise ParamError(("drift", i), f"give exactly one of {pair[0]} or {pair[1]}")


_ACTUATOR = {
    "rotation_deg": Param("float", 0.0, "True rotation from image to actuator axes"),
    "scale_nm_per_px": Param("float", None, "True nm per image pixel; default the pixel size", gt=0, nullable=True),
    "backlash_nm": Param("float", 0.0, "Dead band when the direction reverses", ge=0),
    "settle_s": Param("float", 0.0, "First-order lag time constant", ge=0),
    "delay_frames": Param("int", 0, "Commands take effect this many frames later", ge=0, le=100),
    "step_nm": Param("float", 0.0, "Step quantization (0: continuous)", ge=0),
}


def _make_source(params, context):
    from .microscope import VirtualMicroscope

    return VirtualMicroscope(params, context)


def _actuator(kind):
    def factory(params, context):
        from .microscope import SimulatedActuator, SimulatedBeamShift

        if kind == "beam-shift":
            return SimulatedBeamShift(params, context)
        return SimulatedActuator(params, context, kind=kind)
    return factory


@hookimpl
def drift_frame_sources():
    return [Component("simulator", _make_source, SOURCE_PARAMS,
                      "Virtual microscope: drifting crystal, Gaussian probe, noise, ground truth", check=_check_source)]


@hookimpl
def drift_actuators():
    return [
        Component("simulated-stage", _actuator("stage"),
                  {**_ACTUATOR, "travel_nm": Param("float", 2000.0, "Hardware travel limit (±, per axis)", gt=0)},
                  "Stage of the virtual microscope (backlash, lag, quantization, travel limits), nm"),
        Component("simulated-beam-shift", _actuator("beam-shift"),
                  {**_ACTUATOR, "travel_nm": Param("float", 30.0, "Beam-shift range (±, per axis)", gt=0)},
                  "Beam/image shift of the virtual microscope: fast, small range, nm; it can bend the scan "
                  "(run.scan_ramp)"),
    ]
