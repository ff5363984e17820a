"""The learned components: ``dcnn-denoiser`` and ``dcnn-regressor`` (see :mod:`.models`)."""
from __future__ import annotations

import functools
import math

import numpy as np

from drift_framework.assembly import build_component, load_pipeline
from drift_framework.pipeline import Pipeline
from drift_framework.recipe import ComponentSpec
from drift_framework.types import BatchDenoiser, CandidateScorer, CorrelationMap, DoubtReviewer, Shift, doubted

from . import weights


class DCNNDenoiser:
    """Denoise a frame with the trained network (any frame size; usable on its own, e.g. for display)."""

    def __init__(self, params: dict, context=None):
        import torch

        self.torch = torch
        self.device = weights.pick_device(params.get("device") or getattr(context, "device", None))
        # channels-last convolutions: 2.6× faster on CPU for this network (8.9 → 3.4 ms per 256² pair)
        self.net = weights.load("denoiser", params.get("weights"), self.device).to(memory_format=torch.channels_last)

    def denoise(self, image: np.ndarray) -> np.ndarray:
        return self.denoise_batch(image[None])[0]

    def denoise_batch(self, frames: np.ndarray) -> np.ndarray:
        """Denoise a (N, H, W) stack in one pass."""
        from .models import normalize

        torch = self.torch
        with torch.inference_mode(), weights.flush_denormals():
            x = torch.as_tensor(np.ascontiguousarray(frames, dtype=np.float32), device=self.device)[:, None]
            xn, mean, std = normalize(x)
            y = self.net(xn.contiguous(memory_format=torch.channels_last)) * std + mean
        return y[:, 0].cpu().numpy()


