"""The ``run:`` section of a recipe: its schema, and the frozen :class:`RunSettings` the engine reads."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .types import Param, RegionSource

__all__ = ["RUN_SCHEMA", "RunSettings", "ScanRampSettings", "TrackingRegion"]

RUN_SCHEMA: dict[str, Param] = {
    "frames": Param("int", 100, "Number of frames to acquire", gt=0, le=10_000_000),
    "reference": Param("str", "first", "Reference frame for each estimate",
                       choices=("first", "previous", "rolling", "keyframe")),
    "rolling_every": Param("int", 20, "With reference: rolling, take a new reference every N frames", ge=1),
    "keyframe_shift": Param("float", 0.25, "With reference: keyframe, take a new reference when the content has "
                                           "moved this fraction of the frame from it", gt=0, lt=1),
    "output": Param("str", "runs/{name}.h5", "Run file ({name} is replaced by the recipe name)"),
    "overwrite": Param("bool", False, "Replace an existing run file (otherwise an existing file is an error)"),
    "save_frames": Param("bool", False, "Store every frame (chunked, compressed)"),
    "correct_every": Param("int", 1, "Send a correction every N frames", ge=1),
    "correct_every_s": Param("float", 0.0, "And at most one correction per this many seconds", ge=0),
    "actuation_delay_frames": Param("int", 0, "Frames before a command shows in the images (actuator lag)",
                                    ge=0, le=100),
    "min_confidence": Param("float", 0.5, "Estimates below this confidence never move the actuator", ge=0, le=1),
    "max_sigma_px": Param("float", 1.0, "Estimates with a larger uncertainty never move the actuator", gt=0),
    "pause_after_bad": Param("int", 5, "Pause corrections after this many bad estimates in a row (they resume "
                                       "after resume_after_good good ones)", ge=1),
    "resume_after_good": Param("int", 3, "Resume after this many good estimates in a row", ge=1),
    "stop_after_bad": Param("int", 50, "Stop the run after this many bad estimates in a row", ge=1),
    "on_session_break": Param("str", "new-reference", "When the microscope restarts mid-run (a new session): take a "
                                                      "new reference, or also pause corrections until good "
                                                      "estimates resume", choices=("new-reference", "pause")),
    "check_calibration": Param("bool", True, "Prove the calibration on the first corrections (small probes) and "
                                             "stop correcting when corrections make the view worse"),
    "seed": Param("int", None, "Seed shared with components that take one", nullable=True),
    "drift_prior_px_per_frame": Param("float", 2.0, "The drift expected per frame before it is measured (1-σ): "
                                                    "decides between lattice-equivalent candidates of an ambiguous "
                                                    "estimate until the measured trajectory does", gt=0),
    "scan_ramp": Param("mapping", None, "Feed the measured drift rate forward into the scan: the probe follows the "
                                        "specimen during each frame, so frames come out undistorted, not only "
                                        "centred (an actuator with set_scan_ramp, e.g. simulated-beam-shift)",
                       nullable=True,
                       fields={"max_px_per_frame": Param("float", 4.0, "Largest ramp: the probe moves at most this "
                                                                       "far during one frame, px", gt=0)}),
    "tracking_region": Param("mapping", None, "Measure drift on a small sub-scan acquired between frames "
                                              "(sources with acquire_region, e.g. the simulator)", nullable=True,
                             fields={
                                 "size_px": Param("int", 64, "Side of the square region, px", ge=16, le=1024),
                                 "position": Param("vector", None, "Top-left (y, x) in the frame; default: centred",
                                                   length=2, ge=0, nullable=True),
                                 "per_frame": Param("int", 1, "Sub-scans (and corrections) between two frames",
                                                    ge=1, le=100)}),
}


@dataclass(frozen=True)
class TrackingRegion:
    """``run.tracking_region``: a square sub-scan measured (and corrected on) between frames."""

    size_px: int = 64
    position: tuple[float, float] | None = None
    per_frame: int = 1

    def resolve(self, source: Any, frame_shape: tuple) -> TrackingRegion:
        """The region with its position resolved for ``frame_shape``; a clear error when it cannot run."""
        if not isinstance(source, RegionSource):
            raise ValueError(f"run.tracking_region: the source {type(source).__name__} cannot acquire regions "
                             "(it has no acquire_region method)")
        size = self.size_px
        if len(frame_shape) != 2 or size > min(frame_shape):
            raise ValueError(f"run.tracking_region: a {size} px region does not fit in {tuple(frame_shape)} frames")
        position = self.position or ((frame_shape[0] - size) // 2, (frame_shape[1] - size) // 2)
        if position[0] + size > frame_shape[0] or position[1] + size > frame_shape[1]:
            raise ValueError(f"run.tracking_region: the region at {tuple(position)} leaves the "
                             f"{tuple(frame_shape)} frame")
        return TrackingRegion(size, (position[0], position[1]), self.per_frame)


@dataclass(frozen=True)
class ScanRampSettings:
    """``run.scan_ramp``: the predicted drift rate fed forward into the scan, at most ``max_px_per_frame``."""

    max_px_per_frame: float = 4.0


@dataclass(frozen=True)
class RunSettings:
    """A validated ``run:`` section (one field per key of :data:`RUN_SCHEMA`)."""

    frames: int = 100
    reference: str = "first"
    rolling_every: int = 20
    keyframe_shift: float = 0.25
    output: str = "runs/{name}.h5"
    overwrite: bool = False
    save_frames: bool = False
    correct_every: int = 1
    correct_every_s: float = 0.0
    actuation_delay_frames: int = 0
    min_confidence: float = 0.5
    max_sigma_px: float = 1.0
    pause_after_bad: int = 5
    resume_after_good: int = 3
    stop_after_bad: int = 50
    on_session_break: str = "new-reference"
    check_calibration: bool = True
    seed: int | None = None
    drift_prior_px_per_frame: float = 2.0
    scan_ramp: ScanRampSettings | None = None
    tracking_region: TrackingRegion | None = None

    @classmethod
    def from_mapping(cls, run: Mapping[str, Any]) -> RunSettings:
        """Settings from a validated ``run:`` mapping (missing keys take the schema's defaults)."""
        values = {k: p.default for k, p in RUN_SCHEMA.items()}
        values.update(run)
        region = values.get("tracking_region")
        if region:
            position = region.get("position")
            values["tracking_region"] = TrackingRegion(region.get("size_px", 64),
                                                       tuple(position) if position is not None else None,
                                                       region.get("per_frame", 1))
        if values.get("scan_ramp") is not None:
            values["scan_ramp"] = ScanRampSettings(values["scan_ramp"].get("max_px_per_frame", 4.0))
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def schedule_text(self, tracking: TrackingRegion | None) -> str:
        """Which correction schedule runs, in words (stored in the run file)."""
        if tracking:
            position = tuple(int(v) for v in tracking.position or (0, 0))
            return (f"tracking region {tracking.size_px} px at {position}, "
                    f"{tracking.per_frame} sub-scan(s) and corrections per frame")
        parts = ["every frame" if self.correct_every == 1 else f"every {self.correct_every} frames"]
        if self.correct_every_s:
            parts.append(f"at most once per {self.correct_every_s:g} s")
        return ", ".join(parts)
