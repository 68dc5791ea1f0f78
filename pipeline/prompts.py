"""A prompt per detection label: one line per label, each encoded once with ComfyUI's own text encoding.

`face: detailed face, sharp eyes` gives crops labelled "face" that prompt; a `*:` line serves every other label;
labels with neither keep the connected positive. "append" puts the label's tokens after each entry of the connected
positive (ConditioningConcat); "replace" uses the label's conditioning instead of it.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..luna_types import Conditioning
from ..validation import one_of
from .conditioning import with_tokens

PROMPT_MODES = ("append", "replace")
OTHERS = "*"


def parse_label_prompts(text: str) -> dict[str, str]:
    """{label (lower case) or "*": prompt} from lines `label: prompt`; blank lines and lines starting with # are skipped."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        label, colon, prompt = line.partition(":")
        if not colon or not label.strip():
            raise ValueError(f"label_prompts line {number} ({line!r}) is not `label: prompt` (use `*: ...` for every "
                             "other label)")
        key = label.strip().lower()
        if key in out:
            raise ValueError(f"label_prompts line {number} gives {label.strip()!r} a second prompt; keep one line per label")
        out[key] = prompt.strip()
    return out


def encode_text(clip: Any, text: str) -> Conditioning:
    """CLIPTextEncode's conditioning of `text` on `clip` (embeddings, weights and the CLIP's family as it handles them)."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def combine(positive: Conditioning, label: Conditioning, mode: str) -> Conditioning:
    """The connected positive with a label's conditioning appended to each entry's tokens, or replaced by it."""
    if one_of("label prompt mode", mode, PROMPT_MODES) == "replace":
        return label
    tokens, label_options = label[0]
    label_mask = label_options.get("attention_mask")
    return [with_tokens(cond, options, tokens, label_mask if isinstance(label_mask, torch.Tensor) else None)
            for cond, options in positive]


def label_positives(clip: Any, text: str, positive: Conditioning, mode: str) -> dict[str, Conditioning]:
    """{label or "*": its positive}, each line encoded once."""
    lines = parse_label_prompts(text)
    if lines and clip is None:
        raise ValueError("label_prompts are encoded with a CLIP: connect the checkpoint's CLIP to the detailer's clip input")
    return {label: combine(positive, encode_text(clip, prompt), mode) for label, prompt in lines.items()}


def positive_for(label: str, per_label: Mapping[str, Conditioning], positive: Conditioning) -> Conditioning:
    """A detection's positive: its label's line, else the `*` line, else the connected positive."""
    return per_label.get(label.strip().lower(), per_label.get(OTHERS, positive))
