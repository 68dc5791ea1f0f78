"""The scaffold as the noise of other samplers: variance-preserving downscales for the draft and the 1.5K pass."""
from __future__ import annotations

import torch

from ..kernels.resample import downscale_noise
from ..luna_types import NoiseScaffold


class ScaffoldNoise:
    """A ComfyUI NOISE whose noise is the scaffold resampled (variance-preserving) to the sampled latent's size."""

    def __init__(self, scaffold: NoiseScaffold):
        self.scaffold = scaffold
        self.seed = scaffold.seed

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        latent = input_latent["samples"]
        frames = latent.shape[2] if latent.ndim == 5 else None
        if latent.ndim not in (4, 5) or frames not in (None, 1):
            raise ValueError(
                f"LunaScaffoldNoise needs an image latent [B, C, H, W] (or a video model's single frame [B, C, 1, H, W]), "
                f"got shape {list(latent.shape)}: the scaffold is the noise of one still canvas.")
        batch, channels, height, width = latent.shape[0], latent.shape[1], latent.shape[-2], latent.shape[-1]
        if channels != self.scaffold.channels:
            raise ValueError(
                f"The latent has {channels} channels but the scaffold {self.scaffold.channels}: "
                "connect the model's VAE to LunaNoiseScaffold."
            )
        noise = scaffold_at(self.scaffold, height, width).expand(batch, -1, -1, -1)
        if frames is not None:
            noise = noise.unsqueeze(2)
        return noise.to(dtype=latent.dtype).contiguous()


def scaffold_at(scaffold: NoiseScaffold, height: int, width: int) -> torch.Tensor:
    """The scaffold downscaled to a latent of (height, width) cells: [1, C, height, width]."""
    sh, sw = scaffold.latent_size
    if height > sh or width > sw:
        raise ValueError(
            f"The latent ({width * scaffold.factor}×{height * scaffold.factor} px) is larger than the scaffold "
            f"({scaffold.width}×{scaffold.height} px); noise can only be downscaled: make the scaffold at least that large."
        )
    if abs(height * sw - width * sh) > max(sh, sw):
        raise ValueError(
            f"The latent's aspect ratio ({width}:{height}) differs from the scaffold's ({sw}:{sh}); "
            "make the draft with the canvas's aspect ratio or a scaffold of the draft's."
        )
    return downscale_noise(scaffold.noise, (height, width), seed=scaffold.seed)
