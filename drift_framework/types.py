"""Data types shared by the core and every plugin.

A :class:`Frame` is what a source acquires, a :class:`Shift` is what a pipeline
measures.  Sign convention (everywhere in this project)::

    moving[y, x] ≈ reference[y - dy, x - dx]

i.e. the image *content* moved by ``(+dy, +dx)`` pixels between the reference
and the moving frame.  scikit-image's ``phase_cross_correlation`` returns the
opposite sign.

The ``Protocol`` classes document what each component kind must provide; the
core only relies on these methods.  Optional capabilities (regions, pairs, batches,
``close``) are runtime-checkable protocols too: the engine asks
``isinstance(source, RegionSource)``, never ``hasattr``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Frame",
    "Shift",
    "CorrelationMap",
    "Param",
    "Component",
    "Preset",
    "Trainer",
    "Benchmark",
    "BuildContext",
    "FrameError",
    "ParamError",
    "SourceExhausted",
    "Pair",
    "FrameSource",
    "Denoiser",
    "Correlator",
    "ShiftEstimator",
    "Controller",
    "Actuator",
    "Closeable",
    "RegionSource",
    "PairSource",
    "BatchDenoiser",
    "BatchEstimator",
    "CandidateScorer",
    "CentralView",
    "ResampledReference",
    "ScanRamp",
    "COMPONENT_KINDS",
    "MIN_SIZE",
]

#: The smallest image side (px) the engine and the pipelines accept.
MIN_SIZE = 8

#: The component kinds, in the order a recipe assembles them.
COMPONENT_KINDS = ("source", "denoiser", "correlator", "estimator", "controller", "actuator")


class FrameError(ValueError):
    """A frame (or a pair of frames) cannot be used for shift estimation."""


class SourceExhausted(Exception):
    """Raised by ``acquire()`` when a finite source (a file) has no more frames; the loop ends normally."""


class ParamError(ValueError):
    """Raised by a component's ``check`` for a combination of parameters that is invalid.

    ``path`` is the key path below the component (e.g. ``("drift", 0, "velocity_px_per_s")``).
    """

    def __init__(self, path: tuple, message: str):
        self.path = tuple(path)
        super().__init__(message)


@dataclass
class Frame:
    """One acquired image.

    Parameters
    ----------
    data : ndarray
        2-D float32 image.
    index : int
        Frame number in the acquisition (0-based).
    time_s : float
        Acquisition time (end of the frame) in seconds since the source started.
    pixel_size_nm : float
        Calibrated pixel size; ``nan`` when unknown.
    meta : dict
        Free-form metadata.  The simulator stores its ground truth here
        (``true_offset_px``: content displacement since the start, ``(dy, dx)``).
    """

    data: np.ndarray
    index: int = 0
    time_s: float = 0.0
    pixel_size_nm: float = float("nan")
    meta: dict = field(default_factory=dict)


#: the most confidence an ambiguous answer carries (rivals the data do not rule out): below the 0.5 that gating,
#: ``drift correct`` and the benchmarks read as "right", however probable it is against them.
AMBIGUOUS_CONFIDENCE = 0.45


def doubted(confidence: float, ambiguous: bool) -> float:
    """``confidence``, held to :data:`AMBIGUOUS_CONFIDENCE` when the answer is ambiguous.

    An answer with a rival within the noise cannot be acted on as right: gating holds it, a trajectory prior or
    all-pairs averaging decides (estimators keep its probability against the rivals as ``meta["p_right"]``).
    """
    return min(confidence, AMBIGUOUS_CONFIDENCE) if ambiguous else confidence


@dataclass(frozen=True)
class Shift:
    """A measured displacement of the moving frame's content, in pixels.

    ``sigma`` is the radial 1-σ uncertainty: the expected RMS of the Euclidean
    error, ``sqrt(E|error|²)``.  ``confidence`` (0–1) is the estimator's
    probability that the error is below half a pixel.  ``candidates`` are the
    other shifts ``(dy, dx)`` the data could not rule out (on a lattice: peaks a
    pseudo-lattice vector away, or noise peaks as high); when there are any the
    answer is :attr:`ambiguous` and its confidence at most
    :data:`AMBIGUOUS_CONFIDENCE`, so that gating, all-pairs averaging or a
    trajectory prior can decide (a trajectory's decision keeps the candidates
    and may be confident: :func:`~drift_framework.policy.choose_by_trajectory`).
    """

    dy: float
    dx: float
    sigma: float = float("nan")
    confidence: float = float("nan")
    method: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)
    candidates: tuple[tuple[float, float], ...] = field(default=(), compare=False)

    @property
    def vector(self) -> np.ndarray:
        """The shift as ``array([dy, dx])``."""
        return np.array([self.dy, self.dx])

    @property
    def magnitude(self) -> float:
        return math.hypot(self.dy, self.dx)

    @property
    def ambiguous(self) -> bool:
        """True when other shifts fit the data about as well (see ``candidates``)."""
        return bool(self.candidates)

    def __iter__(self):
        yield self.dy
        yield self.dx


@dataclass
class CorrelationMap:
    """What a correlator hands to an estimator.

    ``data`` is the correlation surface with zero lag at ``center``
    (``data[center] `` ↔ shift (0, 0); ``data[center + (dy, dx)]`` ↔ shift (dy, dx)).
    ``cross_power`` is the (unshifted) complex cross-power spectrum when the
    correlator has one (upsampled-DFT refinement needs it).  ``reference`` and
    ``moving`` are the prepared images (refinement over the overlap needs them).
    ``normalized`` is true when ``data`` is a correlation coefficient (−1…1).

    What correlators tell estimators beyond the map is declared here, not passed in ``meta``:
    ``raw`` holds the frames as acquired, before denoising (the pipeline sets it; refinement on the raw
    frames needs it), ``n_eff`` the effective number of independent pixels of the window, ``norm`` the
    factor that turns ``data`` into a correlation coefficient, ``reference_spectrum`` the FFT of the
    windowed reference (refinement reuses it), ``whole`` (for a map of the frames' central crop, see
    :class:`CentralView`) makes the map of the whole frames on demand.  ``meta`` is free-form, for people
    (window name, padding).
    """

    data: np.ndarray
    center: tuple[int, int]
    reference: np.ndarray
    moving: np.ndarray
    cross_power: np.ndarray | None = None
    kind: str = ""
    normalized: bool = False
    raw: tuple[np.ndarray, np.ndarray] | None = None
    n_eff: float | None = None
    norm: float = 1.0
    reference_spectrum: np.ndarray | None = None
    whole: Callable[[], CorrelationMap] | None = field(default=None, repr=False)
    meta: dict = field(default_factory=dict)


@dataclass
class Pair:
    """A simulated pair with its ground truth, for training and benchmarks.

    ``shift`` is the true ``(dy, dx)``; ``crlb`` the 2×2 Cramér–Rao covariance
    bound of the pair (``trace`` is the bound on the mean squared Euclidean error).
    """

    reference: np.ndarray
    moving: np.ndarray
    shift: np.ndarray
    crlb: np.ndarray | None
    clean_reference: np.ndarray | None = None
    clean_moving: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- #
# Component registrations (what plugin hooks return)
# --------------------------------------------------------------------------- #

_PARAM_TYPES = ("float", "int", "bool", "str", "vector", "mapping", "list", "any")


@dataclass(frozen=True)
class Param:
    """Schema of one component parameter (validated by :mod:`drift_framework.recipe`).

    Parameters
    ----------
    type : {"float", "int", "bool", "str", "vector", "mapping", "list", "any"}
        ``vector`` is a list of numbers (``length`` fixes its size); ``mapping`` is a
        nested dict validated by ``fields`` (or, when ``variants`` is given, by the
        schema selected by its ``kind`` key); ``list`` is a list of ``item``.
    default :
        Used when the key is absent.  ``REQUIRED`` makes the key mandatory.
    gt, ge, lt, le : float, optional
        Bounds for numbers (and for each element of a vector).
    choices : sequence, optional
        Allowed values.
    nullable : bool
        Whether ``null`` is accepted.
    help : str
        One line shown in ``drift plugins`` and the recipe reference.
    """

    type: str = "any"
    default: Any = None
    help: str = ""
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: Sequence[Any] | None = None
    nullable: bool = False
    length: int | None = None
    fields: Mapping[str, Param] | None = None
    variants: Mapping[str, Mapping[str, Param]] | None = None
    item: Param | None = None

    def __post_init__(self):
        if self.type not in _PARAM_TYPES:
            raise ValueError(f"Param type must be one of {_PARAM_TYPES}, got {self.type!r}")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Marker default: the parameter must be given.
REQUIRED = _Required()


@dataclass
class BuildContext:
    """Handed to every component factory.

    ``source`` is the already-built frame source (actuators of the virtual
    microscope share its state); ``recipe_dir`` resolves relative paths.
    """

    source: Any = None
    recipe_dir: str = "."
    device: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Benchmark:
    """A benchmark ``drift bench NAME`` runs, registered by a plugin's ``drift_benchmarks`` hook.

    Parameters
    ----------
    name : str
        The sub-command (``drift bench NAME``).
    add_arguments : callable
        ``add_arguments(parser)`` adds its options.
    run : callable
        ``run(args) -> int``: runs it (writes its table, returns the exit status).
    description : str
        One line for ``drift bench --help``.
    """

    name: str
    add_arguments: Callable[[Any], None]
    run: Callable[[Any], int]
    description: str = ""


@dataclass(frozen=True)
class Component:
    """A component registration returned by a plugin hook.

    Parameters
    ----------
    name : str
        The name recipes use (``plugin: name``).  Lower case with dashes.
    factory : callable
        ``factory(params: dict, context: BuildContext) -> component``; ``params``
        are already validated against ``params`` and filled with defaults.
    params : dict of str to Param
        The parameter schema.
    description : str
        One line for ``drift plugins``.
    check : callable, optional
        ``check(params)`` for rules that span several parameters; raises
        :class:`ParamError` (reported with the recipe's file and line).
    example : dict, optional
        Parameters shown in the recipe reference's example (needed when some
        are required); the docs tests validate every example.
    """

    name: str
    factory: Callable[[dict, BuildContext], Any]
    params: Mapping[str, Param] = field(default_factory=dict)
    description: str = ""
    check: Callable[[dict], None] | None = None
    example: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Trainer:
    """A training procedure (``drift train NAME RECIPE``).

    ``run(recipe, options)`` receives the validated recipe (its ``train`` section
    checked against ``params``) and the command-line options (``resume``, ``device``,
    ``progress``); it returns a dict of results (metrics, files written).
    """

    name: str
    run: Callable[[Any, dict], dict]
    params: Mapping[str, Param] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Preset:
    """A named pipeline (``denoiser``/``correlator``/``estimator`` specs)."""

    name: str
    pipeline: Mapping[str, Any]
    description: str = ""


# --------------------------------------------------------------------------- #
# Protocols: what each component kind must provide
# --------------------------------------------------------------------------- #


@runtime_checkable
class FrameSource(Protocol):
    """Produces frames.  ``acquire()`` blocks until the next frame is ready."""

    def acquire(self) -> Frame: ...

    def close(self) -> None: ...


@runtime_checkable
class Denoiser(Protocol):
    def denoise(self, image: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Correlator(Protocol):
    def correlate(self, reference: np.ndarray, moving: np.ndarray) -> CorrelationMap: ...


@runtime_checkable
class ShiftEstimator(Protocol):
    def estimate(self, cmap: CorrelationMap) -> Shift: ...


@runtime_checkable
class Controller(Protocol):
    """Turns drift measurements into the next field-of-view target.

    ``update(time_s, drift_px, sigma_px, fov_px)`` receives the measured
    absolute specimen drift (content displacement plus where the field of view
    has been moved, in pixels), its uncertainty and the current field-of-view
    position; it returns the field-of-view position (px) to hold for the next
    frame, acquired at about ``time_s + frame_time_s``.
    """

    def update(self, time_s: float, drift_px: np.ndarray, sigma_px: float,
               fov_px: np.ndarray, next_time_s: float) -> np.ndarray: ...

    def reset(self) -> None: ...


@runtime_checkable
class Actuator(Protocol):
    """Moves the field of view.  Commands are in the actuator's own units.

    ``calibration`` is the 2×2 matrix mapping a field-of-view move in pixels
    ``(dy, dx)`` to actuator units; ``units`` names them.
    """

    units: str
    calibration: np.ndarray

    def move_by(self, command: np.ndarray) -> None: ...


# --------------------------------------------------------------------------- #
# Optional capabilities: checked with isinstance, never hasattr
# --------------------------------------------------------------------------- #


@runtime_checkable
class Closeable(Protocol):
    """A component that holds resources (connections, files, threads) released by ``close()``."""

    def close(self) -> None: ...


@runtime_checkable
class RegionSource(Protocol):
    """A frame source that can scan a sub-region between frames (``run.tracking_region`` needs it)."""

    def acquire_region(self, top_left: Sequence[float], shape: Sequence[int]) -> Frame: ...


@runtime_checkable
class PairSource(Protocol):
    """A frame source that makes simulated pairs with ground truth (training and benchmarks need it)."""

    def pairs(self, n: int, *, seed: int | None = None, **options: Any) -> Iterator[Pair]: ...


@runtime_checkable
class BatchDenoiser(Denoiser, Protocol):
    """A denoiser that also processes a stack ``(n, H, W)`` in one pass."""

    def denoise_batch(self, frames: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class BatchEstimator(ShiftEstimator, Protocol):
    """An estimator that also measures a whole stack against one reference itself (e.g. one network pass)."""

    def estimate_batch(self, pipeline: Any, reference: np.ndarray, frames: Sequence[np.ndarray]) -> list[Shift]: ...


@runtime_checkable
class CandidateScorer(Protocol):
    """An estimator that can score any answer against the other candidates of a correlation map.

    ``contest_at(cmap, near)`` returns the probability that the peak at ``near`` (dy, dx) is the right one
    among the map's candidates, and the shifts it does not rule out.  Learned estimators use it so that their
    confidence falls when the correlation's candidate analysis disagrees.
    """

    def contest_at(self, cmap: CorrelationMap, near: tuple[float, float]) -> tuple[float, tuple[tuple[float, float], ...]]:
        ...


@runtime_checkable
class DoubtReviewer(Protocol):
    """An estimator that looks again at a doubtful answer (confidence < 0.5) of any pipeline on the same frames.

    ``review_doubtful(reference, moving, shift)`` returns ``shift`` itself or another answer, with the first among
    its candidates; learned estimators pass their doubtful answers through their refiner's."""

    def review_doubtful(self, reference: np.ndarray, moving: np.ndarray, shift: Shift) -> Shift: ...


