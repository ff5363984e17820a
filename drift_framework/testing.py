"""Contract tests for components: what every frame source, denoiser, correlator, estimator, controller and
actuator must do, checked on a built object.  numpy only — no pytest, no simulator — so a vendor runs the very
checks the built-ins pass (python-microscope's per-device contract tests work the same way)::

    from drift_framework.testing import check_component

    def test_my_stage_keeps_the_actuator_contract():
        check_component("actuator", MyStage({"address": "sim://"}, None))

Each ``check_*`` raises :class:`ContractError` (an ``AssertionError``) naming the component and the broken rule.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .types import (
    MIN_SIZE,
    Actuator,
    BatchDenoiser,
    Closeable,
    Controller,
    CorrelationMap,
    Correlator,
    Denoiser,
    Frame,
    FrameSource,
    RegionSource,
    Shift,
    ShiftEstimator,
)

__all__ = ["ContractError", "lattice_pair", "check_source", "check_denoiser", "check_correlator", "check_estimator",
           "check_controller", "check_actuator", "check_component", "CHECKS"]


class ContractError(AssertionError):
    """A component does not keep its kind's contract."""


def _require(ok: bool, component: Any, rule: str) -> None:
    if not ok:
        raise ContractError(f"{type(component).__name__}: {rule}")


def lattice_pair(shift: tuple[float, float] = (1.3, -0.7), *, shape: tuple[int, int] = (96, 96),
                 spacing_px: float = 12.0, counts: float = 200.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A hexagonal lattice of Gaussian columns and the same lattice with its content moved by ``shift`` (px),
    rendered analytically (an exact sub-pixel shift) with Poisson noise at ``counts`` per column peak.  Column
    heights vary (a random, non-periodic pattern that moves with the content), so the true shift is the only
    good match — not also every lattice vector away from it.

    ``moving[y, x] ≈ reference[y - dy, x - dx]``: the sign convention of :class:`~drift_framework.types.Shift`.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    a1, a2 = np.array([0.0, spacing_px]), spacing_px * np.array([math.sqrt(3) / 2, 0.5])
    n = int(max(shape) / spacing_px) + 3
    sites = np.array([i * a1 + j * a2 for i in range(-n, n + 1) for j in range(-n, n + 1)]) + 0.37 * spacing_px
    heights = rng.uniform(0.3, 1.0, len(sites))

    def render(offset: np.ndarray) -> np.ndarray:
        image = np.zeros(shape)
        for (y, x), h in zip(sites + offset, heights):
            if -8 < y < shape[0] + 8 and -8 < x < shape[1] + 8:
                image += h * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * (0.12 * spacing_px) ** 2))
        return rng.poisson(counts * image + 0.05 * counts).astype(np.float32)

    return render(np.zeros(2)), render(np.asarray(shift, float))


