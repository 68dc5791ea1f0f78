"""LunaNoiseScaffold (the master noise map), LunaScaffoldNoise (a NOISE for SamplerCustomAdvanced), and a preview."""
from __future__ import annotations

import torch

from ..kernels.noise import make_scaffold
from ..kernels.resample import downscale_noise
from ..luna_types import NOISE_SCAFFOLD, NoiseScaffold
from .common import CATEGORY, LATENT_FORMATS, model_latent_spec, vae_latent_spec


class LunaNoiseScaffold:
    DESCRIPTION = (
        "The master noise scaffold: one static noise map for the whole canvas, made once from a seed. "
        "Every Luna stage (1K draft, 1.5K pass, detailer crops, global tiles) takes its noise from it, "
        "so all stages share one noise 'DNA'."
    )
    CATEGORY = f"{CATEGORY}/Noise"
    RETURN_TYPES = (NOISE_SCAFFOLD,)
    RETURN_NAMES = ("master_scaffold",)
    OUTPUT_TOOLTIPS = ("The master noise map of the canvas (latent space, float32, CPU).",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "width": ("INT", {"default": 4096, "min": 64, "max": 16384, "step": 8,
                                  "tooltip": "Canvas width in pixels (the 4K canvas the detailer and refiner work on)."}),
                "height": ("INT", {"default": 4096, "min": 64, "max": 16384, "step": 8,
                                   "tooltip": "Canvas height in pixels."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Seed of the scaffold; the same seed gives the same noise on every device."}),
                "latent_format": (list(LATENT_FORMATS), {"tooltip": "Latent channels and ÷factor, used when no VAE or MODEL is connected."}),
            },
            "optional": {
                "vae": ("VAE", {"tooltip": "Take the latent format from this VAE (overrides latent_format)."}),
                "model": ("MODEL", {"tooltip": "Take the latent format from this MODEL (overrides latent_format)."}),
            },
        }

    def build(self, width: int, height: int, seed: int, latent_format: str, vae=None, model=None):
        spec = vae_latent_spec(vae) if vae is not None else model_latent_spec(model) if model is not None else LATENT_FORMATS[latent_format]
        noise = make_scaffold(width, height, seed, channels=spec.channels, factor=spec.factor)
        return (NoiseScaffold(noise=noise, width=width, height=height, factor=spec.factor, seed=seed),)


class ScaffoldNoise:
    """A ComfyUI NOISE whose noise is the scaffold resampled (variance-preserving) to the sampled latent's size."""

    def __init__(self, scaffold: NoiseScaffold):
        self.scaffold = scaffold
        self.seed = scaffold.seed

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        latent = input_latent["samples"]
        if latent.ndim != 4:
            raise ValueError(f"LunaScaffoldNoise needs an image latent [B, C, H, W], got shape {list(latent.shape)}.")
        batch, channels, height, width = latent.shape
        if channels != self.scaffold.channels:
            raise ValueError(
                f"The latent has {channels} channels but the scaffold {self.scaffold.channels}: "
                "connect the model's VAE to LunaNoiseScaffold."
            )
        noise = scaffold_at(self.scaffold, height, width)
        return noise.expand(batch, -1, -1, -1).to(dtype=latent.dtype).contiguous()


def scaffold_at(scaffold: NoiseScaffold, height: int, width: int) -> torch.Tensor:
    """The scaffold downscaled to a latent of (height, width) cells: [1, C, height, width]."""
    sh, sw = scaffold.latent_size
    if height > sh or width > sw:
        raise ValueError(
            f"The latent ({width * scaffold.factor}×{height * scaffold.factor} px) is larger than the scaffold "
            f"({scaffold.width}×{scaffold.height} px); noise can only be downscaled: make the scaffold at least that large."
        )
    if abs(height * sw - width * sh) > max(sh, sw):
        raise ValueError(
            f"The latent's aspect ratio ({width}:{height}) differs from the scaffold's ({sw}:{sh}); "
            "make the draft with the canvas's aspect ratio or a scaffold of the draft's."
        )
    return downscale_noise(scaffold.noise, (height, width), seed=scaffold.seed)


class LunaScaffoldNoise:
    DESCRIPTION = (
        "A NOISE for SamplerCustomAdvanced taken from the master scaffold, downscaled with variance-preserving "
        "area resampling to the latent being sampled (the 1K draft, the 1.5K smoothing pass)."
    )
    CATEGORY = f"{CATEGORY}/Noise"
    RETURN_TYPES = ("NOISE",)
    OUTPUT_TOOLTIPS = ("Noise for SamplerCustomAdvanced; every image of a batch gets the same scaffold noise.",)
    FUNCTION = "noise"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"master_scaffold": (NOISE_SCAFFOLD, {"tooltip": "From LunaNoiseScaffold."})}}

    def noise(self, master_scaffold: NoiseScaffold):
        return (ScaffoldNoise(master_scaffold),)


class LunaScaffoldPreview:
    DESCRIPTION = "Shows the first three latent channels of the scaffold as an image (mid-grey is 0, ±2σ saturates)."
    CATEGORY = f"{CATEGORY}/Noise"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "preview"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"master_scaffold": (NOISE_SCAFFOLD, {"tooltip": "From LunaNoiseScaffold."})}}

    def preview(self, master_scaffold: NoiseScaffold):
        rgb = master_scaffold.noise[0, :3]
        if rgb.shape[0] < 3:
            rgb = rgb[:1].expand(3, -1, -1)
        return ((rgb.permute(1, 2, 0) * 0.25 + 0.5).clamp(0, 1).unsqueeze(0).contiguous(),)


NODE_CLASS_MAPPINGS = {
    "LunaNoiseScaffold": LunaNoiseScaffold,
    "LunaScaffoldNoise": LunaScaffoldNoise,
    "LunaScaffoldPreview": LunaScaffoldPreview,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LunaNoiseScaffold": "Luna Noise Scaffold (master 4K noise)",
    "LunaScaffoldNoise": "Luna Scaffold Noise (for SamplerCustomAdvanced)",
    "LunaScaffoldPreview": "Luna Scaffold Preview",
}
