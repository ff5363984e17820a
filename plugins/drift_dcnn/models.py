"""The two networks of the learned pipeline (torch is imported here, never by the core).

* :class:`DenoiserNet`: a light encoder–decoder. Two stride-2 convolutions bring a frame to a quarter of its
  resolution, where a stack of convolutions sees several unit cells (receptive field ≈ 45 px); transposed
  convolutions return to full resolution and a last convolution mixes in the input. It predicts the noiseless
  frame (in the noisy frame's normalized units). About 1 ms per 128² frame on 2 CPU cores, versus 1–2 s per
  256² pair for a DnCNN-17.
* :class:`RegressorNet`: the published design — convolutions, then three fully connected layers — reading the
  normalized cross-correlation map of the denoised frames around zero shift. It outputs ``(dy, dx)`` in pixels and
  a log-variance (trained with the Gaussian negative log-likelihood, so ``sigma`` is learned too).
"""
from __future__ import annotations

import torch
from torch import nn


class DenoiserNet(nn.Module):
    def __init__(self, channels: int = 24, depth: int = 4, decoder: int = 16):
        super().__init__()
        c, dc = channels, decoder
        self.down = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(16, c, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        mid = []
        for i in range(depth):
            dil = 2 if i % 2 else 1
            mid += [nn.Conv2d(c, c, 3, padding=dil, dilation=dil), nn.ReLU(inplace=True)]
        self.mid = nn.Sequential(*mid)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(c, dc, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(dc, dc // 2, 4, stride=2, padding=1), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(dc // 2 + 1, 1, 3, padding=1)
        self.config = {"channels": channels, "depth": depth, "decoder": decoder}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4  # the two stride-2 stages need sizes divisible by 4
        xp = nn.functional.pad(x, (0, pw, 0, ph), mode="reflect") if (ph or pw) else x
        f = self.up(self.mid(self.down(xp)))
        y = self.out(torch.cat([f, xp], dim=1))
        return y[..., :h, :w]


class RegressorNet(nn.Module):
    """Reads a ``(2R+1)²`` NCC window; returns ``(dy, dx, log σ²)`` with shifts in pixels."""

    def __init__(self, radius: int = 16, channels: int = 32, hidden: int = 128, in_channels: int = 1,
                 size: int | None = None):
        super().__init__()
        c = channels
        self.radius = radius
        size = size or 2 * radius + 1  # the input's side: the NCC window, or an image crop (ablation)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1, stride=2), nn.ReLU(inplace=True))
        side = (size + 3) // 4
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c * side * side, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden // 2), nn.ReLU(inplace=True),
            nn.Linear(hidden // 2, 3))
        self.config = {"radius": radius, "channels": channels, "hidden": hidden, "in_channels": in_channels,
                       "size": size}

    def forward(self, ncc: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(ncc))
        return torch.cat([out[:, :2] * self.radius / 2, out[:, 2:]], dim=1)


def normalize(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-frame zero mean, unit std (returns the normalized frames and the mean and std used)."""
    mean = frames.mean(dim=(-2, -1), keepdim=True)
    std = frames.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return (frames - mean) / std, mean, std


def ncc_window(reference: torch.Tensor, moving: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalized circular cross-correlation ``c(L) = Σ r(y)·m(y+L)`` of (B, H, W) frames, cropped to
    lags ``−radius…radius`` (B, 1, 2R+1, 2R+1), zero lag in the centre."""
    r = reference - reference.mean(dim=(-2, -1), keepdim=True)
    m = moving - moving.mean(dim=(-2, -1), keepdim=True)
    norm = torch.sqrt((r * r).sum(dim=(-2, -1)) * (m * m).sum(dim=(-2, -1))).clamp_min(1e-12)
    c = torch.fft.irfft2(torch.conj(torch.fft.rfft2(r)) * torch.fft.rfft2(m), s=r.shape[-2:])
    c = c / norm[:, None, None]
    idx_y = torch.arange(-radius, radius + 1, device=c.device) % c.shape[-2]
    idx_x = torch.arange(-radius, radius + 1, device=c.device) % c.shape[-1]
    return c[:, idx_y][:, :, idx_x][:, None]
