"""The canvas the regions are cut from: padded to the latent grid, with its scaffold noise (and, for clips sampled by a
video model, the scaffold's further latent frames)."""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from ..kernels.noise import frame_seed, make_scaffold
from ..luna_types import NoiseScaffold
from .scaffold_noise import scaffold_at


def canvas_noise(scaffold: NoiseScaffold, height: int, width: int) -> torch.Tensor:
    """The scaffold for a canvas of height x width px, [1, C, ceil(h/f), ceil(w/f)]: itself, or downscaled to the canvas."""
    f = scaffold.factor
    lh, lw = -(-height // f), -(-width // f)
    if (lh, lw) == scaffold.latent_size:
        return scaffold.noise
    return scaffold_at(scaffold, lh, lw)


def canvas_noise_frame(scaffold: NoiseScaffold, height: int, width: int, frame: int) -> torch.Tensor:
    """Latent frame `frame` of the scaffold's time axis for a canvas of height x width px (frame 0: canvas_noise)."""
    if frame == 0:
        return canvas_noise(scaffold, height, width)
    noise = make_scaffold(scaffold.width, scaffold.height, frame_seed(scaffold.seed, frame), scaffold.channels,
                          scaffold.factor)
    return canvas_noise(replace(scaffold, noise=noise), height, width)


def pad_to_grid(image: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, H, W, C] replicate-padded on the bottom/right to multiples of factor; the image itself when already aligned."""
    h, w = image.shape[1:3]
    ph, pw = -h % factor, -w % factor
    if ph == 0 and pw == 0:
        return image
    return F.pad(image.movedim(-1, 1), (0, pw, 0, ph), mode="replicate").movedim(1, -1)
