"""The video fixtures of issue 35: the tiny Wan 2.1 (tests/fixtures/lsd_test_models/families.py, `wan21`) through
ComfyUI's own sampler and VAE with 5-D latents, and the known-answer video model and block video VAE
(tests/fixtures/video.py) against their closed forms. Runs on both tested hosts."""
from __future__ import annotations

import pytest
import torch
from fixtures.lsd_test_models.families import (
    FAMILIES,
    VIDEO_FAMILIES,
    VIDEO_FAMILY_INFO,
    family_latent_shape,
    tiny_family_conditioning,
    tiny_family_model,
    tiny_family_vae,
)
from fixtures.video import (
    GRID,
    LENGTH,
    RADIUS,
    TIME_LENGTH,
    TIME_RADIUS,
    VARIANCE,
    block_video_latent,
    block_video_vae,
    empty_conditioning,
    exact_video_model,
    latent_frames,
    periodic_covariance,
    used_frames,
    wiener_kernel_3d,
)

# Over the tiny Wan's state dict (float32 weights, keys sorted): the sum of |w|, and the sum of w * (its index + 1) in
# each flattened weight; measured on 0.3.75 and 0.33 alike (each weight drawn from its own name's seed, families._draw).
WAN21_TOTAL = 10250.776096776903
WAN21_WEIGHTED = -396520.59140509064


def frames(count: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, size, size, 3, generator=torch.Generator().manual_seed(seed))


def blocky_clip(values: list[torch.Tensor], size: int = 64) -> torch.Tensor:
    """A clip [T, size, size, 3] whose frames are nearest-upscaled [size/8, size/8, 3] block images."""
    out = [torch.nn.functional.interpolate(v.movedim(-1, 0)[None], scale_factor=8, mode="nearest")[0].movedim(0, -1)
           for v in values]
    return torch.stack(out)


def model_space(latent: torch.Tensor) -> torch.Tensor:
    import comfy.latent_formats

    return comfy.latent_formats.Wan21().process_in(latent)


def weight_sums(model) -> tuple[float, float]:
    total, weighted = 0.0, 0.0
    for _, w in sorted(model.model.diffusion_model.state_dict().items()):
        flat = w.detach().double().flatten().cpu()
        total += float(flat.abs().sum())
        weighted += float((flat * torch.arange(1, flat.numel() + 1, dtype=torch.float64)).sum())
    return total, weighted


# ------------------------------------------------------------------------------------------------------- tiny Wan 2.1

def test_wan21_is_a_video_family_kept_out_of_the_image_families():
    assert VIDEO_FAMILIES == ("wan21",)
    assert not set(VIDEO_FAMILIES) & set(FAMILIES)
    info = VIDEO_FAMILY_INFO["wan21"]
    assert (info.latent_channels, info.factor, info.latent_ndim, info.temporal) == (16, 8, 5, 4)
    assert family_latent_shape("wan21", 64, 64, frames=9) == (1, 16, 3, 8, 8)
    assert family_latent_shape("wan21", 64, 64, frames=10) == (1, 16, 3, 8, 8)
    assert family_latent_shape("wan21", 64, 64) == (1, 16, 1, 8, 8)


