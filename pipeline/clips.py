"""The clip strategy: each track sampled as one clip by a video model (5-D latents), so the model keeps it consistent.

A track's regions (one per frame it is in, pipeline.tracks) are cut from their frames, each at its own square and
resized to the track's one sampled size, stacked in time, padded with the last frame to a length the VAE takes whole
(1 + k * its temporal compression; the padding is dropped after decoding, and logged), encoded once, sampled in one
call from the scaffold's time axis under the first frame's noise square (latent frame 0 the scaffold itself, every
later one an independent draw: pipeline.canvas.canvas_noise_frame) with per-step noise per latent frame, decoded,
and each frame composited with its own weight, as the parallel strategy composites. A region without a track is a
clip of one frame, and a track the object leaves for a while is two clips. A clip longer than one call takes in
memory is sampled in windows that overlap by up to CLIP_OVERLAP frames, each from its own latent frames of the same
time axis (indexed by frame, so a window or a clip after a gap takes the latent frames of its own time), cross-faded.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from ..kernels.color import match_low_frequencies
from ..kernels.compositing import axis_weights
from ..kernels.noise import frame_seed, slice_noise
from ..kernels.planning import clip_windows
from ..kernels.resample import downscale_noise
from ..luna_types import Conditioning
from . import vae as vae_calls
from .batching import max_clip_frames
from .canvas import canvas_noise_frame
from .conditioning import SPATIAL_KEYS
from .parallel import Compositor
from .plan import RegionPlan
from .region_sampling import COLOR_SIGMA, RegionRun, check_noise, crop, resize
from .regions import Region
from .sampling import sample
from .step_noise import NoiseSite, RegionNoise
from .strategy import Independent, Strategy, independent_run

CLIP_OVERLAP = 8
"""Frames two windows of a long clip share, cross-faded."""


def clips(plan: RegionPlan, members: Sequence[int]) -> list[list[int]]:
    """`members` as clips of consecutive frames: each track's regions in frame order, split where the object is absent
    from a frame (its frames after the gap are another clip, so no jump reaches the model); every untracked region
    alone."""
    groups: dict[object, list[int]] = {}
    for i in members:
        r = plan.regions[i]
        groups.setdefault(("track", r.track) if r.track is not None else ("alone", i), []).append(i)
    out = []
    for group in groups.values():
        group.sort(key=lambda i: plan.regions[i].image)
        current = [group[0]]
        for i in group[1:]:
            if plan.regions[i].image != plan.regions[current[-1]].image + 1:
                out.append(current)
                current = []
            current.append(i)
        out.append(current)
    return out


class TimeAxis:
    """The scaffold's latent frames under the plan's padded canvas, each drawn once per run
    (pipeline.canvas.canvas_noise_frame)."""

    def __init__(self, plan: RegionPlan):
        self.plan, self.frames = plan, {}

    def frame(self, t: int) -> torch.Tensor:
        if t not in self.frames:
            self.frames[t] = canvas_noise_frame(self.plan.scaffold, self.plan.height, self.plan.width, t)
        return self.frames[t]

    def noise(self, region: Region, frames: int, first: int) -> torch.Tensor:
        """The start noise of a clip [1, C, T', h_s/f, w_s/f]: under the region's noise square, latent frame t from
        frame first + t of the time axis (downscaled, variance-preserving, when the crop is resampled)."""
        f = self.plan.job.factor
        out = []
        for t in range(first, first + frames):
            piece = slice_noise(self.frame(t), [region.noise_home], f)
            out.append(piece if region.one_to_one else
                       downscale_noise(piece, region.cells(f)[1], seed=[frame_seed(region.own_seed, t)]))
        return torch.stack(out, dim=2)


CLIP_KEYS = frozenset({"area", "set_area_to_bounds"})
"""The spatial conditioning a clip can take (cut once, at its first frame): a ControlNet hint, a mask, an inpaint or
reference latent would have to be cut frame by frame and window by window."""


def refuse_per_frame_conditioning(positive: Conditioning, negative: Conditioning) -> None:
    """Refuse, naming the fix, conditioning a clip cannot follow through its frames."""
    found = sorted({key for _, options in positive + negative for key in options if key in SPATIAL_KEYS - CLIP_KEYS})
    if found:
        raise ValueError(f"one clip per track cannot follow a moving crop with conditioning of its own per frame "
                         f"({', '.join(found)}: e.g. a ControlNet): set clip_sampling to frames (each frame sampled with "
                         "its own cut), or disconnect it")


def sample_window(plan: RegionPlan, run: RegionRun, time: TimeAxis, clip: Sequence[int], pixels: torch.Tensor,
                  first: int, counted: int) -> torch.Tensor:
    """One sampler call on frames `pixels` [T, h_s, w_s, 3] of a clip whose first latent frame is `first` of the time
    axis; its refined frames [T, h_s, w_s, 3]. `counted`: how many of them the progress bar counts."""
    job, first_region = plan.job, plan.regions[clip[0]]
    frames = pixels.shape[0]
    length = vae_calls.clip_length(job.vae, frames)
    if length != frames:
        logging.info("[Luna] a clip of %d frames is padded with its last frame to %d, the length the VAE takes whole; "
                     "the padding is dropped after decoding", frames, length)
        pixels = torch.cat([pixels, pixels[-1:].expand(length - frames, -1, -1, -1)])
    latent = vae_calls.encode_clip(job.vae, pixels)
    start = time.noise(first_region, latent.shape[2], first)
    check_noise(latent, start)
    f = job.factor
    home = tuple(v // f for v in first_region.noise_home)
    site = NoiseSite(home, first_region.cells(f)[1], first_region.own_seed, latent.shape[2], first)
    masks = [plan.regions[i].noise_mask for i in clip]
    noise_mask = None if masks[0] is None else torch.stack(masks).amax(dim=0)[None, None, None].expand_as(latent[:, :1])
    positive, negative = run.conditioning(clip[:1])
    refuse_per_frame_conditioning(positive, negative)
    samples = sample(job.sampler, start.to(latent), latent, positive, negative,
                     RegionNoise(job.sampler.seed, [site], latent.shape[1]), noise_mask=noise_mask,
                     callback=run.progress.callback(counted))
    run.progress.advance(job.sampler.steps, counted)
    return vae_calls.decode_clip(job.vae, samples)[:frames].to(plan.canvas)


def sample_clip(plan: RegionPlan, run: RegionRun, time: TimeAxis, clip: Sequence[int]) -> list[torch.Tensor]:
    """Refined pixels [h, w, 3] of each region of one clip (its frames in order), at its rect's size: one sampler call,
    or windows of the frames one call takes in memory (batching.max_clip_frames; halved on out-of-memory),
    overlapping by up to CLIP_OVERLAP frames and cross-faded (kernels.compositing.axis_weights)."""
    import comfy.model_management as mm

    job, regions = plan.job, [plan.regions[i] for i in clip]
    pixels = crop(plan.canvas, regions)
    step = vae_calls.temporal_compression(job.vae)
    channels = job.sampler.model.get_model_object("latent_format").latent_channels
    latent_frames = 1 + -(-(len(regions) - 1) // step)
    fits = max_clip_frames(job.sampler.model, (1, channels, latent_frames, *regions[0].cells(job.factor)[1]))
    origin = regions[0].image
    while True:
        spans = clip_windows(len(regions), 1 + (fits - 1) * step, CLIP_OVERLAP, step)
        refined = torch.zeros_like(pixels)
        counted_up_to = 0
        try:
            for (a, b), weight in zip(spans, axis_weights([(a, b - a) for a, b in spans])):
                part = sample_window(plan, run, time, clip, pixels[a:b], (origin + a) // step,
                                     b - max(a, counted_up_to))
                counted_up_to = b
                refined[a:b] += weight.to(part)[:, None, None, None] * part
            break
        except mm.OOM_EXCEPTION:
            if fits == 1:
                raise
            fits = max(1, fits // 2)
            logging.warning("[Luna] out of memory: sampling the clip in windows of %d latent frames", fits)
            mm.soft_empty_cache()
    if job.color_match:
        refined = match_low_frequencies(refined, pixels, min(refined.shape[1:3]) / COLOR_SIGMA)
    return [x if r.one_to_one else resize(x[None], (r.rect[2], r.rect[3]))[0].clamp_(0, 1)
            for r, x in zip(regions, refined)]


def sample_clips(plan: RegionPlan, members: Sequence[int], on_result: Callable[[int, torch.Tensor], None]) -> None:
    """Every clip among the regions `members`, one sampler call each (anchored by its first frame's features);
    on_result(i, pixels [h, w, 3]) per frame."""
    groups = clips(plan, members)
    time = TimeAxis(plan)
    with RegionRun(plan, members, anchored=[clip[0] for clip in groups]) as run:
        for clip in groups:
            for i, pixels in zip(clip, sample_clip(plan, run, time, clip)):
                on_result(i, pixels)


INDEPENDENT = Independent(sample=sample_clips, compositor=Compositor, units=clips)
CLIPS = Strategy("clips", "each track one clip of a video model, every frame blended with its own mask",
                 independent_run(INDEPENDENT), independent=INDEPENDENT, sources=("detailer",))
