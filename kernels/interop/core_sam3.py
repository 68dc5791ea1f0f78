"""Core ComfyUI SAM3 (0.28+) to Luna detections: SAM3_Detect's MASK + BOUNDING_BOX and SAM3_VideoTrack's track data.

SAM3_TRACK_DATA is a plain dict: `packed_masks` [frames, objects, h, w/8] uint8 (bit-packed, least significant bit
first, as core's `pack_masks`; None when nothing was tracked), `n_frames`, `scores` (one per object) and `orig_size`
(height, width) of the frames. Masks stay at the tracker's resolution (bool, over the whole frame): a Luna mask is
resolution-free, and the detailer samples it as core's SAM3_TrackToMask resizes it (bilinear, half-pixel centres).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ...luna_types import Detection, DetectionData
from ... import validation
from ..detections import compact_mask, mask_boxes
from .bounding_boxes import bboxes_to_detections, per_image_boxes
from .validation import mask_batch

TRACK_FIX = "connect SAM3_VideoTrack's track_data output (ComfyUI 0.28 or newer)"
ASPECT_TOLERANCE_PX = 1.0
"""How far (pixels of the connected image) its aspect may differ from the tracked frames' before it is an error."""


def unpack_bits(packed: torch.Tensor) -> torch.Tensor:
    """Bool masks [..., h, 8w] of bit-packed uint8 [..., h, w], least significant bit first (core's pack_masks)."""
    bits = torch.tensor([1 << k for k in range(8)], dtype=torch.uint8, device=packed.device)
    return (packed.unsqueeze(-1) & bits).bool().flatten(-2)


def _orig_size(track_data: Mapping, image_size: tuple[int, int] | None) -> tuple[int, int]:
    """(height, width) of the tracked frames: track_data's orig_size, else the connected image's."""
    size = track_data.get("orig_size")
    if size is None:
        if image_size is None:
            raise ValueError("track_data has no orig_size (the frames' height and width): connect the tracked frames "
                             "to the image input")
        return image_size
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"track_data orig_size is {size!r}; expected (height, width) of the tracked frames")
    return (validation.positive_int("track_data orig_size height", size[0]),
            validation.positive_int("track_data orig_size width", size[1]))


def _packed(track_data: Mapping) -> torch.Tensor | None:
    """The packed masks [frames, objects, h, w/8] uint8, or None when nothing was tracked."""
    packed = track_data["packed_masks"]
    if packed is None:
        return None
    if not torch.is_tensor(packed) or packed.dtype != torch.uint8 or packed.ndim != 4:
        got = (f"a {packed.dtype} tensor of shape {tuple(packed.shape)}" if torch.is_tensor(packed)
               else f"a {type(packed).__name__}")
        raise ValueError(f"track_data packed_masks is {got}; expected bit-packed uint8 masks [frames, objects, "
                         f"height, width/8]: {TRACK_FIX}")
    return packed


def _frame_count(track_data: Mapping, packed: torch.Tensor | None) -> int:
    frames = track_data.get("n_frames", None if packed is None else packed.shape[0])
    if frames is None:
        raise ValueError(f"track_data has neither packed_masks nor n_frames: {TRACK_FIX}")
    frames = validation.int_at_least("track_data n_frames", frames, 0)
    if packed is not None and packed.shape[0] != frames:
        raise ValueError(f"track_data packed_masks hold {packed.shape[0]} frames but n_frames is {frames}: {TRACK_FIX}")
    return frames


def _scores(track_data: Mapping, objects: int) -> list[float]:
    """One score per object: track_data's, 1.0 where it has none (an object given by a mask)."""
    scores = track_data.get("scores")
    if scores is None:
        scores = []
    if torch.is_tensor(scores):
        scores = scores.flatten().tolist()
    if not isinstance(scores, (list, tuple)):
        raise ValueError(f"track_data scores is a {type(scores).__name__}; expected one number per tracked object")
    return [validation.finite_number(f"track_data score of object {k}", scores[k]) if k < len(scores) else 1.0
            for k in range(objects)]


def check_frames(frames: int, orig: tuple[int, int], image_shape: tuple[int, int, int] | None) -> None:
    """A ValueError naming the fix when the connected image [B, H, W] is not the tracked clip (count or aspect)."""
    if image_shape is None:
        return
    count, height, width = image_shape
    if count != frames:
        raise ValueError(f"track_data covers {frames} frames but the image has {count}: connect the frames that "
                         "SAM3_VideoTrack tracked (the same batch, in order)")
    off = abs(width - height * orig[1] / orig[0])
    if off > ASPECT_TOLERANCE_PX * max(1.0, width / orig[1]):
        raise ValueError(f"track_data was made on {orig[1]}x{orig[0]} (width x height) frames but the image is "
                         f"{width}x{height}, another aspect: connect the tracked frames or a resized copy of them")


