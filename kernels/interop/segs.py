"""Impact-Pack SEGS to and from Luna detections.

Impact-Pack is never imported: a SEG is read by its field names (duck typing) and written as our own namedtuple
with exactly Impact's fields, so Impact's SEGS nodes accept it. SEGS is `((height, width), [SEG, ...])` with
`crop_region` and `bbox` as (x1, y1, x2, y2) pixels and `cropped_mask` a float32 numpy array of the crop region.
"""
from __future__ import annotations

import math
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...luna_types import Detection, DetectionData
from ... import validation
from ..detections import compact_dtype, mask_boxes
from .validation import box, confidence, fitted_box, mask_2d, numbers

SEG = namedtuple(
    "SEG",
    ["cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label", "control_net_wrapper"],
    defaults=[None],
)
SEG_FIELDS = ("cropped_mask", "confidence", "crop_region", "bbox", "label")
SEGS_FIX = ("SEGS carry (height, width) of the image their boxes are on: use SEGS made on this image (a detector run "
            "on a resized copy gives that copy's boxes and size).")


# -------------------------------------------------------------------------------------------------- SEGS -> Luna


def _segs_parts(segs: Any) -> tuple[int, int, Sequence[Any]]:
    """(height, width, items) of a SEGS, or a ValueError saying what shape was expected."""
    expected = "SEGS as ((height, width), [SEG, ...])"
    if not isinstance(segs, (tuple, list)) or len(segs) != 2:
        got = f"a {type(segs).__name__} of length {len(segs)}" if isinstance(segs, (tuple, list)) else repr(type(segs).__name__)
        raise ValueError(f"SEGS is {got}; expected {expected}")
    shape, items = segs
    height, width = numbers(shape, 2, "SEGS image shape", "(height, width) as two positive integers")
    if height <= 0 or width <= 0 or height != int(height) or width != int(width):
        raise ValueError(f"SEGS image shape is {shape!r}; expected (height, width) as two positive integers")
    if items is None or isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise ValueError(f"SEGS items are {type(items).__name__}; expected {expected}")
    return int(height), int(width), list(items)


def _placed(crop: torch.Tensor, region: tuple[int, int, int, int], height: int, width: int, what: str) -> torch.Tensor:
    """The cropped mask put at its crop region on a height x width mask (bool when binary, else float16).

    The crop is either the whole region, or (as numpy slicing leaves it) only the part of the region inside the image.
    A region may reach past the image where its mask is empty there; mask pixels beyond the image are an error.
    """
    x1, y1, x2, y2 = region
    h, w = crop.shape
    ix1, iy1, ix2, iy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if (h, w) != (y2 - y1, x2 - x1):
        if (h, w) != (max(iy2 - iy1, 0), max(ix2 - ix1, 0)):
            raise ValueError(
                f"{what} is {h}x{w} (h x w) but its crop_region {region} is {y2 - y1}x{x2 - x1}; "
                "expected the cropped mask to have the crop region's size"
            )
        x1, y1 = ix1, iy1
    inside = crop[max(iy1 - y1, 0) : max(iy2 - y1, 0), max(ix1 - x1, 0) : max(ix2 - x1, 0)]
    beyond = int((crop > 0).sum()) - int((inside > 0).sum())
    if beyond:
        raise ValueError(
            f"{what} reaches outside the {width}x{height} (width x height) image: {beyond} of its mask pixels lie "
            f"beyond the edge (crop_region {list(region)}). {SEGS_FIX}"
        )
    mask = torch.zeros(height, width, dtype=compact_dtype(inside))
    if inside.numel():
        mask[iy1:iy2, ix1:ix2] = inside.to(mask.dtype)
    return mask


def segs_to_detections(segs: Any, image_index: int = 0) -> DetectionData:
    """Impact SEGS into DetectionData: each bbox checked to fit the SEGS' image and normalized, each cropped mask put
    back at its crop region on a whole-image mask (bool when binary, else float16: see compact_dtype)."""
    height, width, items = _segs_parts(segs)
    detections = []
    for i, seg in enumerate(items):
        missing = [name for name in SEG_FIELDS if not hasattr(seg, name)]
        if missing:
            raise ValueError(
                f"SEGS item {i} ({type(seg).__name__}) has no {', '.join(missing)}; expected an Impact SEG with fields "
                f"{', '.join(SEG._fields)}"
            )
        bbox = fitted_box(box(seg.bbox, f"SEG {i} bbox"), width, height, f"SEG {i} bbox", SEGS_FIX)
        crop = mask_2d(seg.cropped_mask, f"SEG {i} cropped_mask")
        mask = None
        if crop is not None:
            region = tuple(round(v) for v in box(seg.crop_region, f"SEG {i} crop_region"))
            mask = _placed(crop, region, height, width, f"SEG {i} cropped_mask")
        label = "" if seg.label is None else str(seg.label)
        detections.append(
            Detection(box=bbox, mask=mask, score=confidence(seg.confidence, f"SEG {i} confidence"), label=label,
                      image_index=image_index)
        )
    return DetectionData(tuple(detections), image_size=(width, height), meta={"source": "SEGS"})


