"""The one region loop: regions in, with their weights, noise slices and batches; the composited canvas out.

Every region of a batch goes through the same steps: its pixels cut from the canvas (resized to its sampled size), its
scaffold slice (downscaled with it, variance-preserving), its anchoring, one VAE encode, one sampler call with its own
per-step noise, one VAE decode; then the compositor (`kernels.compositing`) puts each result in the canvas.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..kernels.color import match_low_frequencies
from ..kernels.compositing import add_share_, lerp_, sequential_share, share
from ..kernels.noise import region_seed, slice_noise
from ..kernels.resample import downscale_noise
from . import vae as vae_calls
from .anchoring import Anchor, Features, anchor_batch, encode_features
from .batching import max_batch_for, plan_batches, run_halving
from .conditioning import ControlCopies, Place, for_region, signature, stack
from .progress import Progress
from .prompts import positive_for
from .regions import Region
from .sampling import Sampler, model_patch, sample
from .step_noise import NoiseSite, RegionNoise

Conditioning = list[list[Any]]


@dataclass(frozen=True)
class RefineJob:
    """Everything a batch of regions needs besides its pixels: sampler, VAE, prompts, anchoring, batch bound."""

    sampler: Sampler
    vae: Any
    positive: Conditioning
    negative: Conditioning
    factor: int
    max_batch: int
    anchor: Anchor | None = None
    label_positive: Mapping[str, Conditioning] = field(default_factory=dict)
    color_match: bool = False

    @property
    def patch(self) -> int:
        """The model's patch side in latent cells: every region it samples is a whole number of patches."""
        return model_patch(self.sampler.model)


COLOR_SIGMA = 8  # the low-frequency colour match blurs over 1/COLOR_SIGMA of a region's shorter side


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, H, W, C] resized to (w, h): area when shrinking, bicubic when enlarging; the images themselves at their size."""
    w, h = size
    if images.shape[1:3] == (h, w):
        return images
    mode = "area" if images.shape[1] > h else "bicubic"
    return F.interpolate(images.movedim(-1, 1), size=(h, w), mode=mode).movedim(1, -1)


@dataclass(frozen=True)
class RegionConditioning:
    """A region's positive and negative, cut to it (pipeline.conditioning.for_region)."""

    positive: Conditioning
    negative: Conditioning

    @property
    def key(self) -> tuple:
        return signature(self.positive), signature(self.negative)


