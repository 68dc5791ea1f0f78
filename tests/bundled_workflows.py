"""The bundled workflows (example_workflows/) and their test-only variant: tiny models, small sizes, no downloads."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "example_workflows"
MODEL_FILE_INPUTS = {"ckpt_name", "clip_name", "model_name", "checkpoint", "image", "unet_name", "clip_name1",
                     "clip_name2", "vae_name", "style_model_name"}

# Test sizes: the 4K canvas → 768, the 1.5K pass → 384, the 1K draft → 256.
TEST_SIZES = {4096: 768, 1536: 384, 1024: 256}
CANVAS = 768
CLIP_FRAMES = 6
TEST_CLIP = "lsd_test_clip.mp4"
TEST_MODELS = "lsd_test_models"
# The core SAM3 checkpoint a workflow loads with CheckpointLoaderSimple (lsd_core_sam3): core's own SAM3.1, tiny.
CORE_SAM3_CHECKPOINT = "sam3.safetensors"
# Separate loaders (a DiT workflow) → the output of LSDTestFamilyModels they stand for.
FAMILY_LOADERS = {"UNETLoader": 0, "DualCLIPLoader": 1, "VAELoader": 2, "CLIPVisionLoader": 3, "StyleModelLoader": 4}


def ui(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def api(name: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def builder():
    """scripts/build_workflows.py as a module."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import build_workflows
    finally:
        sys.path.pop(0)
    return build_workflows


NAMES = tuple(make().name for make in builder().WORKFLOWS)
# Workflows of ComfyUI-Distributed's nodes: checked and run on the test cluster's master (conftest `cluster`).
DISTRIBUTED = frozenset(name for name in NAMES if any(node["class_type"].startswith("Distributed")
                                                      for node in api(name).values()))


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def for_tests(prompt: dict, image_name: str) -> dict:
    """The shipped API prompt with stock loaders swapped for LSDTestModels (LSDTestFamilyModels' tiny Flux where the
    workflow loads a UNET; LSDTestCoreSAM3 for a core SAM3 checkpoint) and sizes shrunk to run on a CPU."""
    prompt = copy.deepcopy(prompt)
    remap: dict[tuple[str, int], list] = {}
    dit = any(node["class_type"] == "UNETLoader" for node in prompt.values())
    for node_id, node in list(prompt.items()):
        kind, inputs = node["class_type"], node["inputs"]
        if dit and kind in FAMILY_LOADERS:
            remap[(node_id, 0)] = [TEST_MODELS, FAMILY_LOADERS[kind]]
            del prompt[node_id]
        elif kind == "CheckpointLoaderSimple" and inputs.get("ckpt_name") == CORE_SAM3_CHECKPOINT:
            prompt[node_id] = {"class_type": "LSDTestCoreSAM3", "inputs": {"seed": 0, "variant": "SAM3.1"}}
        elif kind == "CheckpointLoaderSimple":
            remap.update({(node_id, i): [TEST_MODELS, i] for i in range(3)})
            del prompt[node_id]
        elif kind == "CLIPVisionLoader":
            remap[(node_id, 0)] = [TEST_MODELS, 3]
            del prompt[node_id]
        elif kind == "UpscaleModelLoader":
            del prompt[node_id]
        elif kind == "ImageUpscaleWithModel":  # a 4× upscaler → a 4× bicubic resize
            prompt[node_id] = {"class_type": "ImageScaleBy",
                               "inputs": {"image": inputs["image"], "upscale_method": "bicubic", "scale_by": 4.0}}
        elif kind == "LoadImage":
            inputs["image"] = image_name
        elif kind == "LoadVideo":
            inputs["file"] = TEST_CLIP
    prompt[TEST_MODELS] = ({"class_type": "LSDTestFamilyModels", "inputs": {"family": "flux", "seed": 0}} if dit else
                           {"class_type": "LSDTestModels", "inputs": {"seed": 0, "latent_channels": 4}})
    for node in prompt.values():
        inputs = node["inputs"]
        for name, value in list(inputs.items()):
            if is_link(value) and tuple(value) in remap:
                inputs[name] = remap[tuple(value)]
            elif name in ("width", "height") and not is_link(value):
                inputs[name] = TEST_SIZES.get(value, value)
        shrink = {"steps": 2, "tile_size": 256, "overlap": 64, "crop_size": "512", "detect_resolution": 256,
                  "threshold": 0.0, "max_detections": 2, "min_area": 0.0}
        inputs.update({k: v for k, v in shrink.items() if k in inputs and not is_link(inputs[k])})
    return prompt


def write_test_clip(path: Path, frames: int = CLIP_FRAMES, size: int = CANVAS) -> None:
    """A short H.264 clip of the canvas picture with a dark disc crossing it, at 8 fps."""
    import av
    import numpy as np

    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([0.5 + 0.4 * np.sin(6 * x), 0.5 + 0.4 * np.cos(5 * y), 0.5 + 0.3 * np.sin(4 * (x + y))], -1)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("h264", rate=8)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for t in range(frames):
            disc = ((x - 0.3 - 0.05 * t) ** 2 + (y - 0.5) ** 2) < 0.12 ** 2
            frame = np.where(disc[..., None], 0.15, base)
            image = av.VideoFrame.from_ndarray((frame * 255).astype(np.uint8), format="rgb24")
            container.mux(stream.encode(image.reformat(format="yuv420p")))
        container.mux(stream.encode(None))


def write_canvas_image(path: Path, size: int = CANVAS) -> None:
    """A smooth RGBA picture; a transparent square is the region a user would paint in the mask editor."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([0.5 + 0.4 * np.sin(6 * x), 0.5 + 0.4 * np.cos(5 * y), 0.5 + 0.3 * np.sin(4 * (x + y))], -1)
    alpha = np.full((size, size), 255, np.uint8)
    alpha[size // 4:size // 2, size // 3:size // 3 + size // 5] = 0  # LoadImage's MASK = 1 - alpha
    pixels = np.concatenate([(rgb * 255).astype(np.uint8), alpha[..., None]], -1)
    Image.fromarray(pixels, "RGBA").save(path)


def nodes_the_host_lacks(name: str, object_info: dict) -> list[str]:
    """The node types of bundled workflow `name` (its UI file, muted nodes too: the frontend must know each to open
    it) that are not in a host's /object_info."""
    return sorted({node["type"] for node in ui(name)["nodes"]} - set(object_info))


def skip_if_the_host_lacks_its_core_nodes(name: str, object_info: dict, comfyui_version: str) -> None:
    """Skip workflow `name` on a ComfyUI older than the newest tested release that lacks core nodes it uses (e.g.
    lsd_core_sam3's SAM3_Detect, which 0.3.75 does not have), naming them. A missing Luna node, or any missing node on
    the newest tested release or later, is a failure: there the workflow must open and run."""
    import pytest
    from packaging.version import Version

    from luna_semantic_detailer import NODE_CLASS_MAPPINGS
    from tested_hosts import NEWEST

    missing = nodes_the_host_lacks(name, object_info)
    if not missing:
        return
    luna = [kind for kind in missing if kind in NODE_CLASS_MAPPINGS]
    if luna or Version(comfyui_version) >= Version(NEWEST.release):
        pytest.fail(f"{name}: ComfyUI {comfyui_version} has no {', '.join(missing)} in /object_info")
    pytest.skip(f"{name} uses core nodes ComfyUI {comfyui_version} does not have ({', '.join(missing)}); it is tested "
                f"on {NEWEST.release}")