def test_wan21_model_samples_a_5d_latent():
    """The tiny Wan 2.1 is ComfyUI's own WAN21_T2V / model_base.WAN21 / WanModel, and comfy.sample.sample runs it on
    a 5-D latent [1, 16, 3, 8, 8], 2 euler steps, with and without a negative prompt."""
    import comfy.latent_formats
    import comfy.ldm.wan.model
    import comfy.model_base
    import comfy.sample
    import comfy.supported_models

    info = VIDEO_FAMILY_INFO["wan21"]
    model = tiny_family_model("wan21")
    assert type(model.model) is comfy.model_base.WAN21
    assert type(model.model.model_config) is comfy.supported_models.WAN21_T2V
    assert type(model.model.diffusion_model) is comfy.ldm.wan.model.WanModel
    assert model.model.model_type.name == info.model_type == "FLOW"
    latent_format = model.get_model_object("latent_format")
    assert type(latent_format) is comfy.latent_formats.Wan21
    assert latent_format.latent_dimensions == 3 and latent_format.latent_channels == 16
    net = model.model.diffusion_model
    assert (net.dim, net.num_heads, net.num_layers, net.text_dim) == (64, 2, 1, info.context_dim)

    positive, negative = tiny_family_conditioning("wan21")
    assert positive[0][0].shape == (1, 8, info.context_dim)
    latent = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    noise = comfy.sample.prepare_noise(latent, 0)
    for cfg in (1.0, info.cfg):
        samples = comfy.sample.sample(model, noise, 2, cfg, "euler", "simple", positive, negative, latent,
                                      denoise=1.0, seed=0, disable_pbar=True)
        assert samples.shape == (1, 16, 3, 8, 8)
        assert torch.isfinite(samples).all()
        assert not torch.equal(samples, latent)


def test_wan21_weights_are_the_same_on_every_host():
    """Each weight is drawn from a generator seeded by its name, so both hosts build the same model."""
    total, weighted = weight_sums(tiny_family_model("wan21", dtype=torch.float32))
    assert total == pytest.approx(WAN21_TOTAL, rel=1e-9)
    assert weighted == pytest.approx(WAN21_WEIGHTED, rel=1e-9)


@torch.no_grad()  # not inference_mode: the cached fixtures built here would hold inference tensors for later tests
def test_wan21_vae_encodes_9_frames_and_decodes_them():
    """9 frames [9, 64, 64, 3] -> [1, 16, 3, 8, 8] -> [1, 9, 64, 64, 3] (VAE.decode) / [9, 64, 64, 3] (VAEDecode);
    the sampled latent decodes too. Wan's VAE answers latent_dim 3, x4 in time, /8 in space."""
    import comfy.sample

    import nodes

    vae = tiny_family_vae("wan21")
    assert vae is not tiny_family_vae("qwen-image")  # a VAE of its own, with the same weights
    assert (vae.latent_dim, vae.latent_channels, vae.temporal_compression_decode()) == (3, 16, 4)
    assert (vae.spacial_compression_encode(), vae.spacial_compression_decode()) == (8, 8)

    clip = frames(9)
    (latent,) = nodes.VAEEncode().encode(vae, clip)
    latent = latent["samples"]
    assert tuple(latent.shape) == family_latent_shape("wan21", 64, 64, frames=9) == (1, 16, 3, 8, 8)
    assert torch.isfinite(latent).all()

    samples = comfy.sample.sample(tiny_family_model("wan21"), comfy.sample.prepare_noise(latent, 0), 2, 1.0, "euler",
                                  "simple", *tiny_family_conditioning("wan21"), latent, denoise=0.5, seed=0,
                                  disable_pbar=True)
    decoded = vae.decode(samples)
    assert tuple(decoded.shape) == (1, 9, 64, 64, 3)
    assert torch.isfinite(decoded).all() and 0.0 <= decoded.min() and decoded.max() <= 1.0
    (images,) = nodes.VAEDecode().decode(vae, {"samples": samples[..., :2, :2]})  # the node folds the clip into a batch
    assert tuple(images.shape) == (9, 16, 16, 3)
    assert torch.equal(images, vae.decode(samples[..., :2, :2])[0])


