"""Detections to and from the formats other ComfyUI graphs carry: Impact-Pack SEGS and core BOUNDING_BOX lists.

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

from ..luna_types import Detection, DetectionData
from .detections import mask_boxes

SEG = namedtuple(
    "SEG",
    ["cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label", "control_net_wrapper"],
    defaults=[None],
)
SEG_FIELDS = ("cropped_mask", "confidence", "crop_region", "bbox", "label")
MASK_MODES = ("auto", "per object", "union (cut by box)")


# ---------------------------------------------------------------------------------------------- validation helpers


def _to_numpy(value: Any) -> np.ndarray:
    if torch.is_tensor(value):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _finite_numbers(value: Any, count: int, what: str, expected: str) -> tuple[float, ...]:
    """`count` finite numbers from a tuple/list/array/tensor, or a ValueError naming `what` and `expected`."""
    try:
        array = _to_numpy(value).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is {value!r}; expected {expected}") from None
    if array.size != count:
        raise ValueError(f"{what} has {array.size} numbers ({value!r}); expected {expected}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contains NaN or infinity ({value!r}); expected {expected}")
    return tuple(float(v) for v in array)


def _box(value: Any, what: str) -> tuple[float, float, float, float]:
    """(x1, y1, x2, y2) with x2 >= x1 and y2 >= y1."""
    x1, y1, x2, y2 = _finite_numbers(value, 4, what, "4 finite numbers (x1, y1, x2, y2)")
    if x2 < x1 or y2 < y1:
        raise ValueError(f"{what} {value!r} has a negative size ({x2 - x1} x {y2 - y1}); expected x2 >= x1 and y2 >= y1")
    return x1, y1, x2, y2


def _confidence(value: Any, what: str) -> float:
    if value is None:
        return 1.0
    return _finite_numbers(value, 1, what, "one finite number (numpy scalar, float or 1-element tensor)")[0]


def _mask_2d(mask: Any, what: str) -> torch.Tensor | None:
    """A [h, w] float32 CPU tensor in 0..1 from a numpy array or tensor ([h, w], [1, h, w], [h, w, 1], bool/uint8/float)."""
    if mask is None:
        return None
    try:
        t = mask.detach().cpu() if torch.is_tensor(mask) else torch.from_numpy(np.ascontiguousarray(np.asarray(mask)))
    except (TypeError, ValueError):
        raise ValueError(f"{what} is a {type(mask).__name__}; expected a 2-D mask (numpy array or tensor)") from None
    if t.dtype == torch.bool:
        t = t.float()
    elif t.dtype == torch.uint8:
        t = t.float() / 255.0 if t.numel() and int(t.max()) > 1 else t.float()
    elif t.is_complex():
        raise ValueError(f"{what} has dtype {t.dtype}; expected a real-valued mask")
    else:
        t = t.float()
    while t.ndim > 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 3 and t.shape[-1] == 1:
        t = t[..., 0]
    if t.ndim != 2:
        raise ValueError(f"{what} has shape {tuple(t.shape)}; expected a 2-D mask [height, width]")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or infinity; expected values in 0..1")
    return t.clamp(0.0, 1.0)


def _normalized(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    clip = lambda v: min(max(v, 0.0), 1.0)  # noqa: E731
    return clip(x1 / width), clip(y1 / height), clip(x2 / width), clip(y2 / height)


# -------------------------------------------------------------------------------------------------- SEGS -> Luna


def _segs_parts(segs: Any) -> tuple[int, int, Sequence[Any]]:
    """(height, width, items) of a SEGS, or a ValueError saying what shape was expected."""
    expected = "SEGS as ((height, width), [SEG, ...])"
    if not isinstance(segs, (tuple, list)) or len(segs) != 2:
        got = f"a {type(segs).__name__} of length {len(segs)}" if isinstance(segs, (tuple, list)) else repr(type(segs).__name__)
        raise ValueError(f"SEGS is {got}; expected {expected}")
    shape, items = segs
    height, width = _finite_numbers(shape, 2, "SEGS image shape", "(height, width) as two positive integers")
    if height <= 0 or width <= 0 or height != int(height) or width != int(width):
        raise ValueError(f"SEGS image shape is {shape!r}; expected (height, width) as two positive integers")
    if items is None or isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise ValueError(f"SEGS items are {type(items).__name__}; expected {expected}")
    return int(height), int(width), list(items)


def _paste(canvas: torch.Tensor, crop: torch.Tensor, region: tuple[int, int, int, int], what: str) -> None:
    """Write `crop` into `canvas` at `region` (x1, y1, x2, y2), dropping what falls outside the canvas.

    The crop is either the whole region, or (as numpy slicing leaves it) only the part of the region inside the canvas.
    """
    height, width = canvas.shape
    x1, y1, x2, y2 = region
    inside = (max(x1, 0), max(y1, 0), min(x2, width), min(y2, height))
    h, w = crop.shape
    if (h, w) != (y2 - y1, x2 - x1):
        ix1, iy1, ix2, iy2 = inside
        if (h, w) != (max(iy2 - iy1, 0), max(ix2 - ix1, 0)):
            raise ValueError(
                f"{what} is {h}x{w} (h x w) but its crop_region {region} is {y2 - y1}x{x2 - x1}; "
                "expected the cropped mask to have the crop region's size"
            )
        x1, y1, x2, y2 = ix1, iy1, ix1 + w, iy1 + h
    tx1, ty1, tx2, ty2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if tx2 > tx1 and ty2 > ty1:
        canvas[ty1:ty2, tx1:tx2] = crop[ty1 - y1 : ty2 - y1, tx1 - x1 : tx2 - x1]


def segs_to_detections(segs: Any, image_index: int = 0) -> DetectionData:
    """Impact SEGS into DetectionData: each cropped mask pasted back at its crop region on a full-size canvas."""
    height, width, items = _segs_parts(segs)
    detections = []
    for i, seg in enumerate(items):
        missing = [name for name in SEG_FIELDS if not hasattr(seg, name)]
        if missing:
            raise ValueError(
                f"SEGS item {i} ({type(seg).__name__}) has no {', '.join(missing)}; expected an Impact SEG with fields "
                f"{', '.join(SEG._fields)}"
            )
        bbox = _box(seg.bbox, f"SEG {i} bbox")
        crop = _mask_2d(seg.cropped_mask, f"SEG {i} cropped_mask")
        mask = None
        if crop is not None:
            region = tuple(round(v) for v in _box(seg.crop_region, f"SEG {i} crop_region"))
            mask = torch.zeros(height, width, dtype=torch.float32)
            _paste(mask, crop, region, f"SEG {i} cropped_mask")
        label = "" if seg.label is None else str(seg.label)
        detections.append(
            Detection(
                box=_normalized(bbox, width, height),
                mask=mask,
                score=_confidence(seg.confidence, f"SEG {i} confidence"),
                label=label,
                image_index=image_index,
            )
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


def _pixel_box(box: Sequence[float], width: int, height: int, what: str) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = _box(box, what)
    px = lambda v, n: min(max(round(v * n), 0), n)  # noqa: E731
    return px(x0, width), px(y0, height), px(x1, width), px(y1, height)


def _canvas_mask(mask: torch.Tensor, width: int, height: int) -> torch.Tensor:
    mask = mask.detach().float().cpu()
    if mask.ndim != 2:
        raise ValueError(f"a detection mask has shape {tuple(mask.shape)}; expected [height, width]")
    if tuple(mask.shape) != (height, width):
        mask = F.interpolate(mask[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    return mask.clamp(0.0, 1.0)


def detections_to_segs(
    data: DetectionData, image_index: int = 0, crop_factor: float = 3.0, image: torch.Tensor | None = None
) -> tuple[tuple[int, int], list]:
    """DetectionData of one image into Impact SEGS at the detected size (or at `image`'s size when given).

    bbox is the normalized box in pixels (rounded); crop_region is `make_crop_region`, grown where needed so the whole
    mask (every pixel > 0) lies inside it, so no part of a mask is lost; cropped_mask is the mask cut at crop_region
    (float32 numpy); cropped_image is the image cut at crop_region ([1, h, w, C]) when `image` is given, else None.
    """
    if not math.isfinite(crop_factor) or crop_factor < 1.0:
        raise ValueError(f"crop_factor is {crop_factor}; expected a number >= 1")
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
            cropped_mask = mask[y1:y2, x1:x2].numpy().astype(np.float32, copy=True)
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


# ------------------------------------------------------------------------------------------ BOUNDING_BOX -> Luna


def _per_image_boxes(bboxes: Any) -> list[list[dict]]:
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
    missing = [k for k in ("x", "y", "width", "height") if k not in item]
    if missing:
        raise ValueError(f"{what} {item!r} has no {', '.join(missing)}; expected keys x, y, width, height (pixels)")
    x, y, w, h = _finite_numbers([item[k] for k in ("x", "y", "width", "height")], 4, what, "finite x, y, width, height")
    if w < 0 or h < 0:
        raise ValueError(f"{what} has a negative size (width {w}, height {h}); expected width >= 0 and height >= 0")
    score = _confidence(item.get("score"), f"{what} score")
    label = item.get("label")
    return x, y, w, h, score, None if label is None else str(label)


def _cut(mask: torch.Tensor, box: Sequence[float]) -> torch.Tensor:
    """`mask` with everything outside the normalized box (in the mask's own pixels, rounded outward) set to 0."""
    height, width = mask.shape
    x0, y0 = math.floor(box[0] * width + 1e-6), math.floor(box[1] * height + 1e-6)
    x1, y1 = math.ceil(box[2] * width - 1e-6), math.ceil(box[3] * height - 1e-6)
    out = torch.zeros_like(mask)
    out[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
    return out


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
    object when the counts match). Boxes are clipped to the image; `label` is used where a box has none.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size is {width}x{height}; expected a positive width and height")
    if mask_mode not in MASK_MODES:
        raise ValueError(f"unknown mask_mode {mask_mode!r}; expected one of {', '.join(MASK_MODES)}")
    per_image = _per_image_boxes(bboxes)
    parsed = [
        (index, _box_dict(item, f"box {n} of image {index}"))
        for index, items in enumerate(per_image)
        for n, item in enumerate(items)
    ]
    if masks is not None:
        masks = masks.detach().float().cpu()
        if masks.ndim == 2:
            masks = masks[None]
        if masks.ndim != 3:
            raise ValueError(f"mask has shape {tuple(masks.shape)}; expected a MASK batch [N, H, W]")
        if not torch.isfinite(masks).all():
            raise ValueError("mask contains NaN or infinity; expected values in 0..1")
        n = masks.shape[0]
        per_object = mask_mode == "per object" or (mask_mode == "auto" and n == len(parsed))
        if per_object and n != len(parsed):
            raise ValueError(
                f"mask has {n} masks but there are {len(parsed)} boxes; expected one mask per box in 'per object' mode"
            )
        if not per_object and n not in (1, len(per_image)):
            raise ValueError(
                f"mask has {n} masks for {len(parsed)} boxes on {len(per_image)} images; expected one mask per box, "
                "one union mask, or one union mask per image"
            )
    detections = []
    for k, (index, (x, y, w, h, score, item_label)) in enumerate(parsed):
        box = _normalized((x, y, x + w, y + h), width, height)
        mask = None
        if masks is not None:
            if per_object:
                mask = masks[k].clamp(0.0, 1.0).clone()
            else:
                mask = _cut(masks[min(index, masks.shape[0] - 1)].clamp(0.0, 1.0), box)
        detections.append(
            Detection(box=box, mask=mask, score=score, label=(item_label if item_label is not None else label).strip(), image_index=index)
        )
    return DetectionData(tuple(detections), image_size=(int(width), int(height)), meta={"source": "BOUNDING_BOX"})
