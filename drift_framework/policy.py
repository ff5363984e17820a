"""The engine's step policy as small objects, each testable without a microscope:

- :class:`ReferenceStrategy`: which frame the next one is measured against (``run.reference``);
- :class:`Suspender`: pauses corrections after bad estimates in a row, resumes after good ones;
- :class:`CorrectionSchedule`: whether a correction is due at this frame (``correct_every``, ``correct_every_s``);
- :class:`Actuation`: controller target → calibration → limits → journal → actuator, and the field of view the
  frames show (commands that have not reached the images yet, with ``actuation_delay_frames``).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .limits import Limits
from .types import Frame, Shift, doubted

__all__ = ["ReferenceStrategy", "Suspender", "CorrectionSchedule", "Actuation", "Correction", "CalibrationCheck",
           "choose_by_trajectory"]

log = logging.getLogger(__name__)


class ReferenceStrategy:
    """The current reference frame and the content offset it was taken at.

    ``mode`` is ``first`` (keep the first), ``previous`` (every good frame), ``rolling`` (every
    ``rolling_every`` frames) or ``keyframe`` (when the content moved ``keyframe_shift`` of the frame from it).
    """

    def __init__(self, mode: str = "first", rolling_every: int = 20, keyframe_shift: float = 0.25):
        self.mode, self.rolling_every, self.keyframe_shift = mode, rolling_every, keyframe_shift
        self.frame: Frame | None = None
        self.offset = np.zeros(2)
        self.index = 0

    def take(self, frame: Frame, offset: np.ndarray) -> None:
        """Make ``frame`` the reference; its content sits at ``offset`` (px since the start)."""
        self.frame, self.offset, self.index = frame, np.asarray(offset, float).copy(), frame.index

    def after_good(self, frame: Frame, offset: np.ndarray) -> bool:
        """Called with every well-measured frame; returns whether it became the reference."""
        moved = np.abs(offset - self.offset) / np.asarray(np.shape(frame.data), float)
        renew = (self.mode == "previous"
                 or (self.mode == "rolling" and frame.index - self.index >= self.rolling_every)
                 or (self.mode == "keyframe" and float(np.max(moved)) >= self.keyframe_shift))
        if renew:
            self.take(frame, offset)
        return renew


class Suspender:
    """Pauses corrections after ``pause_after`` bad estimates in a row; resumes after ``resume_after`` good ones.

    Like bluesky's suspenders: a run is not stopped by a passing problem (a blanked beam, a refocus), but
    nothing moves until the measurements are trustworthy again.
    """

    def __init__(self, pause_after: int = 5, resume_after: int = 3):
        self.pause_after, self.resume_after = pause_after, resume_after
        self.bad_in_row = 0
        self.good_in_row = 0
        self.paused = False
        self.held_by: str | None = None  # a person's pause (live view, notebook): only release() lifts it

    def hold(self, reason: str) -> None:
        """Hold corrections until :meth:`release`, whatever the estimates (frames are still measured)."""
        self.held_by = reason
        log.warning("corrections held: %s", reason)

    def release(self) -> None:
        """Lift a :meth:`hold`; corrections go on with the next good estimate."""
        if self.held_by is not None:
            log.warning("corrections resumed (were held: %s)", self.held_by)
        self.held_by = None

    def bad(self, why: str) -> str:
        """Count a bad estimate; returns the step's message (``paused: …`` when this one paused corrections)."""
        self.bad_in_row += 1
        self.good_in_row = 0
        if not self.paused and self.bad_in_row >= self.pause_after:
            self.paused = True
            log.warning("corrections paused after %d bad estimates in a row (%s); they resume after %d good ones",
                        self.bad_in_row, why, self.resume_after)
            return f"paused: {why}"
        return why

    def good(self) -> tuple[bool, str]:
        """Count a good estimate; returns (may corrections be sent, the step's message)."""
        self.bad_in_row = 0
        if self.held_by is not None:
            return False, f"held: {self.held_by}"
        if not self.paused:
            return True, ""
        self.good_in_row += 1
        if self.good_in_row < self.resume_after:
            return False, f"held: {self.good_in_row} good estimate(s) of {self.resume_after}"
        self.paused = False
        log.warning("corrections resumed after %d good estimates", self.good_in_row)
        return True, "resumed"


class CorrectionSchedule:
    """Every ``every`` frames and at most once per ``every_s`` seconds of the source's clock."""

    def __init__(self, every: int = 1, every_s: float = 0.0):
        self.every, self.every_s = every, every_s
        self.last_time: float | None = None

    def due(self, index: int, time_s: float) -> bool:
        """Whether a correction is due for frame ``index`` acquired at ``time_s`` (records it when it is)."""
        if index % self.every != 0:
            return False
        # a clock that went backwards (a restarted microscope) must not hold corrections back
        if self.last_time is not None and 0 <= time_s - self.last_time < self.every_s:
            return False
        self.last_time = time_s
        return True


