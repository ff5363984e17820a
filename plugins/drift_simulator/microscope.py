"""The virtual microscope: a specimen that drifts under a scanning probe, and the
actuators that move the field of view, all sharing one state."""
from __future__ import annotations

import math
import time

import numpy as np
from scipy import ndimage

from drift_framework.types import Frame, Pair

from .drift import build_drift
from .noise import add_noise, background, fisher_information, line_information, pair_crlb
from .specimen import Specimen, unit_cell_radius


def _rotation(deg: float) -> np.ndarray:
    t = math.radians(deg)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


def _pick(value, rng: np.random.Generator) -> float:
    """A fixed value, or a uniform draw from ``[lo, hi]``."""
    if len(value) == 1:
        return float(value[0])
    return float(rng.uniform(value[0], value[1]))


class VirtualMicroscope:
    """Frame source ``simulator``: renders a drifting crystal with noise.

    The content offset of a frame is ``drift(t) − fov(t)``: the specimen's drift
    minus how far the actuators have moved the field of view to follow it.
    ``Frame.meta`` carries the ground truth: ``true_offset_px`` (content offset
    since the start), ``true_drift_px`` (uncorrected drift), ``fov_px``.
    """

    def __init__(self, params: dict, context=None):
        self.p = params
        seed = params["seed"] if params["seed"] is not None else (getattr(context, "extra", {}) or {}).get("seed")
        self.rng = np.random.default_rng(seed)
        self.shape = (int(params["shape"][0]), int(params["shape"][1]))
        h, w = self.shape
        self.frame_time_s = h * w * params["dwell_us"] * 1e-6 + h * params["flyback_us"] * 1e-6
        self.pixel_size_nm = params["pixel_size_nm"]
        self.specimen = self._new_specimen(self.rng)
        sh, sw = self.specimen.size
        self.origin0 = np.array([(sh - h) / 2, (sw - w) / 2])
        # specimen axes → the recorded frame's: drift, moves and the specimen itself are seen through the raster.
        # A raster turned by θ shows the specimen turned back by θ: at 90° a specimen step (dy, dx) appears as
        # (dx, −dy), and np.rot90(frame, 1) undoes the turn
        self.scan_matrix = _rotation(-params["scan_rotation_deg"])
        eyy, exx, exy = params["strain"] or (0.0, 0.0, 0.0)
        view = self.scan_matrix @ np.array([[1 + eyy, exy], [exy, 1 + exx]])
        if not np.allclose(view, np.eye(2)):  # strained and turned about the middle of the first field of view
            self.specimen = self.specimen.mapped(view, self.origin0 + (np.array(self.shape) - 1) / 2)
        self.static_field = self._scan_distortion_field(params["scan_distortion"])
        self.drift = build_drift(params["drift"], self.frame_time_s, self.rng)
        self.background = background(self.shape, params["background"]["amplitude"],
                                     params["background"]["scale_px"], self.rng)
        # drawn only when there is a vibration, so the random stream of every other simulation stays as it was
        self.vibration_phase = float(self.rng.uniform(0, 2 * np.pi)) if any(params["vibration"]["amplitude_px"]) \
            else 0.0
        self.actuators: list = []
        self.drift0 = np.zeros(2)
        self.index = 0
        self.time_s = 0.0
        self.scan_window: tuple[float, float] | None = None  # (start, end) of the frame being scanned, s
        self._wall0: float | None = None  # with realtime: the wall-clock time of the source clock's zero

    # -- specimen ----------------------------------------------------------
    def _specimen_size(self) -> tuple[int, int]:
        size = self.p["specimen_px"] or [4 * s for s in self.p["shape"]]
        return int(size[0]), int(size[1])

    def _new_specimen(self, rng, size=None) -> Specimen:
        p = self.p
        rotation = _pick(p["rotation_deg"], rng) if p["rotation_deg"] is not None else float(rng.uniform(0, 360))
        size = size or self._specimen_size()
        return Specimen.crystal(
            rng, lattice=p["lattice"], spacing_px=_pick(p["spacing_px"], rng), rotation_deg=rotation, size=size,
            probe_sigma_px=p["probe_sigma_px"], intensities=p["intensities"],
            intensity_jitter=p["intensity_jitter"], vacancy_fraction=p["vacancy_fraction"],
            interstitial_fraction=p["interstitial_fraction"], displacement_px=p["displacement_px"],
            origin=tuple(rng.uniform(0, 50, 2)))

    def clean(self, specimen: Specimen, origin, shape=None, *, derivatives=False):
        """Noiseless image (contrast and baseline applied) and optionally its shift derivatives."""
        shape = shape or self.shape
        out = specimen.render(origin, shape, derivatives=derivatives)
        img, der = (out if derivatives else (out, None))
        sign = -1.0 if self.p["contrast"] == "dark" else 1.0
        if sign > 0:
            img = self.p["baseline"] + img
        else:  # dark columns: a positive signal below a bright background (the brightest columns' level above it)
            img = np.maximum(self.p["baseline"] + specimen.brightest - img, 0.0)
        if der is not None:
            der = (sign * der[0], sign * der[1])
        return (img, der) if derivatives else img

    # -- acquisition -------------------------------------------------------
    def _scan_distortion_field(self, distortion: dict) -> np.ndarray | None:
        """The content displacement (h, w, 2) the scan generator's own error gives every frame, about the middle
        line: line ``r`` lands ``(1 + s)(r − r₀)`` down and ``tan(shear)·(r − r₀)`` along, so it shows the content
        from there (None without an error)."""
        scale, shear = distortion["slow_scale"], math.tan(math.radians(distortion["shear_deg"]))
        if not scale and not shear:
            return None
        h, w = self.shape
        rows = np.arange(h, dtype=np.float32) - (h - 1) / 2
        field = np.zeros((h, w, 2), np.float32)
        field[..., 0] = -scale * rows[:, None]
        field[..., 1] = -shear * rows[:, None]
        return field

    def _drift_px(self, t: float) -> np.ndarray:
        """The specimen's drift at ``t`` as the recorded frame sees it (px, frame axes)."""
        return self.scan_matrix @ self.drift(t)

    def fov_px(self, t: float) -> np.ndarray:
        """Field-of-view position (px, the recorded frame's axes) set by all actuators at time ``t`` (with a scan
        ramp, it moves during the frame)."""
        out = np.zeros(2)
        for act in self.actuators:
            out = out + act.fov_px(t)
        return self.scan_matrix @ out

    def scan_ramp_px_per_s(self) -> tuple[float, float]:
        """The scan ramp in force (px/s, (vy, vx), frame axes): the sum of the actuators' that bend the scan."""
        rate = sum((act.ramp for act in self.actuators if isinstance(act, SimulatedBeamShift)), np.zeros(2))
        return float(rate[0]), float(rate[1])

    def acquire(self) -> Frame:
        """Scan the next frame."""
        t_end = self.time_s + self.frame_time_s  # sub-scans (acquire_region) between frames take time too
        for act in self.actuators:
            act.on_frame(self.index)
        t_mid = t_end - self.frame_time_s / 2
        self.scan_window = (self.time_s, t_end)  # a scan ramp bends this frame's raster
        try:
            return self._scan_frame(t_mid, t_end)
        finally:
            self.scan_window = None

    def _scan_frame(self, t_mid: float, t_end: float) -> Frame:
        field = None
        if self.p["scan_time"] == "pixel":
            if self.index == 0:
                self.drift0 = self._drift_px(self.time_s)  # the field is first taken from the first pixel …
            field, drift = self._content_field(self.time_s, self.shape)
            if self.index == 0:  # … then from the first frame's mean position, the reference the engine measures from
                self.drift0 = self.drift0 + drift
                field, drift = field - drift.astype(np.float32), np.zeros(2)
            offset = field.mean(axis=(0, 1), dtype=np.float64)
            fov = self.fov_px(t_mid)
            if self.static_field is not None:
                field = field + self.static_field
        else:
            drift = self._drift_px(t_mid)
            if self.index == 0:
                self.drift0 = drift.copy()  # ground truth is reported from the first frame on
            drift = drift - self.drift0
            fov = self.fov_px(t_mid)
            offset = drift - fov
        displacement = self.static_field if field is None else field - offset
        if self.p["scan_jitter_px"] > 0:  # each line's content lands ``jitter`` further along x: part of the truth
            jitter = self.rng.normal(0, self.p["scan_jitter_px"], self.shape[0]).astype(np.float32)
            displacement = np.zeros((*self.shape, 2), np.float32) if displacement is None else displacement.copy()
            displacement[..., 1] += jitter[:, None]
            if field is not None:
                field = field.copy()
                field[..., 1] += jitter[:, None]
        if field is not None and np.any(self.p["vibration"]["amplitude_px"]):  # the vibration moves content too
            field = field + self.vibration(self.time_s, self.shape)
        clean, vibration = self.scan(self.origin0 - offset - self.drift0, self.shape, self.time_s,
                                     displacement=displacement)
        if self.p["background"]["amplitude"]:
            clean = clean + self.background
        noisy, info = add_noise(clean, self.p["noise"], self.rng)
        frame = Frame(data=np.asarray(noisy, np.float32), index=self.index, time_s=t_end,
                      pixel_size_nm=self.pixel_size_nm,
                      meta={"true_offset_px": offset, "true_drift_px": drift, "fov_px": fov,
                            "vibration_mean_px": vibration, "source": "simulator", **info})
        if field is not None:
            frame.meta["true_field_px"] = field.astype(np.float32)
            frame.meta["true_columns_px"] = self._columns_in_view()
            if self.p["noise"]["kind"] != "none":  # what bounds a line's jitter (the scan benchmark's floor)
                frame.meta["line_information_px"] = line_information(self.p["noise"], clean, info).astype(np.float32)
                frame.meta["line_information_y_px"] = line_information(self.p["noise"], clean, info,
                                                                        axis=0).astype(np.float32)
            frame.meta["scan"] = {"t_start_s": self.time_s, "pixel_time_s": self.p["dwell_us"] * 1e-6,
                                  "line_time_s": self._line_time_s(), "serpentine": bool(self.p["serpentine"]),
                                  "ramp_px_per_s": self.scan_ramp_px_per_s()}
        self.index += 1
        self._pace(t_end)
        self.time_s = t_end
        return frame

    def _columns_in_view(self) -> np.ndarray:
        """Where the atom columns are in the undistorted view of the run's reference ((M, 2) float32, y and x px):
        the first frame's mean position, scanned instantly (what a registered series' average shows)."""
        y = self.specimen.y - self.origin0[0] + self.drift0[0]
        x = self.specimen.x - self.origin0[1] + self.drift0[1]
        h, w = self.shape
        inside = (y >= -0.5) & (y <= h - 0.5) & (x >= -0.5) & (x <= w - 0.5)
        return np.stack([y[inside], x[inside]], axis=1).astype(np.float32)

    def _pace(self, t_end: float) -> None:
        """With ``realtime``: return when the wall clock reaches the end of the scan that just ended."""
        if not self.p["realtime"]:
            return
        now = time.monotonic()
        if self._wall0 is None:
            self._wall0 = now - self.time_s
        time.sleep(max(0.0, self._wall0 + t_end - now))

    def acquire_region(self, top_left, shape) -> Frame:
        """Scan a small region of the field of view now (a drift-tracking sub-scan between frames).

        ``top_left`` (y, x) and ``shape`` (h, w) are in frame pixels; the region takes ``h·w`` dwell times plus
        ``h`` fly-backs, and its ground truth is that of its own mid-time.
        """
        h, w = int(shape[0]), int(shape[1])
        y0, x0 = float(top_left[0]), float(top_left[1])
        if h < 8 or w < 8 or y0 < 0 or x0 < 0 or y0 + h > self.shape[0] or x0 + w > self.shape[1]:
            raise ValueError(f"region {h}×{w} at ({y0:g}, {x0:g}) does not fit in the {self.shape} frame")
        dt = h * w * self.p["dwell_us"] * 1e-6 + h * self.p["flyback_us"] * 1e-6
        t_mid, t_end = self.time_s + dt / 2, self.time_s + dt
        drift = self._drift_px(t_mid) - self.drift0
        fov = self.fov_px(t_mid)
        offset = drift - fov
        clean, vibration = self.scan(self.origin0 - offset - self.drift0 + np.array([y0, x0]), (h, w), self.time_s)
        noisy, info = add_noise(clean, self.p["noise"], self.rng)
        self._pace(t_end)
        self.time_s = t_end
        return Frame(data=np.asarray(noisy, np.float32), index=self.index, time_s=t_end,
                     pixel_size_nm=self.pixel_size_nm,
                     meta={"true_offset_px": offset, "true_drift_px": drift, "fov_px": fov, "source": "simulator",
                           "vibration_mean_px": vibration, "region": (y0, x0, h, w), **info})

    def _line_time_s(self) -> float:
        return self.shape[1] * self.p["dwell_us"] * 1e-6 + self.p["flyback_us"] * 1e-6

    def _time_along_line(self, shape) -> np.ndarray:
        """When each pixel of a line is reached after the line starts ((h, w), seconds): left to right, or right to
        left on odd lines of a serpentine scan."""
        h, w = shape
        along = np.broadcast_to((np.arange(w) + 0.5) * self.p["dwell_us"] * 1e-6, (h, w)).copy()
        if self.p["serpentine"]:
            along[1::2] = along[1::2, ::-1]
        return along

    def _content_field(self, t_start: float, shape) -> tuple[np.ndarray, np.ndarray]:
        """The content offset (dy, dx) of every pixel at its acquisition time, from the run's reference time
        ((h, w, 2), float32), and the mean of its specimen-drift part (2,).  Drift and field of view are evaluated at
        every line start (in time order: random walks and jumps are drawn as time goes) and are linear along a
        line."""
        h, w = shape
        line = self._line_time_s()
        starts = t_start + np.arange(h + 1) * line
        drift = np.array([self._drift_px(t) for t in starts]) - self.drift0
        content = (drift - np.array([self.fov_px(t) for t in starts])).astype(np.float32)
        along = (self._time_along_line(shape) / line).astype(np.float32)[..., None]
        field = content[:-1, None, :] + along * (content[1:] - content[:-1])[:, None, :]
        # the drift part's mean over the pixels, without the (h, w, 2) array: linear along each line, and every
        # line (either direction) spends the same mean fraction of its time
        mean_drift = np.mean(drift[:-1] + float(along.mean()) * (drift[1:] - drift[:-1]), axis=0)
        return field, mean_drift

    def vibration(self, t_start: float, shape) -> np.ndarray:
        """The content displacement ``u(t) = a·sin(2πft + φ)`` of the vibration at every pixel of a scan started at
        ``t_start`` ((h, w, 2) float32, px)."""
        h, w = shape
        amplitude = np.asarray(self.p["vibration"]["amplitude_px"], float)
        dwell, flyback = self.p["dwell_us"] * 1e-6, self.p["flyback_us"] * 1e-6
        t = t_start + np.arange(h)[:, None] * (w * dwell + flyback) + self._time_along_line(shape)
        wave = np.sin(2 * np.pi * self.p["vibration"]["frequency_hz"] * t + self.vibration_phase)
        return (amplitude[None, None, :] * wave[..., None]).astype(np.float32)

    def scan(self, origin, shape, t_start: float, displacement: np.ndarray | None = None) -> tuple[np.ndarray,
                                                                                                 np.ndarray]:
        """Noiseless scan of ``shape`` pixels from specimen point ``origin``, started at ``t_start``.

        A vibration moves the content by ``u(t) = a·sin(2πft + φ)`` while the probe scans, pixel by pixel (row
        after row, ``dwell_us`` per pixel, ``flyback_us`` per line), and ``displacement`` (h, w, 2), when given,
        moves each pixel's content by its own amount (drift during the scan): the frame is rendered with a margin
        and resampled (cubic spline) where each pixel saw the specimen.  Also returns the mean of ``u`` over the
        pixels, the rigid part of the vibration in this scan (px).
        """
        amplitude = np.asarray(self.p["vibration"]["amplitude_px"], float)
        if not amplitude.any() and displacement is None:
            return self.clean(self.specimen, origin, shape), np.zeros(2)
        h, w = shape
        u = np.zeros((h, w, 2), np.float32) if displacement is None else np.asarray(displacement, np.float32)
        rigid = np.zeros(2)
        if amplitude.any():
            shaking = self.vibration(t_start, shape)
            u = u + shaking
            rigid = shaking.mean(axis=(0, 1), dtype=np.float64)
        margin = int(np.ceil(float(np.abs(u).max()))) + 3
        big = self.clean(self.specimen, np.asarray(origin, float) - margin, (h + 2 * margin, w + 2 * margin))
        rows = np.arange(h, dtype=np.float32)[:, None] + margin - u[..., 0]  # content moved by +u: pixel sees point − u
        cols = np.arange(w, dtype=np.float32)[None, :] + margin - u[..., 1]
        # the cubic spline's coefficients in single precision: half the time of the default double, within 1e-6
        coeffs = ndimage.spline_filter(np.asarray(big, np.float32), order=3, output=np.float32, mode="nearest")
        image = ndimage.map_coordinates(coeffs, [rows, cols], order=3, mode="nearest", prefilter=False,
                                        output=np.float32)
        return image, rigid

    def close(self) -> None:
        self.actuators.clear()

    # -- training / benchmark pairs -----------------------------------------
    def pairs(self, n: int, *, seed: int | None = None, max_shift_px: float | None = None,
              keep_clean: bool = False, crlb: bool = True):
        """Yield ``n`` independent :class:`~drift_framework.types.Pair` objects.

        Each pair draws a new specimen (spacing and rotation from their ranges), a
        true shift uniform in the disk of unambiguous shifts (radius 0.45 × spacing,
        or ``max_shift_px``), and independent noise on both frames.  ``crlb`` is the
        pair's Cramér–Rao covariance bound from analytic derivatives (``crlb=False`` skips it: training
        needs only the frames, and rendering the derivatives triples the cost).
        """
        rng = np.random.default_rng(seed)
        h, w = self.shape
        for _ in range(n):
            spec = self._new_specimen(rng, size=(h + 64, w + 64))
            radius = max_shift_px if max_shift_px is not None else unit_cell_radius(spec.lattice, spec.spacing_px)
            r, a = radius * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
            shift = np.array([r * math.sin(a), r * math.cos(a)])
            origin = np.array([32.0, 32.0])
            if crlb:
                ref_clean, dref = self.clean(spec, origin, derivatives=True)
                mov_clean, dmov = self.clean(spec, origin - shift, derivatives=True)
            else:
                ref_clean, mov_clean = self.clean(spec, origin), self.clean(spec, origin - shift)
            ref, iref = add_noise(ref_clean, self.p["noise"], rng)
            mov, imov = add_noise(mov_clean, self.p["noise"], rng)
            bound = None
            if crlb:
                bound = pair_crlb(fisher_information(dref, self.p["noise"], ref_clean, iref),
                                  fisher_information(dmov, self.p["noise"], mov_clean, imov))
            yield Pair(np.asarray(ref, np.float32), np.asarray(mov, np.float32), shift, bound,
                       ref_clean if keep_clean else None, mov_clean if keep_clean else None,
                       {"spacing_px": spec.spacing_px, "lattice": spec.lattice, "radius_px": radius, **iref})


    def pair_batch(self, n: int, *, seed: int | None = None, max_shift_px: float | None = None) -> dict:
        """``n`` pairs stacked as arrays (for training): ``reference``, ``moving`` (n, H, W) float32,
        ``shift`` (n, 2), ``crlb`` (n, 2, 2), ``spacing_px`` (n,)."""
        pairs = list(self.pairs(n, seed=seed, max_shift_px=max_shift_px))
        return {"reference": np.stack([p.reference for p in pairs]), "moving": np.stack([p.moving for p in pairs]),
                "shift": np.stack([p.shift for p in pairs]), "crlb": np.stack([p.crlb for p in pairs]),
                "spacing_px": np.array([p.meta["spacing_px"] for p in pairs])}


