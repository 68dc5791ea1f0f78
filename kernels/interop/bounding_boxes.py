"""Core BOUNDING_BOX lists (ComfyUI 0.28's SAM3_Detect, CreateBoundingBoxes, PrimitiveBoundingBox) to Luna detections.

A BOUNDING_BOX value is per image a list of {x, y, width, height[, score, label]} in pixels of that image.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ...luna_types import Detection, DetectionData
from ... import validation
from ..detections import compact_mask
from .validation import confidence, fitted_box, mask_batch, numbers

MASK_MODES = ("auto", "per object", "union (cut by box)")
BOXES_FIX = ("Connect the image the boxes were made on (a detector run on a resized copy gives that copy's boxes), "
             "or set image_width and image_height to its size.")


def per_image_boxes(bboxes: Any) -> list[list[dict]]:
    """A BOUNDING_BOX value as one list of box dicts per image: accepts a dict, a flat list, or a list of lists."""
    expected = "a list of {x, y, width, height[, score, label]} dicts (one image) or a list of such lists (per image)"
    if isinstance(bboxes, dict):
        return [[bboxes]]
    if not isinstance(bboxes, (list, tuple)):
        raise ValueError(f"BOUNDING_BOX is a {type(bboxes).__name__}; expected {expected}")
    if all(isinstance(b, dict) for b in bboxes):
        return [list(bboxes)]
    if all(isinstance(b, (list, tuple)) and all(isinstance(x, dict) for x in b) for b in bboxes):
        return [list(b) for b in bboxes]
    for b in bboxes:
        inner = b if isinstance(b, (list, tuple)) else [b]
        for x in inner:
            if not isinstance(x, dict):
                raise ValueError(f"BOUNDING_BOX contains a {type(x).__name__} ({x!r}); expected {expected}")
    raise ValueError(f"BOUNDING_BOX mixes box dicts and lists of box dicts; expected {expected}")


def _box_dict(item: dict, what: str) -> tuple[float, float, float, float, float, str | None]:
    """(x, y, width, height, score, label) of one box dict."""
    missing = [k for k in ("x", "y", "width", "height") if k not in item]
    if missing:
        raise ValueError(f"{what} {item!r} has no {', '.join(missing)}; expected keys x, y, width, height (pixels)")
    x, y, w, h = numbers([item[k] for k in ("x", "y", "width", "height")], 4, what, "finite x, y, width, height")
    if w < 0 or h < 0:
        raise ValueError(f"{what} has a negative size (width {w}, height {h}); expected width >= 0 and height >= 0")
    label = item.get("label")
    return x, y, w, h, confidence(item.get("score"), f"{what} score"), None if label is None else str(label)


def _cut(mask: torch.Tensor, box: Sequence[float]) -> torch.Tensor:
    """`mask` with everything outside the normalized box (in the mask's own pixels, rounded outward) set to 0,
    stored small (bool when binary, else float16)."""
    height, width = mask.shape
    x0, y0 = math.floor(box[0] * width + 1e-6), math.floor(box[1] * height + 1e-6)
    x1, y1 = math.ceil(box[2] * width - 1e-6), math.ceil(box[3] * height - 1e-6)
    window = compact_mask(mask[y0:y1, x0:x1])
    out = torch.zeros(mask.shape, dtype=window.dtype)
    out[y0:y1, x0:x1] = window
    return out


def _check_mask_count(count: int, boxes: int, images: int, per_object: bool) -> None:
    if per_object and count != boxes:
        raise ValueError(
            f"mask has {count} masks but there are {boxes} boxes; expected one mask per box in 'per object' mode"
        )
    if not per_object and count not in (1, images):
        raise ValueError(
            f"mask has {count} masks for {boxes} boxes on {images} images; expected one mask per box, "
            "one union mask, or one union mask per image"
        )


def bboxes_to_detections(
    bboxes: Any,
    width: int,
    height: int,
    masks: torch.Tensor | None = None,
    mask_mode: str = "auto",
    label: str = "",
) -> DetectionData:
    """Core BOUNDING_BOX boxes (pixels, per image) plus optional masks into DetectionData of a width x height image.

    masks [N, H, W] are per object (in box order, images one after the other) when N is the number of boxes, or a union
    per image ([1, H, W] for all images, or [B, H, W]) cut to each box; `mask_mode` forces either reading ("auto": per
    object when the counts match). A box must fit the image (to within half a pixel, which is clipped); `label` is
    used where a box has none. Per-object masks are views of `masks`, cut ones are stored small (see compact_mask).
    """
    validation.positive_int("image width", width)
    validation.positive_int("image height", height)
    validation.one_of("mask_mode", mask_mode, MASK_MODES)
    per_image = per_image_boxes(bboxes)
    parsed = [
        (index, f"box {n} of image {index}", item)
        for index, items in enumerate(per_image)
        for n, item in enumerate(items)
    ]
    parsed = [(index, what, item, _box_dict(item, what)) for index, what, item in parsed]
    per_object = False
    if masks is not None:
        masks = mask_batch(masks)
        per_object = mask_mode == "per object" or (mask_mode == "auto" and masks.shape[0] == len(parsed))
        _check_mask_count(masks.shape[0], len(parsed), len(per_image), per_object)
    detections = []
    for k, (index, what, item, (x, y, w, h, score, item_label)) in enumerate(parsed):
        box = fitted_box((x, y, x + w, y + h), width, height, f"{what} {item!r}", BOXES_FIX)
        mask = None
        if masks is not None:
            mask = masks[k] if per_object else _cut(masks[min(index, masks.shape[0] - 1)], box)
        detections.append(
            Detection(box=box, mask=mask, score=score, label=(item_label if item_label is not None else label).strip(),
                      image_index=index)
        )
    return DetectionData(tuple(detections), image_size=(int(width), int(height)), meta={"source": "BOUNDING_BOX"})
