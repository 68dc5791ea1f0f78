"""Detections made by hand: LunaDetectionsFromMask turns painted masks into LUNA_DETECTION_DATA."""
from __future__ import annotations

import torch

from ..kernels.detections import mask_boxes
from ..luna_types import DETECTION_DATA, Detection, DetectionData
from .common import CATEGORY


class LunaDetectionsFromMask:
    DESCRIPTION = (
        "Turns masks (e.g. painted in the mask editor) into Luna detections: each mask of the batch becomes one "
        "detection of the given image, with its bounding box; empty masks are skipped. No SAM3 needed."
    )
    CATEGORY = f"{CATEGORY}/Detection"
    RETURN_TYPES = (DETECTION_DATA,)
    RETURN_NAMES = ("detection_data",)
    OUTPUT_TOOLTIPS = ("Normalized detections, usable on any canvas size with the same aspect ratio.",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mask": ("MASK", {"tooltip": "One region per mask of the batch ([N, H, W], white = refine)."}),
                "label": ("STRING", {"default": "region", "tooltip": "Label of these detections (for the detailer's label filter)."}),
                "image_index": ("INT", {"default": 0, "min": 0, "max": 4095, "tooltip": "Which image of the canvas batch the masks belong to."}),
            }
        }

    def convert(self, mask: torch.Tensor, label: str, image_index: int):
        masks = mask if mask.ndim == 3 else mask[None]
        boxes, present = mask_boxes(masks)
        keep = present.nonzero().flatten().tolist()
        detections = [
            Detection(box=tuple(boxes[i].tolist()), mask=masks[i].float().cpu(), score=1.0, label=label.strip(), image_index=image_index)
            for i in keep
        ]
        return (DetectionData(tuple(detections), image_size=(masks.shape[2], masks.shape[1])),)


NODE_CLASS_MAPPINGS = {"LunaDetectionsFromMask": LunaDetectionsFromMask}
NODE_DISPLAY_NAME_MAPPINGS = {"LunaDetectionsFromMask": "Luna Detections from Mask (manual regions)"}