def check_source(source: Any, *, frames: int = 3) -> list[Frame]:
    """``acquire()`` gives :class:`Frame` objects: real 2-D images of at least ``MIN_SIZE`` px, increasing
    indices, a clock that does not go back, a float pixel size (NaN when unknown) and a metadata dict;
    ``acquire_region`` (when offered) gives the shape asked for.  Returns the frames."""
    _require(isinstance(source, FrameSource) or callable(getattr(source, "acquire", None)), source,
             "a frame source needs acquire()")
    got: list[Frame] = []
    for _ in range(frames):
        frame = source.acquire()
        _require(isinstance(frame, Frame), source, f"acquire() must return a Frame, got {type(frame).__name__}")
        data = np.asarray(frame.data)
        _require(data.ndim == 2 and data.dtype.kind in "fiu" and min(data.shape) >= MIN_SIZE, source,
                 f"a frame must be a real 2-D image of at least {MIN_SIZE} px a side, got {data.dtype} {data.shape}")
        _require(isinstance(frame.index, (int, np.integer)), source, "Frame.index must be an integer")
        _require(math.isfinite(frame.time_s), source, "Frame.time_s must be a finite number of seconds")
        _require(isinstance(frame.pixel_size_nm, (float, int)), source, "Frame.pixel_size_nm must be a float")
        _require(isinstance(frame.meta, dict), source, "Frame.meta must be a dict")
        if got:
            _require(frame.index > got[-1].index, source, "frame indices must increase")
            _require(frame.time_s >= got[-1].time_s, source, "frame times must not go back")
        got.append(frame)
    if isinstance(source, RegionSource):
        size = max(MIN_SIZE, min(got[0].data.shape) // 2)
        region = source.acquire_region((0, 0), (size, size))
        _require(np.shape(region.data) == (size, size), source, "acquire_region must give the shape asked for")
    if isinstance(source, Closeable):
        source.close()
    return got


def check_denoiser(denoiser: Any) -> None:
    """``denoise(image)`` keeps the shape, gives finite floats and leaves its input alone; ``denoise_batch``
    (when offered) agrees with frame-by-frame denoising."""
    if denoiser is None:  # the "none" denoiser: the pipeline skips denoising
        return
    _require(isinstance(denoiser, Denoiser), denoiser, "a denoiser needs denoise(image)")
    reference, moving = lattice_pair()
    before = reference.copy()
    out = np.asarray(denoiser.denoise(reference))
    _require(out.shape == reference.shape, denoiser, f"denoise must keep the shape {reference.shape}, got {out.shape}")
    _require(out.dtype.kind == "f" and bool(np.all(np.isfinite(out))), denoiser, "denoise must give finite floats")
    _require(bool(np.array_equal(reference, before)), denoiser, "denoise must not change its input")
    if isinstance(denoiser, BatchDenoiser):
        batch = np.asarray(denoiser.denoise_batch(np.stack([reference, moving])))
        one = np.asarray(denoiser.denoise(moving))
        _require(batch.shape == (2, *reference.shape), denoiser, "denoise_batch must keep the stack's shape")
        _require(bool(np.allclose(batch[1], one, rtol=1e-4, atol=1e-4 * float(np.abs(one).max() + 1))), denoiser,
                 "denoise_batch must agree with denoise")


def check_correlator(correlator: Any) -> CorrelationMap:
    """``correlate(reference, moving)`` gives a :class:`CorrelationMap` with a finite map, its zero lag inside
    the map, and the images it correlated.  Returns the map."""
    _require(isinstance(correlator, Correlator), correlator, "a correlator needs correlate(reference, moving)")
    reference, moving = lattice_pair()
    cmap = correlator.correlate(reference, moving)
    _require(isinstance(cmap, CorrelationMap), correlator, "correlate must return a CorrelationMap")
    data = np.asarray(cmap.data)
    _require(data.ndim == 2 and bool(np.all(np.isfinite(data))), correlator, "the map must be a finite 2-D array")
    _require(0 <= cmap.center[0] < data.shape[0] and 0 <= cmap.center[1] < data.shape[1], correlator,
             f"the zero lag {cmap.center} must lie inside the {data.shape} map")
    _require(np.shape(cmap.reference) == np.shape(cmap.moving), correlator, "the map must carry both images")
    return cmap


def check_estimator(estimator: Any, correlator: Any, denoiser: Any = None, *,
                    shift: tuple[float, float] = (1.3, -0.7)) -> Shift:
    """On an easy lattice pair, ``estimate`` finds the shift with the project's sign, within half a pixel (the
    project's success criterion) or its own stated uncertainty (3 σ) if that is larger, with σ ≥ 0 and
    0 ≤ confidence ≤ 1 (or NaN: not known).  Whether σ is calibrated is a statistical property, which
    ``drift bench accuracy`` measures.  ``correlator`` (and ``denoiser``) make the map the estimator reads (the
    correlator of a preset that uses it).  Returns the :class:`Shift`."""
    _require(isinstance(estimator, ShiftEstimator), estimator, "an estimator needs estimate(cmap)")
    reference, moving = lattice_pair(shift)
    raw = (reference, moving)
    if denoiser is not None:
        reference, moving = denoiser.denoise(reference), denoiser.denoise(moving)
    cmap = correlator.correlate(reference, moving)
    cmap.raw = raw
    s = estimator.estimate(cmap)
    _require(isinstance(s, Shift), estimator, "estimate must return a Shift")
    _require(math.isfinite(s.dy) and math.isfinite(s.dx), estimator, "an easy pair must give a finite shift")
    # NaN says "not known" (the scikit-image reference reports no uncertainty); anything else must make sense
    _require(math.isnan(s.sigma) or 0 <= s.sigma < math.inf, estimator, f"sigma must be ≥ 0 or NaN, got {s.sigma}")
    _require(math.isnan(s.confidence) or 0 <= s.confidence <= 1, estimator,
             f"confidence must lie in [0, 1] or be NaN, got {s.confidence}")
    error = math.hypot(s.dy - shift[0], s.dx - shift[1])
    _require(error <= max(3 * s.sigma if math.isfinite(s.sigma) else 0.0, 0.5), estimator,
             f"measured ({s.dy:.3f}, {s.dx:.3f}) for a true {shift}: error {error:.3f} px, beyond 0.5 px and "
             f"3 σ = {3 * s.sigma:.3f}")
    return s


def check_controller(controller: Any) -> None:
    """``update`` gives a finite 2-vector (px) for a steady drift, and ``reset`` makes the same inputs give
    the same outputs again."""
    _require(isinstance(controller, Controller), controller, "a controller needs update(...) and reset()")

    def feed() -> list[np.ndarray]:
        out, fov = [], np.zeros(2)
        for k in range(12):
            target = np.asarray(controller.update(float(k), np.array([0.5 * k, -0.3 * k]), 0.05, fov.copy(),
                                                  float(k + 1)), float)
            _require(target.shape == (2,) and bool(np.all(np.isfinite(target))), controller,
                     f"update must give a finite (dy, dx), got {target!r}")
            out.append(target)
            fov = target
        return out

    first = feed()
    controller.reset()
    again = feed()
    _require(all(np.allclose(a, b) for a, b in zip(first, again)), controller, "reset must forget the past")


def check_actuator(actuator: Any) -> None:
    """An actuator names its ``units``, has an invertible finite 2×2 px → units ``calibration``, and takes
    ``move_by`` commands (a small one and its return)."""
    _require(isinstance(actuator, Actuator), actuator, "an actuator needs units, calibration and move_by")
    _require(isinstance(actuator.units, str) and bool(actuator.units), actuator, "units must name the unit")
    cal = np.asarray(actuator.calibration, float)
    _require(cal.shape == (2, 2) and bool(np.all(np.isfinite(cal))) and abs(np.linalg.det(cal)) > 0, actuator,
             "calibration must be a finite invertible 2×2 matrix")
    step = cal @ np.array([0.5, -0.25])  # half a pixel's worth, there and back
    actuator.move_by(step)
    actuator.move_by(-step)
    if isinstance(actuator, Closeable):
        actuator.close()


#: kind → check; estimators also need the correlator (and denoiser) that makes their map.
CHECKS: dict[str, Callable[..., Any]] = {"source": check_source, "denoiser": check_denoiser,
                                        "correlator": check_correlator, "estimator": check_estimator,
                                        "controller": check_controller, "actuator": check_actuator}


def check_component(kind: str, component: Any, **options: Any) -> Any:
    """Run the contract of ``kind`` (a key of :data:`CHECKS`) on a built component."""
    if kind not in CHECKS:
        raise ValueError(f"unknown component kind {kind!r}; kinds are {', '.join(CHECKS)}")
    return CHECKS[kind](component, **options)
