"""Every sampler the nodes offer: each region its own per-step noise, and the same image for any batching (issue 17)."""
from __future__ import annotations

import pytest
import torch
from fixtures.tiny_models import tiny_clip, tiny_model

from luna_semantic_detailer.nodes.common import sampler_inputs
from luna_semantic_detailer.pipeline.batching import BATCH_COUPLED_SAMPLERS, max_batch_for
from luna_semantic_detailer.pipeline.sampling import SamplerSettings, sample
from luna_semantic_detailer.pipeline.step_noise import NoiseSite, RegionNoise

OFFERED = sampler_inputs(0.5)["sampler_name"][0]
SIDE = 8
# The samplers issue 17 names, and others that add noise at every step: the check above must see their step noise.
STOCHASTIC = {"euler_ancestral", "dpmpp_2m_sde", "dpmpp_sde", "dpmpp_3m_sde", "dpm_2_ancestral", "ddpm", "lcm", "er_sde",
              "ddim"}


def _text(prompt: str) -> list:
    clip = tiny_clip()
    cond, pooled = clip.encode_from_tokens(clip.tokenize(prompt), return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def _run(name: str, origins, latent, noise, mask, positive, negative, seed: int = 11):
    sites = [NoiseSite((x, y, SIDE, SIDE), (SIDE, SIDE)) for x, y in origins]
    step_noise = RegionNoise(seed, sites, 4)
    settings = SamplerSettings(tiny_model(), 3, 2.0, name, "normal", 0.6, 11)
    return sample(settings, noise, latent, positive, negative, step_noise, noise_mask=mask)


@pytest.mark.parametrize("name", OFFERED)
def test_regions_get_their_own_step_noise_and_batching_changes_nothing(name, monkeypatch):
    """Regions A and A' (same pixels and start noise at two places of the field) and B, masked like detailer crops."""
    drawn: list[torch.Tensor] = []

    def recording(draw):
        return lambda *args: drawn.append(draw(*args)) or drawn[-1]

    real_draw, real_brownian = RegionNoise.draw, RegionNoise.brownian
    monkeypatch.setattr(RegionNoise, "draw", lambda self, stream: recording(lambda s: real_draw(self, s))(stream))
    monkeypatch.setattr(RegionNoise, "brownian", lambda self, sigmas: recording(real_brownian(self, sigmas)))
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 4, SIDE, SIDE, generator=g).chunk(2)
    latent = torch.cat([a, a, b])
    noise = torch.cat([b, b, a])
    mask = torch.zeros(3, 1, SIDE, SIDE)
    mask[..., 2:6, 1:7] = 1
    positive, negative = _text("a face"), _text("blurry")
    origins = [(0, 0), (SIDE, 0), (200, 40)]
    alone = torch.cat([_run(name, [o], latent[i:i + 1], noise[i:i + 1], mask[i:i + 1], positive, negative)
                       for i, o in enumerate(origins)])
    if name in BATCH_COUPLED_SAMPLERS:
        assert max_batch_for(tiny_model(), (1, 4, SIDE, SIDE), 8, name) == 1
        together = alone
    else:
        together = _run(name, origins, latent, noise, mask, positive, negative)
        assert (together - alone).abs().max() < 1e-3, "max_batch 1 and 3 differ"
    batched_draws = [d for d in drawn if d.shape[0] > 1]
    reseeded = _run(name, origins[:1], latent[:1], noise[:1], mask[:1], positive, negative, seed=12)
    assert torch.isfinite(together).all()
    for d in batched_draws:
        assert all((d[i] - d[j]).abs().max() > 0 for i in range(3) for j in range(i)), "two regions drew the same noise"
    assert name not in STOCHASTIC or (alone[:1] - reseeded).abs().max() > 1e-2, f"{name} did not use the region's noise"
    if (alone[:1] - reseeded).abs().max() > 1e-2:
        assert (together[0] - together[1]).abs().max() > 1e-2, f"regions 0 and 1 share {name}'s step noise"
    else:
        assert (together[0] - together[1]).abs().max() < 1e-3, f"{name} changed a region without step noise"


def test_the_offered_list_is_comfyuis_own():
    import comfy.samplers

    assert list(OFFERED) == list(comfy.samplers.KSampler.SAMPLERS)