@pytest.mark.parametrize("count", [2, 4, 6, 8, 10])
@torch.no_grad()
def test_wan21_vae_trims_frame_counts_that_are_not_1_plus_4k(count):
    """ComfyUI's Wan VAE encodes the first 1 + 4 * ((T - 1) // 4) frames of T and drops the rest, silently: the
    latent of T frames is exactly the latent of those; its downscale_ratio says the same count."""
    vae = tiny_family_vae("wan21")
    clip = frames(count, size=16, seed=count)
    kept = used_frames(count)
    assert kept < count and (kept - 1) % 4 == 0
    latent = vae.encode(clip)
    assert latent.shape[2] == latent_frames(count) == vae.downscale_ratio[0](count) == 1 + (count - 1) // 4
    assert torch.equal(latent, vae.encode(clip[:kept]))
    assert vae.decode(latent).shape[1] == vae.upscale_ratio[0](latent.shape[2]) == kept


# ------------------------------------------------------------------------------------------- the exact-score video model

def direct_wiener_kernel(sigma: float) -> torch.Tensor:
    """C (C + sigma^2 I)^-1 e_0 on the periodic GRID^3 grid, from the eigendecompositions of the three 1-D circulant
    covariance matrices (float64, no FFT): C = VARIANCE Ct (x) Cy (x) Cx, so f(C) = Q f(L) Q^T with Q = Qt (x) Qy (x) Qx."""
    d = torch.arange(GRID, dtype=torch.float64)
    d = (d[:, None] - d[None]).abs()
    d = torch.minimum(d, GRID - d)
    lt, qt = torch.linalg.eigh(torch.exp(-d**2 / (2 * TIME_LENGTH**2)))
    ls, qs = torch.linalg.eigh(torch.exp(-d**2 / (2 * LENGTH**2)))
    eig = VARIANCE * lt[:, None, None] * ls[None, :, None] * ls[None, None, :]
    coeff = eig / (eig + sigma**2) * qt[0][:, None, None] * qs[0][None, :, None] * qs[0][None, None, :]
    rows_t = qt[torch.arange(-TIME_RADIUS, TIME_RADIUS + 1) % GRID]
    rows_s = qs[torch.arange(-RADIUS, RADIUS + 1) % GRID]
    out = torch.tensordot(coeff, rows_s, dims=([2], [1]))  # [a, b, x]
    out = torch.tensordot(out, rows_s, dims=([1], [1]))  # [a, x, y]
    out = torch.tensordot(rows_t, out, dims=([1], [0]))  # [t, x, y]
    return out.transpose(1, 2)


SIGMAS = (0.03, 0.3, 1.0, 14.6)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_kernel_is_the_wiener_filter(sigma):
    """The denoiser's kernel equals, within 1e-6, the Wiener filter evaluated directly on the periodic grid; it is
    symmetric and keeps all but 2.5 % of the filter's absolute mass."""
    kernel = wiener_kernel_3d(sigma)
    assert kernel.shape == (2 * TIME_RADIUS + 1, 2 * RADIUS + 1, 2 * RADIUS + 1) and kernel.dtype == torch.float64
    assert (kernel - direct_wiener_kernel(sigma)).abs().max() < 1e-6
    assert torch.equal(kernel, kernel.flip(0)) or (kernel - kernel.flip(0)).abs().max() < 1e-15
    spectrum = torch.fft.fftn(periodic_covariance()).real.clamp_min(0)
    full = torch.fft.ifftn(spectrum / (spectrum + sigma**2)).real
    assert float(full.abs().sum() - kernel.abs().sum()) < 0.025


