"""Meta's sam3.pt video tracker keys in transformers' Sam3VideoModel names.

Meta's tracker is SAM 2's (`tracker.*`: `transformer.encoder` memory attention, `maskmem_backbone`,
`sam_mask_decoder`, `sam_prompt_encoder`, `obj_ptr_proj`, …); its neck lives in the detector's backbone as
`sam2_convs`. transformers names them `tracker_model.*` (memory_attention, memory_encoder, mask_decoder,
prompt_encoder, object_pointer_proj, …) and `tracker_neck.*`. The renames follow transformers' conversion script
(convert_sam3_video_to_hf.py, written for Meta's internal checkpoint names), applied to the published file's names;
the tests check those against ComfyUI's own SAM3 tracker, which loads sam3.pt as published.
"""
from __future__ import annotations

import re
from collections.abc import Collection

import torch

from .meta_keys import DETECTOR_PREFIX, Rule, _NECK, _rules

TRACKER_PREFIX = "tracker."
NECK_PREFIX = DETECTOR_PREFIX + "backbone.vision_backbone.sam2_convs."
MULTIPLEX_MARKERS = ("tracker.model.", DETECTOR_PREFIX + "backbone.vision_backbone.propagation_convs.")
"""Keys only SAM 3.1's multiplex tracker has (transformers has no model for it)."""

_MLPS = {
    "obj_ptr_proj": "object_pointer_proj",
    "sam_mask_decoder.iou_prediction_head": "mask_decoder.iou_prediction_head",
    "sam_mask_decoder.pred_obj_score_head": "mask_decoder.pred_obj_score_head",
}
"""Meta MLPs (`layers.0 … layers.n-1`) as transformers FeedForwards (`proj_in`, `layers.k`, `proj_out`)."""

