"""CLIP-ViT fusion against a float64 ViT computed from the vision model's own weights."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny_models import CONTEXT_DIM, VISION_CONFIG, VISION_TOKENS, tiny_clip, tiny_clip_vision

from pipeline_helpers import sample_batch
from luna_semantic_detailer.pipeline.anchoring import SDXL_SLOTS, context_slots, fuse_conditioning, vision_tokens

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def _pixels(batch: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """8-bit images, so that CLIP's quantisation to 1/255 is exact in float32 and float64 alike."""
    return torch.randint(0, 256, (batch, size, size, 3), generator=torch.Generator().manual_seed(seed)) / 255.0


def _text(prompt: str = "a red fox") -> list:
    clip = tiny_clip()
    cond, pooled = clip.encode_from_tokens(clip.tokenize(prompt), return_pooled=True)
    return [[cond, {"pooled_output": pooled, "marker": "kept"}]]


def _reference_tokens(images: torch.Tensor) -> torch.Tensor:
    """CLIP ViT in float64 from the state dict, images already at image_size: projection(post_layernorm(all tokens))."""
    sd = {k: v.double() for k, v in tiny_clip_vision().get_sd().items()}
    c = VISION_CONFIG
    heads, width = c["num_attention_heads"], c["hidden_size"]
    v = "vision_model."

    def ln(x, name):
        return F.layer_norm(x, (width,), sd[name + ".weight"], sd[name + ".bias"], 1e-5)

    def linear(x, name):
        return x @ sd[name + ".weight"].T + sd[name + ".bias"]

    x = images.double().permute(0, 3, 1, 2)
    x = torch.clip(255.0 * x, 0, 255).round() / 255.0
    x = (x - torch.tensor(MEAN, dtype=torch.float64).view(3, 1, 1)) / torch.tensor(STD, dtype=torch.float64).view(3, 1, 1)
    x = F.conv2d(x, sd[v + "embeddings.patch_embedding.weight"], stride=c["patch_size"]).flatten(2).transpose(1, 2)
    cls = sd[v + "embeddings.class_embedding"].expand(x.shape[0], 1, width)
    x = torch.cat([cls, x], dim=1) + sd[v + "embeddings.position_embedding.weight"]
    x = ln(x, v + "pre_layrnorm")
    for i in range(c["num_hidden_layers"]):
        p = f"{v}encoder.layers.{i}."
        h = ln(x, p + "layer_norm1")
        q, k, val = (linear(h, p + f"self_attn.{n}_proj").unflatten(-1, (heads, -1)).transpose(1, 2) for n in "qkv")
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads), dim=-1) @ val
        x = x + linear(attn.transpose(1, 2).flatten(2), p + "self_attn.out_proj")
        h = linear(ln(x, p + "layer_norm2"), p + "mlp.fc1")
        x = x + linear(h * torch.sigmoid(1.702 * h), p + "mlp.fc2")
    return ln(x, v + "post_layernorm") @ sd["visual_projection.weight"].T


def test_vision_tokens_equal_a_float64_vit_reference():
    images = _pixels(3)
    tokens = vision_tokens(tiny_clip_vision(), images)
    reference = _reference_tokens(images)
    assert tokens.shape == (3, VISION_TOKENS, CONTEXT_DIM) and tokens.dtype == torch.float32
    assert float(reference.abs().max()) > 0.1
    torch.testing.assert_close(tokens.double(), reference, rtol=1e-5, atol=1e-5)


def test_class_token_is_comfyuis_image_embeds():
    images = _pixels(2, seed=1)
    tokens = vision_tokens(tiny_clip_vision(), images)
    embeds = tiny_clip_vision().encode_image(images)["image_embeds"]
    torch.testing.assert_close(tokens[:, 0], embeds.float(), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(tokens[:, 1], tokens[:, 0])


def test_vision_tokens_of_crops_not_at_the_model_size():
    tokens = vision_tokens(tiny_clip_vision(), torch.rand(2, 96, 128, 3))
    assert tokens.shape == (2, VISION_TOKENS, CONTEXT_DIM)
    assert torch.isfinite(tokens).all()


def test_fused_shape_text_first_then_scaled_tokens():
    text = _text()
    tokens = vision_tokens(tiny_clip_vision(), _pixels(3))
    fused = fuse_conditioning(text, tokens, 0.35)
    assert len(fused) == 1
    cond, options = fused[0]
    assert cond.shape == (3, 77 + VISION_TOKENS, CONTEXT_DIM)
    for b in range(3):
        assert torch.equal(cond[b, :77], text[0][0][0])
        assert torch.equal(cond[b, 77:], tokens[b] * 0.35)
    assert options["pooled_output"].shape == (3, CONTEXT_DIM)
    assert torch.equal(options["pooled_output"], text[0][1]["pooled_output"].expand(3, -1))
    assert options["marker"] == "kept"
    assert text[0][0].shape == (1, 77, CONTEXT_DIM) and text[0][1]["pooled_output"].shape == (1, CONTEXT_DIM)


def test_strength_scales_the_tokens_exactly():
    tokens = torch.randn(2, 5, CONTEXT_DIM)
    text = _text()
    for strength in (1.0, 2.0, -0.5, 0.125):
        cond = fuse_conditioning(text, tokens, strength)[0][0]
        assert torch.equal(cond[:, 77:], tokens * strength)


def test_every_cond_entry_is_fused():
    text = _text("a") + _text("b")
    fused = fuse_conditioning(text, torch.randn(2, 5, CONTEXT_DIM), 1.0)
    assert [c.shape for c, _ in fused] == [(2, 82, CONTEXT_DIM)] * 2
    assert torch.equal(fused[1][0][0, :77], text[1][0][0])


def test_strength_zero_or_no_tokens_leaves_the_conditioning_unchanged():
    text = _text()
    assert fuse_conditioning(text, torch.randn(2, 5, CONTEXT_DIM), 0.0) is text
    assert fuse_conditioning(text, None, 1.0) is text
    assert text[0][0].shape == (1, 77, CONTEXT_DIM)


def test_width_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="CLIP-ViT projects to 1280 but the model's text context is 64") as info:
        fuse_conditioning(_text(), torch.randn(2, 5, 1280), 1.0)
    assert "vision_strength 0" in str(info.value) and "projection matches" in str(info.value)


