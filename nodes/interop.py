"""Detections to and from other formats: Impact-Pack SEGS, core BOUNDING_BOX lists, core SAM3 (detections and video
tracks), and a filter like Impact's SEGS filters."""
from __future__ import annotations

from ..kernels.interop.bounding_boxes import MASK_MODES, bboxes_to_detections
from ..kernels.interop.core_sam3 import detect_to_detections, tracks_to_detections
from ..kernels.interop.filter import ORDERS, TOP_BY, filter_detections
from ..kernels.interop.segs import detections_to_segs, segs_to_detections
from ..luna_types import DETECTION_DATA
from .common import CATEGORY, image_index_input
from .compat import linked_input
from .detections import DetectionSource

SEGS = "SEGS"
BOUNDING_BOX = "BOUNDING_BOX"
SAM3_TRACK_DATA = "SAM3_TRACK_DATA"


class LunaDetectionsFromSEGS(DetectionSource):
    DESCRIPTION = (
        "Turns Impact-Pack SEGS (from its BBOX/SEGM/SAM detectors) into Luna detections: each SEG's cropped mask is "
        "put back at its crop region on a full-size mask, its bbox becomes the normalized box, and its confidence and "
        "label are kept. An empty SEGS gives empty detections. Impact-Pack is not required."
    )
    OUTPUT_TOOLTIPS = (
        "Normalized detections of the SEGS' image, usable on any canvas size with the same aspect ratio.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "segs": (SEGS, {"tooltip": (
                    "Impact-Pack SEGS: ((height, width), [SEG, ...]) with pixel bbox and crop_region.")}),
                **image_index_input("these SEGS belong to (SEGS describe one image)"),
            }
        }

    def convert(self, segs, image_index: int = 0):
        return (segs_to_detections(segs, image_index=image_index),)


class LunaDetectionsToSEGS:
    DESCRIPTION = (
        "Turns Luna detections of one image into Impact-Pack SEGS, for Impact's SEGS filters, previews and SEGSPaste. "
        "Each SEG's crop region is its box grown by crop_factor (as Impact's detectors do), kept inside the image and "
        "grown where needed to hold the whole mask; the cropped mask is the detection's mask cut at that region."
    )
    CATEGORY = f"{CATEGORY}/Detection"
    RETURN_TYPES = (SEGS,)
    RETURN_NAMES = ("segs",)
    OUTPUT_TOOLTIPS = ("Impact-Pack SEGS ((height, width), [SEG, ...]) of the chosen image.",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "detection_data": (DETECTION_DATA, {"tooltip": "Luna detections (from SAM3, a mask, SEGS or boxes)."}),
                **image_index_input("to export (SEGS describe one image)"),
                "crop_factor": ("FLOAT", {"default": 3.0, "min": 1.0, "max": 100.0, "step": 0.1, "tooltip": (
                    "Crop region size as a multiple of the box size, like Impact's detectors (3.0 = three times the "
                    "box).")}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": (
                    "Optional image: SEGS are made at its size (instead of the detected size) and each SEG gets its "
                    "cropped_image.")}),
            },
        }

    def convert(self, detection_data, image_index: int = 0, crop_factor: float = 3.0, image=None):
        return (detections_to_segs(detection_data, image_index=image_index, crop_factor=crop_factor, image=image),)


class LunaDetectionsFromBBoxes(DetectionSource):
    DESCRIPTION = (
        "Turns a core BOUNDING_BOX list (e.g. from SAM3 Detect: per image a list of {x, y, width, height, score} in "
        "pixels) into Luna detections, with optional masks: one per box (same order) or a union mask cut by each box."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "bboxes": linked_input(BOUNDING_BOX, tooltip=(
                    "Boxes in pixels: a list of {x, y, width, height[, score, label]} for one image, or one such list "
                    "per image.")),
                "image_width": ("INT", {"default": 1024, "min": 1, "max": 16384, "tooltip": (
                    "Width in pixels of the image the boxes are on (ignored when an image is connected).")}),
                "image_height": ("INT", {"default": 1024, "min": 1, "max": 16384, "tooltip": (
                    "Height in pixels of the image the boxes are on (ignored when an image is connected).")}),
                "mask_mode": (list(MASK_MODES), {"default": "auto", "tooltip": (
                    "How to read the masks: one per box, or a union (one, or one per image) cut by each box; auto "
                    "picks per box when the counts match.")}),
                "label": ("STRING", {"default": "object", "tooltip": (
                    "Label for boxes that carry none (for the detailer's label filter).")}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": (
                    "Optional masks: per object [N, H, W] in box order, or a union [1, H, W] / [B, H, W] cut by each "
                    "box.")}),
                "image": ("IMAGE", {"tooltip": (
                    "Optional image the boxes are on: its size replaces image_width and image_height.")}),
            },
        }

    def convert(self, bboxes, image_width: int, image_height: int, mask_mode: str = "auto", label: str = "object",
                mask=None, image=None):
        if image is not None:
            image_height, image_width = int(image.shape[1]), int(image.shape[2])
        return (bboxes_to_detections(bboxes, image_width, image_height, masks=mask, mask_mode=mask_mode, label=label),)


