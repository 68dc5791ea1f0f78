"""Where the ComfyUI versions the pack is tested on differ (0.3.75 from PyPI and 0.33.0, the oldest supported and the
newest to be had): one place, no version checks.

The Python API the nodes use is the same on both (the whole suite runs on each host): classic NODE_CLASS_MAPPINGS
(0.33 loads such V1 packs as before and prints nothing about them), comfy.samplers.KSampler.SAMPLERS/SCHEDULERS,
comfy.sample.sample, comfy.utils.ProgressBar, comfy.model_management, comfy.model_patcher.ModelPatcher, folder_paths
and the VAE's downscale_ratio/latent_channels. What differs:

- BOUNDING_BOX is a core type from 0.28 on (SAM3_Detect, CreateBoundingBoxes, PrimitiveBoundingBox), and its frontends
  (1.45 on; 0.33 serves 1.48) draw an input of that type as a box-editor widget unless the input says forceInput, as
  SAM3_Detect's does. 0.3.75 does not know the type: there the hint is ignored and the input is a socket anyway.
- The host, not the pack: 0.33's comfy.sd imports torchaudio at start-up (`make host-0.33` installs it).
"""
from __future__ import annotations

LINKED_CORE_TYPES = frozenset({"BOUNDING_BOX"})


def linked_input(io_type: str, **options) -> tuple[str, dict]:
    """An input that takes its value from a link in every frontend: a socket, never a widget."""
    if io_type in LINKED_CORE_TYPES:
        options = {"forceInput": True, **options}
    return io_type, options
