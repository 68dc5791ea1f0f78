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

from ..kernels.color import match_low_frequencies
from ..kernels.compositing import Layer, add_share_, share, tile_layers
from ..luna_types import Conditioning
from . import vae as vae_calls
from .job import RefineJob
from .plan import RegionPlan
from .progress import Progress
from .region_sampling import COLOR_SIGMA, RegionRun, check_noise
from .sampling import from_model, to_model
from .step_noise import NoiseSite, RegionNoise, region_sampler
from .strategy import Keep, Strategy


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
        self._moved: dict = {}
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

    def _shares_on(self, like: torch.Tensor) -> list[list[torch.Tensor]]:
        """The tiles' shares on the sampler's device and dtype, moved there once per run."""
        key = (like.device, like.dtype)
        if key not in self._moved:
            self._moved = {key: [[w.to(like.device, like.dtype) for w in shares] for shares in self.shares]}
        return self._moved[key]

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        """The canvas's prediction: each tile batch through ComfyUI's sampling_function, averaged with the shares.

        Post-CFG hooks the sampler itself installed (CFG++ keeps the uncond prediction of the step) are called once,
        on the canvas: their inputs (prediction, cond and uncond predictions) assembled with the same shares."""
        if x.shape[0] != 1:
            raise ValueError(f"the fused sampler takes one canvas at a time, got a batch of {x.shape[0]}")
        own = self.model_options.get("sampler_post_cfg_function", [])
        hooks = [fn for fn in model_options.get("sampler_post_cfg_function", []) if fn not in own]
        parts = {"denoised": torch.zeros_like(x)}
        if hooks:
            parts.update(uncond_denoised=torch.zeros_like(x), cond_denoised=torch.zeros_like(x))
        captured: list[dict] = []

        def capture(args: dict) -> torch.Tensor:
            captured.append({k: args[k] for k in ("uncond_denoised", "cond_denoised")})
            return args["denoised"]

        tile_options = dict(model_options)
        if hooks:
            tile_options["sampler_post_cfg_function"] = [*own, capture]
        for i, (batch, shares) in enumerate(zip(self.batches, self._shares_on(x))):
            comfy.model_management.throw_exception_if_processing_interrupted()
            tiles = self._cut(x, batch)
            values = {"denoised": comfy.samplers.sampling_function(
                self.inner_model, tiles, timestep.expand(tiles.shape[0]), self.conds[f"negative:{i}"],
                self.conds[f"positive:{i}"], self.cfg, model_options=tile_options, seed=seed)}
            if hooks:
                values.update(captured.pop())
            for name, canvas in parts.items():
                for rect, value, weight in zip(batch.rects, values[name], shares):
                    add_share_(canvas, rect, value[None], weight, channels_last=False)
        denoised = parts["denoised"]
        for fn in hooks:
            denoised = fn({"denoised": denoised, "cond": None, "uncond": None, "cond_scale": self.cfg,
                           "model": self.inner_model, "uncond_denoised": parts["uncond_denoised"],
                           "cond_denoised": parts["cond_denoised"], "sigma": timestep, "model_options": model_options,
                           "input": x})
        return denoised


def refine_fused(plan: RegionPlan, keep: Keep | None = None) -> torch.Tensor:
    """The plan's canvas [B, H, W, 3] (not modified) refined by the fused sampler, as a new tensor; the plan's tile grid
    is the same for every image (no region is sampled on its own, so `keep` sees nothing)."""
    if not plan.tiles:
        raise ValueError("the fused strategy samples one canvas latent cut by a tile grid: it needs a tiler's plan, "
                         "not crops")
    job, canvas, regions = plan.job, plan.canvas, plan.regions
    layers = tile_layers(plan.tiles, job.factor)
    out = torch.empty_like(canvas)
    with RegionRun(plan, range(len(regions)), steps=canvas.shape[0] * job.sampler.steps) as run:
        for b in range(canvas.shape[0]):
            members = [i for i, r in enumerate(regions) if r.image == b]
            batches = []
            for batch in run.batches(members):
                positive, negative = run.conditioning(batch)
                batches.append(TileBatch(tuple(layers[regions[i].tile].rect for i in batch), positive, negative))
            out[b:b + 1] = _sample_canvas(job, canvas[b:b + 1], plan.noise, batches, layers, run.progress)
            if job.color_match:
                side = min(min(regions[i].rect[2], regions[i].rect[3]) for i in members)
                out[b:b + 1] = match_low_frequencies(out[b:b + 1], canvas[b:b + 1], side / COLOR_SIGMA)
    return out


def _sample_canvas(job: RefineJob, image: torch.Tensor, noise: torch.Tensor, batches: Sequence[TileBatch],
                   layers: Sequence[Layer], progress: Progress) -> torch.Tensor:
    """One canvas image [1, H, W, 3] through the fused sampler: encoded whole, sampled, decoded whole."""
    settings = job.sampler
    latent = vae_calls.encode_canvas(job.vae, image)
    start = noise.to(latent)
    check_noise(latent, start)
    height, width = latent.shape[-2:]
    step_noise = RegionNoise(settings.seed, [NoiseSite((0, 0, width, height), (height, width))], latent.shape[1])
    guider = FusedGuider(settings.model, settings.cfg, batches, layers)
    with torch.no_grad():
        samples = from_model(guider.sample(to_model(settings.model, start), to_model(settings.model, latent),
                                           region_sampler(settings.sampler_name, step_noise), settings.sigmas(),
                                           callback=progress.callback(), disable_pbar=True, seed=settings.seed))
    progress.advance(settings.steps)
    return vae_calls.decode_canvas(job.vae, samples.to(comfy.model_management.intermediate_device())).to(image)


FUSED = Strategy(
    "fused", "one run on the canvas latent, the tiles' predictions averaged every step", refine_fused)
