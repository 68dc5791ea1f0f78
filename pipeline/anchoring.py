"""Anchoring each crop and tile by its own image features, through mechanisms the diffusion models were trained on.

- ReVision (SDXL): the crop's CLIP-ViT-bigG image embedding, noise-augmented by the model's own augmentor (seeded
  per region) and scaled by the strength, is the positive's pooled vector — ComfyUI's unCLIPConditioning recipe, one
  embedding per batch item (ComfyUI would sum a batch of embeddings into one). SD2.1-unCLIP: the crop's embedding as
  unclip_conditioning, one region per sampler call (its ADM input takes one embedding per call).
- Style model (Flux Redux, the SD1 T2I style adapter): StyleModel.get_cond of the crop's CLIP-ViT output, times the
  strength, appended after the text tokens: StyleModelApply's concatenation, per batch item.
- Raw tokens (experimental, the spec's path): every CLIP-ViT token through post_layernorm and the visual projection,
  appended after the text. CLIP trained that projection on the class token only, and no UNet was trained to read
  these tokens: expect a diluted prompt rather than a structural lock.
For style models and raw tokens the negative gets as many zero tokens, so cond and uncond have one length and share
one UNet call per step (ComfyUI concatenates cross-attention only of compatible lengths).

ComfyUI's encode_image resizes (bicubic, antialiased) and centre-crops to the encoder's image_size; the crops are
brought to that size where they lie (`encoder_input`) before they go to the encoder's device.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..luna_types import Conditioning
from ..validation import one_of
from .fingerprint import LOCAL
from .conditioning import with_tokens


ANCHORINGS = ("auto", "off", "revision", "style model", "raw tokens (experimental)")
REVISION_WIDTH = 1280
# token width -> zero dims (before, after) the tokens in SDXL's 2048-wide context.
SDXL_SLOTS: dict[int, tuple[int, int]] = {768: (0, 1280), 1280: (768, 0)}


@dataclass(frozen=True)
class Anchor:
    """A resolved anchoring: `mode` one of ANCHORINGS but auto, with what it needs."""

    mode: str
    clip_vision: Any = field(default=None, metadata=LOCAL)
    style_model: Any = field(default=None, metadata=LOCAL)
    strength: float = 0.0

    @property
    def one_region_per_call(self) -> bool:
        return self.mode == "revision-unclip"


def _family(model: Any) -> str:
    import comfy.model_base

    base = getattr(model, "model", None)
    if isinstance(base, comfy.model_base.SD21UNCLIP):
        return "sd21-unclip"
    if isinstance(base, comfy.model_base.SDXL):
        return "sdxl"
    return type(base).__name__


def _projection_width(clip_vision: Any) -> int:
    return int(clip_vision.model.visual_projection.weight.shape[0])


def resolve(mode: str, model: Any, clip_vision: Any, style_model: Any, strength: float) -> Anchor | None:
    """The anchoring to run, or None; `auto` picks what is connected; a pairing that cannot work is an error naming the fix."""
    one_of("anchoring", mode, ANCHORINGS)
    family = _family(model)
    if mode == "auto":
        if clip_vision is None or strength == 0:
            return None
        if style_model is not None:
            mode = "style model"
        elif family == "sd21-unclip" or (family == "sdxl" and _projection_width(clip_vision) == REVISION_WIDTH):
            mode = "revision"
        else:
            mode = "raw tokens (experimental)"
    if mode == "off" or strength == 0:
        return None
    if clip_vision is None:
        raise ValueError(f"anchoring {mode!r} encodes each crop with CLIP-ViT: connect a CLIP_VISION (CLIPVisionLoader) "
                         "or set anchoring to off")
    if mode == "revision":
        if family == "sd21-unclip":
            return Anchor("revision-unclip", clip_vision, None, strength)
        if family != "sdxl":
            raise ValueError(
                f"ReVision feeds the crop's image embedding through the model's ADM input, which SDXL and SD2.1-unCLIP "
                f"models have; this model is {family}: use anchoring 'style model' with a style model for it, or "
                "'raw tokens (experimental)', or off")
        width = _projection_width(clip_vision)
        if width != REVISION_WIDTH:
            raise ValueError(
                f"ReVision for SDXL takes a CLIP-ViT-bigG image embedding ({REVISION_WIDTH} wide, e.g. "
                f"clip_vision_g.safetensors); this CLIP_VISION projects to {width}: load the bigG vision model")
        return Anchor("revision", clip_vision, None, strength)
    if mode == "style model":
        if style_model is None:
            raise ValueError("anchoring 'style model' needs a STYLE_MODEL (StyleModelLoader: Flux Redux, SD1 T2I style)")
        return Anchor("style model", clip_vision, style_model, strength)
    return Anchor(mode, clip_vision, None, strength)


def context_slots(model: Any) -> dict[int, tuple[int, int]]:
    """Where a ComfyUI MODEL's text context takes vision tokens narrower than itself: SDXL's encoder slots, else none."""
    return SDXL_SLOTS if _family(model) == "sdxl" else {}


def encoder_input(clip_vision: Any, images: torch.Tensor) -> torch.Tensor:
    """images [B, H, W, 3] resized (bicubic, antialiased) and centre-cropped to the encoder's size as ComfyUI's
    clip_preprocess does, where they lie, so encode_image gets small images and resizes nothing."""
    if images.ndim != 4 or images.shape[-1] < 3:
        raise ValueError(f"images must be [B, H, W, 3], got {tuple(images.shape)}")
    size = _fixed_size(clip_vision)
    if size is None:
        return images[..., :3]
    x = images[..., :3].movedim(-1, 1)
    if x.shape[-2:] != (size, size):
        scale = size / min(x.shape[-2:])
        x = F.interpolate(x, size=(round(scale * x.shape[-2]), round(scale * x.shape[-1])), mode="bicubic", antialias=True)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[..., top:top + size, left:left + size]
    return x.movedim(1, -1)


def encode(clip_vision: Any, images: torch.Tensor):
    """ComfyUI's CLIP_VISION_OUTPUT of images [B, H, W, 3] in 0..1, one encoder call for the batch."""
    with torch.no_grad():
        return clip_vision.encode_image(encoder_input(clip_vision, images), crop=True)