@pytest.mark.parametrize("width, before", [(768, 0), (1280, 768)])
def test_sdxl_context_takes_vit_tokens_in_their_encoders_slot(width, before):
    text = [[torch.randn(1, 77, 2048), {"pooled_output": torch.randn(1, 1280)}]]
    tokens = torch.randn(2, 5, width)
    cond = fuse_conditioning(text, tokens, 0.5, SDXL_SLOTS)[0][0]
    assert cond.shape == (2, 82, 2048)
    expected = torch.zeros(2, 5, 2048)
    expected[..., before:before + width] = tokens * 0.5
    assert torch.equal(cond[:, 77:], expected)
    assert torch.equal(cond[:, :77], text[0][0].expand(2, -1, -1))


def test_narrower_tokens_without_slots_or_without_one_that_fits_are_refused():
    text = [[torch.randn(1, 77, 2048), {}]]
    with pytest.raises(ValueError, match="projects to 768 but the model's text context is 2048"):
        fuse_conditioning(text, torch.randn(1, 5, 768), 1.0)
    with pytest.raises(ValueError, match="projects to 1024 but the model's text context is 2048"):
        fuse_conditioning(text, torch.randn(1, 5, 1024), 1.0, SDXL_SLOTS)
    with pytest.raises(ValueError, match="projects to 768 but the model's text context is 1280"):
        fuse_conditioning([[torch.randn(1, 77, 1280), {}]], torch.randn(1, 5, 768), 1.0, SDXL_SLOTS)


def test_only_sdxl_models_have_context_slots():
    import comfy.model_patcher
    import comfy.supported_models
    from fixtures.tiny_models import tiny_model

    sdxl_config = dict(comfy.supported_models.SDXL.unet_config, adm_in_channels=2816, in_channels=4, out_channels=4,
                       model_channels=32, num_res_blocks=[1], channel_mult=[1], transformer_depth=[0],
                       transformer_depth_output=[0, 0], transformer_depth_middle=0, num_head_channels=32,
                       use_spatial_transformer=True, use_linear_in_transformer=True, legacy=False, image_size=32,
                       use_checkpoint=False, use_temporal_resblock=False, use_temporal_attention=False)
    base = comfy.supported_models.SDXL(sdxl_config).get_model({}, "", device=torch.device("meta"))
    sdxl = comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    assert context_slots(sdxl) == SDXL_SLOTS
    assert context_slots(tiny_model()) == {}


def test_text_batch_that_is_neither_one_nor_the_crop_batch_is_refused():
    cond, options = _text()[0]
    with pytest.raises(ValueError, match="batch 2 but the crops have batch 3"):
        fuse_conditioning([[cond.repeat(2, 1, 1), options]], torch.randn(3, 5, CONTEXT_DIM), 1.0)


def test_fused_conditioning_samples_per_crop():
    from fixtures.tiny_models import tiny_model

    images = _pixels(2, seed=3)
    positive = fuse_conditioning(_text(), vision_tokens(tiny_clip_vision(), images), 1.0)
    negative = _text("blurry")
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    noise[1] = noise[0]
    args = dict(steps=2, cfg=3.0, sampler_name="euler", scheduler="normal", denoise=1.0, seed=0)
    fused = sample_batch(tiny_model(), noise, torch.zeros_like(noise), positive, negative, **args)
    plain = sample_batch(tiny_model(), noise, torch.zeros_like(noise), _text(), negative, **args)
    assert fused.shape == (2, 4, 8, 8)
    assert torch.allclose(plain[0], plain[1], atol=1e-4)
    assert not torch.allclose(fused[0], fused[1], atol=1e-3)
