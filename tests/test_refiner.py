"""LunaGlobalRefiner in-process with tiny real-architecture models: seams, batch invariance, 1:1 noise, any canvas."""
from __future__ import annotations

import pytest
import torch

from fixtures.fidelity import block_vae, exact_model
from pipeline_helpers import encode_prompt, models, sampler_spy, scaffold_for, smooth_canvas
from luna_semantic_detailer.kernels.planning import chess_phases
from luna_semantic_detailer.nodes.refiner import DEFAULT_TILING, LunaGlobalRefiner
from luna_semantic_detailer.pipeline.strategies import offered

TILINGS = offered("refiner")
from luna_semantic_detailer.pipeline.tiles import canvas_tiles

SETTINGS = dict(steps=3, cfg=3.0, sampler_name="euler", scheduler="normal", vision_strength=0.0)


def refine(image, scaffold, *, tile=128, overlap=32, denoise=0.5, max_batch=4, channels=4, tiling=DEFAULT_TILING,
           model=None, vae=None, **extra):
    default_model, default_vae = models(channels)
    settings = {**SETTINGS, **extra}
    return LunaGlobalRefiner().refine(
        image, scaffold, model or default_model, encode_prompt("a photo"), encode_prompt(""), vae or default_vae, tile,
        overlap, denoise=denoise, max_batch=max_batch, tiling=tiling, **settings,
    )[0]


def test_the_default_tiling_is_parallel_the_winner_of_the_fidelity_table():
    assert DEFAULT_TILING == "parallel" and set(TILINGS) == {"parallel", "fused", "chess"}


@pytest.mark.parametrize("tiling", list(TILINGS))
def test_denoise_zero_is_a_vae_round_trip_without_seams(tiling):
    image = smooth_canvas(1, 320, 320)
    out = refine(image, scaffold_for(320, 320), tile=128, overlap=64, denoise=0.0, tiling=tiling)
    vae = models()[1]
    reference = vae.decode(vae.encode(image)).reshape(image.shape)
    err = (out - reference).abs().mean(dim=(0, 3))
    boundary = torch.zeros(320, 320, dtype=torch.bool)
    for t in canvas_tiles(320, 320, 128, 64, 8, "fit"):
        for edge in (t.x, t.x + t.width):
            if 0 < edge < 320:
                boundary[:, max(0, edge - 4):edge + 4] = True
        for edge in (t.y, t.y + t.height):
            if 0 < edge < 320:
                boundary[max(0, edge - 4):edge + 4, :] = True
    interior = ~boundary
    interior[:16], interior[-16:], interior[:, :16], interior[:, -16:] = False, False, False, False
    assert err[boundary].mean() < 1.5 * err[interior].mean() + 1e-3, (err[boundary].mean(), err[interior].mean())


@pytest.mark.parametrize("tiling", list(TILINGS))
def test_max_batch_does_not_change_the_image(tiling):
    image = smooth_canvas(1, 256, 256, seed=3)
    scaffold = scaffold_for(256, 256)
    one = refine(image, scaffold, max_batch=1, tiling=tiling)
    many = refine(image, scaffold, max_batch=8, tiling=tiling)
    torch.testing.assert_close(one, many, atol=2e-4, rtol=0)


@pytest.mark.parametrize("sampler_name", ["euler_ancestral", "dpmpp_2m_sde", "dpmpp_sde", "ddpm"])
@pytest.mark.parametrize("tiling", list(TILINGS))
def test_stochastic_samplers_give_the_same_image_for_any_max_batch(sampler_name, tiling):
    """Issue 17: the per-step noise of each tile is its own (the canvas noise field), so batching changes nothing
    (tests/test_step_noise.py checks every sampler's noise per region). A flat canvas is no test input here: the
    random VAE's GroupNorm of a constant tile amplifies float rounding."""
    image = smooth_canvas(1, 256, 256, seed=3)
    scaffold = scaffold_for(256, 256)
    one = refine(image, scaffold, max_batch=1, tiling=tiling, sampler_name=sampler_name)
    many = refine(image, scaffold, max_batch=8, tiling=tiling, sampler_name=sampler_name)
    torch.testing.assert_close(one, many, atol=1e-3, rtol=0)
    deterministic = refine(image, scaffold, max_batch=8, tiling=tiling, sampler_name="euler")
    assert (many - deterministic).abs().mean() > 1e-3


