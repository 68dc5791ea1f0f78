"""SAM3 nodes: LunaSAM3Loader (a daemon handle) and LunaSAM3Detector (text prompts → LUNA_DETECTION_DATA, per image or
tracked over the frames of a clip)."""
from __future__ import annotations

import colorsys
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from ..daemon import models_folder
from ..daemon.host import DEVICES, PRECISIONS, daemon
from ..daemon.inference import fit_resolution, parse_prompts, resize_images
from ..luna_types import DETECTION_DATA, SAM3_MODEL, DetectionData
from ..validation import one_of
from .common import CATEGORY

SAM3_CATEGORY = f"{CATEGORY}/SAM3"
PER_FRAME, TRACK = "per frame", "track over frames"
MODES = (PER_FRAME, TRACK)
models_folder.register_folder()


class LunaSAM3Loader:
    DESCRIPTION = (
        "Picks a SAM3 checkpoint from models/sam3 (facebook/sam3 model.safetensors or Meta's sam3.pt) and returns a "
        "handle to the Luna SAM3 daemon's copy: every loader with the same checkpoint, device and precision shares one "
        "model. Weights load on the first detection and follow ComfyUI's memory management (Unload models frees them)."
    )
    CATEGORY = SAM3_CATEGORY
    RETURN_TYPES = (SAM3_MODEL,)
    RETURN_NAMES = ("sam3",)
    OUTPUT_TOOLTIPS = ("Handle to the shared SAM3 model; connect it to LunaSAM3Detector.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = models_folder.list_checkpoints() or [models_folder.PLACEHOLDER]
        return {
            "required": {
                "checkpoint": (names, {"tooltip": (
                    "A file in models/sam3: facebook/sam3 model.safetensors or Meta's sam3.pt, as downloaded.")}),
                "device": (list(DEVICES), {"default": "auto", "tooltip": (
                    "auto: ComfyUI's device (the GPU when there is one); cpu: always the CPU.")}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip": (
                    "auto: bf16 (or fp16) on CUDA, fp32 on the CPU.")}),
            }
        }

    def load(self, checkpoint: str, device: str, precision: str) -> tuple:
        return (daemon().acquire(checkpoint, device, precision),)


class LunaSAM3Detector:
    DESCRIPTION = (
        "Finds every instance of each comma-separated concept (e.g. `face, hand`) with SAM3, in each image or, with "
        "mode 'track over frames', over a clip (objects keep one track id). Features are computed once per image or "
        "frame for all concepts. Outputs resolution-free detections (normalized boxes, masks, scores, labels), a "
        "preview and the union mask."
    )
    CATEGORY = SAM3_CATEGORY
    RETURN_TYPES = (DETECTION_DATA, "IMAGE", "MASK")
    RETURN_NAMES = ("detection_data", "preview", "mask")
    OUTPUT_TOOLTIPS = (
        "Detections sorted by score per image; boxes normalized 0..1, usable on any canvas of the same aspect ratio.",
        "The detected copy with masks, boxes, labels and scores drawn over it.",
        "Union of all detection masks per image, at the input image's resolution.",
    )
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "sam3": (SAM3_MODEL, {"tooltip": "From LunaSAM3Loader."}),
                "image": ("IMAGE", {"tooltip": "The canvas (any size, a batch is allowed) or a smaller copy of it."}),
                "prompts": ("STRING", {"default": "face, hand", "multiline": True, "tooltip": (
                    "Concepts to find, separated by commas or new lines; each becomes the label of its detections.")}),
                "threshold": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                    "Minimum SAM3 score (instance score × presence score) of a detection.")}),
                "max_detections": ("INT", {"default": 20, "min": 0, "max": 1000, "tooltip": (
                    "Keep at most this many detections per image, the highest scores first (0: no limit).")}),
                "min_area": ("FLOAT", {"default": 0.0005, "min": 0.0, "max": 1.0, "step": 0.0001, "tooltip": (
                    "Drop detections whose mask covers less than this fraction of the image.")}),
                "detect_resolution": ("INT", {"default": 1008, "min": 0, "max": 8192, "step": 8, "tooltip": (
                    "The image is scaled down so its longer side is at most this before detection (0: as is). Masks "
                    "are made at this size; SAM3 itself sees 1008×1008.")}),
            },
            "optional": {
                "mode": (list(MODES), {"default": PER_FRAME, "tooltip": (
                    "per frame: each image on its own. track over frames: the batch is a clip, each object keeps one "
                    "track id (needs the checkpoint's tracker).")}),
                "detect_every": ("INT", {"default": 1, "min": 1, "max": 1000, "tooltip": (
                    "Tracking: look for new objects on the first frame and every N frames (1: every frame); the "
                    "tracker follows them in between.")}),
            },
        }

    def run(self, **inputs) -> dict:
        """detect(), with the preview also shown on the node (saved to ComfyUI's temp folder, like PreviewImage)."""
        import nodes

        result = self.detect(**inputs)
        return {"ui": nodes.PreviewImage().save_images(result[1], filename_prefix="LunaSAM3Detector")["ui"],
                "result": result}

    def detect(self, sam3, image: torch.Tensor, prompts: str, threshold: float, max_detections: int, min_area: float,
               detect_resolution: int, mode: str = PER_FRAME, detect_every: int = 1) -> tuple:
        """Per frame: every image detected on its own. Track over frames: the batch is one clip, tracked by SAM3's
        video model (detection on frame 0 and every `detect_every` frames); a checkpoint without the tracker is
        refused with the fix named."""
        import comfy.model_management
        import comfy.utils

        one_of("mode", mode, MODES)
        concepts = parse_prompts(prompts)
        height, width = int(image.shape[1]), int(image.shape[2])
        w, h = fit_resolution(width, height, detect_resolution)
        copy = resize_images(image, w, h)
        steps = image.shape[0] if mode == TRACK else len(concepts) * image.shape[0]
        bar = comfy.utils.ProgressBar(max(1, steps))

        def progress(done: int, total: int) -> None:
            comfy.model_management.throw_exception_if_processing_interrupted()
            bar.update_absolute(done, total)

        settings = dict(threshold=threshold, max_detections=max_detections, min_area=min_area, progress=progress)
        if mode == TRACK:
            data = sam3.track(copy, concepts, detect_every=detect_every, **settings)
        else:
            data = sam3.detect(copy, concepts, **settings)
        data = replace(data, meta={**data.meta, "checkpoint": sam3.name, "source_size": (width, height)})
        return data, draw_preview(copy, data), union_mask(data, image.shape[0], height, width)