class LunaDetectionsFromCoreSAM3(DetectionSource):
    DESCRIPTION = (
        "Turns core ComfyUI SAM3 (0.28 or newer) into Luna detections, so a SAM3 model loaded through core feeds the "
        "Luna Detailer: SAM3 Detect's masks and bboxes (individual or union masks), or Run SAM3 Video Track's "
        "track_data (one detection per object per frame it is in, frame = image_index, the object's track id kept)."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "label": ("STRING", {"default": "object", "tooltip": (
                    "Label of these detections (core SAM3 gives none; the detailer's prompts and filters read it).")}),
            },
            "optional": {
                "track_data": (SAM3_TRACK_DATA, {"tooltip": (
                    "Run SAM3 Video Track's output: every tracked object in every frame where its mask is not "
                    "empty.")}),
                "bboxes": linked_input(BOUNDING_BOX, tooltip="SAM3 Detect's bboxes (one list per image)."),
                "masks": ("MASK", {"tooltip": "SAM3 Detect's masks: individual (one per box) or the union per image."}),
                "image": ("IMAGE", {"tooltip": (
                    "The image(s) SAM3 ran on: gives the boxes' pixel size and checks the clip's frame count and "
                    "aspect.")}),
            },
        }

    def convert(self, label: str = "object", track_data=None, bboxes=None, masks=None, image=None):
        shape = None if image is None else tuple(int(n) for n in image.shape[:3])
        if track_data is not None and (bboxes is not None or masks is not None):
            raise ValueError("Connect either track_data (Run SAM3 Video Track) or bboxes/masks (SAM3 Detect), not both")
        if track_data is not None:
            return (tracks_to_detections(track_data, label, shape),)
        if bboxes is None and masks is None:
            raise ValueError("Nothing to convert: connect Run SAM3 Video Track's track_data, or SAM3 Detect's bboxes "
                             "and masks")
        return (detect_to_detections(bboxes, masks, label, shape),)


class LunaDetectionFilter:
    DESCRIPTION = (
        "Keeps the detections you want, like Impact's SEGS filters: by label, score range and box area range (fraction "
        "of the image), then the top k per image by score or area, sorted in the chosen order. The rest go to "
        "'rejected'."
    )
    CATEGORY = f"{CATEGORY}/Detection"
    RETURN_TYPES = (DETECTION_DATA, DETECTION_DATA)
    RETURN_NAMES = ("detection_data", "rejected")
    OUTPUT_TOOLTIPS = ("The kept detections, in the chosen order.",
                       "The detections filtered out, in their input order.")
    FUNCTION = "filter"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "detection_data": (DETECTION_DATA, {"tooltip": "Luna detections to filter."}),
                "labels": ("STRING", {"default": "", "tooltip": (
                    "Comma-separated labels to keep (case-insensitive); empty keeps every label.")}),
                "score_min": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                    "Lowest score kept (inclusive).")}),
                "score_max": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                    "Highest score kept (inclusive).")}),
                "area_min": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip": (
                    "Smallest box area kept, as a fraction of the image (inclusive).")}),
                "area_max": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip": (
                    "Largest box area kept, as a fraction of the image (inclusive).")}),
                "top_k": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip": (
                    "Keep only this many per image, the best by top_by; 0 keeps all.")}),
                "top_by": (list(TOP_BY), {"default": "score", "tooltip": (
                    "What 'best' means for top_k: highest score or largest box area.")}),
                "order": (list(ORDERS), {"default": "score desc", "tooltip": (
                    "Order of the kept detections: by score or area (largest first), by box left or top edge, or as "
                    "they came.")}),
            }
        }

    def filter(self, detection_data, labels="", score_min=0.0, score_max=1.0, area_min=0.0, area_max=1.0, top_k=0,
               top_by="score", order="score desc"):
        kept, rejected = filter_detections(
            detection_data.detections, labels, (score_min, score_max), (area_min, area_max), top_k, top_by, order
        )
        return detection_data.with_detections(kept), detection_data.with_detections(rejected)


NODE_CLASS_MAPPINGS = {
    "LunaDetectionsFromSEGS": LunaDetectionsFromSEGS,
    "LunaDetectionsToSEGS": LunaDetectionsToSEGS,
    "LunaDetectionsFromBBoxes": LunaDetectionsFromBBoxes,
    "LunaDetectionsFromCoreSAM3": LunaDetectionsFromCoreSAM3,
    "LunaDetectionFilter": LunaDetectionFilter,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LunaDetectionsFromSEGS": "Luna Detections from SEGS (Impact-Pack)",
    "LunaDetectionsToSEGS": "Luna Detections to SEGS (Impact-Pack)",
    "LunaDetectionsFromBBoxes": "Luna Detections from Bounding Boxes",
    "LunaDetectionsFromCoreSAM3": "Luna Detections from Core SAM3 (detect / video track)",
    "LunaDetectionFilter": "Luna Detection Filter",
}