def tracks_to_detections(track_data: Any, label: str = "object",
                         image_shape: tuple[int, int, int] | None = None) -> DetectionData:
    """One detection per tracked object per frame it is in (`image_index` the frame, `track_id` the object's index in
    the track data, its score, `label`); an object absent from a frame has no detection there. `image_shape`
    (frames, height, width) of a connected image is checked against the clip and stands in for a missing orig_size."""
    if not isinstance(track_data, Mapping) or "packed_masks" not in track_data:
        got = type(track_data).__name__ if not isinstance(track_data, Mapping) else f"a dict of {sorted(track_data)}"
        raise ValueError(f"track_data is {got}; expected SAM3_TRACK_DATA, a dict with packed_masks, n_frames, scores and "
                         f"orig_size: {TRACK_FIX}")
    packed = _packed(track_data)
    frames = _frame_count(track_data, packed)
    orig = _orig_size(track_data, image_shape[1:] if image_shape else None)
    check_frames(frames, orig, image_shape)
    meta = {"source": "SAM3_TRACK_DATA", "frames": frames}
    if packed is None or packed.shape[1] == 0:
        return DetectionData((), image_size=(orig[1], orig[0]), meta=meta)
    scores = _scores(track_data, packed.shape[1])
    detections = []
    for frame in range(frames):
        masks = unpack_bits(packed[frame].cpu())
        boxes, present = mask_boxes(masks)
        for track in present.nonzero().flatten().tolist():
            detections.append(Detection(tuple(boxes[track].tolist()), masks[track].clone(), scores[track],
                                        label.strip(), frame, track))
    return DetectionData(tuple(detections), image_size=(orig[1], orig[0]), meta=meta)


def _has_boxes(bboxes: Any) -> bool:
    """Whether a BOUNDING_BOX value holds any box (SAM3_Detect gives one list per image, empty ones included)."""
    if isinstance(bboxes, dict):
        return True
    return isinstance(bboxes, (list, tuple)) and any(_has_boxes(b) for b in bboxes)


def _boxes_with_masks(bboxes: Any, masks: torch.Tensor | None, label: str, width: int,
                      height: int) -> DetectionData:
    """bboxes_to_detections of SAM3_Detect's boxes, clipped to the image (core does not clip them: an object at the
    edge gives a box past it) and less those that are empty there, each with its own mask when the masks are
    individual (one per box), else cut from its image's union (one mask per image: read so whenever an image has
    other than one box, even where the counts happen to agree)."""
    per_image = [[_clipped(box, width, height) for box in boxes] for boxes in per_image_boxes(bboxes)]
    keep = [not _empty(box) for boxes in per_image for box in boxes]
    mode = "auto"
    if masks is not None:
        masks = mask_batch(masks, "masks")
        unions = masks.shape[0] == len(per_image) and any(len(boxes) != 1 for boxes in per_image)
        mode = "per object" if masks.shape[0] == len(keep) and not unions else "union (cut by box)"
        if mode == "per object":
            masks = masks[torch.tensor(keep, dtype=torch.bool)]
    kept = iter(keep)
    per_image = [[box for box in boxes if next(kept)] for boxes in per_image]
    data = bboxes_to_detections(per_image, width, height, masks=masks, mask_mode=mode, label=label)
    return DetectionData(data.detections, data.image_size, {"source": "SAM3_Detect"})


def _clipped(box: dict, width: int, height: int) -> dict:
    """A box dict cut to the width x height image (malformed ones as they are, for bboxes_to_detections to name)."""
    try:
        x0, y0 = max(float(box["x"]), 0.0), max(float(box["y"]), 0.0)
        x1 = min(float(box["x"]) + float(box["width"]), float(width))
        y1 = min(float(box["y"]) + float(box["height"]), float(height))
    except (KeyError, TypeError, ValueError):
        return box
    return {**box, "x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}


def _empty(box: dict) -> bool:
    """Whether a box dict has no area (a detector's degenerate box); malformed ones are left to bboxes_to_detections."""
    try:
        return float(box["width"]) <= 0 or float(box["height"]) <= 0
    except (KeyError, TypeError, ValueError):
        return False


def detect_to_detections(bboxes: Any, masks: torch.Tensor | None, label: str = "object",
                         image_shape: tuple[int, int, int] | None = None) -> DetectionData:
    """SAM3_Detect's outputs as detections: boxes with their masks (individual in box order, or each image's union cut
    by the box). Point and box prompts give masks without boxes: each non-empty mask is then one detection (of its
    image when there is one union mask per image)."""
    if image_shape is None and masks is None:
        raise ValueError("SAM3_Detect's boxes need the size of their image: connect the image SAM3_Detect ran on "
                         "(or its masks output)")
    height, width = image_shape[1:] if image_shape is not None else masks.shape[-2:]
    if _has_boxes(bboxes) or masks is None:
        return _boxes_with_masks(bboxes if bboxes is not None else [], masks, label, int(width), int(height))
    masks = mask_batch(masks, "masks")
    images = image_shape[0] if image_shape is not None else 1
    if images not in (1, masks.shape[0]):
        raise ValueError(f"{masks.shape[0]} masks without boxes on {images} images: which image each belongs to is "
                         "unknown. Turn SAM3_Detect's individual_masks off (one union per image) or give one image")
    per_image = images > 1
    boxes, present = mask_boxes(masks)
    detections = tuple(Detection(tuple(boxes[k].tolist()), compact_mask(masks[k]), 1.0, label.strip(), k if per_image else 0)
                       for k in present.nonzero().flatten().tolist())
    return DetectionData(detections, image_size=(int(width), int(height)), meta={"source": "SAM3_Detect"})
