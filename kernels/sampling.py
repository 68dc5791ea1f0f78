"""Batched VAE and sampler calls over equal-size crops: memory-bounded batches, halving on OOM, per-sample conditioning.

Batch limits follow comfy.sampler_helpers.estimate_memory: sampling B latents needs model.memory_required of a
2B batch (cond and uncond run together), against get_free_memory of the load device less the weights still to
load and the reserved VRAM. ComfyUI's interrupt is honoured between batches.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

Conditioning = list[list[Any]]


def _check_pixels(vae: Any, pixels: torch.Tensor) -> None:
    factor = vae.spacial_compression_encode()
    if pixels.ndim != 4 or pixels.shape[-1] < 3:
        raise ValueError(f"pixels must be [B, H, W, 3], got {tuple(pixels.shape)}")
    if pixels.shape[1] % factor or pixels.shape[2] % factor:
        raise ValueError(
            f"pixels {pixels.shape[2]}x{pixels.shape[1]} are not multiples of the VAE's factor {factor}: "
            "ComfyUI would silently centre-crop them; snap the crop to the latent grid"
        )


def encode_batch(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """One ComfyUI VAE.encode call for the whole batch: pixels [B, H, W, 3] in 0..1 -> raw latent [B, C, H/f, W/f]."""
    _check_pixels(vae, pixels)
    with torch.no_grad():
        return vae.encode(pixels[..., :3])


def decode_batch(vae: Any, latent: torch.Tensor) -> torch.Tensor:
    """One ComfyUI VAE.decode call for the whole batch: raw latent [B, C, h, w] -> pixels [B, h*f, w*f, 3] in 0..1."""
    if latent.ndim != 4:
        raise ValueError(f"latent must be [B, C, h, w], got {tuple(latent.shape)}")
    with torch.no_grad():
        return vae.decode(latent)


def _check_conditioning(conditioning: Conditioning, batch: int, name: str) -> None:
    for cond, _ in conditioning:
        if cond.shape[0] not in (1, batch):
            raise ValueError(
                f"{name} conditioning has batch {cond.shape[0]} but the latent has batch {batch}: "
                "ComfyUI would silently truncate or repeat it; select it with the latent's indices"
            )


def select_conditioning(conditioning: Conditioning, indices: Sequence[int]) -> Conditioning:
    """The rows `indices` of a batched CONDITIONING: batched tensors (cond and dict tensors of the same batch) are indexed, batch-1 ones shared."""
    index = torch.as_tensor(list(indices), dtype=torch.long)
    selected = []
    for cond, options in conditioning:
        batch = cond.shape[0]
        if batch == 1:
            selected.append([cond, options])
            continue
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= batch):
            raise IndexError(f"indices {list(indices)} out of range for a conditioning batch of {batch}")
        options = {
            key: value[index.to(value.device)] if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == batch else value
            for key, value in options.items()
        }
        selected.append([cond[index.to(cond.device)], options])
    return selected


def sample_batch(
    model: Any,
    noise: torch.Tensor,
    latent: torch.Tensor,
    positive: Conditioning,
    negative: Conditioning,
    *,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    denoise: float,
    seed: int,
    noise_mask: torch.Tensor | None = None,
    callback: Callable | None = None,
) -> torch.Tensor:
    """One comfy.sample.sample call on a batch, with `noise` as the initial noise, used as-is: raw latent [B, C, h, w] out.

    How ComfyUI uses `noise` (comfy/samplers.py, KSampler.set_steps and KSAMPLER.sample): with denoise < 1 the
    sigmas are the last `steps` + 1 of a `int(steps / denoise)`-step schedule, and the start is
    x = noise * sigmas[0] + process_latent_in(latent) (EPS / V-prediction; flow models: sigma * noise +
    (1 - sigma) * latent); when sigmas[0] is the model's sigma_max (denoise 1) an EPS model starts from
    noise * sqrt(1 + sigma_max**2) + latent. `latent` is the raw VAE latent (ComfyUI scales it, unless it is
    all zeros). No other noise enters deterministic samplers (euler, heun, dpmpp_2m, ...); ancestral and SDE
    samplers draw more per step from `seed` over the whole batch, and with a noise_mask the "ddim" sampler
    re-noises the kept area with noise from `seed` + 1, so only deterministic samplers are batch-invariant.
    Positive and negative may be batched per sample (batch B) or shared (batch 1).
    """
    import comfy.sample
    import comfy.utils

    if noise.shape != latent.shape or latent.ndim != 4:
        raise ValueError(f"noise {tuple(noise.shape)} and latent {tuple(latent.shape)} must be the same [B, C, h, w]")
    channels = model.get_model_object("latent_format").latent_channels
    if latent.shape[1] != channels:
        raise ValueError(f"the latent has {latent.shape[1]} channels but the model expects {channels}: use the VAE of this model")
    _check_conditioning(positive, latent.shape[0], "positive")
    _check_conditioning(negative, latent.shape[0], "negative")
    with torch.no_grad():
        return comfy.sample.sample(
            model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent,
            denoise=denoise, noise_mask=noise_mask, callback=callback,
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed,
        )


def max_batch_for(model: Any, latent_shape: Sequence[int], requested: int) -> int:
    """`requested` bounded by ComfyUI's memory estimate for sampling latents of shape [B, C, h, w] (B ignored), at least 1."""
    import comfy.model_management as mm

    if requested < 1:
        raise ValueError(f"requested batch must be >= 1, got {requested}")
    per_sample = model.model.memory_required([2, *latent_shape[1:]])
    weights_to_load = max(0, model.model_size() - model.loaded_size())
    budget = mm.get_free_memory(model.load_device) - weights_to_load - mm.extra_reserved_memory()
    return max(1, min(requested, int(budget // per_sample)))


def run_halving(fn: Callable[[Sequence], torch.Tensor], items: Sequence, batch_size: int) -> torch.Tensor:
    """fn over consecutive slices of `items`, outputs (one row per item) concatenated in order; OOM halves the slice, down to 1."""
    import comfy.model_management as mm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = list(items)
    size = min(batch_size, max(1, len(items)))
    outputs = []
    start = 0
    while start < len(items):
        mm.throw_exception_if_processing_interrupted()
        chunk = items[start:start + size]
        out_of_memory = False
        try:
            out = fn(chunk)
        except mm.OOM_EXCEPTION as exc:
            if size == 1:
                raise mm.OOM_EXCEPTION(
                    f"out of memory with a batch of 1 (of {len(items)} items): lower the crop/tile size or free memory"
                ) from exc
            out_of_memory = True
        if out_of_memory:
            size = max(1, size // 2)
            logging.warning("[Luna] out of memory: retrying with batches of %d", size)
            mm.soft_empty_cache()
            continue
        if out.shape[0] != len(chunk):
            raise ValueError(f"fn returned {out.shape[0]} rows for a slice of {len(chunk)} items")
        outputs.append(out)
        start += len(chunk)
    if not outputs:
        raise ValueError("run_halving needs at least one item")
    return torch.cat(outputs)


def sample_all(
    model: Any,
    noise: torch.Tensor,
    latent: torch.Tensor,
    positive: Conditioning,
    negative: Conditioning,
    *,
    batch_size: int,
    **sampling: Any,
) -> torch.Tensor:
    """sample_batch over B samples in memory-bounded batches of at most `batch_size`, halving on OOM; per-sample conditioning follows its latents."""
    size = max_batch_for(model, latent.shape, batch_size)
    noise_mask = sampling.pop("noise_mask", None)
    per_sample_mask = noise_mask is not None and noise_mask.shape[0] == latent.shape[0] > 1

    def run(indices: Sequence[int]) -> torch.Tensor:
        return sample_batch(
            model, noise[indices], latent[indices],
            select_conditioning(positive, indices), select_conditioning(negative, indices),
            noise_mask=noise_mask[indices] if per_sample_mask else noise_mask, **sampling,
        )

    return run_halving(run, range(latent.shape[0]), size)
