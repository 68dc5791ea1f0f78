"""LunaNoiseScaffold (the master noise map), LunaScaffoldNoise (a NOISE for SamplerCustomAdvanced), and a preview."""
from __future__ import annotations


from ..kernels.noise import make_scaffold
from ..luna_types import NOISE_SCAFFOLD, NoiseScaffold
from ..pipeline.scaffold_noise import ScaffoldNoise
from ..pipeline.latent_formats import (LATENT_FORMATS, RENAMED_FORMATS, latent_format_spec, model_latent_spec,
                                      vae_latent_spec)
from .common import CATEGORY


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
                                  "tooltip": ("Canvas width in pixels (the 4K canvas the detailer and refiner "
                                              "work on).")}),
                "height": ("INT", {"default": 4096, "min": 64, "max": 16384, "step": 8,
                                   "tooltip": "Canvas height in pixels."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": ("Seed of the scaffold; the same seed gives the same noise on every "
                                             "device.")}),
                "latent_format": (list(LATENT_FORMATS), {"tooltip": (
                    "Latent channels and ÷factor, used when no VAE or MODEL is connected.")}),
            },
            "optional": {
                "vae": ("VAE", {"tooltip": "Take the latent format from this VAE (overrides latent_format)."}),
                "model": ("MODEL", {"tooltip": "Take the latent format from this MODEL (overrides latent_format)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, latent_format: str):
        if latent_format in LATENT_FORMATS or latent_format in RENAMED_FORMATS:
            return True
        return f"latent_format {latent_format!r} is not one of: {', '.join(LATENT_FORMATS)}"

    def build(self, width: int, height: int, seed: int, latent_format: str, vae=None, model=None):
        spec = (vae_latent_spec(vae) if vae is not None else model_latent_spec(model) if model is not None
                else latent_format_spec(latent_format))
        noise = make_scaffold(width, height, seed, channels=spec.channels, factor=spec.factor)
        return (NoiseScaffold(noise=noise, width=width, height=height, factor=spec.factor, seed=seed),)


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
