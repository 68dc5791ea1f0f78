"""LunaGlobalRefiner in-process with tiny real-architecture models: seams, batch invariance, 1:1 noise, any canvas."""
from __future__ import annotations

import pytest
import torch

from pipeline_helpers import encode_prompt, models, sampler_spy, scaffold_for, smooth_canvas
from luna_semantic_detailer.kernels.planning import chess_phases, plan_tiles
from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner

SETTINGS = dict(steps=3, cfg=3.0, sampler_name="euler", scheduler="normal", vision_strength=0.0)


def refine(image, scaffold, *, tile=128, overlap=32, denoise=0.5, max_batch=4, channels=4, **extra):
    model, vae = models(channels)
    settings = {**SETTINGS, **extra}
    return LunaGlobalRefiner().refine(
        image, scaffold, model, encode_prompt("a photo"), encode_prompt(""), vae, tile, overlap,
        denoise=denoise, max_batch=max_batch, **settings,
    )[0]


def test_denoise_zero_is_a_vae_round_trip_without_seams():
    image = smooth_canvas(1, 320, 320)
    out = refine(image, scaffold_for(320, 320), tile=128, overlap=64, denoise=0.0)
    vae = models()[1]
    reference = vae.decode(vae.encode(image)).reshape(image.shape)
    err = (out - reference).abs().mean(dim=(0, 3))
    boundary = torch.zeros(320, 320, dtype=torch.bool)
    for t in plan_tiles(320, 320, 128, 64):
        for edge in (t.x, t.x + t.width):
            if 0 < edge < 320:
                boundary[:, max(0, edge - 4):edge + 4] = True
        for edge in (t.y, t.y + t.height):
            if 0 < edge < 320:
                boundary[max(0, edge - 4):edge + 4, :] = True
    interior = ~boundary
    interior[:16], interior[-16:], interior[:, :16], interior[:, -16:] = False, False, False, False
    assert err[boundary].mean() < 1.5 * err[interior].mean() + 1e-3, (err[boundary].mean(), err[interior].mean())


def test_max_batch_does_not_change_the_image():
    image = smooth_canvas(1, 256, 256, seed=3)
    scaffold = scaffold_for(256, 256)
    one = refine(image, scaffold, max_batch=1)
    many = refine(image, scaffold, max_batch=8)
    torch.testing.assert_close(one, many, atol=2e-4, rtol=0)


def test_each_tile_is_sampled_from_its_exact_scaffold_slice():
    image = smooth_canvas(1, 256, 192)
    scaffold = scaffold_for(192, 256)
    tiles = plan_tiles(192, 256, 128, 32)
    with sampler_spy() as calls:
        refine(image, scaffold, max_batch=1)
    seen = [call["noise"][0] for call in calls]
    expected = [scaffold.noise[0, :, t.y // 8:(t.y + t.height) // 8, t.x // 8:(t.x + t.width) // 8] for t in tiles]
    assert len(seen) == len(tiles)
    for noise in seen:
        assert any(torch.equal(noise, e) for e in expected)
    assert sorted(id(e) for e in expected if any(torch.equal(n, e) for n in seen)) == sorted(id(e) for e in expected)


def test_each_chess_phase_is_one_batched_sampler_call():
    image = smooth_canvas(1, 256, 256)
    tiles = plan_tiles(256, 256, 128, 32)
    phases = chess_phases(tiles)
    with sampler_spy() as calls:
        refine(image, scaffold_for(256, 256), max_batch=8)
    assert [call["noise"].shape[0] for call in calls] == [len(p) for p in phases]
    assert len(tiles) == 9 and len(calls) == 4


@pytest.mark.parametrize("height,width", [(100, 150), (61, 77), (200, 130)])
def test_any_canvas_size_keeps_its_size_and_stays_finite(height, width):
    image = smooth_canvas(2, height, width)
    out = refine(image, scaffold_for(width, height))
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


def test_tiles_cover_every_pixel_and_overlaps_neither_brighten_nor_darken(monkeypatch):
    import luna_semantic_detailer.nodes.refiner as refiner

    monkeypatch.setattr(refiner, "refine_batch", lambda job, pixels, noise, **kw: torch.full_like(pixels, 0.625))
    image = smooth_canvas(1, 328, 264)
    out = refine(image, scaffold_for(264, 328), tile=128, overlap=48)
    torch.testing.assert_close(out, torch.full_like(image, 0.625), atol=1e-6, rtol=0)


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


def test_cancel_stops_between_batches_and_leaves_the_input_untouched():
    import comfy.model_management as mm

    image = smooth_canvas(1, 256, 256)
    before = image.clone()
    with sampler_spy() as calls:
        mm.interrupt_current_processing(False)
        import luna_semantic_detailer.nodes.refiner as refiner

        real = refiner.refine_batch

        def interrupting(*args, **kwargs):
            mm.interrupt_current_processing(True)
            return real(*args, **kwargs)

        refiner.refine_batch = interrupting
        try:
            with pytest.raises(mm.InterruptProcessingException):
                refine(image, scaffold_for(256, 256), max_batch=1)
        finally:
            refiner.refine_batch = real
            mm.interrupt_current_processing(False)
    assert len(calls) <= 1
    assert torch.equal(image, before)
