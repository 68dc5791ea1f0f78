"""The one owner of batches: regions grouped by what can share a sampler call, cut by max_batch and free memory, halved on OOM."""
from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch

from ..kernels.planning import batches

# Samplers whose step control couples the items of a batch (dpm_adaptive sizes every step by the error of the whole
# batch): the batch owner gives them one region per call, so no region depends on the others.
BATCH_COUPLED_SAMPLERS = frozenset({"dpm_adaptive"})


def max_batch_for(model: Any, latent_shape: Sequence[int], requested: int, sampler_name: str = "") -> int:
    """`requested` bounded by ComfyUI's memory estimate for sampling latents of shape [B, C, h, w] (B ignored), at least 1;
    1 for a batch-coupled sampler.

    As comfy.sampler_helpers.estimate_memory: one sample needs model.memory_required of a batch of 2 (cond and
    uncond run together), against the load device's free memory less the weights still to load and the reserve.
    """
    if requested < 1:
        raise ValueError(f"requested batch must be >= 1, got {requested}")
    if sampler_name in BATCH_COUPLED_SAMPLERS:
        return 1
    per_sample = model.model.memory_required([2, *latent_shape[1:]])
    return max(1, min(requested, int(sampling_budget(model) // per_sample)))


def sampling_budget(model: Any) -> float:
    """Bytes a sampler call may take on the model's device: its free memory less the weights still to load and
    ComfyUI's reserve."""
    import comfy.model_management as mm

    weights_to_load = max(0, model.model_size() - model.loaded_size())
    return mm.get_free_memory(model.load_device) - weights_to_load - mm.extra_reserved_memory()


def max_clip_frames(model: Any, clip_shape: Sequence[int]) -> int:
    """Latent frames of a clip [1, C, T', h, w] one sampler call can take in the memory max_batch_for counts (at
    least 1, at most T')."""
    per_frame = model.model.memory_required([2, clip_shape[1], 1, *clip_shape[3:]])
    return max(1, min(clip_shape[2], int(sampling_budget(model) // per_frame)))


def plan_batches(items: Sequence[int], key: Callable[[int], Hashable], size: Callable[[Hashable], int]) -> list[list[int]]:
    """`items` grouped by `key` (first appearance first, order kept inside a group), each group cut into even batches of at most size(key)."""
    groups: dict[Hashable, list[int]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return [batch for k, group in groups.items() for batch in batches(group, size(k))]


def run_halving(fn: Callable[[Sequence], Any], items: Sequence, batch_size: int) -> list:
    """fn over consecutive slices of `items` (outputs: one per item, concatenated in order); OOM halves the slice, down to 1."""
    import comfy.model_management as mm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = list(items)
    size = min(batch_size, max(1, len(items)))
    outputs: list = []
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
        if len(out) != len(chunk):
            raise ValueError(f"fn returned {len(out)} rows for a slice of {len(chunk)} items")
        outputs.extend(out if not isinstance(out, torch.Tensor) else out.unbind(0))
        start += len(chunk)
    if not outputs:
        raise ValueError("run_halving needs at least one item")
    return outputs