class DCNNRegressor:
    """Read the NCC map around zero shift with the trained network, then refine on the raw frames.

    The network picks the basin (the right lattice peak) and a first estimate with its own sigma; the
    ``gauss-newton`` refinement then measures the sub-pixel shift on the frames as acquired (their noise is
    white; the denoised frames' is not). ``max_shift_px`` bounds the answer: a prediction beyond it falls back
    to the highest NCC peak within it, with confidence 0.

    Coarse to fine: the network reads lags up to ``radius`` around zero, and was trained on shifts within a
    unit cell. When its answer is not confident (a shift beyond its window, content unlike its training set, or
    a peak the correlation's candidate analysis does not back), the correlation's own candidates on the raw
    frames are read as the classical pipeline reads them, over the whole map (or ``max_shift_px``); that answer is
    returned when it is confident, beyond the network's reach (``radius / 2``) or more confident than the
    network's (``meta["stage"]``: ``network`` or ``candidates``).

    The denoiser and the map the network reads see first only the frames' central ``view_px`` crop (128 px, the
    training frames' size: it holds every lag the network reads; :class:`~drift_framework.types.CentralView`),
    three quarters less work at 256². When the network is not confident there, it reads the whole frames' map
    before the candidates are asked.
    """

    method = "dcnn"

    def __init__(self, params: dict, context=None):
        import torch

        self.torch = torch
        self.p = params
        self.device = weights.pick_device(params.get("device") or getattr(context, "device", None))
        self.net = weights.load("regressor", params.get("weights"), self.device)
        self.radius = self.net.radius
        # the network reads lags up to its radius: a central crop of the training frames' size holds them (at
        # 256², a quarter of the denoiser's work); the map must still reach max_shift_px for the fallback
        view, max_shift = params.get("view_px", 128), params.get("max_shift_px")
        self.view_px = None if view is None else max(int(view), 4 * math.ceil(max_shift or 0))
        # the network's output scale, and the largest shift of its training sets (0.45 × a 16 px cell)
        self.reach = self.radius / 2
        self.refiner = None
        self.candidates: Pipeline | None = None
        if params.get("refine", True):
            spec = ComponentSpec("estimator", "gauss-newton", {"max_shift_px": None})  # classical's refinement
            self.refiner = build_component(spec)
            # the classical preset: the coarse stage beyond the network's reach
            classical: dict = {"preset": "classical"}
            if params.get("max_shift_px") is not None:
                classical["estimator"] = {"max_shift_px": params["max_shift_px"]}
            self.candidates = load_pipeline(classical)

    def _window(self, cmap: CorrelationMap) -> np.ndarray:
        r = self.radius
        cy, cx = cmap.center
        h, w = cmap.data.shape
        ys = (np.arange(-r, r + 1) + cy) % h
        xs = (np.arange(-r, r + 1) + cx) % w
        return cmap.data[np.ix_(ys, xs)].astype(np.float32)

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """(N, 2R+1, 2R+1) NCC windows → (N, 3): dy, dx, log σ² (per axis)."""
        torch = self.torch
        with torch.inference_mode(), weights.flush_denormals():
            x = torch.as_tensor(windows, device=self.device)[:, None]
            return self.net(x).cpu().numpy().astype(np.float64)

    def estimate(self, cmap: CorrelationMap) -> Shift:
        return self._finish(cmap, self.predict(self._window(cmap)[None])[0])

    def _finish(self, cmap: CorrelationMap, pred: np.ndarray) -> Shift:
        learned = self._learned(cmap, pred)
        if learned.confidence < 0.5 and cmap.whole is not None:
            # the crop's map is the noisier one: the whole frames' before leaving the network (SNR 0.1, 256²:
            # the crop alone found 57 % of the shifts, the whole frames 59.5 %)
            cmap = cmap.whole()
            learned = self._learned(cmap, self.predict(self._window(cmap)[None])[0])
        if learned.confidence >= 0.5 or self.candidates is None:
            return learned
        coarse = self._from_candidates(cmap, self.candidates)
        # beyond the network's reach its answer is no evidence, however the confidences compare
        beyond = math.hypot(coarse.dy, coarse.dx) > self.reach
        # between two answers neither trusts, the content-weighted correlation's peak (classical's second look)
        weighted = bool(coarse.meta.get("weighted_peak"))
        if coarse.confidence >= 0.5 or beyond or coarse.confidence > learned.confidence or weighted:
            return coarse
        if isinstance(self.refiner, DoubtReviewer):  # as doubtful as classical's answer: looked at as it was
            raw = cmap.raw if cmap.raw is not None else (cmap.reference, cmap.moving)
            return self.refiner.review_doubtful(raw[0], raw[1], learned)
        return learned

    def _from_candidates(self, cmap: CorrelationMap, classical: Pipeline) -> Shift:
        """The correlation's candidate analysis on the frames as acquired (the classical pipeline's reading)."""
        raw = cmap.raw if cmap.raw is not None else (cmap.reference, cmap.moving)
        found = classical.estimate(*raw)
        return Shift(found.dy, found.dx, found.sigma, found.confidence, self.method,
                     {**found.meta, "stage": "candidates"}, found.candidates)

    def _learned(self, cmap: CorrelationMap, pred: np.ndarray) -> Shift:
        d = pred[:2]
        sigma_net = math.sqrt(2 * math.exp(float(pred[2])))  # radial, from the per-axis variance
        max_shift = self.p.get("max_shift_px")
        if max_shift is not None and math.hypot(*d) > max_shift:
            return self._within(cmap, max_shift)
        raw = cmap.raw if cmap.raw is not None else (cmap.reference, cmap.moving)
        if self.refiner is None:
            return Shift(float(d[0]), float(d[1]), sigma_net, _p_close(sigma_net), self.method,
                         {"sigma_network": sigma_net, "stage": "network"})
        fine = self.refiner.refine(raw[0], raw[1], d)
        if not math.isfinite(fine.sigma) or math.hypot(fine.dy - d[0], fine.dx - d[1]) > max(1.0, 3 * sigma_net):
            # the refinement left the network's basin: the network's own answer, scored on the candidates
            distinct, rivals = self._contest(cmap, (float(d[0]), float(d[1])))
            p_right = 0.5 * _p_close(sigma_net) * distinct
            return Shift(float(d[0]), float(d[1]), sigma_net, doubted(p_right, bool(rivals)), self.method,
                         {"sigma_network": sigma_net, "refined": False, "stage": "network", "p_right": p_right},
                         rivals)
        basin = _p_close(sigma_net)
        distinct, rivals = self._contest(cmap, (fine.dy, fine.dx))
        p_right = basin * distinct * fine.confidence
        return Shift(fine.dy, fine.dx, fine.sigma, doubted(p_right, bool(rivals)), self.method,
                     {"sigma_network": sigma_net, "refined": True, "cov": fine.meta.get("cov"),
                      "peak_distinctness": distinct, "stage": "network", "p_right": p_right}, rivals)

    def _contest(self, cmap: CorrelationMap, near: tuple[float, float]) -> tuple[float, tuple[tuple[float, float], ...]]:
        """The correlation's candidates: does another peak fit as well as ``near``?"""
        if isinstance(self.refiner, CandidateScorer):
            return self.refiner.contest_at(cmap, near)
        return 1.0, ()

    def _within(self, cmap: CorrelationMap, max_shift: float) -> Shift:
        yy, xx = np.ogrid[:cmap.data.shape[0], :cmap.data.shape[1]]
        inside = (yy - cmap.center[0]) ** 2 + (xx - cmap.center[1]) ** 2 <= max_shift ** 2
        idx = np.unravel_index(int(np.argmax(np.where(inside, cmap.data, -np.inf))), cmap.data.shape)
        return Shift(float(idx[0] - cmap.center[0]), float(idx[1] - cmap.center[1]), math.sqrt(2 / 12), 0.0,
                     self.method, {"fallback": "prediction beyond max_shift_px"})

    def estimate_batch(self, pipeline, reference, frames) -> list[Shift]:
        """Denoise, correlate and read a whole stack in batches (one network pass per batch)."""
        from drift_framework.pipeline import central_crop, check_image, check_pair

        ref = check_image(reference, "reference")
        frames = [check_pair(ref, f)[1] for f in frames]
        den = pipeline.denoiser.denoise_batch if isinstance(pipeline.denoiser, BatchDenoiser) else None
        batch = int(self.p.get("batch_size") or 64)
        out = []
        ref_view = central_crop(ref, self.view_px)
        ref_d = pipeline.denoiser.denoise(ref_view) if pipeline.denoiser is not None else ref_view
        for start in range(0, len(frames), batch):
            chunk = frames[start:start + batch]
            views = [central_crop(f, self.view_px) for f in chunk]
            movs: list[np.ndarray] = views
            if den is not None:
                movs = list(den(np.stack(views)))
            elif pipeline.denoiser is not None:
                movs = [pipeline.denoiser.denoise(f) for f in views]
            cmaps = []
            for raw, view, mov in zip(chunk, views, movs):
                cm = pipeline.correlator.correlate(ref_d, mov)
                cm.raw = (ref, raw)
                if view.shape != raw.shape:
                    cm.whole = functools.partial(pipeline.correlate, ref, raw)
                cmaps.append(cm)
            preds = self.predict(np.stack([self._window(c) for c in cmaps]))
            out += [self._finish(c, p) for c, p in zip(cmaps, preds)]
        return out


def _p_close(sigma: float) -> float:
    return 1.0 - math.exp(-0.25 / max(sigma, 1e-9) ** 2)
