"""Shared set-up for the in-process node tests: tiny models, prompts, a scaffold, and a spy on ComfyUI's sampler."""
from __future__ import annotations

import contextlib

import torch

from fixtures.tiny_models import tiny_clip, tiny_model, tiny_vae
from luna_semantic_detailer.kernels.noise import make_scaffold
from luna_semantic_detailer.luna_types import NoiseScaffold


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
    """Record (noise, latent) of every comfy.sample.sample call while still running the real sampler."""
    import comfy.sample

    calls: list[dict] = []
    real = comfy.sample.sample

    def spy(model, noise, *args, **kwargs):
        calls.append({"noise": noise.clone(), "latent": args[6].clone() if len(args) > 6 else kwargs.get("latent_image")})
        return real(model, noise, *args, **kwargs)

    comfy.sample.sample = spy
    try:
        yield calls
    finally:
        comfy.sample.sample = real
