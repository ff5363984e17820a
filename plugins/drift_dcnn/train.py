"""``drift train denoiser RECIPE`` and ``drift train regressor RECIPE``.

Pairs are generated on the fly from the recipe's source (the simulator, or any source plugin with
``pairs()``), noise of a random kind and level is added, and the network is trained with a progress bar,
validation every ``validate_every`` batches on a fixed set of fresh pairs, a checkpoint at each validation
(``--resume`` continues from it), and a model card written beside the final weights.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from drift_framework.assembly import build_component
from drift_framework.recipe import ComponentSpec

from . import weights
from .data import PairStream, validation_set

# --------------------------------------------------------------------------- #
# The shared loop
# --------------------------------------------------------------------------- #


def _loop(kind: str, recipe, options: dict, model, step_loss, validate) -> dict:
    import torch

    cfg = recipe.extra["train"]
    name = recipe.name
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    device = weights.pick_device(options.get("device") or cfg.get("device"))
    torch.manual_seed(cfg["seed"])
    model = model.to(device)
    sources, names = _sources(recipe.source, cfg.get("lattices"))
    stream = PairStream(sources, cfg["noise"], cfg["seed"])
    val = validation_set(sources, cfg["noise"]["kinds"][:1], cfg["validation_levels"], cfg["validation_pairs"],
                         cfg["seed"], names)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=cfg["batches"], pct_start=0.1)
    ckpt = Path(cfg["checkpoint_dir"].replace("{name}", name)) / "last.pt"
    start, history, elapsed = 0, [], 0.0
    if options.get("resume"):
        if not ckpt.is_file():
            raise ValueError(f"--resume: no checkpoint at {ckpt}")
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if int(state.get("total", cfg["batches"])) == cfg["batches"]:
            sched.load_state_dict(state["scheduler"])
        elif cfg["batches"] > int(state["step"]):
            # more batches than the checkpoint planned: a new, gentler one-cycle over the extra batches
            remaining = cfg["batches"] - int(state["step"])
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3 * cfg["lr"], total_steps=remaining,
                                                        pct_start=0.1)
        stream.rng.bit_generator.state = json.loads(state["stream_rng"])
        torch.set_rng_state(state["torch_rng"])
        start, history, elapsed = int(state["step"]), json.loads(state["history"]), float(state["elapsed"])
    t0 = time.perf_counter() - elapsed
    metrics: dict = history[-1]["metrics"] if history else {}
    with _progress(options.get("progress", True)) as bar, weights.flush_denormals():
        task = bar.add_task(f"train {kind}", total=cfg["batches"], completed=start, info="")
        for step in range(start, cfg["batches"]):
            model.train()
            loss = step_loss(model, stream.batch(cfg["batch_size"]), step, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            loss = loss.detach()
            bar.update(task, advance=1, info=f"loss {float(loss):.4g}")
            if (step + 1) % cfg["validate_every"] == 0 or step + 1 == cfg["batches"]:
                model.eval()
                metrics = validate(model, val, device)
                history.append({"batch": step + 1, "loss": float(loss), "metrics": metrics,
                                "seconds": time.perf_counter() - t0})
                bar.console.print(f"batch {step + 1}: loss {float(loss):.4g}  " +
                                  "  ".join(f"{k} {v:.4g}" for k, v in _flat(metrics).items()))
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "step": step + 1, "total": cfg["batches"],
                            "stream_rng": json.dumps(stream.rng.bit_generator.state),
                            "torch_rng": torch.get_rng_state(), "history": json.dumps(history),
                            "elapsed": time.perf_counter() - t0}, ckpt)
    seconds = time.perf_counter() - t0
    _check_validation(kind, metrics, ckpt, cfg.get("min_success", 0.5))
    output = Path(cfg["output"].replace("{name}", name))
    card = {"kind": kind, "name": name, "recipe": recipe.text, "recipe_path": recipe.path,
            "pairs_seen": cfg["batches"] * cfg["batch_size"], "batches": cfg["batches"],
            "batch_size": cfg["batch_size"], "seed": cfg["seed"], "device": device,
            "train_seconds": round(seconds, 1), "validation": metrics, "history": history}
    card = weights.save(model.cpu(), output, card)
    return {"output": str(output), "seconds": round(seconds, 1), "pairs_seen": card["pairs_seen"],
            "validation": metrics, "sha256": card["sha256"], "bytes": card["bytes"]}


def _sources(spec: ComponentSpec, lattices):
    """The training source, or one per lattice of ``train.lattices`` (the recipe's source with ``lattice``
    replaced), with their names."""
    if not lattices:
        return [build_component(spec)], [spec.params.get("lattice", spec.plugin)]
    if "lattice" not in spec.params:
        raise ValueError(f"train.lattices needs a source with a 'lattice' parameter; {spec.plugin!r} has none")
    from drift_framework.registry import get_registry

    choices = get_registry().get(spec.kind, spec.plugin).component.params["lattice"].choices
    unknown = [name for name in lattices if choices and name not in choices]
    if unknown:
        raise ValueError(f"train.lattices: unknown lattice(s) {unknown}; available: {', '.join(choices or ())}")
    return [build_component(ComponentSpec(spec.kind, spec.plugin, {**spec.params, "lattice": name}))
            for name in lattices], list(lattices)


class TrainingFailed(ValueError):
    """The trained model does not do its job on the validation sets: no weights are written."""


def _check_validation(kind: str, metrics: dict, checkpoint: Path, min_success: float) -> None:
    """A regressor whose best validation set finds fewer than ``min_success`` of its shifts is an error, not a
    model card: an untrained network lands within 0.5 px by chance on a few pairs, so "any success" is no test."""
    if kind != "regressor" or not metrics or min_success <= 0:
        return
    success = {name: float(m.get("success", 0.0)) for name, m in metrics.items() if isinstance(m, dict)}
    if success and max(success.values()) < min_success:
        found = ", ".join(f"{name} {value:.0%}" for name, value in success.items())
        raise TrainingFailed(f"validation: shifts found within 0.5 px: {found}, below train.min_success "
                             f"{min_success:.0%}; no weights written. The checkpoint {checkpoint} is kept: train "
                             "longer (more batches, drift train … --resume) or check the recipe's source and shift "
                             "range")


def _flat(metrics: dict) -> dict:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update({f"{k}/{kk}": vv for kk, vv in v.items() if isinstance(vv, (int, float))})
        elif isinstance(v, (int, float)):
            out[k] = v
    return out


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=Console(stderr=True),
                    disable=not enabled)


# --------------------------------------------------------------------------- #
# Denoiser
# --------------------------------------------------------------------------- #


def _crops(frames: np.ndarray, clean: np.ndarray, patch: int, rng: np.random.Generator):
    n, h, w = frames.shape
    p = min(patch, h, w)
    ys, xs = rng.integers(0, h - p + 1, n), rng.integers(0, w - p + 1, n)
    idx = np.arange(p)
    sel = (np.arange(n)[:, None, None], ys[:, None, None] + idx[None, :, None], xs[:, None, None] + idx[None, None, :])
    return frames[sel], clean[sel]


def train_denoiser(recipe, options: dict) -> dict:
    import torch

    from .models import DenoiserNet, normalize

    cfg = recipe.extra["train"]
    rng = np.random.default_rng(cfg["seed"] + 1)

    def to_tensors(batch, device, patch=None):
        noisy = np.concatenate([batch["reference"], batch["moving"]])
        clean = np.concatenate([batch["clean_reference"], batch["clean_moving"]])
        if patch:
            noisy, clean = _crops(noisy, clean, patch, rng)
        x = torch.as_tensor(noisy, device=device)[:, None]
        y = torch.as_tensor(clean, device=device)[:, None]
        xn, mean, std = normalize(x)
        return xn, (y - mean) / std

    def step_loss(model, batch, step, device):
        xn, yn = to_tensors(batch, device, cfg["patch"])
        return torch.mean((model(xn) - yn) ** 2)

    def validate(model, val, device):
        out = {}
        with torch.inference_mode():
            for b in val:
                xn, yn = to_tensors(b, device)
                before = float(torch.mean((xn - yn) ** 2))
                after = float(torch.mean((model(xn) - yn) ** 2))
                out[b["name"]] = {"gain_db": 10 * math.log10(before / max(after, 1e-12)), "mse": after}
        return out

    net = DenoiserNet(channels=cfg["channels"], depth=cfg["depth"], decoder=cfg["decoder"])
    return _loop("denoiser", recipe, options, net, step_loss, validate)


# --------------------------------------------------------------------------- #
# Regressor
# --------------------------------------------------------------------------- #


class _Denoise:
    """The (frozen) denoiser in front of the regressor: the trained DCNN, a classical one, or none."""

    def __init__(self, name: str, weights_path, device):
        self.net = None
        if name == "dcnn":
            self.net = weights.load("denoiser", weights_path, device)
        elif name != "none":
            self.component = build_component(ComponentSpec("denoiser", name, _classical_defaults(name)))
        self.name = name

    def __call__(self, frames, device):
        import torch

        from .models import normalize

        if self.name == "none":
            return torch.as_tensor(frames, device=device)
        if self.net is not None:
            with torch.no_grad():
                x = torch.as_tensor(frames, device=device)[:, None]
                xn, _, _ = normalize(x)
                return self.net(xn)[:, 0]
        return torch.as_tensor(np.stack([self.component.denoise(f) for f in frames]), device=device)


def _classical_defaults(name: str) -> dict:
    from drift_framework.registry import get_registry

    params = get_registry().get("denoiser", name).component.params
    return {k: p.default for k, p in params.items()}


def train_regressor(recipe, options: dict) -> dict:
    import torch

    from .models import RegressorNet, ncc_window

    cfg = recipe.extra["train"]
    device = weights.pick_device(options.get("device") or cfg.get("device"))
    denoise = _Denoise(cfg["denoiser"], cfg["denoiser_weights"], device)
    radius = cfg["radius"]

    crop = cfg["image_crop"]

    def windows(batch, device):
        ref = denoise(batch["reference"], device)
        mov = denoise(batch["moving"], device)
        if cfg["input"] == "ncc":
            return ncc_window(ref, mov, radius)
        # ablation: the two (denoised) frames themselves, a centred crop, each normalized
        h, w = ref.shape[-2:]
        y0, x0 = (h - crop) // 2, (w - crop) // 2
        pair = torch.stack([ref[:, y0:y0 + crop, x0:x0 + crop], mov[:, y0:y0 + crop, x0:x0 + crop]], dim=1)
        pair = pair - pair.mean(dim=(-2, -1), keepdim=True)
        return pair / pair.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)

    def step_loss(model, batch, step, device):
        x = windows(batch, device)
        target = torch.as_tensor(batch["shift"], dtype=torch.float32, device=device)
        out = model(x)
        err2 = (out[:, :2] - target) ** 2
        if step < cfg["nll_after"] * cfg["batches"]:
            return err2.mean()
        logvar = out[:, 2:].clamp(-12, 6)
        return (0.5 * (logvar + err2 * torch.exp(-logvar))).mean() + 0.1 * err2.mean()

    def validate(model, val, device):
        out = {}
        with torch.inference_mode():
            for b in val:
                pred = model(windows(b, device)).cpu().numpy()
                err = np.hypot(*(pred[:, :2] - b["shift"]).T)
                ok = err < 0.5
                sigma = np.sqrt(2 * np.exp(pred[:, 2]))
                out[b["name"]] = {"success": float(ok.mean()),
                                  "rmse": float(np.sqrt(np.mean(err[ok] ** 2))) if ok.any() else math.nan,
                                  "sigma_calibration": float(np.sqrt(np.mean((err[ok] / sigma[ok]) ** 2)))
                                  if ok.any() else math.nan}
        return out

    images = cfg["input"] == "images"
    net = RegressorNet(radius=radius, channels=cfg["channels"], hidden=cfg["hidden"],
                       in_channels=2 if images else 1, size=crop if images else None)
    result = _loop("regressor", recipe, options, net, step_loss, validate)
    return result
