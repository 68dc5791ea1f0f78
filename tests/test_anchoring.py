"""Anchoring per crop and tile (issue 18): ReVision, style models and raw tokens, each batch item its own, cond and
uncond in one UNet call, the image encoder once per batch at its own input size; wrong pairings refused with the fix."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fixtures.tiny_models import (CONTEXT_DIM, VISION_CONFIG, VISION_TOKENS, sdxl_text, tiny_clip_vision, tiny_model,
                                  tiny_sdxl, tiny_style_model, tiny_vae)
from pipeline_helpers import encode_prompt, scaffold_for, smooth_canvas
from luna_semantic_detailer.kernels.noise import region_seed
from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner
from luna_semantic_detailer.pipeline.anchoring import (SDXL_SLOTS, append_tokens, encode, encoder_input, resolve,
                                                       revision_pooled, vision_tokens)
from luna_semantic_detailer.pipeline.tiles import canvas_tiles

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
SETTINGS = dict(steps=2, cfg=3.0, sampler_name="euler", scheduler="normal", denoise=0.5)


def _pixels(batch: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """8-bit images, so that CLIP's quantisation to 1/255 is exact in float32 and float64 alike."""
    return torch.randint(0, 256, (batch, size, size, 3), generator=torch.Generator().manual_seed(seed)) / 255.0


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


# --- the image encoder ------------------------------------------------------------------------------------------


def test_raw_tokens_equal_a_float64_vit_reference_and_the_class_token_is_image_embeds():
    images = _pixels(3)
    output = encode(tiny_clip_vision(), images)
    tokens = vision_tokens(tiny_clip_vision(), output)
    assert tokens.shape == (3, VISION_TOKENS, CONTEXT_DIM) and tokens.dtype == torch.float32
    torch.testing.assert_close(tokens.double(), _reference_tokens(images), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tokens[:, 0], output["image_embeds"].float(), rtol=1e-5, atol=1e-5)


def test_crops_reach_the_encoder_at_its_input_size_with_comfyuis_own_preprocessing(monkeypatch):
    clip_vision = tiny_clip_vision()
    crops = torch.rand(2, 512, 384, 3, generator=torch.Generator().manual_seed(1))
    sizes = []
    real = type(clip_vision).encode_image
    monkeypatch.setattr(type(clip_vision), "encode_image",
                        lambda self, image, crop=True: sizes.append(tuple(image.shape)) or real(self, image, crop))
    ours = encode(clip_vision, crops)
    comfy_own = real(clip_vision, crops, True)
    assert sizes == [(2, VISION_CONFIG["image_size"], VISION_CONFIG["image_size"], 3)]
    torch.testing.assert_close(ours["last_hidden_state"], comfy_own["last_hidden_state"], rtol=0, atol=1e-5)
    assert tuple(encoder_input(clip_vision, crops[:, :64, :64]).shape) == (2, 64, 64, 3)


def test_appended_tokens_follow_the_text_with_the_pooled_vector_per_item_and_fit_sdxls_slots():
    text = [[torch.randn(1, 77, 2048), {"pooled_output": torch.randn(1, 1280), "marker": "kept"}]]
    for width, before in ((768, 0), (1280, 768)):
        tokens = torch.randn(2, 5, width)
        (cond, options), = append_tokens(text, tokens, SDXL_SLOTS)
        assert cond.shape == (2, 82, 2048) and torch.equal(cond[:, :77], text[0][0].expand(2, -1, -1))
        expected = torch.zeros(2, 5, 2048)
        expected[..., before:before + width] = tokens
        assert torch.equal(cond[:, 77:], expected) and options["marker"] == "kept"
        assert options["pooled_output"].shape == (2, 1280)
    with pytest.raises(ValueError, match="1024 wide but the model's text context is 2048"):
        append_tokens(text, torch.randn(1, 5, 1024), SDXL_SLOTS)


# --- through the refiner: what each batch item receives -----------------------------------------------------------


def spied(model):
    """A clone of `model` whose every UNet call is recorded: (batch, cond_or_uncond, c_crossattn, y)."""
    calls = []
    clone = model.clone()

    def record(apply, args):
        c = args["c"]
        calls.append({"batch": args["input"].shape[0], "parts": list(args["cond_or_uncond"]),
                      "context": c["c_crossattn"].detach().clone(), "y": c.get("y")})
        return apply(args["input"], args["timestep"], **c)

    clone.set_model_unet_function_wrapper(record)
    return clone, calls


def refine(model, positive, negative, *, max_batch, anchoring="auto", clip_vision=None, style_model=None, strength=0.6):
    image = smooth_canvas(1, 256, 256, seed=7)
    image[:, :, 128:] = 1 - image[:, :, 128:]
    out = LunaGlobalRefiner().refine(image, scaffold_for(256, 256, seed=2), model, positive, negative, tiny_vae(), 128, 32,
                                     vision_strength=strength, max_batch=max_batch, anchoring=anchoring,
                                     clip_vision=clip_vision, style_model=style_model, **SETTINGS)[0]
    return image, out


def tile_crops(image):
    tiles = canvas_tiles(256, 256, 128, 32, 8, "fit")
    return tiles, torch.stack([image[0, t.y:t.y + t.height, t.x:t.x + t.width] for t in tiles])


