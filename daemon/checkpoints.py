"""SAM3 checkpoints into one transformers Sam3Model: the registry of known layouts (daemon.layouts), recognised from a
checkpoint's keys; its config; the check of its tensors against the model; and the model itself.

Files are read by daemon.checkpoint_files, the `sam3` models folder is daemon.models_folder.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from . import layouts
from .checkpoint_files import read_tensors, sidecar_config
from .errors import Sam3CheckpointError
from .layouts import Layout

if TYPE_CHECKING:
    from transformers import Sam3Config, Sam3Model

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