def apply(model, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The model's denoised prediction (model space) at sigma, through ComfyUI's BaseModel.apply_model."""
    s = torch.full((x.shape[0],), sigma)
    with torch.no_grad():
        return model.model.apply_model(x, s, c_crossattn=torch.zeros(x.shape[0], 1, 64), transformer_options={"sigmas": s})


def test_model_is_a_5d_eps_model_that_applies_the_kernel():
    """Through ComfyUI's BaseModel: EPS, Wan 2.1's latent format (latent_dimensions 3); a delta in the middle of a clip
    comes out as the kernel (float32, within 1e-6)."""
    import comfy.latent_formats

    model = exact_video_model()
    assert model.model.model_type.name == "EPS"
    latent_format = model.get_model_object("latent_format")
    assert type(latent_format) is comfy.latent_formats.Wan21 and latent_format.latent_dimensions == 3
    t, s = 2 * TIME_RADIUS + 3, 2 * RADIUS + 3
    x = torch.zeros(1, 16, t, s, s)
    x[:, :, t // 2, s // 2, s // 2] = 1.0
    for sigma in (0.3, 2.0):
        out = apply(model, x, sigma)
        window = out[:, :, 1:-1, 1:-1, 1:-1]
        assert (window - wiener_kernel_3d(sigma).float()).abs().max() < 1e-6
        assert out[:, :, [0, -1]].abs().max() == 0 and out[..., [0, -1]].abs().max() == 0
    single = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(apply(model, single, 1.0), apply(model, single[:, :, None], 1.0)[:, :, 0], atol=1e-6)


@pytest.mark.parametrize("time_padding", ["zeros", "replicate"])
def test_model_is_translation_equivariant_in_t_y_x(time_padding):
    """Shift the input by (2, 3, 1) in (t, y, x): the output shifts with it, away from the edges the kernel sees."""
    model = exact_video_model(time_padding)
    x = 0.3 * torch.randn(1, 16, 2 * TIME_RADIUS + 6, 2 * RADIUS + 8, 2 * RADIUS + 6, generator=torch.Generator().manual_seed(3))
    st, sy, sx = 2, 3, 1
    full = apply(model, x, 0.5)
    cropped = apply(model, x[:, :, st:, sy:, sx:], 0.5)
    rt, r = TIME_RADIUS, RADIUS
    inner = cropped[:, :, rt:-rt, r:-r, r:-r]
    assert inner.numel() > 0
    assert (inner - full[:, :, st + rt:-rt, sy + r:-r, sx + r:-r]).abs().max() < 1e-5
    assert (full - x).abs().mean() > 0.01


def still_latent(latent_count: int) -> torch.Tensor:
    """The raw latent of a still clip (one structured frame repeated) of 1 + 4 (latent_count - 1) frames."""
    frame = torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(4))
    clip = blocky_clip([frame] * used_frames(4 * latent_count - 3))
    return block_video_vae().encode(clip)


def test_one_clip_sampling_of_a_still_clip_gives_identical_frames():
    """comfy.sample.sample of a still clip with the same noise in every latent frame, time padding "replicate": every
    latent frame of the result is the same, and so is every decoded frame."""
    import comfy.sample

    latent = still_latent(5)
    assert latent.shape == (1, 16, 5, 8, 8)
    noise = comfy.sample.prepare_noise(latent[:, :, :1], 0).expand_as(latent).contiguous()
    cond = empty_conditioning()
    samples = comfy.sample.sample(exact_video_model("replicate"), noise, 4, 1.0, "euler", "normal", cond, cond, latent,
                                  denoise=0.6, seed=0, disable_pbar=True)
    assert samples.shape == latent.shape and torch.isfinite(samples).all()
    assert (samples - samples[:, :, :1]).abs().max() < 1e-6
    assert (samples - latent).abs().mean() > 0.01
    decoded = block_video_vae().decode(samples)
    assert decoded.shape == (1, 17, 64, 64, 3)
    assert (decoded - decoded[:, :1]).abs().max() < 1e-6


def test_zero_time_padding_keeps_only_interior_frames_of_a_still_clip_identical():
    """With time padding "zeros" (the default) one model call on a still clip gives identical frames only at least
    TIME_RADIUS from both ends; the end frames see zeros beyond the clip and come out otherwise."""
    latent = model_space(still_latent(2 * TIME_RADIUS + 3))
    out = apply(exact_video_model(), latent, 0.5)
    interior = out[:, :, TIME_RADIUS:-TIME_RADIUS]
    assert interior.shape[2] == 3
    assert (interior - interior[:, :, :1]).abs().max() < 1e-6
    assert (out[:, :, 0] - out[:, :, TIME_RADIUS]).abs().max() > 1e-3


# ----------------------------------------------------------------------------------------------- the block video VAE

def test_block_video_vae_answers_as_a_wan_vae():
    """What the pack and ComfyUI's nodes read off a VAE is what the tiny Wan 2.1 VAE (ComfyUI's own) answers."""
    block, wan = block_video_vae(), tiny_family_vae("wan21")
    for name in ("latent_dim", "latent_channels", "output_channels", "not_video", "crop_input", "downscale_index_formula",
                 "upscale_index_formula"):
        assert getattr(block, name, None) == getattr(wan, name, None), name
    assert block.downscale_ratio[1:] == wan.downscale_ratio[1:] == (8, 8)
    assert block.upscale_ratio[1:] == wan.upscale_ratio[1:] == (8, 8)
    for t in range(1, 22):
        assert block.downscale_ratio[0](t) == wan.downscale_ratio[0](t) == latent_frames(t)
        assert block.upscale_ratio[0](t) == wan.upscale_ratio[0](t) == 4 * t - 3
    assert block.temporal_compression_decode() == wan.temporal_compression_decode() == 4
    assert block.spacial_compression_encode() == block.spacial_compression_decode() == 8
    assert block.vae_dtype == torch.float32


def test_block_video_vae_round_trip_is_exact_on_block_and_time_constant_clips():
    """9 frames constant on 8 x 8 blocks and on the groups {0}, {1..4}, {5..8} -> [1, 16, 3, 8, 8] whose model space
    (Wan21 process_in) is the block means -> the same 9 frames (VAEEncode / VAEDecode, as a workflow runs them)."""
    import nodes

    vae = block_video_vae()
    g = torch.Generator().manual_seed(5)
    values = [torch.rand(8, 8, 3, generator=g) for _ in range(3)]
    clip = blocky_clip([values[0]] + [values[1]] * 4 + [values[2]] * 4)
    (latent,) = nodes.VAEEncode().encode(vae, clip)
    latent = latent["samples"]
    assert latent.shape == (1, 16, 3, 8, 8)
    space = model_space(latent)
    for k in range(3):
        rgb = values[k].movedim(-1, 0) * 2 - 1
        assert (space[0, :3, k] - rgb).abs().max() < 1e-6
        assert (space[0, 3, k] - rgb.mean(dim=0)).abs().max() < 1e-6
    assert space[:, 4:].abs().max() < 1e-6
    (images,) = nodes.VAEDecode().decode(vae, {"samples": latent})
    assert images.shape == clip.shape
    assert (images - clip).abs().max() < 1e-6
    still = blocky_clip([values[0]] * 5)
    assert (vae.decode(vae.encode(still))[0] - still).abs().max() < 1e-6


def test_block_video_vae_latent_is_the_causal_block_mean_and_trims_as_wan():
    """Any clip: latent frame 0 = frame 0's block means, latent frame k = the block means of frames 4k-3 .. 4k; 10 or
    12 frames encode as their first 9 (as ComfyUI's Wan VAE); T' latent frames decode to 4 T' - 3."""
    vae = block_video_vae()
    clip = frames(12, size=32, seed=6)
    latent = vae.encode(clip)
    assert latent.shape == (1, 16, 3, 4, 4)
    pixels = clip.movedim(-1, 0)[None] * 2 - 1
    assert (model_space(latent) - block_video_latent(pixels)).abs().max() < 1e-6
    means = torch.nn.functional.avg_pool2d(pixels[0, :, 5:9].mean(dim=1).double(), 8)
    assert (model_space(latent)[0, :3, 2].double() - means).abs().max() < 1e-6
    assert torch.equal(latent, vae.encode(clip[:9]))
    assert torch.equal(vae.encode(clip[:10]), vae.encode(clip[:9]))
    assert vae.decode(latent).shape == (1, 9, 32, 32, 3)