def test_revision_gives_each_sdxl_tile_its_own_pooled_embedding_in_one_unet_call_per_step():
    clip_vision = tiny_clip_vision(0, 1280)
    model, calls = spied(tiny_sdxl())
    image, batched = refine(model, sdxl_text(1), sdxl_text(2), max_batch=9, clip_vision=clip_vision)
    tiles, crops = tile_crops(image)
    embeds = encode(clip_vision, crops)["image_embeds"]
    expected = revision_pooled(tiny_sdxl(), embeds, 0.6, [region_seed(2, (t.x, t.y, t.width, t.height)) for t in tiles])
    first = calls[0]
    n = len(tiles)
    assert first["batch"] == 2 * n and sorted(first["parts"]) == [0, 1], "one batch of all tiles, cond and uncond together"
    cond_rows = first["y"][:n] if first["parts"][0] == 0 else first["y"][n:]
    torch.testing.assert_close(cond_rows[:, :1280].float(), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(cond_rows[0, :1280], cond_rows[1, :1280])
    uncond_rows = first["y"][n:] if first["parts"][0] == 0 else first["y"][:n]
    torch.testing.assert_close(uncond_rows[:, :1280].float(), sdxl_text(2)[0][1]["pooled_output"].expand(n, -1))
    assert [c["batch"] for c in calls] == [2 * n] * SETTINGS["steps"]
    calls.clear()
    _, one = refine(model, sdxl_text(1), sdxl_text(2), max_batch=1, clip_vision=clip_vision)
    singles = torch.cat([c["y"][c["parts"].index(0)][None, :1280] for c in calls[::SETTINGS["steps"]]])
    torch.testing.assert_close(singles.float(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(one, batched, atol=2e-4, rtol=0)


@pytest.mark.parametrize("mode", ["style model", "raw tokens (experimental)"])
def test_style_and_raw_tokens_are_each_items_own_and_the_negative_gets_zero_tokens_in_the_same_call(mode):
    clip_vision = tiny_clip_vision()
    style = tiny_style_model() if mode == "style model" else None
    model, calls = spied(tiny_model())
    image, batched = refine(model, encode_prompt("a photo"), encode_prompt(""), max_batch=8, anchoring=mode,
                            clip_vision=clip_vision, style_model=style)
    tiles, crops = tile_crops(image)
    output = encode(clip_vision, crops)
    tokens = (style.get_cond(output) if style else vision_tokens(clip_vision, output)).float() * 0.6
    first = calls[0]
    n = first["batch"] // 2
    assert sorted(first["parts"]) == [0, 1], "cond and uncond must share one UNet call"
    tokens = tokens[:n]
    order = first["parts"]
    cond = first["context"][:n] if order[0] == 0 else first["context"][n:]
    uncond = first["context"][n:] if order[0] == 0 else first["context"][:n]
    torch.testing.assert_close(cond[:, 77:].float(), tokens, rtol=1e-5, atol=1e-5)
    assert torch.equal(uncond[:, 77:], torch.zeros_like(uncond[:, 77:]))
    assert not torch.allclose(cond[0, 77:], cond[1, 77:])
    assert all(sorted(c["parts"]) == [0, 1] for c in calls)
    _, one = refine(model, encode_prompt("a photo"), encode_prompt(""), max_batch=1, anchoring=mode,
                    clip_vision=clip_vision, style_model=style)
    torch.testing.assert_close(one, batched, atol=2e-4, rtol=0)


# --- choosing, and refusing ---------------------------------------------------------------------------------------


def test_auto_picks_what_is_connected():
    bigg, vit = tiny_clip_vision(0, 1280), tiny_clip_vision()
    assert resolve("auto", tiny_sdxl(), bigg, None, 0.5).mode == "revision"
    assert resolve("auto", tiny_model(), vit, None, 0.5).mode == "raw tokens (experimental)"
    assert resolve("auto", tiny_model(), vit, tiny_style_model(), 0.5).mode == "style model"
    assert resolve("auto", tiny_model(), None, None, 0.5) is None
    assert resolve("revision", tiny_sdxl(), bigg, None, 0.0) is None


@pytest.mark.parametrize("mode,model,clip,style,message", [
    ("revision", "sd15", "vit", None, "ADM input, which SDXL and SD2.1-unCLIP models have.*style model"),
    ("revision", "sdxl", "vit", None, "CLIP-ViT-bigG.*projects to 64.*bigG vision model"),
    ("style model", "sd15", "vit", None, "needs a STYLE_MODEL"),
    ("raw tokens (experimental)", "sd15", None, None, "connect a CLIP_VISION"),
])
def test_pairings_that_cannot_work_are_refused_with_the_fix(mode, model, clip, style, message):
    models = {"sd15": tiny_model(), "sdxl": tiny_sdxl()}
    with pytest.raises(ValueError, match=message):
        resolve(mode, models[model], tiny_clip_vision() if clip else None, style, 0.5)


def test_a_style_model_for_another_context_width_is_refused_naming_the_family():
    wide = tiny_style_model(0, 4096)
    with pytest.raises(ValueError, match="style model's tokens are 4096 wide but the model's text context is 64.*Redux for Flux"):
        refine(tiny_model(), encode_prompt("a photo"), encode_prompt(""), max_batch=4, anchoring="style model",
               clip_vision=tiny_clip_vision(), style_model=wide)
