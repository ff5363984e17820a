"""Weights files and model cards.

A weights file is ``torch.save({"kind", "config", "state_dict"})`` and is always read with
``weights_only=True``: a file that carries a pickled object (code) is refused without running it. Its model card
(``NAME.json`` beside it) records the training recipe, pairs seen, seed, validation metrics, torch version and the
file's sha256, which is checked on load.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"


class WeightsError(ValueError):
    """A weights file is missing, corrupt, unsafe or does not fit the model."""


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shipped(kind: str, variant: str | None = None) -> Path:
    """Path of the weights shipped inside the package for ``kind`` (``denoiser`` or ``regressor``); ``variant``
    names another shipped set (``general``: trained on four lattices and Poisson noise)."""
    return WEIGHTS_DIR / (f"{kind}-{variant}.pt" if variant else f"{kind}.pt")


def resolve(kind: str, path=None) -> Path:
    """A weights path: None → the shipped file, a bare name (no folder, no suffix) → that shipped variant."""
    if not path:
        return shipped(kind)
    text = str(path)
    if "/" not in text and "\\" not in text and not text.endswith(".pt"):
        return shipped(kind, text)
    return Path(text)


def save(model, path, card: dict) -> dict:
    """Write ``model`` and its model card; returns the card (with ``sha256`` and ``bytes``)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"kind": card["kind"], "config": dict(model.config), "state_dict": state}, path)
    card = {**card, "file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size,
            "torch": torch.__version__, "config": dict(model.config)}
    path.with_suffix(".json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    return card


def load(kind: str, path=None, device: str = "cpu"):
    """Build the ``kind`` network from a weights file (default: the shipped one) on ``device``.

    Raises
    ------
    WeightsError
        Missing file, a sha256 that differs from the model card, a file that is not a
        weights-only checkpoint (e.g. it carries pickled code), or weights that do not fit.
    """
    import pickle

    import torch

    from .models import DenoiserNet, RegressorNet

    path = resolve(kind, path)
    if not path.is_file():
        raise WeightsError(f"no {kind} weights at {path}; train them with `drift train {kind} RECIPE`")
    card_path = path.with_suffix(".json")
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text())
        except json.JSONDecodeError as exc:
            raise WeightsError(f"the model card {card_path} is not valid JSON: {exc}") from None
        if card.get("sha256") and card["sha256"] != sha256(path):
            raise WeightsError(f"{path} does not match its model card (sha256 differs): the file is corrupt or "
                               "was replaced")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path} is not a safe weights file and was not loaded ({first})") from None
    if not isinstance(blob, dict) or blob.get("kind") != kind or "state_dict" not in blob:
        raise WeightsError(f"{path} does not hold {kind} weights")
    cls = {"denoiser": DenoiserNet, "regressor": RegressorNet}[kind]
    try:
        net = cls(**blob.get("config", {}))
        net.load_state_dict(blob["state_dict"])
    except (TypeError, RuntimeError) as exc:
        raise WeightsError(f"{path} does not fit the {kind} network: {str(exc).splitlines()[0]}") from None
    return net.to(device).eval()


class flush_denormals:
    """Within the block, the CPU flushes denormal floats to zero.

    Denormal activations (tiny values far from the atoms) slow CPU convolutions threefold and carry nothing.
    The flag is process-wide CPU state, so it is set only around network passes and restored after.
    """

    def __enter__(self):
        import torch

        self.torch = torch
        torch.set_flush_denormal(True)

    def __exit__(self, *exc):
        self.torch.set_flush_denormal(False)


def pick_device(requested: str | None) -> str:
    """``requested`` if given, else CUDA when available, else CPU."""
    import torch

    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise WeightsError(f"device {requested!r} was asked for but CUDA is not available")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"
