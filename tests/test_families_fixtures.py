"""Each tiny model family (tests/fixtures/lsd_test_models/families.py) runs end to end through ComfyUI's own sampler: VAE encode of a
64 x 64 image, comfy.sample.sample (2 euler steps, denoise 0.5), VAE decode."""
from __future__ import annotations

import pytest
import torch
from fixtures.lsd_test_models.families import (
    FAMILIES,
    FAMILY_INFO,
    family_latent_shape,
    tiny_family_conditioning,
    tiny_family_model,
    tiny_family_vae,
)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_encodes_samples_and_decodes(family):
    import comfy.latent_formats
    import comfy.model_base
    import comfy.sample
    import comfy.supported_models

    info = FAMILY_INFO[family]
    model = tiny_family_model(family)
    vae = tiny_family_vae(family)
    positive, negative = tiny_family_conditioning(family)

    assert type(model.model) is getattr(comfy.model_base, info.model_class)
    assert type(model.model.model_config) is getattr(comfy.supported_models, info.config_class)
    assert model.model.model_type.name == info.model_type
    latent_format = model.get_model_object("latent_format")
    assert latent_format.latent_channels == info.latent_channels == vae.latent_channels
    assert getattr(latent_format, "latent_dimensions", 2) + 2 == info.latent_ndim
    assert vae.spacial_compression_encode() == info.factor

    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    latent = vae.encode(image)
    assert tuple(latent.shape) == family_latent_shape(family)
    assert torch.isfinite(latent).all()

    noise = comfy.sample.prepare_noise(latent, 0)
    samples = comfy.sample.sample(model, noise, 2, info.cfg, "euler", "simple", positive, negative, latent,
                                  denoise=0.5, seed=0, disable_pbar=True)
    assert samples.shape == latent.shape
    assert torch.isfinite(samples).all()
    assert not torch.equal(samples, latent)

    decoded = vae.decode(samples)
    assert tuple(decoded.shape) == ((1, 1, 64, 64, 3) if info.latent_ndim == 5 else (1, 64, 64, 3))
    assert torch.isfinite(decoded).all()
    assert 0.0 <= decoded.min() and decoded.max() <= 1.0
