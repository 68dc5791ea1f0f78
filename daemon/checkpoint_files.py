"""SAM3 checkpoint files read without running code from them: the tensors of a .safetensors, .pt or .pth file, and the
config stored beside a checkpoint."""
from __future__ import annotations

import json
import logging
import os

import torch

from .errors import Sam3CheckpointError
from .models_folder import FOLDER

WRAPPERS = ("model", "state_dict")
"""Keys under which training checkpoints hold their state dict."""


def _unreadable(path: str, exc: Exception) -> Sam3CheckpointError:
    return Sam3CheckpointError(f"cannot read SAM3 checkpoint {path}: {exc}. The file is corrupt or incomplete; "
                               f"download it again into models/{FOLDER}/.")


def _read_safetensors(path: str, skip: tuple[str, ...]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys() if not k.startswith(skip)}
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def _read_pickle(path: str) -> object:
    """torch.load with weights_only (no code runs), memory-mapped where the file format allows it."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def read_tensors(path: str, skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The tensors of the checkpoint at `path`, without those whose key starts with one of `skip`."""
    if os.path.splitext(path)[1].lower() == ".safetensors":
        return _read_safetensors(path, skip)
    data = _read_pickle(path)
    for wrapper in WRAPPERS:
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise Sam3CheckpointError(f"{path} holds no state dict of tensors; expected Meta's sam3.pt "
                                  f"(keys detector.*) or facebook/sam3 model.safetensors.")
    return {k: v for k, v in data.items() if not k.startswith(skip)}


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
