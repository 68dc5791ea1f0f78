"""SAM3 checkpoints into one transformers Sam3Model: the registry of known layouts (daemon.layouts), recognised from a
checkpoint's keys; its config; the check of its tensors against the model; and the model itself. The same file's video
tracker (transformers' Sam3TrackerVideoModel without an image encoder, and its neck) loads on its own, for tracking.

Files are read by daemon.checkpoint_files, the `sam3` models folder is daemon.models_folder.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from . import layouts, meta_tracker_keys
from .checkpoint_files import read_tensors, sidecar_config, sidecar_video_config
from .errors import Sam3CheckpointError, Sam3TrackerMissing
from .layouts import Layout

if TYPE_CHECKING:
    from transformers import Sam3Config, Sam3Model, Sam3TrackerVideoModel, Sam3VideoConfig

LAYOUTS: tuple[Layout, ...] = (layouts.HF, layouts.META)
"""The layouts a checkpoint may have, asked in this order (the first that recognises its keys is its layout)."""


def detect_layout(keys: Iterable[str]) -> Layout:
    """The layout of a checkpoint with these keys, or an error that lists the first keys and the layouts known."""
    keys = list(keys)
    for layout in LAYOUTS:
        if layout.recognises(keys):
            return layout
    sample = ", ".join(sorted(keys)[:5]) or "no keys"
    known = " or ".join(layout.described for layout in LAYOUTS)
    raise Sam3CheckpointError(f"unknown SAM3 key layout (first keys: {sample}). Expected either {known}.")


def detector_state(path: str) -> dict[str, torch.Tensor]:
    """The detector weights of the checkpoint at `path` in transformers Sam3Model layout, whatever its public layout."""
    raw = read_tensors(path, skip=tuple(prefix for layout in LAYOUTS for prefix in layout.dropped))
    return detect_layout(raw.keys()).to_transformers(raw)


def build_config(path: str) -> "Sam3Config":
    """The Sam3Config of the checkpoint at `path`: its sidecar config, else facebook/sam3's."""
    from transformers import Sam3Config

    data = sidecar_config(path)
    if data is None:
        return Sam3Config()
    data = {k: v for k, v in data.items() if k not in ("architectures", "transformers_version", "model_type")}
    return Sam3Config(**data)


_CONFIG_ONLY = ("architectures", "transformers_version", "model_type")
TRACKING_FIX = ("Track with a checkpoint that holds the tracker (facebook/sam3's model.safetensors or Meta's sam3.pt, "
                "as downloaded), or set the Luna SAM3 Detector's mode to 'per frame'.")


def build_video_config(path: str) -> "Sam3VideoConfig":
    """The Sam3VideoConfig of the checkpoint at `path`: its sidecar sam3_video config (tracker_config and video
    settings) around build_config's detector config, else facebook/sam3's tracker; low-res masks at 4 × the grid."""
    from transformers import Sam3VideoConfig

    detector = build_config(path)
    data = sidecar_video_config(path) or {}
    fields = {k: v for k, v in data.items() if isinstance(data.get("detector_config"), dict)
              and k not in (*_CONFIG_ONLY, "detector_config")}
    fields.setdefault("low_res_mask_size", int(detector.vision_config.backbone_feature_sizes[0][0]))
    return Sam3VideoConfig(detector_config=detector.to_dict(), **fields)


def tracker_state(path: str) -> dict[str, torch.Tensor]:
    """The video tracker's tensors of the checkpoint at `path` in Sam3VideoModel names (`tracker_model.*`,
    `tracker_neck.*`); Sam3TrackerMissing, naming the fix, where the file holds none transformers can run."""
    read = tuple(prefix for layout in LAYOUTS for prefix in layout.tracker_read)
    raw = read_tensors(path, keep=read + meta_tracker_keys.MULTIPLEX_MARKERS)
    name = os.path.basename(path)
    if meta_tracker_keys.is_multiplex(raw):
        raise Sam3TrackerMissing(f"{name} is a SAM 3.1 checkpoint: its multiplex tracker is not one transformers' "
                                 f"Sam3VideoModel runs. {TRACKING_FIX}")
    for layout in LAYOUTS:
        if any(k.startswith(layout.tracker_marker) for k in raw):
            return layout.tracker_to_transformers(raw)
    markers = " or ".join(f"{layout.tracker_marker}*" for layout in LAYOUTS)
    raise Sam3TrackerMissing(f"{name} holds no SAM3 video tracker (no {markers} weights), so it can detect but not "
                             f"track objects over frames. {TRACKING_FIX}")


def check_against(model_state: dict[str, torch.Tensor], state: dict[str, torch.Tensor], path: str,
                  part: str = "SAM3 detector") -> dict[str, torch.Tensor]:
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
            f"{os.path.basename(path)} does not fit the {part}: {', '.join(parts)}. Use facebook/sam3's "
            f"model.safetensors or Meta's sam3.pt as downloaded; a resized SAM3 needs its config.json beside it "
            f"as {os.path.splitext(os.path.basename(path))[0]}.json.")
    extra = sorted(k for k in state if k not in model_state)
    if extra:
        logging.debug("[Luna] SAM3 %s: %d tensors not used by the %s (e.g. %s)",
                      os.path.basename(path), len(extra), part, ", ".join(extra[:3]))
    return {k: state[k] for k in model_state}


def _fresh(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A new, aligned copy (so results do not depend on where in the file a tensor sat), floats cast to dtype."""
    return tensor.to(dtype=dtype if tensor.is_floating_point() else tensor.dtype, copy=True, memory_format=torch.contiguous_format)


def load_model(path: str, dtype: torch.dtype = torch.float32) -> "Sam3Model":
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


def load_tracker(path: str, dtype: torch.dtype = torch.float32) -> tuple["Sam3TrackerVideoModel", torch.nn.Module,
                                                                          "Sam3VideoConfig"]:
    """The video tracker of the checkpoint at `path` on the CPU in eval mode: transformers' Sam3TrackerVideoModel
    without an image encoder (it reads the detector's image features), its neck, and the video config;
    Sam3TrackerMissing where the file holds none."""
    from transformers import Sam3TrackerVideoModel
    from transformers.models.sam3.modeling_sam3 import Sam3VisionNeck

    config = build_video_config(path)
    state = tracker_state(path)
    with torch.device("meta"):
        skeleton = {**{f"tracker_model.{k}": v for k, v in
                       Sam3TrackerVideoModel(config.tracker_config, remove_vision_encoder=True).state_dict().items()},
                    **{f"tracker_neck.{k}": v for k, v in
                       Sam3VisionNeck(config.detector_config.vision_config).state_dict().items()}}
    state = check_against(skeleton, state, path, part="SAM3 video tracker")
    del skeleton
    state = {k: _fresh(state.pop(k), dtype) for k in list(state)}
    tracker = Sam3TrackerVideoModel.from_pretrained(
        None, config=config.tracker_config, dtype=dtype, remove_vision_encoder=True,
        state_dict={k[len("tracker_model."):]: v for k, v in state.items() if k.startswith("tracker_model.")})
    neck = Sam3VisionNeck(config.detector_config.vision_config)
    neck.load_state_dict({k[len("tracker_neck."):]: v for k, v in state.items() if k.startswith("tracker_neck.")})
    return tracker.eval().requires_grad_(False), neck.to(dtype).eval().requires_grad_(False), config
