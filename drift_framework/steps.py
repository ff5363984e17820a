"""What the engine records: the :class:`Status` of a step and the :class:`Step` itself.

The run file's columns are declared here, on the fields of :class:`Step`, so the store, the reports and the
observers all read one definition.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any

import numpy as np

from .types import Shift

__all__ = ["Status", "Step", "step_columns"]


class Status(IntEnum):
    """What happened at a step (stored as a small integer; ``label`` is the name written in run files)."""

    REFERENCE = 0       #: the frame became the reference
    CORRECTED = 1       #: measured and a correction was sent
    MEASURED = 2        #: measured, no correction scheduled (open loop or correct_every)
    LOW_CONFIDENCE = 3  #: measured, gated: actuator not moved
    BAD_FRAME = 4       #: the frame could not be used: actuator not moved
    HELD = 5            #: good estimate, not acted on: corrections are paused after bad ones
    FRAME = 6           #: a frame of a run whose drift is measured on a tracking region

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @property
    def measured(self) -> bool:
        """A good measurement (acted on or not)."""
        return self in (Status.CORRECTED, Status.MEASURED)


def _nan2() -> np.ndarray:
    return np.full(2, np.nan)


def _zero2() -> np.ndarray:
    return np.zeros(2)


def _column(shape: tuple, dtype: str, fill: Any, help: str, **kw: Any) -> Any:
    """A Step field stored as a run-file column of ``shape`` per step."""
    return field(metadata={"columns": {None: (shape, dtype, fill, help)}}, **kw)


_SHIFT_COLUMNS = {
    "shift": ((2,), "f8", np.nan, "measured (dy, dx) vs the reference, px"),
    "sigma": ((), "f8", np.nan, "radial 1-σ of the measurement, px"),
    "confidence": ((), "f8", np.nan, "the estimator's confidence, 0–1"),
    "ambiguous": ((), "i1", 0, "1: other shifts fit the data about as well (Shift.candidates)"),
}


@dataclass
class Step:
    """One recorded step (what observers receive and the run file stores, one row each)."""

    index: int = _column((), "i8", -1, "frame index")
    time_s: float = _column((), "f8", np.nan, "acquisition time, s")
    status: Status = _column((), "i1", 0, "what happened (Status)")
    shift: Shift | None = field(default=None, metadata={"columns": _SHIFT_COLUMNS})
    offset: np.ndarray = _column((2,), "f8", np.nan, "estimated content offset since the start, px",
                                 default_factory=_nan2)
    fov: np.ndarray = _column((2,), "f8", 0.0, "commanded field-of-view position, px", default_factory=_zero2)
    command: np.ndarray = _column((2,), "f8", 0.0, "sent to the actuator, actuator units", default_factory=_zero2)
    requested: np.ndarray = _column((2,), "f8", 0.0, "before clipping, actuator units", default_factory=_zero2)
    clipped: bool = _column((), "i1", 0, "1: the command was clipped by the limits", default=False)
    ramp: np.ndarray = _column((2,), "f8", 0.0, "scan ramp in force from the next frame (run.scan_ramp), px/s",
                               default_factory=_zero2)
    true_offset: np.ndarray = _column((2,), "f8", np.nan, "ground truth when the source knows it, px",
                                      default_factory=_nan2)
    true_drift: np.ndarray = _column((2,), "f8", np.nan, "uncorrected specimen drift, px", default_factory=_nan2)
    step_seconds: float = _column((), "f8", np.nan, "wall time spent on the step", default=float("nan"))
    message: str = ""
    region: bool = _column((), "i1", 0, "1: a drift-tracking sub-scan, 0: a frame", default=False)

    def row(self) -> dict[str, Any]:
        """The step as run-file columns."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if "columns" not in f.metadata:
                continue
            value = getattr(self, f.name)
            if f.name == "shift":
                s = value
                out.update(shift=(s.dy, s.dx) if s else (np.nan, np.nan), sigma=s.sigma if s else np.nan,
                           confidence=s.confidence if s else np.nan, ambiguous=int(bool(s and s.ambiguous)))
            else:
                out[f.name] = int(value) if isinstance(value, (bool, IntEnum)) else value
        return out


def step_columns() -> dict[str, tuple]:
    """Column name → (per-step shape, dtype, fill value, meaning), in file order, from :class:`Step`'s fields."""
    out: dict[str, tuple] = {}
    for f in fields(Step):
        for name, spec in f.metadata.get("columns", {}).items():
            out[name or f.name] = spec
    return out
