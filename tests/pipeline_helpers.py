"""Shared set-up for the in-process node tests: tiny models, prompts, a scaffold, and a spy on ComfyUI's sampler."""
from __future__ import annotations

import contextlib

import torch

from fixtures.tiny_models import tiny_clip, tiny_model, tiny_vae
from luna_semantic_detailer.kernels.noise import make_scaffold
from luna_semantic_detailer.luna_types import NoiseScaffold
from luna_semantic_detailer.pipeline.plan import RegionPlan
from luna_semantic_detailer.pipeline.sampling import SamplerSettings, sample
from luna_semantic_detailer.pipeline.shards import run
from luna_semantic_detailer.pipeline.step_noise import NoiseSite, RegionNoise
from luna_semantic_detailer.pipeline.strategies import strategy_named
from luna_semantic_detailer.pipeline.tiles import TileSettings, tile_plan


def encode_prompt(text: str, seed: int = 0) -> list:
    clip = tiny_clip(seed)
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def scaffold_for(width: int, height: int, seed: int = 1, channels: int = 4) -> NoiseScaffold:
    return NoiseScaffold(make_scaffold(width, height, seed, channels), width, height, 8, seed)


def smooth_canvas(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A low-frequency test picture [B, H, W, 3] in 0..1 (random colours bilinearly upsampled)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(batch, 3, max(2, height // 32), max(2, width // 32), generator=g)
    return torch.nn.functional.interpolate(small, size=(height, width), mode="bilinear", align_corners=False).movedim(1, -1)


def models(channels: int = 4):
    return tiny_model(0, channels), tiny_vae(0, channels)


@contextlib.contextmanager
def sampler_spy():
    """Record (noise, latent) of every comfy.sample.sample_custom call (one per batch of regions), still sampling."""
    import comfy.sample

    calls: list[dict] = []
    real = comfy.sample.sample_custom

    def spy(model, noise, cfg, sampler, sigmas, positive, negative, latent_image, **kwargs):
        calls.append({"noise": noise.clone(), "latent": latent_image.clone(), "positive": positive, "negative": negative})
        return real(model, noise, cfg, sampler, sigmas, positive, negative, latent_image, **kwargs)

    comfy.sample.sample_custom = spy
    try:
        yield calls
    finally:
        comfy.sample.sample_custom = real


def sample_batch(model, noise, latent, positive, negative, *, steps, cfg, sampler_name, scheduler, denoise, seed):
    """One pipeline sampler call on a batch of regions laid side by side on the noise field."""
    sites = [NoiseSite((i * latent.shape[3], 0, latent.shape[3], latent.shape[2]), tuple(latent.shape[2:]))
             for i in range(latent.shape[0])]
    step_noise = RegionNoise(seed, sites, latent.shape[1])
    return sample(SamplerSettings(model, steps, cfg, sampler_name, scheduler, denoise, seed), noise, latent, positive, negative,
                  step_noise)


def refine_tiles(job, image: torch.Tensor, scaffold: NoiseScaffold, tile_size: int, overlap: int, tiling: str,
                 fit: str = "fit") -> torch.Tensor:
    """The refiner's pipeline without the node: `image` [B, H, W, 3] in its tile plan, refined by `tiling`."""
    return run(tile_plan(job, image, scaffold, TileSettings(tile_size, overlap, fit)), strategy_named(tiling))[0]


def refine_regions(job, canvas: torch.Tensor, noise: torch.Tensor, regions, tiling: str = "parallel") -> torch.Tensor:
    """Hand-made regions of `canvas` [B, H, W, 3] (on the latent grid) refined by `tiling`: the padded canvas; `noise`
    [1, C, H/f, W/f] stands for the scaffold (of the job's seed)."""
    height, width = canvas.shape[1:3]
    scaffold = NoiseScaffold(noise, width, height, job.factor, job.sampler.seed)
    plan = RegionPlan(source="test", job=job, canvas=canvas, scaffold=scaffold, noise=noise, regions=tuple(regions),
                      width=width, height=height, settings=None)
    return strategy_named(tiling).run(plan, None)
