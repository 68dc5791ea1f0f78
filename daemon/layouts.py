"""The public SAM3 checkpoint layouts: how each is recognised from its keys and mapped to transformers' Sam3Model state,
and where each keeps the video tracker and how that maps to transformers' Sam3VideoModel (`tracker_model.*`,
`tracker_neck.*`).

A layout also names the key prefixes image detection never reads (the video tracker), so readers can skip them.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Callable

import torch

from . import meta_keys, meta_tracker_keys

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Layout:
    """One checkpoint layout; `described` is how the unknown-layout error names it."""

    name: str
    described: str
    dropped: tuple[str, ...]
    recognises: Callable[[Collection[str]], bool]
    to_transformers: Callable[[State], State]
    tracker_read: tuple[str, ...]
    """Key prefixes of the tracker's tensors (those read for tracking)."""
    tracker_marker: str
    """The prefix whose presence says the file holds the tracker."""
    tracker_to_transformers: Callable[[State], State]


HF_DETECTOR_PREFIX = "detector_model."
HF_TOP_LEVEL = ("vision_encoder.", "text_encoder.", "text_projection.", "geometry_encoder.", "detr_encoder.",
                "detr_decoder.", "mask_decoder.", "dot_product_scoring.")
HF_DROPPED = ("tracker_model.", "tracker_neck.")
HF_TRACKER_MARKER = "tracker_model."
META_TOP_LEVEL = ("backbone.", "transformer.", "geometry_encoder.", "segmentation_head.", "dot_prod_scoring.")


def _is_hf(keys: Collection[str]) -> bool:
    """transformers' names, under `detector_model.` or bare (geometry_encoder.* is in both layouts, so it does not tell)."""
    return any(k.startswith(HF_DETECTOR_PREFIX) for k in keys) or any(
        k.startswith(HF_TOP_LEVEL) for k in keys if not k.startswith("geometry_encoder."))


def _is_meta(keys: Collection[str]) -> bool:
    """Meta's names, under `detector.` or bare."""
    return any(k.startswith((meta_keys.DETECTOR_PREFIX, *META_TOP_LEVEL)) for k in keys)


def hf_detector_state(raw: State) -> State:
    """The detector's tensors of a transformers-layout file, with `detector_model.` removed and the tracker dropped."""
    prefixed = any(k.startswith(HF_DETECTOR_PREFIX) for k in raw)
    out = {}
    for key, value in raw.items():
        if key.startswith(HF_DROPPED):
            continue
        if prefixed:
            if not key.startswith(HF_DETECTOR_PREFIX):
                continue
            key = key[len(HF_DETECTOR_PREFIX):]
        out[key] = value
    return out


def hf_tracker_state(raw: State) -> State:
    """The tracker's tensors of a transformers-layout file, already in Sam3VideoModel names."""
    return {k: v for k, v in raw.items() if k.startswith(HF_DROPPED)}


HF = Layout(
    name="hf",
    described="the Hugging Face facebook/sam3 layout (detector_model.vision_encoder.*, detector_model.text_encoder.*, "
              "... beside tracker_model.*)",
    dropped=HF_DROPPED,
    recognises=_is_hf,
    to_transformers=hf_detector_state,
    tracker_read=HF_DROPPED,
    tracker_marker=HF_TRACKER_MARKER,
    tracker_to_transformers=hf_tracker_state,
)
META = Layout(
    name="meta",
    described="Meta's sam3.pt layout (detector.backbone.vision_backbone.*, detector.transformer.*, "
              "detector.segmentation_head.* beside tracker.*)",
    dropped=("tracker.",),
    recognises=_is_meta,
    to_transformers=meta_keys.meta_detector_state,
    tracker_read=(meta_tracker_keys.TRACKER_PREFIX, meta_tracker_keys.NECK_PREFIX),
    tracker_marker=meta_tracker_keys.TRACKER_PREFIX,
    tracker_to_transformers=meta_tracker_keys.meta_tracker_state,
)
