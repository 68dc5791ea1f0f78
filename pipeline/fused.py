"""The fused strategy: one sampler run on the whole canvas latent, every step predicted tile by tile (MultiDiffusion-style).

The canvas latent starts from the scaffold itself. At every step each batch of tiles is predicted by ComfyUI's own
`sampling_function` (CFG, patches, ControlNet of that batch) and the tiles' predictions are averaged into one canvas
prediction with their shares (kernels.compositing), so overlapping tiles see one latent and never drift apart.
After Bar-Tal et al., "MultiDiffusion: Fusing Diffusion Paths for Controlled Image Generation" (ICML 2023).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.samplers
import torch

from ..kernels.compositing import Layer, add_share_, share
from .sampling import Conditioning


@dataclass(frozen=True)
class TileBatch:
    """Tiles predicted together: their latent rects (x, y, w, h in cells) and the batch's positive and negative."""

    rects: tuple[tuple[int, int, int, int], ...]
    positive: Conditioning
    negative: Conditioning


class FusedGuider(comfy.samplers.CFGGuider):
    """A ComfyUI guider whose prediction of the canvas latent [1, C, H, W] is the shared average of its tiles' predictions."""

    def __init__(self, model_patcher: Any, cfg: float, batches: Sequence[TileBatch], layers: Sequence[Layer]):
        super().__init__(model_patcher)
        self.model_options = comfy.model_patcher.create_model_options_clone(model_patcher.model_options)
        self.set_cfg(cfg)
        self.batches = list(batches)
        self.layers = list(layers)
        index = {layer.rect: i for i, layer in enumerate(self.layers)}
        self.shares = [[share(self.layers, index[rect]) for rect in b.rects] for b in self.batches]
        self.inner_set_conds({f"{kind}:{i}": getattr(b, kind) for i, b in enumerate(self.batches)
                              for kind in ("positive", "negative")})
        largest = max(self.batches, key=lambda b: len(b.rects) * b.rects[0][2] * b.rects[0][3])
        self.batch_shape = (len(largest.rects), model_patcher.get_model_object("latent_format").latent_channels,
                            largest.rects[0][3], largest.rects[0][2])
        comfy.patcher_extension.add_wrapper_with_key(
            comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, "luna_fused", self._load_for_tile_batches,
            self.model_options, is_model_options=True)

    def _load_for_tile_batches(self, executor, model, noise_shape, conds, *args, **kwargs):
        """Load the models for the largest tile batch, not for the whole canvas latent."""
        return executor(model, self.batch_shape, conds, *args, **kwargs)

    def inner_sample(self, noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed,
                     latent_shapes=None):
        if latent_image is not None and torch.count_nonzero(latent_image) > 0:
            latent_image = self.inner_model.process_latent_in(latent_image)
        for i, batch in enumerate(self.batches):
            pair = {"positive": self.conds[f"positive:{i}"], "negative": self.conds[f"negative:{i}"]}
            processed = comfy.samplers.process_conds(self.inner_model, self._cut(noise, batch), pair, device,
                                                     self._cut(latent_image, batch), None, seed)
            self.conds[f"positive:{i}"], self.conds[f"negative:{i}"] = processed["positive"], processed["negative"]

        model_options = comfy.model_patcher.create_model_options_clone(self.model_options)
        model_options.setdefault("transformer_options", {})["sample_sigmas"] = sigmas
        extra_args = {"model_options": model_options, "seed": seed}
        executor = comfy.patcher_extension.WrapperExecutor.new_class_executor(
            sampler.sample, sampler,
            comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, model_options,
                                                     is_model_options=True))
        samples = executor.execute(self, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)
        return self.inner_model.process_latent_out(samples.to(torch.float32))

    @staticmethod
    def _cut(canvas: torch.Tensor, batch: TileBatch) -> torch.Tensor:
        return torch.cat([canvas[..., y:y + h, x:x + w] for x, y, w, h in batch.rects])

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        if x.shape[0] != 1:
            raise ValueError(f"the fused sampler takes one canvas at a time, got a batch of {x.shape[0]}")
        out = torch.zeros_like(x)
        for i, (batch, shares) in enumerate(zip(self.batches, self.shares)):
            comfy.model_management.throw_exception_if_processing_interrupted()
            tiles = self._cut(x, batch)
            denoised = comfy.samplers.sampling_function(
                self.inner_model, tiles, timestep.expand(tiles.shape[0]), self.conds[f"negative:{i}"],
                self.conds[f"positive:{i}"], self.cfg, model_options=model_options, seed=seed)
            for rect, value, weight in zip(batch.rects, denoised, shares):
                add_share_(out, rect, value[None], weight, channels_last=False)
        return out


def refine_fused(job: "RefineJob", canvas: torch.Tensor, noise: torch.Tensor, regions: Sequence["Region"],
                 layers: Sequence[Layer]) -> torch.Tensor:
    """`canvas` [B, H, W, 3] (padded to the grid; not modified) refined by the fused sampler.

    regions: the tiles of each image (the same grid for every image); layers: the grid's layers in latent cells.
    """
    from . import vae as vae_calls
    from .progress import Progress
    from ..kernels.color import match_low_frequencies
    from .refine import COLOR_SIGMA, batch_conditioning, batch_plan, conditioning_for, crop
    from .sampling import from_model, to_model
    from .step_noise import NoiseSite, RegionNoise, region_sampler

    settings = job.sampler
    out = torch.empty_like(canvas)
    progress = Progress(canvas.shape[0] * settings.steps, settings.model)
    for b in range(canvas.shape[0]):
        tiles = [r for r in regions if r.image == b]
        conds = conditioning_for(job, tiles, canvas)
        plan = batch_plan(job, tiles, conds, range(len(tiles)))
        batches = []
        for batch in plan:
            members = [tiles[i] for i in batch]
            positive, negative = batch_conditioning(job, members, [conds[i] for i in batch], crop(canvas, members))
            batches.append(TileBatch(tuple(layers[i].rect for i in batch), positive, negative))
        latent = vae_calls.encode_canvas(job.vae, canvas[b:b + 1])
        start = noise.to(latent)
        if start.shape != latent.shape:
            raise ValueError(f"The VAE's latent is {list(latent.shape[1:])} but the scaffold is {list(start.shape[1:])}: "
                             "make the scaffold with the same VAE (LunaNoiseScaffold's vae input).")
        height, width = latent.shape[-2:]
        step_noise = RegionNoise(settings.seed, [NoiseSite((0, 0, width, height), (height, width))], latent.shape[1],
                                 latent.device, latent.dtype)
        guider = FusedGuider(settings.model, settings.cfg, batches, layers)
        with torch.no_grad():
            samples = from_model(guider.sample(to_model(settings.model, start), to_model(settings.model, latent),
                                               region_sampler(settings.sampler_name, step_noise), settings.sigmas(),
                                               callback=progress.callback(settings.steps), disable_pbar=True,
                                               seed=settings.seed))
        out[b:b + 1] = vae_calls.decode_canvas(job.vae, samples.to(comfy.model_management.intermediate_device())).to(out)
        if job.color_match:
            side = min(min(r.rect[2], r.rect[3]) for r in tiles)
            out[b:b + 1] = match_low_frequencies(out[b:b + 1], canvas[b:b + 1], side / COLOR_SIGMA)
    return out
