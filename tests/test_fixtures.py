"""The tiny random-weight models are real ComfyUI objects that build, run, and are deterministic from their seed."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from fixtures.tiny_models import (
    CONTEXT_DIM,
    VISION_TOKENS,
    tiny_clip,
    tiny_clip_vision,
    tiny_model,
    tiny_vae,
    unet_config,
)


def _pixels(batch: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, size, size, 3, generator=torch.Generator().manual_seed(seed))


def test_model_is_a_comfy_sd15_model_patcher():
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    model = tiny_model()
    assert isinstance(model, comfy.model_patcher.ModelPatcher)
    assert type(model.model) is comfy.model_base.BaseModel
    assert isinstance(model.model.model_config, comfy.supported_models.SD15)
    assert model.get_model_object("latent_format").latent_channels == 4
    assert model.model.model_config.unet_config["context_dim"] == CONTEXT_DIM


def test_model_state_dict_is_detected_as_the_declared_sd_unet():
    import comfy.model_detection

    detected = comfy.model_detection.detect_unet_config(tiny_model().model.diffusion_model.state_dict(), "")
    assert detected == unet_config(4)


def test_model_has_no_attention_at_the_top_resolution():
    from comfy.ldm.modules.attention import SpatialTransformer

    unet = tiny_model().model.diffusion_model
    widths = {m.in_channels for m in unet.modules() if isinstance(m, SpatialTransformer)}
    assert widths == {2 * unet_config()["model_channels"]}


@pytest.mark.parametrize("channels", [4, 16])
def test_model_forward_shape(channels):
    model = tiny_model(latent_channels=channels)
    x = torch.randn(2, channels, 8, 12)
    sigma = torch.tensor([1.0, 5.0])
    with torch.no_grad():
        out = model.model.apply_model(x, sigma, c_crossattn=torch.randn(2, 77, CONTEXT_DIM))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_builders_are_cached_and_deterministic_from_the_seed():
    assert tiny_model(0) is tiny_model(0)
    fresh = tiny_model.__wrapped__(0).model.diffusion_model.state_dict()
    cached = tiny_model(0).model.diffusion_model.state_dict()
    assert fresh.keys() == cached.keys()
    assert all(torch.equal(fresh[k], cached[k]) for k in fresh)
    other = tiny_model(1).model.diffusion_model.state_dict()
    assert not torch.equal(other["out.2.weight"], cached["out.2.weight"])


@pytest.mark.parametrize("channels", [4, 16])
def test_vae_round_trip_shapes(channels):
    import comfy.sd

    vae = tiny_vae(latent_channels=channels)
    assert isinstance(vae, comfy.sd.VAE)
    assert vae.spacial_compression_encode() == 8 and vae.latent_channels == channels
    with torch.no_grad():
        latent = vae.encode(_pixels(2))
        pixels = vae.decode(latent)
    assert latent.shape == (2, channels, 8, 8)
    assert pixels.shape == (2, 64, 64, 3)
    assert 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0


def test_clip_encodes_to_the_unet_context_width():
    import comfy.sd

    clip = tiny_clip()
    assert isinstance(clip, comfy.sd.CLIP)
    cond, pooled = clip.encode_from_tokens(clip.tokenize("a red fox"), return_pooled=True)
    again = clip.encode_from_tokens(clip.tokenize("a red fox"))
    other = clip.encode_from_tokens(clip.tokenize("a blue whale"))
    assert cond.shape == (1, 77, CONTEXT_DIM) and pooled.shape == (1, CONTEXT_DIM)
    assert torch.equal(cond, again)
    assert not torch.allclose(cond, other)


def test_clip_vision_outputs():
    import comfy.clip_vision

    clip_vision = tiny_clip_vision()
    assert isinstance(clip_vision, comfy.clip_vision.ClipVisionModel)
    out = clip_vision.encode_image(_pixels(3, size=96))
    assert out["last_hidden_state"].shape == (3, VISION_TOKENS, 64)
    assert out["penultimate_hidden_states"].shape == (3, VISION_TOKENS, 64)
    assert out["image_embeds"].shape == (3, CONTEXT_DIM)


def test_ksampler_runs_on_the_tiny_models():
    import nodes

    clip = tiny_clip()
    positive = nodes.CLIPTextEncode().encode(clip, "a red fox")[0]
    negative = nodes.CLIPTextEncode().encode(clip, "blurry")[0]
    latent = nodes.VAEEncode().encode(tiny_vae(), _pixels(1))[0]
    out = nodes.common_ksampler(tiny_model(), 3, 2, 4.0, "euler", "normal", positive, negative, latent, denoise=0.5)[0]
    image = nodes.VAEDecode().decode(tiny_vae(), out)[0]
    assert out["samples"].shape == (1, 4, 8, 8) and torch.isfinite(out["samples"]).all()
    assert image.shape == (1, 64, 64, 3)


def test_test_models_node_loads_through_comfyuis_loader():
    import nodes

    assert asyncio.run(nodes.load_custom_node(str(Path(__file__).parent / "fixtures" / "lsd_test_models")))
    node = nodes.NODE_CLASS_MAPPINGS["LSDTestModels"]
    assert node.RETURN_TYPES == ("MODEL", "CLIP", "VAE", "CLIP_VISION") and node.CATEGORY == "LSD/testing"
    model, clip, vae, clip_vision = getattr(node(), node.FUNCTION)(seed=0, latent_channels=4)
    assert model.model.model_config.unet_config == tiny_model(0).model.model_config.unet_config
    assert clip.encode_from_tokens(clip.tokenize("x")).shape == (1, 77, CONTEXT_DIM)
    assert vae.latent_channels == 4 and clip_vision.image_size == 64


@pytest.mark.host
def test_test_models_node_runs_a_workflow_through_the_http_api(comfy_server):
    info = comfy_server.get("/object_info/LSDTestModels")["LSDTestModels"]
    assert info["output"] == ["MODEL", "CLIP", "VAE", "CLIP_VISION"] and info["category"] == "LSD/testing"
    prompt = {
        "1": {"class_type": "LSDTestModels", "inputs": {"seed": 0, "latent_channels": 4}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red fox"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 1,
            "steps": 2, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "lsd_fixture"}},
    }
    entry = comfy_server.run(prompt, timeout=300)
    images = entry["outputs"]["7"]["images"]
    assert len(images) == 1 and images[0]["filename"].startswith("lsd_fixture")
