"""The sampler call, the batch owner and the VAE calls of the pipeline, on the real ComfyUI sampler with the tiny SD1.5-style model."""
from __future__ import annotations

import math

import pytest
import torch
from fixtures.tiny_models import CONTEXT_DIM, tiny_clip, tiny_model, tiny_vae

from pipeline_helpers import sample_batch
from luna_semantic_detailer.pipeline.batching import max_batch_for, plan_batches, run_halving
from luna_semantic_detailer.pipeline.vae import decode, encode

ARGS = dict(steps=3, cfg=4.0, sampler_name="euler", scheduler="normal", denoise=0.6, seed=0)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _text(*prompts: str) -> list:
    """One CONDITIONING entry whose batch row b is the encoding of prompts[b]."""
    clip = tiny_clip()
    encoded = [clip.encode_from_tokens(clip.tokenize(p), return_pooled=True) for p in prompts]
    return [[torch.cat([c for c, _ in encoded]), {"pooled_output": torch.cat([p for _, p in encoded])}]]


def _latents(batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    return _randn(batch, 4, 8, 8, seed=seed), _randn(batch, 4, 8, 8, seed=seed + 100)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


@pytest.mark.parametrize("denoise", [1.0, 0.5])
def test_noise_is_the_initial_noise_as_is(denoise):
    """One euler step to sigma 0 returns the CFG-mixed denoised prediction at x = noise * s + latent_in."""
    import comfy.samplers

    model = tiny_model()
    noise, latent = _latents(2)
    positive, negative = _text("a red fox", "a cat"), _text("blurry")
    out = sample_batch(model, noise, latent, positive, negative, steps=1, cfg=3.0, sampler_name="euler",
                       scheduler="normal", denoise=denoise, seed=0)

    sampling = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, "normal", int(1 / denoise))[-2:]
    sigma = float(sigmas[0])
    scale = math.sqrt(1.0 + sigma**2) if math.isclose(sigma, float(sampling.sigma_max), rel_tol=1e-5) else sigma
    assert (scale > sigma) == (denoise == 1.0)
    x = noise * scale + model.model.process_latent_in(latent)
    sigma_batch = torch.full((2,), sigma)
    with torch.no_grad():
        cond = model.model.apply_model(x, sigma_batch, c_crossattn=positive[0][0])
        uncond = model.model.apply_model(x, sigma_batch, c_crossattn=negative[0][0].expand(2, -1, -1))
    expected = model.model.process_latent_out(uncond + 3.0 * (cond - uncond))
    assert _close(out, expected)


def test_same_noise_is_bit_identical_and_other_noise_differs():
    noise, latent = _latents(2)
    positive, negative = _text("a red fox"), _text("blurry")
    first = sample_batch(tiny_model(), noise, latent, positive, negative, **ARGS)
    again = sample_batch(tiny_model(), noise.clone(), latent, positive, negative, **ARGS)
    other = sample_batch(tiny_model(), _randn(2, 4, 8, 8, seed=9), latent, positive, negative, **ARGS)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other, atol=1e-2)


def test_batch_equals_single_calls_with_per_sample_conditioning():
    noise, latent = _latents(3)
    prompts = ("a red fox", "a cat", "a tall tree")
    positive, negative = _text(*prompts), _text("blurry")
    batched = sample_batch(tiny_model(), noise, latent, positive, negative, **ARGS)
    for i in range(3):
        single = sample_batch(tiny_model(), noise[i:i + 1], latent[i:i + 1], _text(prompts[i]), negative, **ARGS)
        assert _close(batched[i:i + 1], single)
    swapped = sample_batch(tiny_model(), noise[:1], latent[:1], _text(prompts[1]), negative, **ARGS)
    assert not _close(batched[:1], swapped)


