"""One batch of equal-size regions through CLIP-ViT anchoring, VAE encode, sampling from given noise, VAE decode."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .fusion import context_slots, fuse_conditioning, vision_tokens
from .sampling import decode_batch, encode_batch, sample_all


@dataclass(frozen=True)
class RefineJob:
    """Everything a sampler call needs except the pixels and their noise."""

    model: Any
    vae: Any
    positive: list
    negative: list
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    denoise: float
    seed: int
    clip_vision: Any = None
    vision_strength: float = 0.0


def refine_batch(
    job: RefineJob,
    pixels: torch.Tensor,
    noise: torch.Tensor,
    noise_mask: torch.Tensor | None = None,
    callback: Callable | None = None,
) -> torch.Tensor:
    """Refine pixels [B, H, W, 3] sampled from noise [B, C, H/f, W/f] (memory-bounded, halved on OOM) into [B, H, W, 3]."""
    positive = job.positive
    if job.clip_vision is not None and job.vision_strength != 0:
        positive = fuse_conditioning(positive, vision_tokens(job.clip_vision, pixels), job.vision_strength,
                                     context_slots(job.model))
    latent = encode_batch(job.vae, pixels)
    if latent.shape[1:] != noise.shape[1:]:
        raise ValueError(
            f"The VAE's latent is {list(latent.shape[1:])} but the scaffold's noise slice is {list(noise.shape[1:])}: "
            "make the scaffold with the same VAE (LunaNoiseScaffold's vae input)."
        )
    samples = sample_all(
        job.model, noise, latent, positive, job.negative, batch_size=latent.shape[0],
        steps=job.steps, cfg=job.cfg, sampler_name=job.sampler_name, scheduler=job.scheduler,
        denoise=job.denoise, seed=job.seed, noise_mask=noise_mask, callback=callback,
    )
    return decode_batch(job.vae, samples)