def vision_tokens(clip_vision: Any, output) -> torch.Tensor:
    """All tokens of a CLIP_VISION_OUTPUT as visual_projection(post_layernorm(h)): [B, T, D] float32."""
    import comfy.model_management

    model = clip_vision.model
    vision = getattr(model, "vision_model", None)
    projection = getattr(model, "visual_projection", None)
    if vision is None or projection is None:
        raise TypeError(f"{type(model).__name__} is not a CLIP/SigLIP vision model: it has no vision_model/visual_projection")
    with torch.no_grad():
        hidden = output["last_hidden_state"].to(clip_vision.load_device, torch.float32)
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


def fit_context(tokens: torch.Tensor, text_width: int, slots: dict[int, tuple[int, int]] | None = None,
                what: str = "CLIP-ViT") -> torch.Tensor:
    """Tokens [B, T, D] in a text context of width `text_width`: as they are, or zero-padded into their slot."""
    width = tokens.shape[-1]
    if width == text_width:
        return tokens
    slot = (slots or {}).get(width)
    if slot is None or width + sum(slot) != text_width:
        raise ValueError(
            f"{what} tokens are {width} wide but the model's text context is {text_width}: use one made for this model "
            "family (raw tokens: a CLIP vision model whose projection matches, SDXL: ViT-L/14 or ViT-bigG/14; style "
            "models: Redux for Flux, the T2I style adapter for SD1.5), or set anchoring to off"
        )
    return F.pad(tokens, slot)


def append_tokens(conditioning: Conditioning, tokens: torch.Tensor, slots: dict[int, tuple[int, int]] | None = None,
                  what: str = "CLIP-ViT") -> Conditioning:
    """Per entry [text repeated to B, tokens fit to the context] on dim 1 -> [B, L + T, D], pooled_output repeated."""
    batch = tokens.shape[0]
    out = []
    for cond, options in conditioning:
        text = _repeat_batch(cond, batch, "the text conditioning")
        extra = fit_context(tokens.to(device=cond.device, dtype=cond.dtype), cond.shape[-1], slots, what)
        options = dict(options)
        pooled = options.get("pooled_output")
        if isinstance(pooled, torch.Tensor):
            options["pooled_output"] = _repeat_batch(pooled, batch, "pooled_output").contiguous()
        if isinstance(options.get("attention_mask"), torch.Tensor):
            options["attention_mask"] = _repeat_batch(options["attention_mask"], batch, "attention_mask")
        out.append(with_tokens(text, options, extra))
    return out


def revision_pooled(model: Any, embeds: torch.Tensor, strength: float, seeds: Sequence[int]) -> torch.Tensor:
    """ComfyUI's unclip_adm for SDXL, one embedding [D] at a time with its own seed: [B, 1280] pooled vectors."""
    augmentor = model.model.noise_augmentor
    device = next(augmentor.buffers()).device
    out = []
    with torch.no_grad():
        for embed, seed in zip(embeds, seeds):
            c_adm, _ = augmentor(embed[None].to(device, torch.float32), noise_level=torch.tensor([0], device=device), seed=seed)
            out.append(c_adm[:, :REVISION_WIDTH] * strength)
    return torch.cat(out).to(embeds.device)