def union_mask(data: DetectionData, batch: int, height: int, width: int) -> torch.Tensor:
    """MASK [batch, height, width]: the union (max) of each image's detection masks, scaled to height × width."""
    out = torch.zeros(batch, height, width)
    for index in range(batch):
        masks = [d.mask for d in data.for_image(index) if d.mask is not None]
        if not masks:
            continue
        union = torch.stack([m.float() for m in masks]).amax(0)[None, None]
        if union.shape[-2:] != (height, width):
            union = F.interpolate(union, size=(height, width), mode="bilinear", align_corners=False)
        out[index] = union[0, 0].clamp(0, 1)
    return out


def label_colors(labels: list[str]) -> dict[str, tuple[float, float, float]]:
    """A distinct RGB (0..1) per label."""
    n = max(1, len(labels))
    return {label: colorsys.hsv_to_rgb(i / n, 0.85, 1.0) for i, label in enumerate(labels)}


def draw_preview(images: torch.Tensor, data: DetectionData, alpha: float = 0.45) -> torch.Tensor:
    """IMAGE [B, h, w, 3]: masks tinted per label, boxes outlined, `label score` (`label #track score` for tracked
    objects) written at each box."""
    from PIL import Image, ImageDraw

    colors = label_colors(data.labels())
    out = images[..., :3].float().clone()
    height, width = out.shape[1], out.shape[2]
    for index in range(out.shape[0]):
        for det in data.for_image(index):
            if det.mask is None:
                continue
            mask = det.mask.float()[None, None]
            if mask.shape[-2:] != (height, width):
                mask = F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=False)
            tint = torch.tensor(colors[det.label])
            weight = (mask[0, 0] * alpha)[..., None]
            out[index] = out[index] * (1 - weight) + tint * weight
        picture = Image.fromarray((out[index].clamp(0, 1).numpy() * 255).round().astype(np.uint8))
        pen = ImageDraw.Draw(picture)
        line = max(1, round(max(width, height) / 400))
        for det in data.for_image(index):
            color = tuple(int(c * 255) for c in colors[det.label])
            x0, y0, x1, y1 = det.box
            box = (x0 * width, y0 * height, max(x0 * width, x1 * width - 1), max(y0 * height, y1 * height - 1))
            pen.rectangle(box, outline=color, width=line)
            ident = "" if det.track_id is None else f" #{det.track_id}"
            text = f"{det.label}{ident} {det.score:.2f}"
            left, top, right, bottom = pen.textbbox((box[0], box[1]), text)
            ty = box[1] - (bottom - top) - 2 if box[1] >= bottom - top + 2 else box[1]
            pen.rectangle((box[0], ty, box[0] + right - left + 4, ty + bottom - top + 2), fill=color)
            pen.text((box[0] + 2, ty), text, fill=(0, 0, 0))
        out[index] = torch.from_numpy(np.asarray(picture).astype(np.float32) / 255.0)
    return out


NODE_CLASS_MAPPINGS = {"LunaSAM3Loader": LunaSAM3Loader, "LunaSAM3Detector": LunaSAM3Detector}
NODE_DISPLAY_NAME_MAPPINGS = {"LunaSAM3Loader": "Luna SAM3 Loader", "LunaSAM3Detector": "Luna SAM3 Detector"}