_TRACKER: tuple[Rule, ...] = _rules(
    (r"maskmem_tpos_enc$", "memory_temporal_positional_encoding"),
    (r"no_mem_embed$", "no_memory_embedding"),
    (r"no_mem_pos_enc$", "no_memory_positional_encoding"),
    (r"no_obj_embed_spatial$", "occlusion_spatial_embedding_parameter"),
    (r"no_obj_ptr$", "no_object_pointer"),
    (r"obj_ptr_tpos_proj\.", "temporal_positional_encoding_projection_layer."),
    (r"mask_downsample\.", "mask_downsample."),
    (r"transformer\.encoder\.norm\.", "memory_attention.layer_norm."),
    (r"transformer\.encoder\.layers\.(\d+)\.(self_attn|cross_attn_image)\.out_proj\.",
     r"memory_attention.layers.\1.\2.o_proj."),
    (r"transformer\.encoder\.layers\.(\d+)\.norm(\d)\.", r"memory_attention.layers.\1.layer_norm\2."),
    (r"transformer\.encoder\.", "memory_attention."),
    (r"sam_mask_decoder\.transformer\.layers\.(\d+)\.mlp\.lin1\.", r"mask_decoder.transformer.layers.\1.mlp.proj_in."),
    (r"sam_mask_decoder\.transformer\.layers\.(\d+)\.mlp\.lin2\.", r"mask_decoder.transformer.layers.\1.mlp.proj_out."),
    (r"sam_mask_decoder\.transformer\.layers\.(\d+)\.norm(\d)\.", r"mask_decoder.transformer.layers.\1.layer_norm\2."),
    (r"sam_mask_decoder\.transformer\.(.+)\.out_proj\.", r"mask_decoder.transformer.\1.o_proj."),
    (r"sam_mask_decoder\.transformer\.norm_final_attn\.", "mask_decoder.transformer.layer_norm_final_attn."),
    (r"sam_mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"sam_mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"sam_mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    (r"sam_mask_decoder\.", "mask_decoder."),
    (r"sam_prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$",
     "prompt_encoder.shared_embedding.positional_embedding"),
    (r"sam_prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"sam_prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"sam_prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"sam_prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"sam_prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (r"sam_prompt_encoder\.", "prompt_encoder."),
    (r"maskmem_backbone\.pix_feat_proj\.", "memory_encoder.feature_projection."),
    (r"maskmem_backbone\.fuser\.layers\.(\d+)\.gamma$", r"memory_encoder.memory_fuser.layers.\1.scale"),
    (r"maskmem_backbone\.fuser\.layers\.(\d+)\.dwconv\.", r"memory_encoder.memory_fuser.layers.\1.depthwise_conv."),
    (r"maskmem_backbone\.fuser\.layers\.(\d+)\.norm\.", r"memory_encoder.memory_fuser.layers.\1.layer_norm."),
    (r"maskmem_backbone\.fuser\.layers\.(\d+)\.pwconv(\d)\.",
     r"memory_encoder.memory_fuser.layers.\1.pointwise_conv\2."),
    (r"maskmem_backbone\.out_proj\.", "memory_encoder.projection."),
)


def _mlp_layer(index: int, depth: int) -> str:
    """Meta MLP layer `index` of `depth` layers as the transformers FeedForward names it."""
    if index == 0:
        return "proj_in"
    if index == depth - 1:
        return "proj_out"
    return f"layers.{index - 1}"


def _depths(keys: Collection[str]) -> dict[str, int]:
    """Number of layers of every Meta MLP (`<base>.layers.<i>.…`) and sequential (`<base>.encoder.<i>.…`) among the
    tracker keys (without `tracker.`)."""
    depths: dict[str, int] = {}
    for key in keys:
        m = re.match(r"(.+\.(?:layers|encoder))\.(\d+)\.", key)
        if m:
            base = m.group(1).rsplit(".", 1)[0] if m.group(1).endswith(".layers") else m.group(1)
            depths[base] = max(depths.get(base, 0), int(m.group(2)) + 1)
    return depths


def meta_tracker_key_to_hf(key: str, depths: dict[str, int]) -> str | None:
    """The transformers name (under `tracker_model.`) of one Meta tracker key without `tracker.`; None for the point
    embeddings (joined by meta_tracker_state) and for keys the tracker has no use for."""
    m = re.match(r"maskmem_backbone\.mask_downsampler\.encoder\.(\d+)\.(.+)$", key)
    if m:
        index, last = int(m.group(1)), depths.get("maskmem_backbone.mask_downsampler.encoder", 0) - 1
        if index == last:
            return f"memory_encoder.mask_downsampler.final_conv.{m.group(2)}"
        part = {0: "conv", 1: "layer_norm"}.get(index % 3)
        return None if part is None else f"memory_encoder.mask_downsampler.layers.{index // 3}.{part}.{m.group(2)}"
    m = re.match(r"(obj_ptr_proj|sam_mask_decoder\.(?:iou_prediction_head|pred_obj_score_head|"
                 r"output_hypernetworks_mlps\.\d+))\.layers\.(\d+)\.(.+)$", key)
    if m:
        base = m.group(1)
        hf = _MLPS.get(base) or base.replace("sam_mask_decoder.", "mask_decoder.")
        return f"{hf}.{_mlp_layer(int(m.group(2)), depths[base])}.{m.group(3)}"
    if key.startswith("sam_prompt_encoder.point_embeddings."):
        return None
    for pattern, target in _TRACKER:
        match = pattern.match(key)
        if match:
            head = target(match) if callable(target) else match.expand(target)
            return head + key[match.end():]
    return None


def _neck_key_to_hf(key: str) -> str:
    """A `sam2_convs` key (without the prefix) as transformers' tracker_neck names it."""
    for pattern, target in _NECK:
        match = pattern.match(key)
        if match:
            return "tracker_neck.fpn_layers." + match.expand(target) + key[match.end():]
    return "tracker_neck.fpn_layers." + key


def meta_tracker_state(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta's tracker (`tracker.*`, and the backbone's `sam2_convs` as its neck) in Sam3VideoModel names
    (`tracker_model.*`, `tracker_neck.*`); other keys are ignored."""
    tracker = {k[len(TRACKER_PREFIX):]: v for k, v in raw.items() if k.startswith(TRACKER_PREFIX)}
    depths = _depths(tracker)
    state: dict[str, torch.Tensor] = {}
    for key, value in tracker.items():
        new = meta_tracker_key_to_hf(key, depths)
        if new is not None:
            state["tracker_model." + new] = value
    points = sorted((int(k.split(".")[2]), v) for k, v in tracker.items()
                    if re.fullmatch(r"sam_prompt_encoder\.point_embeddings\.\d+\.weight", k))
    if points:
        state["tracker_model.prompt_encoder.point_embed.weight"] = torch.cat([v for _, v in points], dim=0)
    shared = state.get("tracker_model.prompt_encoder.shared_embedding.positional_embedding")
    if shared is not None:
        # transformers keeps the prompt encoder's random Fourier matrix twice; Meta's file has it once.
        state["tracker_model.shared_image_embedding.positional_embedding"] = shared
    for key, value in raw.items():
        if key.startswith(NECK_PREFIX):
            state[_neck_key_to_hf(key[len(NECK_PREFIX):])] = value
    return state


def is_multiplex(keys: Collection[str]) -> bool:
    """Whether the keys are SAM 3.1's (multiplex tracker), which transformers' Sam3VideoModel cannot run."""
    return any(k.startswith(MULTIPLEX_MARKERS) for k in keys)

