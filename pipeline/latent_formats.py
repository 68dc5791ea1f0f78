"""Latent formats: the channels, spatial factor and patch of each model family, read from a MODEL or VAE or named.

The route, the web preview, the scaffold node and the pipeline all read this one table."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LatentSpec:
    """Latent channels and pixels per latent cell of a model family; `patch`: latent cells per side of the patches
    its diffusion model cuts (what the web preview plans with; the nodes read it from the MODEL)."""

    channels: int
    factor: int
    patch: int = 1


LATENT_FORMATS: dict[str, LatentSpec] = {
    "SD1.5 / SDXL (4 ch, ÷8)": LatentSpec(4, 8),
    "Flux.1 / Chroma (16 ch, ÷8)": LatentSpec(16, 8, 2),
    "Flux.2 (128 ch, ÷16)": LatentSpec(128, 16),
    "Z-Image (16 ch, ÷8)": LatentSpec(16, 8, 2),
    "Qwen-Image (16 ch, ÷8)": LatentSpec(16, 8, 2),
    "SD3 / SD3.5 (16 ch, ÷8)": LatentSpec(16, 8, 2),
}


# Names latent formats had in earlier versions, still read from saved workflows and API prompts.
RENAMED_FORMATS = {"SD3 / Flux (16 ch, ÷8)": "Flux.1 / Chroma (16 ch, ÷8)"}


def latent_format_spec(name: str) -> LatentSpec:
    """The LatentSpec of a latent format name (a current one, or one it was renamed from)."""
    return LATENT_FORMATS[RENAMED_FORMATS.get(name, name)]


def vae_latent_spec(vae) -> LatentSpec:
    """Latent channels and spatial factor of a ComfyUI VAE (any factor the VAE has; a video VAE's spatial one)."""
    ratio = vae.downscale_ratio
    factor = ratio if isinstance(ratio, int) else vae.spacial_compression_encode()
    return LatentSpec(int(vae.latent_channels), int(factor))


# Pixels per latent cell of the latent formats that are not ÷8, for hosts whose latent_format does not say
# (0.3.75; 0.28 states spacial_downscale_ratio on each, with these values).
SPATIAL_FACTORS = {"SC_Prior": 42, "SC_B": 4, "Flux2": 16, "LTXV": 32, "Wan22": 16, "HunyuanImage21": 32,
                   "HunyuanVideo15": 16, "ChromaRadiance": 1}


def model_latent_spec(model) -> LatentSpec:
    """Latent channels and spatial factor of a ComfyUI MODEL (its latent_format)."""
    latent_format = model.model.latent_format
    factor = getattr(latent_format, "spacial_downscale_ratio", None)
    if factor is None:
        factor = next((SPATIAL_FACTORS[c.__name__] for c in type(latent_format).__mro__ if c.__name__ in SPATIAL_FACTORS), 8)
    return LatentSpec(int(latent_format.latent_channels), int(factor))


def check_scaffold_format(scaffold, model=None, vae=None) -> None:
    """Raise a clear error when the scaffold's latent format is not the connected MODEL's or VAE's."""
    for what, spec in (("MODEL", model and model_latent_spec(model)), ("VAE", vae and vae_latent_spec(vae))):
        if spec and (scaffold.channels, scaffold.factor) != (spec.channels, spec.factor):
            raise ValueError(
                f"The noise scaffold has {scaffold.channels} latent channels at ÷{scaffold.factor}, but the {what} uses "
                f"{spec.channels} channels at ÷{spec.factor}: connect the same VAE or MODEL to LunaNoiseScaffold "
                "(or pick its latent_format to match)."
            )
