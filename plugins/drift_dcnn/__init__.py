"""drift_dcnn: the learned pipeline (built-in plugin).

``dcnn-denoiser`` (a light encoder–decoder CNN) → ``ncc`` → ``dcnn-regressor`` (convolutions + three fully
connected layers reading the NCC map, with a learned sigma, followed by a Newton refinement on the raw frames).
Preset ``dcnn``. Trainers ``denoiser`` and ``regressor`` (``drift train NAME RECIPE``). Weights ship in
``weights/`` with model cards. torch is imported only when a component is built or a trainer runs.
"""
from __future__ import annotations

import os

# torch's OpenMP threads spin after each parallel region by default; on few cores they starve scipy's FFT
# threads, which the pipeline interleaves with the networks (measured: 60 ms → 7 ms per 128² pair on 2 cores).
# Must be set before torch is first imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from drift_framework import Component, Param, Preset, Trainer, hookimpl

__version__ = "0.1.0"

_DEVICE = Param("str", None, "cpu, cuda, cuda:N; default CUDA when available", nullable=True)


def _denoiser(params, context):
    from .components import DCNNDenoiser

    return DCNNDenoiser(params, context)


def _regressor(params, context):
    from .components import DCNNRegressor

    return DCNNRegressor(params, context)


@hookimpl
def drift_denoisers():
    return [Component("dcnn-denoiser", _denoiser,
                      {"weights": Param("str", None, "Weights file, or a shipped set: general (default: the "
                                                     "shipped hexagonal one)", nullable=True),
                       "device": _DEVICE},
                      "Trained CNN denoiser (light encoder–decoder)")]


@hookimpl
def drift_estimators():
    return [Component("dcnn-regressor", _regressor,
                      {"weights": Param("str", None, "Weights file, or a shipped set: general (default: the "
                                                     "shipped hexagonal one)", nullable=True),
                       "max_shift_px": Param("float", None, "Bound on the answer, px", gt=0, nullable=True),
                       "view_px": Param("int", 128, "Side of the frames' central crop that is denoised and "
                                                    "correlated for the network (its training frames' size; at "
                                                    "least 4 x max_shift_px); null: the whole frames. Refinement "
                                                    "and candidate analysis read the whole raw frames",
                                        ge=64, nullable=True),
                       "refine": Param("bool", True, "Newton refinement on the raw frames after the network"),
                       "batch_size": Param("int", 64, "Frames per network pass in batch estimation", ge=1),
                       "device": _DEVICE},
                      "Trained CNN reading the NCC map (conv + 3 FC), learned sigma, then refinement")]


@hookimpl
def drift_presets():
    return [Preset("dcnn", {"denoiser": {"plugin": "dcnn-denoiser"},
                            "correlator": {"plugin": "ncc", "window": "none"},
                            "estimator": {"plugin": "dcnn-regressor"}},
                   "DCNN denoiser → NCC → DCNN regressor → refinement (the learned pipeline)"),
            Preset("dcnn-general", {"denoiser": {"plugin": "dcnn-denoiser", "weights": "general"},
                                    "correlator": {"plugin": "ncc", "window": "none"},
                                    "estimator": {"plugin": "dcnn-regressor", "weights": "general"}},
                   "The learned pipeline trained on hexagonal, square, honeycomb and perovskite lattices and "
                   "uniform, Gaussian and Poisson noise")]


def _common():
    from .data import NOISE_KINDS

    return {
        "batches": Param("int", 2000, "Training batches", gt=0),
        "batch_size": Param("int", 32, "Pairs per batch", gt=0),
        "lr": Param("float", 2e-3, "Peak learning rate (one-cycle)", gt=0),
        "seed": Param("int", 0, "Seed of the pair stream and the initial weights"),
        "noise": Param("mapping", None, "Noise added to the noiseless pairs", fields={
            "kinds": Param("list", ["uniform", "gaussian"], "Noise kinds drawn per pair",
                           item=Param("str", choices=NOISE_KINDS)),
            "snr": Param("vector", [0.15, 4.0], "SNR range (log-uniform)", length=2, gt=0),
            "dose": Param("vector", [2.0, 200.0], "Poisson dose range, counts/px (log-uniform)", length=2, gt=0)}),
        "lattices": Param("list", None, "Lattices mixed in training (each batch draws one per pair); default: "
                          "the source's own", item=Param("str"), nullable=True),
        "validate_every": Param("int", 250, "Validate and checkpoint every N batches", gt=0),
        "validation_pairs": Param("int", 64, "Pairs per validation level", gt=0),
        "validation_levels": Param("vector", [4.0, 1.0, 0.5, 0.25], "Validation SNRs (or doses)", gt=0),
        "checkpoint_dir": Param("str", "checkpoints/{name}", "Checkpoints ({name}: the recipe name)"),
        "output": Param("str", "checkpoints/{name}/model.pt", "Final weights (+ model card .json beside)"),
        "device": _DEVICE,
        "threads": Param("int", None, "torch CPU threads", ge=1, nullable=True),
    }


def _train_denoiser(recipe, options):
    from .train import train_denoiser

    return train_denoiser(recipe, options)


def _train_regressor(recipe, options):
    from .train import train_regressor

    return train_regressor(recipe, options)


@hookimpl
def drift_trainers():
    return [
        Trainer("denoiser", _train_denoiser, {
            **_common(),
            "patch": Param("int", 96, "Training crop size, px", ge=16),
            "channels": Param("int", 24, "Channels at quarter resolution", ge=4, le=256),
            "depth": Param("int", 4, "Convolutions at quarter resolution", ge=1, le=32),
            "decoder": Param("int", 16, "Channels of the first up-sampling stage (the second has half)",
                             ge=2, le=256)},
            "Train the DCNN denoiser on noisy/noiseless pairs"),
        Trainer("regressor", _train_regressor, {
            **_common(),
            "radius": Param("int", 16, "NCC window half-size read by the network, px", ge=4, le=64),
            "channels": Param("int", 32, "Convolution channels", ge=4, le=256),
            "hidden": Param("int", 128, "Width of the first fully connected layer", ge=8, le=4096),
            "denoiser": Param("str", "dcnn", "Denoiser in front: dcnn, none, or a classical denoiser name"),
            "denoiser_weights": Param("str", None, "Denoiser weights (default: shipped)", nullable=True),
            "nll_after": Param("float", 0.2, "Fraction of batches trained on MSE before the Gaussian NLL",
                               ge=0, le=1),
            "input": Param("str", "ncc", "What the network reads: the NCC window, or (ablation) the two frames",
                           choices=("ncc", "images")),
            "image_crop": Param("int", 64, "With input: images, the centred crop fed to the network", ge=16),
            "min_success": Param("float", 0.5, "Refuse to write weights whose best validation set finds fewer than "
                                               "this fraction of shifts within 0.5 px (0: smoke tests of a recipe "
                                               "on a tiny budget)", ge=0, le=1)},
            "Train the DCNN regressor on NCC maps of denoised pairs"),
    ]
