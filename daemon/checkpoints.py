"""SAM3 checkpoints: the `sam3` models folder and both public weight layouts, read into one transformers Sam3Model."""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Callable

import torch

import folder_paths

FOLDER = "sam3"
EXTENSIONS = frozenset({".safetensors", ".pt", ".pth"})
PLACEHOLDER = "(no SAM3 checkpoint: put model.safetensors or sam3.pt in models/sam3)"

HF_DETECTOR_PREFIX = "detector_model."
HF_DROPPED_PREFIXES = ("tracker_model.", "tracker_neck.")
META_DETECTOR_PREFIX = "detector."
META_DROPPED_PREFIXES = ("tracker.",)
HF_TOP_LEVEL = ("vision_encoder.", "text_encoder.", "text_projection.", "geometry_encoder.", "detr_encoder.",
                "detr_decoder.", "mask_decoder.", "dot_product_scoring.")
META_TOP_LEVEL = ("backbone.", "transformer.", "geometry_encoder.", "segmentation_head.", "dot_prod_scoring.")


class Sam3CheckpointError(RuntimeError):
    """A SAM3 checkpoint that is missing, unreadable or laid out in a way this loader does not know."""


def register_folder() -> list[str]:
    """Register `models/sam3` with folder_paths (idempotent) and return the folders searched."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    entry = folder_paths.folder_names_and_paths.get(FOLDER)
    if entry is None:
        folder_paths.folder_names_and_paths[FOLDER] = ([default], set(EXTENSIONS))
    else:
        folder_paths.add_model_folder_path(FOLDER, default)
        paths, exts = folder_paths.folder_names_and_paths[FOLDER]
        if isinstance(exts, set) and exts:
            exts.update(EXTENSIONS)
    return folder_paths.get_folder_paths(FOLDER)


def list_checkpoints() -> list[str]:
    """Checkpoint names in the `sam3` folders, as the loader's combo shows them."""
    register_folder()
    return [name for name in folder_paths.get_filename_list(FOLDER)
            if os.path.splitext(name)[1].lower() in EXTENSIONS]


def resolve(name: str) -> str:
    """Full path of checkpoint `name`, or an error that says where to put it."""
    folders = register_folder()
    path = folder_paths.get_full_path(FOLDER, name) if name and name != PLACEHOLDER else None
    if path is None:
        raise Sam3CheckpointError(
            f"SAM3 checkpoint {name!r} not found. Put the facebook/sam3 `model.safetensors` or Meta's `sam3.pt` "
            f"into models/{FOLDER}/ (searched: {', '.join(folders)}) and refresh the node list.")
    return path


