"""The `sam3` models folder: registered with ComfyUI's folder_paths, listed for the loader, names resolved to paths."""
from __future__ import annotations

import os

import folder_paths

from .errors import Sam3CheckpointError

FOLDER = "sam3"
EXTENSIONS = frozenset({".safetensors", ".pt", ".pth"})
PLACEHOLDER = "(no SAM3 checkpoint: put model.safetensors or sam3.pt in models/sam3)"


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
