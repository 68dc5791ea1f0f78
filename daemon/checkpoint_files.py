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


def _wanted(key: str, skip: tuple[str, ...], keep: tuple[str, ...] | None) -> bool:
    return not key.startswith(skip) and (keep is None or key.startswith(keep))


def _read_safetensors(path: str, skip: tuple[str, ...], keep: tuple[str, ...] | None) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys() if _wanted(k, skip, keep)}
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


def read_tensors(path: str, skip: tuple[str, ...] = (),
                 keep: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of the checkpoint at `path`, without those whose key starts with one of `skip` (and, given `keep`,
    only those whose key starts with one of `keep`)."""
    if os.path.splitext(path)[1].lower() == ".safetensors":
        return _read_safetensors(path, skip, keep)
    data = _read_pickle(path)
    for wrapper in WRAPPERS:
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise Sam3CheckpointError(f"{path} holds no state dict of tensors; expected Meta's sam3.pt "
                                  f"(keys detector.*) or facebook/sam3 model.safetensors.")
    return {k: v for k, v in data.items() if _wanted(k, skip, keep)}


def sidecar_config(path: str) -> dict | None:
    """The Sam3 config dict stored beside a checkpoint (`<stem>.json`, else a SAM3 `config.json`), if any."""
    data = sidecar_video_config(path)
    if data is not None and isinstance(data.get("detector_config"), dict):
        data = data["detector_config"]
    return data


def sidecar_video_config(path: str) -> dict | None:
    """The config dict stored beside a checkpoint (`<stem>.json`, else a SAM3 `config.json`) as written there: a
    sam3_video config (detector_config, tracker_config, video settings) or a bare sam3 one; None without one."""
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
        if not isinstance(data, dict):
            continue
        detector = data["detector_config"] if isinstance(data.get("detector_config"), dict) else data
        if detector.get("model_type") == "sam3" or "vision_config" in detector:
            return data
    return None
