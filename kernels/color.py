"""Low-frequency colour matching: a refined region keeps its detail and takes the input's local colour and tone."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _gaussian(sigma: float, device: torch.device) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def low_frequencies(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """images [N, H, W, C] blurred by a Gaussian of `sigma` px (taken on a grid of sigma/4 px cells, then bilinear back)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    n, h, w, c = images.shape
    step = max(1, int(sigma // 4))
    x = images.movedim(-1, 1).float()
    small = F.avg_pool2d(x, step, ceil_mode=True) if step > 1 else x
    kernel = _gaussian(sigma / step, x.device)
    pad = kernel.numel() // 2
    flat = small.reshape(n * c, 1, *small.shape[-2:])
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode="replicate"), kernel.view(1, 1, -1, 1))
    blurred = flat.reshape(n, c, *small.shape[-2:])
    if step > 1:
        blurred = F.interpolate(blurred, size=(h, w), mode="bilinear", align_corners=False)
    return blurred.movedim(1, -1).to(images.dtype)


def match_low_frequencies(refined: torch.Tensor, reference: torch.Tensor, sigma: float) -> torch.Tensor:
    """refined [N, H, W, C] with its low frequencies replaced by reference's: refined - blur(refined) + blur(reference), in 0..1."""
    if refined.shape != reference.shape:
        raise ValueError(f"refined {tuple(refined.shape)} and reference {tuple(reference.shape)} must be the same shape")
    return (refined - low_frequencies(refined, sigma) + low_frequencies(reference, sigma)).clamp_(0, 1)