class SimulatedActuator:
    """A stage or beam shift of the virtual microscope, in nm.

    Models backlash (a dead band), first-order lag (``settle_s``), a delay of whole
    frames, step quantization and hardware travel limits.  ``calibration`` is the
    true px → nm matrix (rotation and scale between image and actuator axes).
    """

    units = "nm"

    def __init__(self, params: dict, context, *, kind: str):
        source = getattr(context, "source", None)
        if not isinstance(source, VirtualMicroscope):
            raise ValueError(f"simulated-{kind} needs the simulator frame source (source: {{plugin: simulator}})")
        self.kind, self.p, self.scope = kind, params, source
        scale = params["scale_nm_per_px"] or source.pixel_size_nm
        self.calibration = scale * _rotation(params["rotation_deg"])
        self._to_px = np.linalg.inv(self.calibration)
        self.commanded = np.zeros(2)        # after quantization and hardware limits
        self.output = np.zeros(2)           # after backlash
        self.start, self.t_move = np.zeros(2), -math.inf
        self.pending: list[tuple[int, np.ndarray]] = []
        self.limit_hits = 0
        self.moves = 0
        source.actuators.append(self)

    def move_by(self, command) -> None:
        """Queue a relative move (nm); it takes effect ``delay_frames`` frames later."""
        command = np.asarray(command, float)
        if command.shape != (2,) or not np.all(np.isfinite(command)):
            raise ValueError(f"{self.kind} command must be two finite numbers, got {command!r}")
        self.pending.append((self.scope.index + self.p["delay_frames"], command))
        if self.p["delay_frames"] == 0:
            self.on_frame(self.scope.index)

    def on_frame(self, index: int) -> None:
        due = [c for (k, c) in self.pending if k <= index]
        self.pending = [(k, c) for (k, c) in self.pending if k > index]
        for command in due:
            self._apply(command)

    def _apply(self, command: np.ndarray) -> None:
        t = self.scope.time_s
        travel = self.p["travel_nm"]
        target = self.commanded + command
        if np.any(np.abs(target) > travel):
            self.limit_hits += 1
            target = np.clip(target, -travel, travel)
        step = self.p["step_nm"]
        if step > 0:
            target = np.round(target / step) * step
        self.commanded = target
        half = self.p["backlash_nm"] / 2
        new_output = np.where(target - self.output > half, target - half,
                              np.where(self.output - target > half, target + half, self.output))
        before = self.position_nm(t)
        self.start, self.output, self.t_move = before, new_output, t
        self.moves += 1
        notify = getattr(self.scope.drift, "notify_move", None)
        if notify is not None and self.kind == "stage":
            notify(t, self._to_px @ (new_output - before))

    def position_nm(self, t: float) -> np.ndarray:
        tau = self.p["settle_s"]
        if tau <= 0 or t <= self.t_move:
            return self.output.copy() if tau <= 0 else self.start.copy()
        return self.output + (self.start - self.output) * math.exp(-(t - self.t_move) / tau)

    def fov_px(self, t: float) -> np.ndarray:
        return self._to_px @ self.position_nm(t)

    def close(self) -> None:
        pass