def choose_by_trajectory(shift: Shift, predicted_px: np.ndarray, predicted_sigma_px: float) -> Shift | None:
    """The answer among an ambiguous ``shift`` and its candidates that the drift trajectory predicts.

    On a lattice the data alone cannot tell a shift from one a (pseudo-)lattice vector away; the controller's
    prediction can, when its uncertainty is small against the distance between the candidates.  Each option's
    probability is the estimator's own preference (its confidence for its choice, at least an equal share, the rest
    shared by the candidates) times the Gaussian likelihood of the prediction, with the prediction's and the estimate's σ
    (both radial).  Returns the most probable option with that probability as its confidence (held below 0.5 while
    another option keeps more than 5 %: :func:`~drift_framework.types.doubted`) and the others as candidates, or
    None when the prediction is far from every option (more than 4 σ: it explains none of them).
    """
    options = [shift.vector] + [np.asarray(c, float) for c in shift.candidates]
    # an ambiguous answer's confidence is held below 0.5; its probability against the candidates is the preference
    own = float(shift.meta.get("p_right", shift.confidence))
    own = own if math.isfinite(own) else 0.0
    n = len(options)
    # the estimator's choice is at least as likely as any other option: its confidence also counts imprecision
    chosen = max(own, 1 / n)
    prefer = np.array([chosen] + [min((1 - own) / (n - 1), chosen)] * (n - 1)) if n > 1 else np.ones(1)
    sigma_shift = shift.sigma if math.isfinite(shift.sigma) else 0.0
    per_axis2 = max((predicted_sigma_px ** 2 + sigma_shift ** 2) / 2, 1e-6)
    d2 = np.array([float(np.sum((o - np.asarray(predicted_px, float)) ** 2)) for o in options])
    if float(np.sqrt(d2.min() / per_axis2)) > 4 * math.sqrt(2):
        return None
    log_w = np.log(np.maximum(prefer, 1e-3)) - d2 / (2 * per_axis2)
    w = np.exp(log_w - log_w.max())
    posterior = w / w.sum()
    best = int(np.argmax(posterior))
    others = tuple((float(o[0]), float(o[1])) for k, o in enumerate(options) if k != best)
    meta = {**shift.meta, "estimator_confidence": own, "chosen_by_trajectory": best != 0,
            "predicted_px": (float(predicted_px[0]), float(predicted_px[1])), "predicted_sigma_px": predicted_sigma_px}
    # still ambiguous while another option keeps more than 5 % (the estimators' rule for a rival)
    doubt = bool(np.any(np.delete(posterior, best) > 0.05))
    return dataclasses.replace(shift, dy=float(options[best][0]), dx=float(options[best][1]),
                               confidence=doubted(float(posterior[best]), doubt), candidates=others,
                               meta={**meta, "p_right": float(posterior[best])})


class Correction:
    """What one actuation sent: the command before and after clipping, in actuator units."""

    def __init__(self, requested: np.ndarray, command: np.ndarray, clipped: bool):
        self.requested, self.command, self.clipped = requested, command, clipped


