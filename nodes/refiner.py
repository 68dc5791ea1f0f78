"""LunaGlobalRefiner: the whole canvas polished in overlapping tiles, each from its 1:1 slice of the master scaffold."""
from __future__ import annotations

from ..kernels.planning import FIT_BAND, TILE_FITS
from ..luna_types import NOISE_SCAFFOLD, SHARD_PLAN
from ..pipeline.anchoring import resolve
from ..pipeline.job import RefineJob
from ..pipeline.latent_formats import check_scaffold_format
from ..pipeline.sampling import SamplerSettings
from ..pipeline.shards import Shard, run
from ..pipeline.strategies import offered, strategy_named
from ..pipeline.tiles import TileSettings, tile_plan
from ..validation import one_of
from .common import (CATEGORY, COLOR_MATCHES, anchoring_inputs, color_match_input, max_batch_input, sampler_inputs, shard_inputs,
                     vision_strength_input)

DEFAULT_TILING = "parallel"


class LunaGlobalRefiner:
    DESCRIPTION = (
        "Polishes the whole canvas in overlapping tiles of 1024/1536 px, each sampled from its exact 1:1 slice of the "
        "master scaffold, batched, each anchored by its own image when a CLIP-ViT is connected. The tiling input "
        "chooses how tiles agree: parallel (default), fused or chess."
    )
    CATEGORY = f"{CATEGORY}/Refine"
    RETURN_TYPES = ("IMAGE", SHARD_PLAN)
    RETURN_NAMES = ("image", "shard_plan")
    OUTPUT_TOOLTIPS = ("The refined canvas, same size as the input (with shard_count > 1: this shard's refined tiles, "
                       "packed for DistributedCollector).",
                       "With shard_count > 1: the plan for Luna Shard Merge (connect the master's).")
    FUNCTION = "refine"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The canvas (e.g. 4K, patched by the detailer or not)."}),
                "master_scaffold": (NOISE_SCAFFOLD, {"tooltip": "From LunaNoiseScaffold, made for this canvas size."}),
                "model": ("MODEL", {"tooltip": ("The diffusion model (e.g. from CheckpointLoaderSimple), the one whose "
                                                "VAE made the scaffold's latent format.")}),
                "positive": ("CONDITIONING",
                             {"tooltip": "The positive prompt (CLIPTextEncode); applied to every tile."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt (CLIPTextEncode)."}),
                "vae": ("VAE", {"tooltip": ("The VAE that encodes the tiles and decodes the result (the checkpoint's "
                                            "own).")}),
                "tile_size": ("INT", {"default": 1024, "min": 64, "max": 4096, "step": 64, "tooltip": (
                    "Tile side in pixels: 1024 (SD1.5/SDXL native) or 1536; with tile_fit 'fit' tiles are sized near "
                    "it to fit the canvas.")}),
                "overlap": ("INT", {"default": 128, "min": 0, "max": 1024, "step": 8, "tooltip": (
                    "Least overlap of neighbouring tiles in pixels; the tiles are blended by smoothstep ramps across "
                    "each whole overlap.")}),
                **sampler_inputs(denoise=0.3),
                **vision_strength_input(),
                **max_batch_input(),
            },
            "optional": {
                "tile_fit": (list(TILE_FITS), {"default": "fit", "tooltip": (
                    f"fit: per axis the fewest tiles, each {FIT_BAND[0]:g}-{FIT_BAND[1]:g}x tile_size, so overlaps "
                    "stay near `overlap`. exact: every tile tile_size, overlaps grow.")}),
                "tiling": (list(offered("refiner")), {"default": DEFAULT_TILING, "tooltip": (
                    f"How the tiles agree ({DEFAULT_TILING} by default; more in the node's help). "
                    + " ".join(f"{s.name}: {s.description}." for s in offered("refiner").values()))}),
                **color_match_input(),
                **anchoring_inputs(),
                **shard_inputs("tiles", needs=" (parallel tiling only)"),
            },
        }

    def refine(self, image, master_scaffold, model, positive, negative, vae, tile_size, overlap, steps, cfg,
               sampler_name, scheduler, denoise, vision_strength, max_batch, tile_fit="fit", tiling=DEFAULT_TILING,
               color_match="off", anchoring="auto", clip_vision=None, style_model=None, shard_index=0, shard_count=1):
        shard = Shard(shard_index, shard_count)
        check_scaffold_format(master_scaffold, model, vae)
        sampler = SamplerSettings(model, steps, cfg, sampler_name, scheduler, denoise, master_scaffold.seed)
        job = RefineJob(sampler=sampler, vae=vae, positive=positive, negative=negative, factor=master_scaffold.factor,
                        max_batch=max_batch,
                        anchor=resolve(anchoring, model, clip_vision, style_model, vision_strength),
                        color_match=one_of("color_match", color_match, COLOR_MATCHES) == "low-frequency")
        strategy = strategy_named(tiling)
        return run(tile_plan(job, image, master_scaffold, TileSettings(tile_size, overlap, tile_fit)), strategy, shard)


NODE_CLASS_MAPPINGS = {"LunaGlobalRefiner": LunaGlobalRefiner}
NODE_DISPLAY_NAME_MAPPINGS = {"LunaGlobalRefiner": "Luna Global Refiner (tiled 4K polish)"}
