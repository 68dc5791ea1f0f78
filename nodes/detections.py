"""Detections made by hand: painted masks (LunaDetectionsFromMask) and typed-in boxes (LunaDetectionsFromBoxes)."""
from __future__ import annotations

import torch

from ..kernels.detections import connected_regions, mask_boxes
from ..kernels.interop.typed_boxes import UNITS, parse_boxes
from ..luna_types import DETECTION_DATA, Detection, DetectionData
from .common import CATEGORY, image_index_input


class DetectionSource:
    """What every node that makes Luna detections declares: its category, its one output and its function."""

    CATEGORY = f"{CATEGORY}/Detection"
    RETURN_TYPES = (DETECTION_DATA,)
    RETURN_NAMES = ("detection_data",)
    OUTPUT_TOOLTIPS = ("Normalized detections, usable on any canvas size with the same aspect ratio.",)
    FUNCTION = "convert"


class LunaDetectionsFromMask(DetectionSource):
    DESCRIPTION = (
        "Turns masks (e.g. painted in the mask editor) into Luna detections: every connected region of every mask "
        "becomes one detection of the given image, with its bounding box (or one detection per mask). No SAM3 needed."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mask": ("MASK", {"tooltip": "Painted regions ([H, W] or a batch [N, H, W]; white = refine)."}),
                "label": ("STRING", {"default": "region", "tooltip": (
                    "Label of these detections (for the detailer's label filter).")}),
                **image_index_input("the masks belong to"),
                "split": (["connected regions", "one per mask"], {"tooltip": (
                    "connected regions: each separate blob is its own detection; one per mask: each mask of the batch "
                    "is one detection.")}),
                "min_pixels": ("INT", {"default": 16, "min": 1, "max": 1 << 24, "tooltip": (
                    "Ignore regions smaller than this many mask pixels (stray brush dots).")}),
            }
        }

    def convert(self, mask: torch.Tensor, label: str, image_index: int, split: str = "connected regions",
                min_pixels: int = 16):
        masks = (mask if mask.ndim == 3 else mask[None]).float().cpu()
        if split == "connected regions":
            found = [(region.box, region.mask) for m in masks for region in connected_regions(m, min_pixels=min_pixels)]
        else:
            boxes, present = mask_boxes(masks)
            found = [(tuple(boxes[i].tolist()), masks[i]) for i in present.nonzero().flatten().tolist()]
        detections = [Detection(box=box, mask=m, score=1.0, label=label.strip(), image_index=image_index)
                      for box, m in found]
        return (DetectionData(tuple(detections), image_size=(mask.shape[-1], mask.shape[-2])),)


class LunaDetectionsFromBoxes(DetectionSource):
    DESCRIPTION = ("Typed-in boxes as Luna detections (box-shaped masks), one per line: `x0, y0, x1, y1[, label]`. "
                   "No SAM3 needed.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "boxes": ("STRING", {"default": "0.4, 0.2, 0.6, 0.45, face", "multiline": True, "tooltip": (
                    "One box per line: x0, y0, x1, y1 and an optional label; lines starting with # are ignored.")}),
                "units": (list(UNITS), {"tooltip": (
                    "normalized: fractions of the image (0-1); pixels: divided by image_width/height (or the connected "
                    "image's size).")}),
                "label": ("STRING", {"default": "region", "tooltip": "Label of boxes whose line has none."}),
                "image_width": ("INT", {"default": 0, "min": 0, "max": 65536, "tooltip": (
                    "Width of the image the pixel boxes refer to (pixels only).")}),
                "image_height": ("INT", {"default": 0, "min": 0, "max": 65536, "tooltip": (
                    "Height of the image the pixel boxes refer to (pixels only).")}),
                **image_index_input("the boxes belong to"),
            },
            "optional": {"image": ("IMAGE", {"tooltip": "Take image_width/height from this image."})},
        }

    def convert(self, boxes: str, units: str, label: str, image_width: int, image_height: int, image_index: int,
                image=None):
        if image is not None:
            image_height, image_width = image.shape[1:3]
        parsed = parse_boxes(boxes, units, image_width, image_height, label.strip())
        detections = tuple(Detection(box, None, 1.0, name, image_index) for box, name in parsed)
        return (DetectionData(detections, image_size=(image_width, image_height)),)


NODE_CLASS_MAPPINGS = {"LunaDetectionsFromMask": LunaDetectionsFromMask,
                       "LunaDetectionsFromBoxes": LunaDetectionsFromBoxes}
NODE_DISPLAY_NAME_MAPPINGS = {"LunaDetectionsFromMask": "Luna Detections from Mask (manual regions)",
                              "LunaDetectionsFromBoxes": "Luna Detections from Boxes (typed in)"}
