"""The region work every strategy stands on: sampling batches of regions (pipeline.regions.Region) of one node run.

Every region of a batch goes through the same steps: its pixels cut from the canvas (resized to its sampled size), its
scaffold slice (downscaled with it, variance-preserving), its conditioning cut to it and anchored by its own features,
one VAE encode, one sampler call with its own per-step noise, one VAE decode, the optional colour match. `RegionRun`
holds what a node run computes once (every region's conditioning and anchoring features, the ControlNet copies, the
progress bar); the strategies (pipeline.strategies) decide the order and how results enter the canvas.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kernels.color import match_low_frequencies
from ..kernels.noise import region_seed, slice_noise
from ..kernels.resample import downscale_noise
from ..luna_types import Conditioning
from . import vae as vae_calls
from .anchoring import Features, anchor_batch, encode_features
from .batching import max_batch_for, plan_batches, run_halving
from .conditioning import ControlCopies, Place, for_region, signature, stack
from .job import RefineJob
from .plan import RegionPlan
from .progress import Progress
from .prompts import positive_for
from .regions import Region
from .sampling import sample
from .step_noise import NoiseSite, RegionNoise

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
        """What must be equal for regions to share a sampler call."""
        return signature(self.positive), signature(self.negative)


def place_of(job: RefineJob, region: Region, canvas: torch.Tensor) -> Place:
    """Where `region` sits on the latent of the padded `canvas` [B, H, W, 3]."""
    f = job.factor
    return Place(region.image, *region.cells(f), (canvas.shape[1] // f, canvas.shape[2] // f))


def conditioning_for(job: RefineJob, regions: Sequence[Region], canvas: torch.Tensor) -> list[RegionConditioning]:
    """Each region's own positive and negative."""
    def cut(region: Region) -> RegionConditioning:
        place = place_of(job, region, canvas)
        return RegionConditioning(for_region(positive_for(region.label, job.label_positive, job.positive), place,
                                             "positive"), for_region(job.negative, place, "negative"))

    return [cut(r) for r in regions]


def anchor_features(job: RefineJob, regions: Sequence[Region], canvas: torch.Tensor) -> list[Features] | None:
    """Each region's anchoring features, from its pixels of `canvas` [B, H, W, 3] (None without anchoring)."""
    if job.anchor is None:
        return None
    seeds = [region_seed(job.sampler.seed, r.noise_home) for r in regions]
    return encode_features(job.anchor, job.sampler.model, [r.sample_size for r in regions],
                           lambda i: crop(canvas, [regions[i]]), seeds)


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
    slices = [slice_noise(noise, [r.noise_home], f) for r in regions]
    out = [s if r.one_to_one else downscale_noise(s, r.cells(f)[1], seed=[r.own_seed])
           for r, s in zip(regions, slices)]
    return torch.cat(out)


def check_noise(latent: torch.Tensor, noise: torch.Tensor) -> None:
    """Refuse scaffold noise whose channels or size are not the VAE latent's, naming the fix."""
    if latent.shape[1:] != noise.shape[1:]:
        raise ValueError(f"The VAE's latent is {list(latent.shape[1:])} but the scaffold's noise is "
                         f"{list(noise.shape[1:])}: make the scaffold with the same VAE (LunaNoiseScaffold's vae input).")


def noise_sites(job: RefineJob, regions: Sequence[Region]) -> list[NoiseSite]:
    """Where each region's per-step noise comes from on the canvas's noise field."""
    f = job.factor
    return [NoiseSite(tuple(v // f for v in r.noise_home), r.cells(f)[1], r.own_seed) for r in regions]


def crop(source: torch.Tensor, regions: Sequence[Region]) -> torch.Tensor:
    """The pixels of equal-sample-size regions of `source` [B, H, W, 3], each resized to its sampled size: [N, h_s, w_s, 3]."""
    return torch.cat([resize(source[r.image:r.image + 1, r.rect[1]:r.rect[1] + r.rect[3], r.rect[0]:r.rect[0] + r.rect[2]],
                             r.sample_size) for r in regions])


def refine_batch(job: RefineJob, source: torch.Tensor, noise: torch.Tensor, regions: Sequence[Region],
                 conditioning: tuple[Conditioning, Conditioning], progress: Progress) -> list[torch.Tensor]:
    """Refined pixels [h, w, 3] of each region of `source` [B, H, W, 3] (regions that share a batch key), at its rect's
    size (regions sampled at one size may come from rects of different sizes)."""
    pixels = crop(source, regions)
    start = start_noise(job, noise, regions)
    latent = vae_calls.encode(job.vae, pixels)
    check_noise(latent, start)
    masks = [r.noise_mask for r in regions]
    noise_mask = None if masks[0] is None else torch.stack(masks)[:, None]
    step_noise = RegionNoise(job.sampler.seed, noise_sites(job, regions), latent.shape[1])
    positive, negative = conditioning
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
        return r.sample_size, r.one_to_one, r.noise_mask is None, conds[i].key

    def size(k) -> int:
        (w, h), _, _, _ = k
        if job.anchor is not None and job.anchor.one_region_per_call:
            return 1
        return max_batch_for(model, [1, channels, h // f, w // f], job.max_batch, job.sampler.sampler_name)

    return plan_batches(members, key, size)


class RegionRun:
    """One node run over the regions `members` of a plan: their conditioning and anchoring features (computed once,
    before any sampling; features of `anchored` only, default all), the run's ControlNet copies (released at the end)
    and its progress bar (`steps`: region-steps in all, default every member's). Use as a context manager."""

    def __init__(self, plan: RegionPlan, members: Sequence[int], steps: int | None = None,
                 anchored: Sequence[int] | None = None):
        self.job, self.noise, self.regions = plan.job, plan.noise, plan.regions
        members = list(members)
        anchored = members if anchored is None else list(anchored)
        self.conds = dict(zip(members, conditioning_for(self.job, [self.regions[i] for i in members], plan.canvas)))
        features = anchor_features(self.job, [self.regions[i] for i in anchored], plan.canvas)
        self.features = None if features is None else dict(zip(anchored, features))
        self.controls = ControlCopies()
        self.progress = Progress(len(members) * self.job.sampler.steps if steps is None else steps,
                                 self.job.sampler.model)

    def __enter__(self) -> "RegionRun":
        return self

    def __exit__(self, *exc) -> None:
        self.controls.release()

    def batches(self, members: Sequence[int]) -> list[list[int]]:
        """`members` in batches that can share a sampler call (batch_plan)."""
        regions = [self.regions[i] for i in members]
        plan = batch_plan(self.job, regions, [self.conds[i] for i in members], range(len(members)))
        return [[members[j] for j in batch] for batch in plan]

    def conditioning(self, batch: Sequence[int]) -> tuple[Conditioning, Conditioning]:
        """The batch's positive and negative (batch_conditioning)."""
        features = None if self.features is None else [self.features[i] for i in batch]
        return batch_conditioning(self.job, [self.conds[i] for i in batch], features, self.controls)

    def sample(self, source: torch.Tensor, batch: Sequence[int]) -> list[torch.Tensor]:
        """Refined pixels [h, w, 3] of the batch's regions, cut from `source` [B, H, W, 3]; halved on out-of-memory."""
        def run(chunk: Sequence[int]) -> list[torch.Tensor]:
            return refine_batch(self.job, source, self.noise, [self.regions[i] for i in chunk], self.conditioning(chunk),
                                self.progress)

        return run_halving(run, batch, len(batch))