class SimulatedBeamShift(SimulatedActuator):
    """The beam shift of the virtual microscope, which can also bend the scan (:class:`~drift_framework.types.ScanRamp`).

    ``set_scan_ramp(rate)`` moves the probe at ``rate`` (px/s, image axes) during each frame that starts after it
    (``delay_frames`` later, like moves), centred on the frame's mid-time: content drifting at ``rate`` is then
    scanned as if it stood still.  Sub-scans between frames are not bent.
    """

    def __init__(self, params: dict, context):
        super().__init__(params, context, kind="beam-shift")
        self.ramp = np.zeros(2)
        self.pending_ramps: list[tuple[int, np.ndarray]] = []

    def set_scan_ramp(self, rate_px_per_s) -> None:
        rate = np.asarray(rate_px_per_s, float)
        if rate.shape != (2,) or not np.all(np.isfinite(rate)):
            raise ValueError(f"scan ramp must be two finite numbers (px/s), got {rate!r}")
        # the scan generator loads a raster when a frame starts: this one shows from the next frame on
        self.pending_ramps.append((self.scope.index + self.p["delay_frames"], rate))

    def on_frame(self, index: int) -> None:
        super().on_frame(index)
        due = [r for (k, r) in self.pending_ramps if k <= index]
        self.pending_ramps = [(k, r) for (k, r) in self.pending_ramps if k > index]
        if due:
            self.ramp = due[-1]

    def fov_px(self, t: float) -> np.ndarray:
        out = super().fov_px(t)
        window = self.scope.scan_window
        if window is not None and window[0] <= t <= window[1] and self.ramp.any():
            # the ramp is drawn in the frame's axes; the microscope turns the actuators' sum into them
            out = out + np.linalg.solve(self.scope.scan_matrix, self.ramp) * (t - (window[0] + window[1]) / 2)
        return out