class Actuation:
    """Turns a drift measurement into an actuator move, within the limits, journaled before it is sent.

    Parameters
    ----------
    actuator, controller :
        Built components (see :class:`~drift_framework.types.Actuator`, :class:`~drift_framework.types.Controller`).
    limits : Limits
        Every command is clipped to them.
    calibration : (2, 2) array
        px → actuator units.
    delay_frames : int
        Frames before a command shows in the images.
    journal : callable, optional
        ``journal(frame_index, command)`` is called before the actuator moves (the run file records it first).
    """

    def __init__(self, actuator: Any, controller: Any, limits: Limits, calibration: np.ndarray,
                 delay_frames: int = 0, journal: Callable[[int, np.ndarray], None] | None = None):
        self.actuator, self.controller, self.limits = actuator, controller, limits
        self.calibration = np.asarray(calibration, float)
        self.inverse = np.linalg.inv(self.calibration)
        self.delay = delay_frames
        self.journal = journal
        self.fov = np.zeros(2)          # commanded field-of-view position, px
        self.position = np.zeros(2)     # commanded actuator position, actuator units
        self.ramp = np.zeros(2)         # the scan ramp last sent, px/s (run.scan_ramp)
        self.pending: list[tuple[int, np.ndarray]] = []  # (frame index it shows in, move px)

    def seen_fov(self, index: int) -> np.ndarray:
        """The field-of-view position frame ``index`` was taken at (later commands have not reached it)."""
        seen = self.fov - sum((m for k, m in self.pending if k > index), np.zeros(2))
        self.pending = [(k, m) for k, m in self.pending if k > index]
        return seen

    def correct(self, index: int, time_s: float, drift_px: np.ndarray, sigma_px: float,
                next_time_s: float, max_move_px: float | None = None) -> Correction:
        """Ask the controller where the field of view should be, and move there within the limits (and within
        ``max_move_px`` of the field of view while the calibration has not proved itself)."""
        target = np.asarray(self.controller.update(time_s, drift_px, sigma_px, self.fov.copy(), next_time_s), float)
        move_px = target - self.fov
        size = float(np.hypot(*move_px)) if np.all(np.isfinite(move_px)) else 0.0
        if max_move_px is not None and size > max_move_px:
            move_px = move_px * (max_move_px / size)
        requested = self.calibration @ move_px
        command, clipped = self.limits.clip(requested, self.position)
        if self.journal is not None:
            self.journal(index, command)
        self.actuator.move_by(command)
        self.position = self.position + command
        move = self.inverse @ command
        self.fov = self.fov + move
        if self.delay:
            self.pending.append((index + 1 + self.delay, move))
        return Correction(requested, command, clipped)

    def scan_ramp(self, rate_px_per_s: np.ndarray | None, frame_s: float | None, max_px_per_frame: float) -> bool:
        """Bend the next frames' scan to follow ``rate_px_per_s`` (None or an unknown frame time: no ramp), at most
        ``max_px_per_frame`` over one frame interval ``frame_s``; returns whether the ramp was clipped."""
        rate = np.zeros(2) if rate_px_per_s is None or not frame_s else np.asarray(rate_px_per_s, float)
        rate = np.nan_to_num(rate, nan=0.0, posinf=0.0, neginf=0.0)
        per_frame = float(np.hypot(*rate)) * (frame_s or 0.0)
        clipped = per_frame > max_px_per_frame
        if clipped:
            rate = rate * (max_px_per_frame / per_frame)
        self.actuator.set_scan_ramp(rate)
        self.ramp = rate
        return clipped

    def withdraw_ramp(self) -> bool:
        """Straighten the scan again (corrections held or stopped: a prediction nothing checks any more); returns
        whether a ramp was on."""
        if not self.ramp.any():
            return False
        self.actuator.set_scan_ramp(np.zeros(2))
        self.ramp = np.zeros(2)
        return True