def test_run_halving_retries_with_halves_and_keeps_order():
    calls = []

    def fn(chunk):
        calls.append(list(chunk))
        if len(chunk) > 2:
            raise torch.OutOfMemoryError("test")
        return torch.tensor(chunk) * 10

    out = run_halving(fn, range(7), 4)
    assert [int(v) for v in out] == [0, 10, 20, 30, 40, 50, 60]
    assert calls == [[0, 1, 2, 3], [0, 1], [2, 3], [4, 5], [6]]


def test_run_halving_reraises_oom_at_batch_one():
    def fn(chunk):
        raise torch.OutOfMemoryError("device full")

    with pytest.raises(torch.OutOfMemoryError, match="out of memory with a batch of 1") as info:
        run_halving(fn, range(3), 2)
    assert "device full" in str(info.value.__cause__)


def test_run_halving_other_errors_pass_through_and_rows_are_checked():
    with pytest.raises(KeyError):
        run_halving(lambda chunk: {}["x"], range(3), 2)
    with pytest.raises(ValueError, match="returned 1 rows for a slice of 2"):
        run_halving(lambda chunk: torch.zeros(1), range(2), 2)


def test_run_halving_honours_comfyuis_interrupt():
    import comfy.model_management as mm

    calls = []
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_halving(lambda chunk: calls.append(chunk) or torch.zeros(len(chunk)), range(4), 2)
    finally:
        mm.interrupt_current_processing(False)
    assert calls == []


def test_plan_batches_groups_by_key_in_first_seen_order_and_cuts_evenly():
    keys = {0: "a", 1: "b", 2: "a", 3: "a", 4: "b", 5: "a", 6: "a"}
    out = plan_batches(range(7), keys.__getitem__, lambda key: 3 if key == "a" else 1)
    assert out == [[0, 2, 3], [5, 6], [1], [4]]


def test_sample_batch_refuses_misaligned_inputs():
    noise, latent = _latents(3)
    negative = _text("blurry")
    with pytest.raises(ValueError, match="batch 2 but the latent has batch 3"):
        sample_batch(tiny_model(), noise, latent, _text("a", "b"), negative, **ARGS)
    with pytest.raises(ValueError, match="16 channels but the model expects 4"):
        sample_batch(tiny_model(), _randn(1, 16, 8, 8), _randn(1, 16, 8, 8), negative, negative, **ARGS)
    with pytest.raises(ValueError, match="must be the same"):
        sample_batch(tiny_model(), noise[:2], latent, negative, negative, **ARGS)


def test_max_batch_for_follows_comfyuis_memory_estimate():
    import comfy.model_management as mm
    import psutil

    model = tiny_model()
    assert max_batch_for(model, (1, 4, 8, 8), 6) == 6
    assert max_batch_for(model, (1, 4, 4096, 4096), 6) == 1
    unit = model.model.memory_required([2, 4, 1, 1])
    side = int(math.sqrt(psutil.virtual_memory().available / (3.5 * unit)))
    got = max_batch_for(model, (1, 4, side, side), 8)
    budget = psutil.virtual_memory().available - (model.model_size() - model.loaded_size()) - mm.extra_reserved_memory()
    assert got == int(budget // model.model.memory_required([2, 4, side, side]))
    assert 2 <= got <= 4
    with pytest.raises(ValueError):
        max_batch_for(model, (1, 4, 8, 8), 0)


def test_vae_batches_equal_single_calls():
    vae = tiny_vae()
    pixels = torch.rand(3, 64, 64, 3, generator=torch.Generator().manual_seed(4))
    latent = encode(vae, pixels)
    decoded = decode(vae, latent)
    assert latent.shape == (3, 4, 8, 8) and decoded.shape == (3, 64, 64, 3)
    for i in range(3):
        assert _close(latent[i:i + 1], encode(vae, pixels[i:i + 1]))
        assert _close(decoded[i:i + 1], decode(vae, latent[i:i + 1]))


def test_vae_refuses_pixels_off_the_latent_grid():
    with pytest.raises(ValueError, match="not multiples of the VAE's factor 8"):
        encode(tiny_vae(), torch.rand(1, 60, 64, 3))
