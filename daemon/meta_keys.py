"""Meta's sam3.pt detector keys in transformers' Sam3Model names: rename rules per component, fused attention
tensors split, and the few tensors whose shape differs."""
from __future__ import annotations

import re
from typing import Callable

import torch

DETECTOR_PREFIX = "detector."


Rule = tuple["re.Pattern[str]", "str | Callable[[re.Match], str] | None"]


def _rules(*pairs) -> tuple[Rule, ...]:
    return tuple((re.compile(pattern), target) for pattern, target in pairs)


def _next_layer(hf_name: str) -> Callable[[re.Match], str]:
    """Meta's MLP `layers.N.` is the transformers `layer{N+1}.` of the module named hf_name."""
    return lambda m: f"{hf_name}.layer{int(m.group(1)) + 1}."


def _attention(meta: str, hf: str, index: str = r"(\d+)\.", hf_index: str = r"layers.\1.") -> list[tuple[str, str]]:
    """Meta nn.MultiheadAttention `meta` (fused in_proj, out_proj) → transformers attention `hf` (o_proj)."""
    return [(rf"{index}{meta}\.out_proj\.", rf"{hf_index}{hf}.o_proj."), (rf"{index}{meta}\.", rf"{hf_index}{hf}.")]


_VIT = _rules(
    (r"pos_embed$", "embeddings.position_embeddings"),
    (r"patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
    (r"ln_pre\.", "layer_norm."),
    (r"blocks\.\d+\.attn\.freqs_cis$", None),
    (r"blocks\.(\d+)\.attn\.proj\.", r"layers.\1.attention.o_proj."),
    (r"blocks\.(\d+)\.attn\.qkv\.", r"layers.\1.attention.qkv."),
    (r"blocks\.(\d+)\.norm([12])\.", r"layers.\1.layer_norm\2."),
    (r"blocks\.(\d+)\.mlp\.", r"layers.\1.mlp."),
)
_NECK = _rules(
    (r"(\d+)\.dconv_2x2(_0)?\.", r"\1.scale_layers.0."),
    (r"(\d+)\.dconv_2x2_1\.", r"\1.scale_layers.2."),
    (r"(\d+)\.conv_1x1\.", r"\1.proj1."),
    (r"(\d+)\.conv_3x3\.", r"\1.proj2."),
)
_TEXT = _rules(
    (r"token_embedding\.", "text_model.embeddings.token_embedding."),
    (r"positional_embedding$", "text_model.embeddings.position_embedding.weight"),
    (r"ln_final\.", "text_model.final_layer_norm."),
    (r"text_projection$", "text_projection.weight"),
    (r"transformer\.resblocks\.(\d+)\.attn\.", r"text_model.encoder.layers.\1.self_attn."),
    (r"transformer\.resblocks\.(\d+)\.ln_([12])\.", r"text_model.encoder.layers.\1.layer_norm\2."),
    (r"transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"text_model.encoder.layers.\1.mlp.fc1."),
    (r"transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"text_model.encoder.layers.\1.mlp.fc2."),
)
_GEOMETRY = _rules(
    *_attention("cross_attn_image", "cross_attn", index=r"encode\.(\d+)\."),
    *_attention("self_attn", "self_attn", index=r"encode\.(\d+)\."),
    (r"encode\.(\d+)\.linear([12])\.", lambda m: f"layers.{m.group(1)}.mlp.fc{m.group(2)}."),
    (r"encode\.(\d+)\.norm([123])\.", r"layers.\1.layer_norm\2."),
    (r"img_pre_norm\.", "vision_layer_norm."),
    (r"encode_norm\.", "output_layer_norm."),
    (r"norm\.", "prompt_layer_norm."),
)
_DETR_ENCODER = _rules(
    *_attention("cross_attn_image", "cross_attn", index=r"layers\.(\d+)\."),
    *_attention("cross_attn", "cross_attn", index=r"layers\.(\d+)\."),
    *_attention("self_attn", "self_attn", index=r"layers\.(\d+)\."),
    (r"layers\.(\d+)\.linear([12])\.", lambda m: f"layers.{m.group(1)}.mlp.fc{m.group(2)}."),
    (r"layers\.(\d+)\.norm([123])\.", r"layers.\1.layer_norm\2."),
)
_DETR_DECODER = _rules(
    *_attention("self_attn", "self_attn", index=r"layers\.(\d+)\."),
    *_attention("ca_text", "text_cross_attn", index=r"layers\.(\d+)\."),
    *_attention("cross_attn", "vision_cross_attn", index=r"layers\.(\d+)\."),
    (r"layers\.(\d+)\.linear([12])\.", lambda m: f"layers.{m.group(1)}.mlp.fc{m.group(2)}."),
    (r"layers\.(\d+)\.norm1\.", r"layers.\1.vision_cross_attn_layer_norm."),
    (r"layers\.(\d+)\.catext_norm\.", r"layers.\1.text_cross_attn_layer_norm."),
    (r"layers\.(\d+)\.norm2\.", r"layers.\1.self_attn_layer_norm."),
    (r"layers\.(\d+)\.norm3\.", r"layers.\1.mlp_layer_norm."),
    (r"presence_token_head\.layers\.(\d+)\.", _next_layer("presence_head")),
    (r"presence_token_out_norm\.", "presence_layer_norm."),
    (r"bbox_embed\.layers\.(\d+)\.", _next_layer("box_head")),
    (r"ref_point_head\.layers\.(\d+)\.", _next_layer("ref_point_head")),
    (r"boxRPB_embed_x\.layers\.(\d+)\.", _next_layer("box_rpb_embed_x")),
    (r"boxRPB_embed_y\.layers\.(\d+)\.", _next_layer("box_rpb_embed_y")),
    (r"norm\.", "output_layer_norm."),
)
_SCORING = _rules(
    (r"prompt_mlp\.layers\.(\d+)\.", _next_layer("text_mlp")),
    (r"prompt_mlp\.out_norm\.", "text_mlp_out_norm."),
    (r"prompt_proj\.", "text_proj."),
    (r"hs_proj\.", "query_proj."),
)
_MASK = _rules(
    (r"(mask_predictor\.)?mask_embed\.layers\.", "mask_embedder.layers."),
    (r"instance_seg_head\.", "instance_projection."),
    (r"semantic_seg_head\.", "semantic_projection."),
    *_attention("cross_attend_prompt", "prompt_cross_attn", index="", hf_index=""),
    (r"cross_attn_norm\.", "prompt_cross_attn_norm."),
)
_COMPONENTS: tuple[tuple[str, str, tuple[Rule, ...]], ...] = (
    ("backbone.vision_backbone.trunk.", "vision_encoder.backbone.", _VIT),
    ("backbone.vision_backbone.convs.", "vision_encoder.neck.fpn_layers.", _NECK),
    ("backbone.language_backbone.encoder.", "text_encoder.", _TEXT),
    ("backbone.language_backbone.resizer.", "text_projection.", ()),
    ("geometry_encoder.", "geometry_encoder.", _GEOMETRY),
    ("transformer.encoder.", "detr_encoder.", _DETR_ENCODER),
    ("transformer.decoder.", "detr_decoder.", _DETR_DECODER),
    ("dot_prod_scoring.", "dot_product_scoring.", _SCORING),
    ("segmentation_head.", "mask_decoder.", _MASK),
)


def meta_key_to_hf(key: str) -> str | None:
    """The transformers name of one Meta detector key (without `detector.`), or None where image detection has no use for it."""
    for meta_prefix, hf_prefix, rules in _COMPONENTS:
        if not key.startswith(meta_prefix):
            continue
        rest = key[len(meta_prefix):]
        for pattern, target in rules:
            match = pattern.match(rest)
            if match is None:
                continue
            if target is None:
                return None
            head = target(match) if callable(target) else match.expand(target)
            return hf_prefix + head + rest[match.end():]
        return hf_prefix + rest
    return None


def _split_fused(state: dict[str, torch.Tensor]) -> None:
    """Split fused qkv / in_proj tensors into the q_proj, k_proj, v_proj tensors transformers keeps."""
    for key in [k for k in state if ".qkv." in k or ".in_proj_" in k]:
        q, k, v = state.pop(key).chunk(3, dim=0)
        if ".qkv." in key:
            names = [key.replace(".qkv.", f".{p}_proj.") for p in "qkv"]
        else:
            base, kind = key.rsplit(".in_proj_", 1)
            names = [f"{base}.{p}_proj.{kind}" for p in "qkv"]
        state.update(zip(names, (q.contiguous(), k.contiguous(), v.contiguous())))


def meta_detector_state(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta's sam3.pt detector (`detector.*`; `tracker.*` dropped) converted to the transformers Sam3Model layout."""
    prefixed = any(k.startswith(DETECTOR_PREFIX) for k in raw)
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if prefixed:
            if not key.startswith(DETECTOR_PREFIX):
                continue
            key = key[len(DETECTOR_PREFIX):]
        new = meta_key_to_hf(key)
        if new is not None:
            state[new] = value
    _split_fused(state)
    pos = state.get("vision_encoder.backbone.embeddings.position_embeddings")
    if pos is not None and pos.ndim == 3 and _is_square(pos.shape[1] - 1) and not _is_square(pos.shape[1]):
        state["vision_encoder.backbone.embeddings.position_embeddings"] = pos[:, 1:]
    proj = state.get("text_encoder.text_projection.weight")
    if proj is not None:
        state["text_encoder.text_projection.weight"] = proj.t().contiguous()
    return state


def _is_square(n: int) -> bool:
    return n > 0 and int(n ** 0.5) ** 2 == n