@dataclass(frozen=True)
class Features:
    """What anchors one region, encoded once per node run: its pooled vector (ReVision), its CLIP_VISION_OUTPUT
    (SD2.1-unCLIP) or its tokens [T, D] (style model, raw tokens), the strength applied."""

    pooled: torch.Tensor | None = None
    output: Any = None
    tokens: torch.Tensor | None = None


ENCODER_BATCH = 16


def _item(output, index: int):
    """Item `index` of a CLIP_VISION_OUTPUT, as a CLIP_VISION_OUTPUT of one image."""
    import comfy.clip_vision

    item = comfy.clip_vision.Output()
    for key, value in vars(output).items():
        item[key] = value[index:index + 1] if isinstance(value, torch.Tensor) else value
    return item


def _fixed_size(clip_vision: Any) -> int | None:
    """The side the encoder takes its images at, or None for one that takes them at their own size (SigLIP2)."""
    side = getattr(clip_vision, "image_size", None)
    if not isinstance(side, int) or getattr(clip_vision, "model_type", "") == "siglip2_vision_model":
        return None
    return side


def _encoder_size(clip_vision: Any, size: tuple[int, int]) -> tuple[int, int]:
    """(w, h) of what encoder_input makes of an image of `size` (w, h) px."""
    side = _fixed_size(clip_vision)
    return size if side is None else (side, side)


def encode_features(anchor: Anchor, model: Any, sizes: Sequence[tuple[int, int]],
                    pixels: Callable[[int], torch.Tensor], seeds: Sequence[int]) -> list[Features]:
    """Each region's features from its pixels (`pixels(i)`: [1, h, w, 3] of size sizes[i] (w, h)), before any
    sampling so the encoder and the style model load once per node run: regions whose encoder input has one size
    are encoded together, ENCODER_BATCH at a time, each input built when its batch is."""
    import comfy.model_management

    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(_encoder_size(anchor.clip_vision, size), []).append(i)
    out: dict[int, Features] = {}
    for members in groups.values():
        for start in range(0, len(members), ENCODER_BATCH):
            comfy.model_management.throw_exception_if_processing_interrupted()
            chunk = members[start:start + ENCODER_BATCH]
            output = encode(anchor.clip_vision, torch.cat([encoder_input(anchor.clip_vision, pixels(i)) for i in chunk]))
            if anchor.mode == "revision":
                pooled = revision_pooled(model, output["image_embeds"], anchor.strength, [seeds[i] for i in chunk])
                out.update((i, Features(pooled=p)) for i, p in zip(chunk, pooled))
            elif anchor.mode == "revision-unclip":
                out.update((i, Features(output=_item(output, n))) for n, i in enumerate(chunk))
            else:
                if anchor.mode == "style model":
                    with torch.no_grad():
                        tokens = anchor.style_model.get_cond(output).float()
                else:
                    tokens = vision_tokens(anchor.clip_vision, output)
                tokens = (tokens * anchor.strength).to(comfy.model_management.intermediate_device())
                out.update((i, Features(tokens=t)) for i, t in zip(chunk, tokens))
    return [out[i] for i in range(len(sizes))]


def anchor_batch(anchor: Anchor, model: Any, positive: Conditioning, negative: Conditioning,
                 features: Sequence[Features]) -> tuple[Conditioning, Conditioning]:
    """The batch's (positive, negative) anchored by each region's features (module docstring)."""
    batch = len(features)
    if anchor.mode == "revision":
        pooled = torch.stack([f.pooled for f in features])
        return [[_repeat_batch(c, batch, "the text conditioning"), {**o, "pooled_output": pooled}] for c, o in positive], negative
    if anchor.mode == "revision-unclip":
        if batch != 1:
            raise ValueError(f"SD2.1-unCLIP takes one image embedding per sampler call, got a batch of {batch}")
        unclip = [{"clip_vision_output": features[0].output, "strength": anchor.strength, "noise_augmentation": 0.0}]
        return [[c, {**o, "unclip_conditioning": o.get("unclip_conditioning", []) + unclip}] for c, o in positive], negative
    tokens = torch.stack([f.tokens for f in features])
    what, slots = ("the style model's", {}) if anchor.mode == "style model" else ("CLIP-ViT", context_slots(model))
    return append_tokens(positive, tokens, slots, what), append_tokens(negative, torch.zeros_like(tokens), slots, what)
