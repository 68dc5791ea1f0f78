"""Normalized detections from pixel masks: bounding boxes, connected regions, and whole-image masks stored small."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .. import validation

def mask_boxes(masks: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized boxes [N, 4] (x0, y0, x1, y1) of masks [N, H, W] above threshold, and which masks are non-empty [N]."""
    on = masks > threshold
    n, h, w = on.shape
    rows, cols = on.any(dim=2), on.any(dim=1)
    present = rows.any(dim=1)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    big = torch.iinfo(torch.long).max
    y0 = torch.where(rows, ys, big).amin(dim=1)
    y1 = torch.where(rows, ys, -1).amax(dim=1) + 1
    x0 = torch.where(cols, xs, big).amin(dim=1)
    x1 = torch.where(cols, xs, -1).amax(dim=1) + 1
    scale = torch.tensor([w, h, w, h], device=masks.device, dtype=torch.float32)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float() / scale
    return torch.where(present[:, None], boxes, torch.zeros_like(boxes)), present


def compact_dtype(mask: torch.Tensor) -> torch.dtype:
    """How a mask in 0..1 is stored small: bool when it holds only 0 and 1 (exact), else float16 (to within 2.5e-4)."""
    if mask.dtype == torch.bool or bool(((mask == 0) | (mask == 1)).all()):
        return torch.bool
    return torch.float16


def compact_mask(mask: torch.Tensor) -> torch.Tensor:
    """`mask` (values in 0..1) in its compact_dtype: a quarter or half of a float32 mask; read it with `.float()`."""
    return mask.to(compact_dtype(mask))


class Region(NamedTuple):
    """One connected region of a mask: its normalized box (x0, y0, x1, y1) and its whole-image mask."""

    box: tuple[float, float, float, float]
    mask: torch.Tensor


def connected_regions(mask: torch.Tensor, threshold: float = 0.5, min_pixels: int = 1) -> list[Region]:
    """The 8-connected regions above threshold of one mask [H, W] that have at least `min_pixels` pixels, top-left
    first, each with its box and a whole-image mask (the mask's values on the region, 0 elsewhere; compact_mask).

    Regions are labelled once and counted (bincount) before any mask is built, and a mask is built only for a region
    that is kept: memory grows with the regions kept, not with the specks dropped.
    """
    from scipy import ndimage

    if mask.ndim != 2:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected one mask [H, W]")
    validation.positive_int("min_pixels", min_pixels)
    on = (mask > threshold).cpu().numpy()
    labels, count = ndimage.label(on, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return []
    kept = np.flatnonzero(np.bincount(labels.ravel(), minlength=count + 1)[1:] >= min_pixels) + 1
    if kept.size == 0:
        return []
    values = compact_mask(mask)
    windows = ndimage.find_objects(labels)
    height, width = on.shape
    regions = []
    for k in kept.tolist():
        rows, cols = windows[k - 1]
        inside = torch.from_numpy(labels[rows, cols] == k).to(mask.device)
        full = torch.zeros(mask.shape, dtype=values.dtype, device=mask.device)
        window = values[rows, cols]
        full[rows, cols] = inside & window if window.dtype == torch.bool else torch.where(inside, window, 0)
        regions.append(Region((cols.start / width, rows.start / height, cols.stop / width, rows.stop / height), full))
    return regions