def read_raw(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors (tracker skipped) or .pt/.pth file, read without unpickling code."""
    if os.path.splitext(path)[1].lower() == ".safetensors":
        return _read_safetensors_detector(path)
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise Sam3CheckpointError(f"cannot read SAM3 checkpoint {path}: {exc}. The file is corrupt or incomplete; "
                                  f"download it again into models/{FOLDER}/.") from exc
    for wrapper in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise Sam3CheckpointError(f"{path} holds no state dict of tensors; expected Meta's sam3.pt "
                                  f"(keys detector.*) or facebook/sam3 model.safetensors.")
    return data


def detect_layout(keys) -> str:
    """'hf' (transformers Sam3Model, optionally under detector_model.) or 'meta' (Meta's sam3 keys, optionally under detector.)."""
    keys = list(keys)
    if any(k.startswith(HF_DETECTOR_PREFIX) for k in keys) or any(k.startswith(HF_TOP_LEVEL) for k in keys
                                                                   if not k.startswith("geometry_encoder.")):
        return "hf"
    if any(k.startswith(META_DETECTOR_PREFIX) for k in keys) or any(k.startswith(META_TOP_LEVEL) for k in keys):
        return "meta"
    sample = ", ".join(sorted(keys)[:5]) or "no keys"
    raise Sam3CheckpointError(
        "unknown SAM3 key layout (first keys: " + sample + "). Expected either the Hugging Face facebook/sam3 "
        "layout (detector_model.vision_encoder.*, detector_model.text_encoder.*, ... beside tracker_model.*) or "
        "Meta's sam3.pt layout (detector.backbone.vision_backbone.*, detector.transformer.*, "
        "detector.segmentation_head.* beside tracker.*).")


def hf_detector_state(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The detector's tensors of a transformers-layout file, with `detector_model.` removed and the tracker dropped."""
    prefixed = any(k.startswith(HF_DETECTOR_PREFIX) for k in raw)
    out = {}
    for key, value in raw.items():
        if key.startswith(HF_DROPPED_PREFIXES):
            continue
        if prefixed:
            if not key.startswith(HF_DETECTOR_PREFIX):
                continue
            key = key[len(HF_DETECTOR_PREFIX):]
        out[key] = value
    return out


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
    prefixed = any(k.startswith(META_DETECTOR_PREFIX) for k in raw)
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if prefixed:
            if not key.startswith(META_DETECTOR_PREFIX):
                continue
            key = key[len(META_DETECTOR_PREFIX):]
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


def sidecar_config(path: str) -> dict | None:
    """The Sam3 config dict stored beside a checkpoint (`<stem>.json`, else a SAM3 `config.json`), if any."""
    folder, name = os.path.split(path)
    for candidate in (os.path.splitext(name)[0] + ".json", "config.json"):
        full = os.path.join(folder, candidate)
        if not os.path.isfile(full):
            continue
        try:
            with open(full, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            logging.warning("[Luna] ignoring unreadable SAM3 config %s: %s", full, exc)
            continue
        if isinstance(data.get("detector_config"), dict):
            data = data["detector_config"]
        if data.get("model_type") == "sam3" or "vision_config" in data:
            return data
    return None


def build_config(path: str):
    """The Sam3Config of the checkpoint at `path`: its sidecar config, else facebook/sam3's."""
    from transformers import Sam3Config

    data = sidecar_config(path)
    if data is None:
        return Sam3Config()
    data = {k: v for k, v in data.items() if k not in ("architectures", "transformers_version", "model_type")}
    return Sam3Config(**data)


def _read_safetensors_detector(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file except the tracker's, which image detection never reads."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as fh:
            keys = list(fh.keys())
            dropped = HF_DROPPED_PREFIXES + META_DROPPED_PREFIXES
            return {k: fh.get_tensor(k) for k in keys if not k.startswith(dropped)}
    except Exception as exc:
        raise Sam3CheckpointError(f"cannot read SAM3 checkpoint {path}: {exc}. The file is corrupt or incomplete; "
                                  f"download it again into models/{FOLDER}/.") from exc


def detector_state(path: str) -> dict[str, torch.Tensor]:
    """The detector weights of the checkpoint at `path` in transformers Sam3Model layout, whatever its public layout."""
    raw = read_raw(path)
    layout = detect_layout(raw.keys())
    return hf_detector_state(raw) if layout == "hf" else meta_detector_state(raw)


def check_against(model_state: dict[str, torch.Tensor], state: dict[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    """`state` restricted to the model's keys; an error naming what is missing or misshaped."""
    missing = sorted(k for k in model_state if k not in state)
    wrong = sorted(f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in model_state.items()
                   if k in state and tuple(state[k].shape) != tuple(v.shape))
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:4])})")
        if wrong:
            parts.append(f"{len(wrong)} with other shapes (e.g. {'; '.join(wrong[:3])})")
        raise Sam3CheckpointError(
            f"{os.path.basename(path)} does not fit the SAM3 detector: {', '.join(parts)}. Use facebook/sam3's "
            f"model.safetensors or Meta's sam3.pt as downloaded; a resized SAM3 needs its config.json beside it "
            f"as {os.path.splitext(os.path.basename(path))[0]}.json.")
    extra = sorted(k for k in state if k not in model_state)
    if extra:
        logging.debug("[Luna] SAM3 %s: %d tensors not used for image detection (e.g. %s)",
                      os.path.basename(path), len(extra), ", ".join(extra[:3]))
    return {k: state[k] for k in model_state}


def _fresh(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A new, aligned copy (so results do not depend on where in the file a tensor sat), floats cast to dtype."""
    return tensor.to(dtype=dtype if tensor.is_floating_point() else tensor.dtype, copy=True, memory_format=torch.contiguous_format)


def load_model(path: str, dtype: torch.dtype = torch.float32):
    """A transformers Sam3Model on the CPU in eval mode, holding the detector weights of the checkpoint at `path`."""
    from transformers import Sam3Model

    config = build_config(path)
    state = detector_state(path)
    with torch.device("meta"):
        skeleton = Sam3Model(config)
    state = check_against(skeleton.state_dict(), state, path)
    del skeleton
    state = {k: _fresh(state.pop(k), dtype) for k in list(state)}
    model = Sam3Model.from_pretrained(None, config=config, state_dict=state, dtype=dtype)
    return model.eval().requires_grad_(False)
