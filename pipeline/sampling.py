"""ComfyUI's sampler on a batch of regions: the schedule's sigmas, the scaffold slice as the start, per-region step noise.

How ComfyUI uses the start noise (comfy/samplers.py, KSampler.set_steps and KSAMPLER.sample): with denoise < 1 the
sigmas are the last `steps` + 1 of an int(steps / denoise)-step schedule, and the start is
model_sampling.noise_scaling(sigmas[0], noise, latent): noise * sigma + latent for EPS / V-prediction models (at the
model's sigma_max, noise * sqrt(1 + sigma_max**2) + latent), sigma * noise + (1 - sigma) * latent for flow models.
`latent` is the raw VAE latent (ComfyUI scales it, unless it is all zeros).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..luna_types import Conditioning
from .fingerprint import LOCAL
from .step_noise import RegionNoise, region_sampler


@dataclass(frozen=True)
class SamplerSettings:
    """A KSampler's settings: the model and how to sample it."""

    model: Any = field(metadata=LOCAL)
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    denoise: float
    seed: int

    def sigmas(self) -> torch.Tensor:
        """The sigmas ComfyUI's KSampler samples for these steps, scheduler and denoise (empty at denoise 0)."""
        import comfy.samplers

        return comfy.samplers.KSampler(self.model, self.steps, self.model.load_device, self.sampler_name, self.scheduler,
                                       self.denoise, self.model.model_options).sigmas


def model_patch(model: Any) -> int:
    """Latent cells per side of the patches a ComfyUI MODEL's diffusion model cuts its input into (1 for UNets)."""
    size = getattr(model.model.diffusion_model, "patch_size", 1)
    side = size[-1] if isinstance(size, (tuple, list)) else size
    return side if isinstance(side, int) and side >= 1 else 1


IMAGE_MODELS_OF_VIDEO_LATENTS = frozenset({"QwenImage", "HunyuanImage21"})
"""Image models whose latents carry a time axis of one frame (a video VAE's layout): not video models."""


def is_video_model(model: Any) -> bool:
    """Whether a ComfyUI MODEL is a video model: its latents are [B, C, T, h, w] and it is not an image model that
    only borrows that layout."""
    if model.get_model_object("latent_format").latent_dimensions != 3:
        return False
    return not any(c.__name__ in IMAGE_MODELS_OF_VIDEO_LATENTS for c in type(model.model).__mro__)


def check_latents(model: Any, noise: torch.Tensor, latent: torch.Tensor) -> None:
    """Refuse a start noise and latent that are not the same [B, C, h, w] (or clips [B, C, T, h, w] for a model of
    video latents) with the model's latent channels."""
    clips = latent.ndim == 5 and model.get_model_object("latent_format").latent_dimensions == 3
    if noise.shape != latent.shape or not (latent.ndim == 4 or clips):
        raise ValueError(f"noise {tuple(noise.shape)} and latent {tuple(latent.shape)} must be the same [B, C, h, w] "
                         "(or [B, C, T, h, w] clips for a video model)")
    channels = model.get_model_object("latent_format").latent_channels
    if latent.shape[1] != channels:
        raise ValueError(f"the latent has {latent.shape[1]} channels but the model expects {channels}: use the VAE of this model")


def check_conditioning(conditioning: Conditioning, batch: int, name: str) -> None:
    """Refuse conditioning whose batch is neither 1 nor the latent's (ComfyUI would truncate or repeat it silently)."""
    for cond, _ in conditioning:
        if cond.shape[0] not in (1, batch):
            raise ValueError(
                f"{name} conditioning has batch {cond.shape[0]} but the latent has batch {batch}: "
                "ComfyUI would silently truncate or repeat it; give one row per region or one for all"
            )


def to_model(model: Any, latent: torch.Tensor) -> torch.Tensor:
    """An image latent [B, C, h, w] in the layout the model samples: [B, C, 1, h, w] for models of video latents."""
    return latent.unsqueeze(2) if model.get_model_object("latent_format").latent_dimensions == 3 else latent


def from_model(latent: torch.Tensor) -> torch.Tensor:
    """The image latent [B, C, h, w] of a sampled latent (its single frame for models of video latents)."""
    return latent[:, :, 0] if latent.ndim == 5 else latent


def sample(settings: SamplerSettings, noise: torch.Tensor, latent: torch.Tensor, positive: Conditioning, negative: Conditioning,
           step_noise: RegionNoise, noise_mask: torch.Tensor | None = None, callback: Callable | None = None) -> torch.Tensor:
    """One ComfyUI sampler call on a batch: raw latent [B, C, h, w] from start noise [B, C, h, w], used as is; clips
    [B, C, T, h, w] of a video model go to it as they are."""
    import comfy.sample
    import comfy.utils

    model = settings.model
    check_latents(model, noise, latent)
    check_conditioning(positive, latent.shape[0], "positive")
    check_conditioning(negative, latent.shape[0], "negative")
    clips = latent.ndim == 5
    layout = (lambda x: x) if clips else (lambda x: to_model(model, x))
    with torch.no_grad():
        samples = comfy.sample.sample_custom(
            model, layout(noise), settings.cfg, region_sampler(settings.sampler_name, step_noise),
            settings.sigmas(), positive, negative, layout(latent),
            noise_mask=None if noise_mask is None else layout(noise_mask), callback=callback,
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=settings.seed,
        )
    return samples if clips else from_model(samples)
