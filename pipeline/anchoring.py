"""CLIP-ViT anchoring: every vision token of a crop, projected into the text context, appended after the text tokens.

ComfyUI's ClipVisionModel.encode_image resizes (bicubic, antialiased) and centre-crops to the model's image_size,
quantises to 1/255 and normalises; its `last_hidden_state` is the encoder output before `post_layernorm` for
CLIP-ViT (SigLIP applies the norm itself) and `image_embeds` is the projection of the class token only. Here the
same layer norm and the model's own `visual_projection` are applied to every token (class token first).

SDXL's context (2048) is CLIP-L's hidden state (768) followed by OpenCLIP-bigG's (1280); for an SDXL model a ViT-L/14
(projection 768) or ViT-bigG/14 (1280) tower's tokens fill their own encoder's slot there, the other dims zero. Other
models take only tokens as wide as their context.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

Conditioning = list[list[Any]]

# token width -> zero dims (before, after) the tokens in SDXL's 2048-wide context.
SDXL_SLOTS: dict[int, tuple[int, int]] = {768: (0, 1280), 1280: (768, 0)}


def context_slots(model: Any) -> dict[int, tuple[int, int]]:
    """Where a ComfyUI MODEL's text context takes vision tokens narrower than itself: SDXL's encoder slots, else none."""
    import comfy.model_base

    return SDXL_SLOTS if isinstance(getattr(model, "model", None), comfy.model_base.SDXL) else {}


def vision_tokens(clip_vision: Any, images: torch.Tensor) -> torch.Tensor:
    """All tokens of a ComfyUI CLIP_VISION on images [B, H, W, 3] in 0..1 as visual_projection(post_layernorm(h)): [B, T, D] float32."""
    import comfy.model_management

    if images.ndim != 4 or images.shape[-1] < 3:
        raise ValueError(f"images must be [B, H, W, 3], got {tuple(images.shape)}")
    model = clip_vision.model
    vision = getattr(model, "vision_model", None)
    projection = getattr(model, "visual_projection", None)
    if vision is None or projection is None:
        raise TypeError(f"{type(model).__name__} is not a CLIP/SigLIP vision model: it has no vision_model/visual_projection")
    with torch.no_grad():
        hidden = clip_vision.encode_image(images[..., :3], crop=True)["last_hidden_state"]
        hidden = hidden.to(clip_vision.load_device, torch.float32)
        if not getattr(vision, "output_layernorm", False):
            hidden = vision.post_layernorm(hidden)
        tokens = projection(hidden)
    return tokens.to(comfy.model_management.intermediate_device(), torch.float32)


def _repeat_batch(tensor: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    raise ValueError(f"{what} has batch {tensor.shape[0]} but the crops have batch {batch}: it must be 1 or {batch}")


def fit_context(tokens: torch.Tensor, text_width: int, slots: dict[int, tuple[int, int]] | None = None) -> torch.Tensor:
    """Tokens [B, T, D] in a text context of width `text_width`: as they are, or zero-padded into their slot."""
    width = tokens.shape[-1]
    if width == text_width:
        return tokens
    slot = (slots or {}).get(width)
    if slot is None or width + sum(slot) != text_width:
        raise ValueError(
            f"CLIP-ViT projects to {width} but the model's text context is {text_width}: "
            "use a CLIP vision model whose projection matches (SDXL: ViT-L/14 or ViT-bigG/14), "
            "or set vision_strength 0 / disconnect clip_vision"
        )
    return F.pad(tokens, slot)


def fuse_conditioning(conditioning: Conditioning, tokens: torch.Tensor | None, strength: float,
                      slots: dict[int, tuple[int, int]] | None = None) -> Conditioning:
    """Per cond entry [text repeated to B, strength * tokens fit to the context] on dim 1 -> [B, L + T, D], pooled_output repeated; tokens None or strength 0: unchanged."""
    if tokens is None or strength == 0:
        return conditioning
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be [B, T, D], got {tuple(tokens.shape)}")
    batch = tokens.shape[0]
    fused = []
    for cond, options in conditioning:
        text = _repeat_batch(cond, batch, "the text conditioning")
        vision = fit_context(tokens.to(device=cond.device, dtype=cond.dtype) * strength, cond.shape[-1], slots)
        options = dict(options)
        pooled = options.get("pooled_output")
        if isinstance(pooled, torch.Tensor):
            options["pooled_output"] = _repeat_batch(pooled, batch, "pooled_output").contiguous()
        fused.append([torch.cat([text, vision], dim=1), options])
    return fused
