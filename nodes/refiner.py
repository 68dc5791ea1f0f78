"""LunaGlobalRefiner: the whole canvas polished in chess-ordered, batched tiles, each sampled from its 1:1 scaffold slice."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels.masks import blend_, tile_alpha
from ..kernels.noise import slice_noise
from ..kernels.planning import batches, chess_phases, feather_flags, plan_tiles
from ..kernels.refine import RefineJob, refine_batch
from ..luna_types import NOISE_SCAFFOLD, NoiseScaffold
from .common import (CATEGORY, anchoring_inputs, check_scaffold_format, interrupt_point, max_batch_input,
                     progress_bar, sampler_inputs, vision_strength_input)
from .scaffold import scaffold_at


def canvas_noise(scaffold: NoiseScaffold, height: int, width: int) -> torch.Tensor:
    """The scaffold for a canvas of height×width px: itself when the sizes agree, else downscaled to the canvas."""
    f = scaffold.factor
    lh, lw = -(-height // f), -(-width // f)
    if (lh, lw) == scaffold.latent_size:
        return scaffold.noise
    return scaffold_at(scaffold, lh, lw)


def pad_to_grid(image: torch.Tensor, factor: int) -> torch.Tensor:
    """Replicate-pad [B, H, W, C] on the bottom/right up to multiples of factor (no copy when already aligned)."""
    h, w = image.shape[1:3]
    ph, pw = -h % factor, -w % factor
    if ph == 0 and pw == 0:
        return image.clone()
    return F.pad(image.movedim(-1, 1), (0, pw, 0, ph), mode="replicate").movedim(1, -1)


class LunaGlobalRefiner:
    DESCRIPTION = (
        "Polishes the whole canvas: tiles of 1024/1536 px with overlap, processed in a chess pattern (tiles of one "
        "phase never touch) in batches, each sampled from its exact 1:1 slice of the master scaffold, optionally "
        "anchored by its own CLIP-ViT tokens, and blended back with smoothstep feathers."
    )
    CATEGORY = f"{CATEGORY}/Refine"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The refined canvas, same size as the input.",)
    FUNCTION = "refine"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The canvas (e.g. 4K, patched by the detailer or not)."}),
                "master_scaffold": (NOISE_SCAFFOLD, {"tooltip": "From LunaNoiseScaffold, made for this canvas size."}),
                "model": ("MODEL", {"tooltip": "The diffusion model (e.g. from CheckpointLoaderSimple), the one whose VAE made the scaffold's latent format."}),
                "positive": ("CONDITIONING", {"tooltip": "The positive prompt (CLIPTextEncode); applied to every crop/tile."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt (CLIPTextEncode)."}),
                "vae": ("VAE", {"tooltip": "The VAE that encodes the crops/tiles and decodes the result (the checkpoint's own)."}),
                "tile_size": ("INT", {"default": 1024, "min": 64, "max": 4096, "step": 64, "tooltip": "Tile side in pixels: 1024 (SD1.5/SDXL native) or 1536."}),
                "overlap": ("INT", {"default": 128, "min": 0, "max": 1024, "step": 8, "tooltip": "Least overlap of neighbouring tiles in pixels; the seam is feathered across it."}),
                **sampler_inputs(denoise=0.3),
                **vision_strength_input(),
                **max_batch_input(),
            },
            "optional": anchoring_inputs(),
        }

    def refine(self, image, master_scaffold, model, positive, negative, vae, tile_size, overlap, steps, cfg,
               sampler_name, scheduler, denoise, vision_strength, max_batch, clip_vision=None):
        check_scaffold_format(master_scaffold, model, vae)
        job = RefineJob(model, vae, positive, negative, steps, cfg, sampler_name, scheduler, denoise,
                        master_scaffold.seed, clip_vision, vision_strength)
        f = master_scaffold.factor
        height, width = image.shape[1:3]
        noise = canvas_noise(master_scaffold, height, width)
        canvas = pad_to_grid(image, f)
        ch, cw = canvas.shape[1:3]
        tiles = plan_tiles(cw, ch, tile_size, overlap, f)
        phases = chess_phases(tiles)
        edges = feather_flags(tiles, phases)
        groups = [group for phase in phases for group in batches(phase, max_batch)]
        pbar = progress_bar(len(groups) * steps * image.shape[0])
        alphas: dict[tuple, torch.Tensor] = {}
        done = 0
        for b in range(image.shape[0]):
            for group in groups:
                interrupt_point()
                chosen = [tiles[i] for i in group]
                pixels = torch.stack([canvas[b, t.y:t.y + t.height, t.x:t.x + t.width] for t in chosen])
                slices = slice_noise(noise, [(t.x, t.y, t.width, t.height) for t in chosen], f)

                def on_step(step, *_args, offset=done):
                    pbar.update_absolute(offset + step + 1)

                refined = refine_batch(job, pixels, slices, callback=on_step).to(canvas)
                done += steps
                for i, tile_pixels in zip(group, refined):
                    t = tiles[i]
                    key = (t.width, t.height, edges[i])
                    if key not in alphas:
                        alphas[key] = tile_alpha(t.height, t.width, overlap, *edges[i], device=canvas.device)
                    blend_(canvas[b:b + 1], tile_pixels[None], alphas[key], t.x, t.y)
        return (canvas[:, :height, :width].contiguous(),)


NODE_CLASS_MAPPINGS = {"LunaGlobalRefiner": LunaGlobalRefiner}
NODE_DISPLAY_NAME_MAPPINGS = {"LunaGlobalRefiner": "Luna Global Refiner (chess-tiled 4K polish)"}
