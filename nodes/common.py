"""What the Luna nodes share: categories, the latent format of a MODEL/VAE, progress and interrupts."""
from __future__ import annotations

from dataclasses import dataclass

CATEGORY = "Luna"


@dataclass(frozen=True)
class LatentSpec:
    """Latent channels and pixels per latent cell of a model family."""

    channels: int
    factor: int


LATENT_FORMATS: dict[str, LatentSpec] = {
    "SD1.5 / SDXL (4 ch, ÷8)": LatentSpec(4, 8),
    "SD3 / Flux (16 ch, ÷8)": LatentSpec(16, 8),
}


def vae_latent_spec(vae) -> LatentSpec:
    """Latent channels and spatial factor of a ComfyUI VAE."""
    ratio = vae.downscale_ratio
    factor = ratio if isinstance(ratio, int) else getattr(vae, "spacial_compression_encode", lambda: 8)()
    return LatentSpec(int(vae.latent_channels), int(factor))


def model_latent_spec(model) -> LatentSpec:
    """Latent channels and spatial factor of a ComfyUI MODEL (its latent_format)."""
    latent_format = model.model.latent_format
    return LatentSpec(int(latent_format.latent_channels), int(getattr(latent_format, "spacial_downscale_ratio", 8)))


def check_scaffold_format(scaffold, model=None, vae=None) -> None:
    """Raise a clear error when the scaffold's latent format is not the connected MODEL's or VAE's."""
    for what, spec in (("MODEL", model and model_latent_spec(model)), ("VAE", vae and vae_latent_spec(vae))):
        if spec and (scaffold.channels, scaffold.factor) != (spec.channels, spec.factor):
            raise ValueError(
                f"The noise scaffold has {scaffold.channels} latent channels at ÷{scaffold.factor}, but the {what} uses "
                f"{spec.channels} channels at ÷{spec.factor}: connect the same VAE or MODEL to LunaNoiseScaffold "
                "(or pick its latent_format to match)."
            )


def interrupt_point() -> None:
    """Stop here if the user pressed Cancel."""
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()


def progress_bar(total: int):
    """ComfyUI's progress bar (shown on the node in the UI)."""
    import comfy.utils

    return comfy.utils.ProgressBar(total)