# -------------------------------------------------------------------------------------------------- Luna -> SEGS


def _span(start: int, end: int, factor: float, limit: int) -> tuple[int, int]:
    """[start, end) grown about its centre to `factor` times its size (at least 1), kept inside [0, limit)."""
    size = min(limit, max(math.ceil((end - start) * factor - 1e-9), end - start, 1))
    lo = math.floor((start + end) / 2 - size / 2)
    lo = min(max(lo, 0), limit - size)
    return lo, lo + size


def make_crop_region(width: int, height: int, bbox: Sequence[int], crop_factor: float) -> tuple[int, int, int, int]:
    """Impact's crop region: the bbox grown `crop_factor` times about its centre, shifted (not shrunk) to stay inside
    the image, and only cut where it is larger than the image. It always contains the (in-image) bbox."""
    x1, y1, x2, y2 = bbox
    cx1, cx2 = _span(x1, x2, crop_factor, width)
    cy1, cy2 = _span(y1, y2, crop_factor, height)
    return cx1, cy1, cx2, cy2


def _pixel_box(normalized: Sequence[float], width: int, height: int, what: str) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box(normalized, what)
    px = lambda v, n: min(max(round(v * n), 0), n)  # noqa: E731
    return px(x0, width), px(y0, height), px(x1, width), px(y1, height)


def _canvas_mask(mask: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """A detection's mask on the CPU at width x height (resized bilinearly where it has another size), any dtype."""
    mask = mask.detach().cpu()
    if mask.ndim != 2:
        raise ValueError(f"a detection mask has shape {tuple(mask.shape)}; expected [height, width]")
    if tuple(mask.shape) != (height, width):
        mask = F.interpolate(mask.float()[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    return mask


def detections_to_segs(
    data: DetectionData, image_index: int = 0, crop_factor: float = 3.0, image: torch.Tensor | None = None
) -> tuple[tuple[int, int], list]:
    """DetectionData of one image into Impact SEGS at the detected size (or at `image`'s size when given).

    bbox is the normalized box in pixels (rounded); crop_region is `make_crop_region`, grown where needed so the whole
    mask (every pixel > 0) lies inside it, so no part of a mask is lost; cropped_mask is the mask cut at crop_region
    (float32 numpy); cropped_image is the image cut at crop_region ([1, h, w, C]) when `image` is given, else None.
    """
    validation.number_at_least("crop_factor", crop_factor, 1.0)
    if image is not None:
        if image.ndim != 4:
            raise ValueError(f"image has shape {tuple(image.shape)}; expected an IMAGE batch [B, H, W, C]")
        height, width = int(image.shape[1]), int(image.shape[2])
        if 1 < image.shape[0] <= image_index:
            raise ValueError(
                f"image_index is {image_index} but the image batch has {image.shape[0]} images; "
                f"expected an index < {image.shape[0]} (or a single image)"
            )
    else:
        width, height = (int(v) for v in data.image_size)
    if width <= 0 or height <= 0:
        raise ValueError(
            f"the detection data has image_size {data.image_size}; expected a positive (width, height) — connect the image"
        )
    items = []
    for n, det in enumerate(data.for_image(image_index)):
        bbox = _pixel_box(det.box, width, height, f"detection {n} box")
        x1, y1, x2, y2 = make_crop_region(width, height, bbox, crop_factor)
        mask = None if det.mask is None else _canvas_mask(det.mask, width, height)
        if mask is not None:
            extent, present = mask_boxes(mask[None], threshold=0.0)
            if bool(present[0]):
                mx1, my1, mx2, my2 = (round(float(v) * s) for v, s in zip(extent[0], (width, height, width, height)))
                x1, y1, x2, y2 = min(x1, mx1), min(y1, my1), max(x2, mx2), max(y2, my2)
            cropped_mask = mask[y1:y2, x1:x2].float().clamp(0.0, 1.0).numpy().astype(np.float32, copy=True)
        else:
            cropped_mask = np.zeros((y2 - y1, x2 - x1), dtype=np.float32)
            cropped_mask[bbox[1] - y1 : bbox[3] - y1, bbox[0] - x1 : bbox[2] - x1] = 1.0
        cropped_image = None
        if image is not None:
            b = image_index if image.shape[0] > 1 else 0
            cropped_image = image[b : b + 1, y1:y2, x1:x2, :].clone()
        items.append(
            SEG(cropped_image, cropped_mask, np.float32(det.score), [x1, y1, x2, y2], list(bbox), det.label, None)
        )
    return (height, width), items