@runtime_checkable
class CentralView(Protocol):
    """An estimator that reads only small lags of the correlation map, so the denoiser and the correlator need
    only a central crop of the frames: ``view_px`` is the crop's side (``None``: the whole frames).  The frames as
    acquired still reach it whole (``CorrelationMap.raw``), for refinement and candidate analysis."""

    view_px: int | None


@runtime_checkable
class ResampledReference(Protocol):
    """A denoiser or estimator with a variant for references that were resampled (a template warped from other
    frames, whose interpolation blur varies with the sub-pixel position, and which is no longer raw counts):
    ``for_resampled()`` returns it.  Series registration measures its template passes with it."""

    def for_resampled(self) -> Any: ...


@runtime_checkable
class ScanRamp(Protocol):
    """An actuator that also bends the scan: the probe moves at a constant rate during each frame, so content
    drifting at that rate is scanned undistorted (feed-forward inside the frame, ``run.scan_ramp``).

    ``set_scan_ramp(rate_px_per_s)`` sets the rate ``(vy, vx)`` in image pixels per second for the frames that start
    after the call.  The ramp is centred on each frame's mid-time, so it bends the raster without moving the frame's
    centre (that is what ``move_by`` does).  Rates are in image pixels because the scan generator draws the raster in
    them: the actuator calibration plays no part.
    """

    def set_scan_ramp(self, rate_px_per_s: np.ndarray) -> None: ...