def place_of(job: RefineJob, region: Region, canvas: torch.Tensor) -> Place:
    """Where `region` sits on the latent of the padded `canvas` [B, H, W, 3]."""
    f = job.factor
    return Place(region.image, tuple(v // f for v in region.rect), (region.sample[1] // f, region.sample[0] // f),
                 (canvas.shape[1] // f, canvas.shape[2] // f))


def conditioning_for(job: RefineJob, regions: Sequence[Region], canvas: torch.Tensor) -> list[RegionConditioning]:
    """Each region's own positive and negative."""
    return [RegionConditioning(for_region(positive_for(r.label, job.label_positive, job.positive), place_of(job, r, canvas),
                                          "positive"),
                               for_region(job.negative, place_of(job, r, canvas), "negative")) for r in regions]


def anchor_features(job: RefineJob, regions: Sequence[Region], canvas: torch.Tensor) -> list[Features] | None:
    """Each region's anchoring features, from its pixels of `canvas` [B, H, W, 3] (None without anchoring)."""
    if job.anchor is None:
        return None
    seeds = [region_seed(job.sampler.seed, r.rect) for r in regions]
    return encode_features(job.anchor, job.sampler.model, [crop(canvas, [r]) for r in regions], seeds)


def batch_conditioning(job: RefineJob, conds: Sequence[RegionConditioning], features: Sequence[Features] | None,
                       controls: ControlCopies) -> tuple[Conditioning, Conditioning]:
    """The batch's positive and negative: the regions' own stacked, each anchored by its features."""
    controls.new_batch()
    positive = stack([c.positive for c in conds], controls)
    negative = stack([c.negative for c in conds], controls)
    if job.anchor is not None:
        positive, negative = anchor_batch(job.anchor, job.sampler.model, positive, negative, features)
    return positive, negative


def start_noise(job: RefineJob, noise: torch.Tensor, regions: Sequence[Region]) -> torch.Tensor:
    """The scaffold under each region, [N, C, h_s/f, w_s/f]: the exact slice, downscaled (variance-preserving) when resampled."""
    f = job.factor
    slices = [slice_noise(noise, [r.rect], f) for r in regions]
    out = [s if r.one_to_one else downscale_noise(s, (r.sample[1] // f, r.sample[0] // f), seed=[r.own_seed])
           for r, s in zip(regions, slices)]
    return torch.cat(out)


def noise_sites(job: RefineJob, regions: Sequence[Region]) -> list[NoiseSite]:
    f = job.factor
    return [NoiseSite(tuple(v // f for v in r.rect), (r.sample[1] // f, r.sample[0] // f), r.own_seed) for r in regions]


def crop(source: torch.Tensor, regions: Sequence[Region]) -> torch.Tensor:
    """The pixels of equal-sample-size regions of `source` [B, H, W, 3], each resized to its sampled size: [N, h_s, w_s, 3]."""
    return torch.cat([resize(source[r.image:r.image + 1, r.rect[1]:r.rect[1] + r.rect[3], r.rect[0]:r.rect[0] + r.rect[2]],
                             r.sample) for r in regions])


def refine_batch(job: RefineJob, source: torch.Tensor, noise: torch.Tensor, regions: Sequence[Region],
                 conds: Sequence[RegionConditioning], features: Sequence[Features] | None, controls: ControlCopies,
                 progress: Progress) -> list[torch.Tensor]:
    """Refined pixels [h, w, 3] of each region of `source` [B, H, W, 3] (regions that share a batch key), at its rect's
    size (regions sampled at one size may come from rects of different sizes)."""
    pixels = crop(source, regions)
    start = start_noise(job, noise, regions)
    latent = vae_calls.encode(job.vae, pixels)
    if latent.shape[1:] != start.shape[1:]:
        raise ValueError(
            f"The VAE's latent is {list(latent.shape[1:])} but the scaffold's noise slice is {list(start.shape[1:])}: "
            "make the scaffold with the same VAE (LunaNoiseScaffold's vae input)."
        )
    masks = [r.noise_mask for r in regions]
    noise_mask = None if masks[0] is None else torch.stack(masks)[:, None]
    step_noise = RegionNoise(job.sampler.seed, noise_sites(job, regions), latent.shape[1])
    positive, negative = batch_conditioning(job, conds, features, controls)
    samples = sample(job.sampler, start.to(latent), latent, positive, negative, step_noise,
                     noise_mask=noise_mask, callback=progress.callback(len(regions)))
    refined = vae_calls.decode(job.vae, samples).to(source)
    if job.color_match:
        refined = match_low_frequencies(refined, pixels, min(refined.shape[1:3]) / COLOR_SIGMA)
    progress.advance(job.sampler.steps, len(regions))
    return [resize(x[None], (r.rect[2], r.rect[3]))[0].clamp_(0, 1) if not r.one_to_one else x
            for r, x in zip(regions, refined)]


def batch_plan(job: RefineJob, regions: Sequence[Region], conds: Sequence[RegionConditioning],
               members: Sequence[int]) -> list[list[int]]:
    """Batches of `members` that can share a sampler call (sampled size, 1:1 or not, masked or not, conditioning of
    one structure), memory-bounded."""
    model, f = job.sampler.model, job.factor
    channels = model.get_model_object("latent_format").latent_channels

    def key(i: int):
        r = regions[i]
        return r.sample, r.one_to_one, r.noise_mask is None, conds[i].key

    def size(k) -> int:
        (w, h), _, _, _ = k
        if job.anchor is not None and job.anchor.one_region_per_call:
            return 1
        return max_batch_for(model, [1, channels, h // f, w // f], job.max_batch, job.sampler.sampler_name)

    return plan_batches(members, key, size)


def refine(job: RefineJob, canvas: torch.Tensor, noise: torch.Tensor, regions: Sequence[Region],
           phases: Sequence[Sequence[int]] | None = None,
           keep: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """`canvas` [B, H, W, 3] (padded to the grid; not modified) with every region refined and composited, as a new tensor.

    phases None: every region is sampled from `canvas` and enters with its `share` (kernels.compositing); phases given:
    phase by phase, each sampled from the canvas as it stands, blended by `sequential_share`. `noise` is the canvas's
    scaffold [1, C, H/f, W/f]; keep(i, pixels) sees each region's refined pixels [h, w, 3].
    """
    import comfy.model_management as mm

    out = canvas.clone()
    conds = conditioning_for(job, regions, canvas)
    features = anchor_features(job, regions, canvas)
    controls = ControlCopies()
    order = [list(range(len(regions)))] if phases is None else [list(p) for p in phases]
    plans = [batch_plan(job, regions, conds, phase) for phase in order]
    progress = Progress(len(regions) * job.sampler.steps, job.sampler.model)
    per_image: dict[int, list[int]] = {}
    for i, r in enumerate(regions):
        per_image.setdefault(r.image, []).append(i)
    layers = {b: [regions[i].layer for i in members] for b, members in per_image.items()}
    place = {i: members.index(i) for members in per_image.values() for i in members}
    blended: set[int] = set()
    try:
        for plan in plans:
            source = canvas if phases is None else out
            for batch in plan:
                mm.throw_exception_if_processing_interrupted()
                results = run_halving(lambda chunk: refine_batch(
                    job, source, noise, [regions[i] for i in chunk], [conds[i] for i in chunk],
                    None if features is None else [features[i] for i in chunk], controls, progress), batch, len(batch))
                for i, pixels in zip(batch, results):
                    if keep is not None:
                        keep(i, pixels)
                    r = regions[i]
                    image_layers = layers[r.image]
                    target = out[r.image:r.image + 1]
                    if phases is None:
                        add_share_(target, r.rect, pixels[None], share(image_layers, place[i]), base=canvas[r.image:r.image + 1])
                    else:
                        earlier = [place[j] for j in per_image[r.image] if j in blended]
                        lerp_(target, r.rect, pixels[None], sequential_share(image_layers, place[i], earlier))
                blended.update(batch)
    finally:
        controls.release()
    return out