@pytest.mark.parametrize("tiling", ["parallel", "chess"])
def test_each_tile_is_sampled_from_its_exact_scaffold_slice(tiling):
    image = smooth_canvas(1, 256, 192)
    scaffold = scaffold_for(192, 256)
    tiles = canvas_tiles(192, 256, 128, 32, 8, "fit")
    with sampler_spy() as calls:
        refine(image, scaffold, max_batch=1, tiling=tiling)
    seen = [call["noise"][0] for call in calls]
    expected = [scaffold.noise[0, :, t.y // 8:(t.y + t.height) // 8, t.x // 8:(t.x + t.width) // 8] for t in tiles]
    assert len(seen) == len(tiles)
    for noise, slice_ in zip(sorted(seen, key=lambda n: n.sum().item()), sorted(expected, key=lambda n: n.sum().item())):
        assert torch.equal(noise, slice_)


def test_the_fused_canvas_starts_from_the_scaffold_itself(monkeypatch):
    from luna_semantic_detailer.pipeline.fused import FusedGuider

    starts = []
    real = FusedGuider.sample
    monkeypatch.setattr(FusedGuider, "sample", lambda self, noise, *a, **k: starts.append(noise.clone()) or real(self, noise, *a, **k))
    scaffold = scaffold_for(192, 256)
    refine(smooth_canvas(2, 256, 192), scaffold, tiling="fused")
    assert len(starts) == 2 and all(torch.equal(s, scaffold.noise) for s in starts)


def test_parallel_tiles_go_in_even_batches_and_chess_in_one_call_per_phase():
    image = smooth_canvas(1, 256, 256)
    tiles = canvas_tiles(256, 256, 128, 32, 8, "fit")
    with sampler_spy() as chess:
        refine(image, scaffold_for(256, 256), max_batch=8, tiling="chess")
    with sampler_spy() as parallel:
        refine(image, scaffold_for(256, 256), max_batch=4, tiling="parallel")
    assert len(tiles) == 9
    assert [call["noise"].shape[0] for call in chess] == [len(p) for p in chess_phases(tiles)]
    assert [call["noise"].shape[0] for call in parallel] == [3, 3, 3]


@pytest.mark.parametrize("tiling", list(TILINGS))
@pytest.mark.parametrize("height,width", [(100, 150), (61, 77), (200, 130)])
def test_any_canvas_size_keeps_its_size_and_stays_finite(height, width, tiling):
    image = smooth_canvas(2, height, width)
    out = refine(image, scaffold_for(width, height), tiling=tiling)
    assert out.shape == image.shape
    assert torch.isfinite(out).all()


def test_sixteen_channel_latents():
    image = smooth_canvas(1, 128, 192)
    out = refine(image, scaffold_for(192, 128, channels=16), channels=16)
    assert out.shape == image.shape


def test_a_scaffold_of_another_latent_format_is_a_clear_error():
    image = smooth_canvas(1, 128, 128)
    with pytest.raises(ValueError, match="latent channels"):
        refine(image, scaffold_for(128, 128, channels=16))


def test_a_canvas_larger_than_its_scaffold_is_a_clear_error():
    with pytest.raises(ValueError, match="larger than the scaffold"):
        refine(smooth_canvas(1, 256, 256), scaffold_for(128, 128))


def test_an_unknown_tiling_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown tiling 'zigzag'"):
        refine(smooth_canvas(1, 128, 128), scaffold_for(128, 128), tiling="zigzag")


@pytest.mark.parametrize("tiling", list(TILINGS))
def test_tiles_cover_every_pixel_and_overlaps_neither_brighten_nor_darken(tiling):
    """A model that paints every tile its own mean, on a flat canvas with a silent scaffold: every tile paints the same
    grey, so must the whole canvas, overlaps and corners included."""
    from luna_semantic_detailer.luna_types import NoiseScaffold

    image = torch.full((1, 328, 264, 3), 0.625)
    silent = NoiseScaffold(torch.zeros(1, 4, 41, 33), 264, 328, 8, 0)
    out = refine(image, silent, tile=128, overlap=48, model=exact_model("tile-constant"), vae=block_vae(), cfg=1.0,
                 tiling=tiling)
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)


def test_the_scaffold_seed_changes_the_noise_and_nothing_else_does():
    image = smooth_canvas(1, 192, 192)
    with sampler_spy() as base:
        out = refine(image, scaffold_for(192, 192, seed=1))
    with sampler_spy() as other_prompt:
        refine(image, scaffold_for(192, 192, seed=1), cfg=5.0, denoise=0.3)
    with sampler_spy() as other_seed:
        reseeded = refine(image, scaffold_for(192, 192, seed=2))
    assert all(torch.equal(a["noise"], b["noise"]) for a, b in zip(base, other_prompt))
    assert not any(torch.equal(a["noise"], b["noise"]) for a, b in zip(base, other_seed))
    assert not torch.allclose(out, reseeded)


@pytest.mark.parametrize("tiling", list(TILINGS))
def test_cancel_stops_promptly_and_leaves_the_input_untouched(tiling):
    """ComfyUI's Cancel (interrupt flag, raised through the progress hook as the server does) inside the first batch."""
    import comfy.model_management as mm
    import comfy.utils

    image = smooth_canvas(1, 256, 256)
    before = image.clone()
    steps = []

    def hook(value, total, preview, node_id=None):
        steps.append(value)
        mm.interrupt_current_processing(True)
        mm.throw_exception_if_processing_interrupted()

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            refine(image, scaffold_for(256, 256), max_batch=1, tiling=tiling)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    assert steps == [1]
    assert torch.equal(image, before)
