"""Every sampler's extra noise, per region: the canvas noise field under 1:1 regions, a draw of its own for resampled ones.

ComfyUI's samplers seed their per-step noise (ancestral and SDE steps, `ddim`'s masked re-noise) from one seed per
call, so item j of every batch would get the same noise. Here call n of a sampler's `noise_sampler` gets stream n of
the field (`kernels.noise.field_noise`), the SDE samplers get Brownian trees over the field's blocks, and the masked
re-noise gets its own stream: regions at different places get different noise, overlapping regions the same noise
where they overlap, and no batching changes any of it.
"""
from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..kernels.noise import FIELD_BLOCK, Box, _mix, field_noise, frame_seed, own_noise

RENOISE_STREAM = 1 << 40
BROWNIAN_STREAM = 1 << 41

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NoiseSite:
    """Where a region's noise comes from: latent `box` (x, y, w, h) of the canvas field, sampled at `size` (h, w) cells,
    over `frames` latent frames from `first_frame` on (a clip of a video model, or a window of one: latent frame t
    draws from the field's stream of its own).

    size == the box's (h, w): the field itself (1:1); otherwise the region draws its own, from `own_seed`.
    """

    box: Box
    size: tuple[int, int]
    own_seed: int = 0
    frames: int = 1
    first_frame: int = 0

    @property
    def one_to_one(self) -> bool:
        return self.size == (self.box[3], self.box[2])


class RegionNoise:
    """The per-step noise of a batch of regions: [N, C, h, w] float32 per stream, drawn on the CPU (the same values on
    every device); the samplers below hand it over on their `x`'s device and dtype."""

    def __init__(self, seed: int, sites: Sequence[NoiseSite], channels: int):
        if len({(s.size, s.frames, s.first_frame) for s in sites}) != 1:
            raise ValueError("one batch of regions has one sampled size and one span of latent frames, got "
                             f"{sorted({(s.size, s.frames, s.first_frame) for s in sites})}")
        self.seed, self.sites, self.channels = seed, list(sites), channels
        self.frames, self.first_frame = self.sites[0].frames, self.sites[0].first_frame

    def draw(self, stream: int) -> torch.Tensor:
        """Stream `stream` of every region, stacked: [N, C, h, w], or [N, C, T, h, w] for clips."""
        if self.frames == 1 and self.first_frame == 0:
            return self._draw(stream)
        times = range(self.first_frame, self.first_frame + self.frames)
        return torch.stack([self._draw(frame_seed(stream, t)) for t in times], dim=2)

    def _draw(self, stream: int) -> torch.Tensor:
        shared = [i for i, s in enumerate(self.sites) if s.one_to_one]
        out = [None] * len(self.sites)
        if shared:
            for i, noise in zip(shared, field_noise(self.seed, stream, [self.sites[i].box for i in shared], self.channels)):
                out[i] = noise
        for i, site in enumerate(self.sites):
            if out[i] is None:
                out[i] = own_noise(site.own_seed, stream, (self.channels, *site.size))
        return torch.stack(out)

    def plain(self) -> NoiseSampler:
        """A noise_sampler whose n-th call returns stream n."""
        calls = itertools.count(1)
        return lambda sigma, sigma_next: self.draw(next(calls))

    def brownian(self, sigmas: torch.Tensor) -> NoiseSampler:
        """A noise_sampler of Brownian increments (as ComfyUI's BrownianTreeNoiseSampler) over the sigmas' range, per field block."""
        from comfy.k_diffusion.sampling import BrownianTreeNoiseSampler

        positive = sigmas[sigmas > 0]
        low, high = float(positive.min()), float(sigmas.max())
        trees: dict[tuple, BrownianTreeNoiseSampler] = {}

        def tree(key: tuple, shape: tuple[int, ...], seed: int) -> BrownianTreeNoiseSampler:
            if key not in trees:
                trees[key] = BrownianTreeNoiseSampler(torch.zeros(shape), low, high, seed=seed, cpu=True)
            return trees[key]

        def frame(sigma: torch.Tensor, sigma_next: torch.Tensor, t: int) -> torch.Tensor:
            stream = frame_seed(BROWNIAN_STREAM, t)
            out = []
            for site in self.sites:
                if not site.one_to_one:
                    own = tree(("own", site.own_seed, t), (1, self.channels, *site.size), _mix(site.own_seed, stream))
                    out.append(own(sigma, sigma_next)[0])
                    continue
                x, y, w, h = site.box
                rows = range(y // FIELD_BLOCK, -(-(y + h) // FIELD_BLOCK))
                cols = range(x // FIELD_BLOCK, -(-(x + w) // FIELD_BLOCK))
                grid = torch.cat([torch.cat([
                    tree(("field", r, c, t), (1, self.channels, FIELD_BLOCK, FIELD_BLOCK),
                         _mix(self.seed, stream, r, c))(sigma, sigma_next)[0]
                    for c in cols], dim=2) for r in rows], dim=1)
                oy, ox = y - rows[0] * FIELD_BLOCK, x - cols[0] * FIELD_BLOCK
                out.append(grid[:, oy:oy + h, ox:ox + w])
            return torch.stack(out)

        def sample(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
            sigma, sigma_next = sigma.cpu(), sigma_next.cpu()
            if self.frames == 1 and self.first_frame == 0:
                return frame(sigma, sigma_next, 0)
            times = range(self.first_frame, self.first_frame + self.frames)
            return torch.stack([frame(sigma, sigma_next, t) for t in times], dim=2)

        return sample


def _calls_brownian(function: Callable, depth: int = 3) -> bool:
    """Whether a k-diffusion sampler defaults to a Brownian-tree noise sampler (itself, or the sample_* it delegates to)."""
    import comfy.k_diffusion.sampling as k_sampling

    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    if "BrownianTreeNoiseSampler" in source:
        return True
    called = {getattr(k_sampling, name, None) for name in re.findall(r"\b(sample_\w+)\(", source)}
    return depth > 0 and any(f is not None and f is not function and _calls_brownian(f, depth - 1) for f in called)


@dataclass(frozen=True)
class NoiseUse:
    """The extra noise ComfyUI's sampler draws: per step through a noise_sampler (`brownian`: a Brownian tree's
    increments), and the masked re-noise of its inpaint options."""

    per_step: bool
    brownian: bool
    renoise: bool


def noise_use(name: str) -> NoiseUse:
    """How ComfyUI's sampler `name` (a KSAMPLER) draws extra noise."""
    import comfy.samplers

    base = comfy.samplers.sampler_object(name)
    function = base.sampler_function
    per_step = "noise_sampler" in inspect.signature(function).parameters
    return NoiseUse(per_step, per_step and _calls_brownian(function), bool(base.inpaint_options.get("random", False)))


def region_sampler(name: str, noise: RegionNoise):
    """ComfyUI's sampler `name` (a KSAMPLER) with its per-step noise and masked re-noise taken from `noise`."""
    import comfy.samplers

    base = comfy.samplers.sampler_object(name)
    function = base.sampler_function
    use = noise_use(name)

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        if use.renoise:
            model.noise = noise.draw(RENOISE_STREAM).to(x).reshape(x.shape)
        if use.per_step and options.get("noise_sampler") is None:
            draws = noise.brownian(sigmas) if use.brownian else noise.plain()
            options["noise_sampler"] = lambda sigma, sigma_next: draws(sigma, sigma_next).to(x).reshape(x.shape)
        return function(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **options)

    return comfy.samplers.KSAMPLER(sample, extra_options=dict(base.extra_options), inpaint_options={})