class CalibrationCheck:
    """Proves the px → actuator calibration on the first corrections, before trusting it with large ones.

    Between two well-measured frames the content moves by ``Δo = ΔD − G·Δf``: the specimen's drift ``ΔD`` minus the
    field-of-view moves ``Δf`` that reached the image, through the true gain ``G`` (the identity when the calibration
    is right).  So ``u = Δo + Δf`` — the engine's own drift increment — is the drift's alone when the calibration is
    right, and carries ``E·Δf`` (``E = I − G``) when it is wrong.  The drift increment ``c`` comes from the pairs
    before any move reached the image; each later pair gives ``r = u − c``, and a robust (Huber) least-squares gain
    of ``r`` on the moves, ``(S, T)`` — the part of ``E`` along the moves and across them — measures ``‖E·Δf‖/‖Δf‖``.
    A correction lands nearer its target than no move at all only while that is below 1.

    Until the calibration is proven (the gain below :attr:`PROVEN_BELOW`, 2 σ), corrections are probes of at most
    half the drift per frame (at least :attr:`PROBE_PX`) for the first two, then 1.2 × the drift per frame (to keep
    up): a calibration wrong in sign, mirrored, rotated by 90–270° or off by 10× then moves the view by a few px before
    it is caught, not out of the lattice cell where it could no longer be measured.  Wrong when the gain is above 1
    (3 σ; after one probe, above 3): :meth:`failure` says so and the engine stops correcting.  Undecided (a drift
    too erratic to tell, or a calibration wrong by a gain near 1), corrections stay probes, never faster than 1.2 ×
    the drift seen before the first one, so never much worse than no correction; a warning says so after
    :attr:`MAX_PROBES`.  The fit is robust (Huber) and its scatter enters σ, so a drift jump during one pair is not
    read as a gain.  A proven calibration is not checked again (it does not change during a run).
    """

    PROBE_PX = 0.25
    PROVEN_BELOW = 0.75
    MAX_PROBES = 12

    def __init__(self, drift_change_px: float = 0.15, min_probes: int = 2):
        self.drift_change_px, self.min_probes = drift_change_px, min_probes
        self.last: tuple[np.ndarray, np.ndarray, float, float] | None = None
        self.still: list[np.ndarray] = []       # drift rates (px/s) of pairs without moves: the drift alone
        self.probes: list[tuple[np.ndarray, np.ndarray, float]] = []    # (r, Δf, σ of the pair)
        self.proven = False
        self.message: str | None = None

    def observe(self, offset: np.ndarray, fov_seen: np.ndarray, sigma_px: float, time_s: float) -> None:
        """A well-measured frame: its content offset, the field-of-view position it was taken at (px), its σ, and
        its time (pairs are compared through the drift *rate*: their intervals may differ, as with sub-scans)."""
        offset, fov_seen = np.asarray(offset, float), np.asarray(fov_seen, float)
        sigma = float(sigma_px) if np.isfinite(sigma_px) else 0.0
        if self.last is not None and self.deciding and time_s > self.last[3]:
            d_fov = fov_seen - self.last[1]
            u = offset - self.last[0] + d_fov
            dt = time_s - self.last[3]
            if float(np.hypot(*d_fov)) < 1e-9:
                if not self.probes and float(np.hypot(*u)) > 1e-6:  # no motion at all: the same frame twice
                    self.still.append(u / dt)
            elif float(np.hypot(*d_fov)) < 0.5 * self.PROBE_PX:
                pass  # a move this small is lost in the noise and the drift's changes: no evidence either way
            elif self.still:
                self.probes.append((u - np.median(self.still, axis=0) * dt, d_fov, float(np.hypot(sigma, self.last[2]))))
                self._decide()
            else:  # moves reached the image before two frames showed the drift alone: nothing to compare with
                self.proven = True
                log.warning("the calibration cannot be checked (no two frames before the first move were measured)")
        self.last = (offset.copy(), fov_seen.copy(), sigma, time_s)

    def gain(self) -> tuple[float, float, float] | None:
        """``(S, T, se)``: the error gain along and across the moves, and its standard error."""
        if not self.probes:
            return None
        r = np.array([p[0] for p in self.probes])
        f = np.array([p[1] for p in self.probes])
        across = np.stack([-f[:, 1], f[:, 0]], axis=1)
        model = float(np.sqrt(np.mean([p[2] ** 2 for p in self.probes]) * (1 + 1 / len(self.still))
                              + self.drift_change_px ** 2))
        w = np.ones(len(r))
        for _ in range(6):  # Huber: iteratively re-weighted least squares
            energy = float(np.sum(w * np.sum(f * f, axis=1)))
            s_gain = float(np.sum(w * np.sum(r * f, axis=1))) / energy
            t_gain = float(np.sum(w * np.sum(r * across, axis=1))) / energy
            norms = np.hypot(*(r - s_gain * f - t_gain * across).T)
            scale = max(model, float(np.median(norms)) / 1.177)  # the median of a 2-D Gaussian's norm is 1.177 σ
            w = np.minimum(1.0, 1.5 * scale / np.maximum(norms, 1e-12))
        return s_gain, t_gain, scale / np.sqrt(energy)

    def _decide(self) -> None:
        fit = self.gain()
        if fit is None:
            return
        s_gain, t_gain, se = fit
        excess, n = float(np.hypot(s_gain, t_gain)), len(self.probes)
        if n < self.min_probes:  # one probe decides only an overwhelming failure (a 10× wrong calibration)
            if excess - 3 * se > 3.0:
                self.message = (f"the first correction landed {excess:.1f} × its own size away from its target (a "
                                "right calibration lands it on it)")
            return
        if excess + 2 * se < self.PROVEN_BELOW:
            self.proven = True
        elif excess - 3 * se > 1.0:
            self.message = (f"{n} corrections landed {excess:.1f} × their own size away from their target (a right "
                            "calibration lands them on it)")
        elif n >= self.MAX_PROBES:
            log.warning("the calibration could not be confirmed on %d corrections (gain error %.2f ± %.2f): they "
                        "stay limited to 1.2 × the drift seen before the first one", n, excess, se)

    @property
    def deciding(self) -> bool:
        """Still measuring: neither proven nor failed, and fewer than :attr:`MAX_PROBES` probes."""
        return not self.proven and self.message is None and len(self.probes) < self.MAX_PROBES

    def failure(self) -> str | None:
        """A message once corrections have been seen making the view worse, else None."""
        return self.message

    def probe(self, interval_s: float) -> float | None:
        """The largest correction (px) allowed now, aiming ``interval_s`` ahead; None once the calibration has proved
        itself: half the drift over the interval (at least :attr:`PROBE_PX`) for the first :attr:`min_probes`
        probes, then 1.2 × (to keep up)."""
        if self.proven:
            return None
        speed = float(np.hypot(*np.median(self.still, axis=0))) * max(interval_s, 0.0) if self.still else 0.0
        return max(self.PROBE_PX, (0.5 if len(self.probes) < self.min_probes else 1.2) * speed)
