"""Normalized detections from pixel masks: bounding boxes and resolution-free masks."""
from __future__ import annotations

import torch


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


def connected_regions(mask: torch.Tensor, threshold: float = 0.5, min_pixels: int = 1) -> torch.Tensor:
    """The 8-connected regions of one mask [H, W] above threshold, each as its own mask [K, H, W], ordered top-left first."""
    import numpy as np
    from scipy import ndimage

    on = (mask > threshold).cpu().numpy()
    labels, count = ndimage.label(on, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return torch.zeros(0, *mask.shape, dtype=mask.dtype, device=mask.device)
    regions = torch.from_numpy(labels).to(mask.device)[None] == torch.arange(1, count + 1, device=mask.device)[:, None, None]
    regions = regions[regions.flatten(1).sum(1) >= min_pixels]
    return (regions * mask[None]).to(mask.dtype)


UNITS = ("normalized (0-1)", "pixels")


def parse_boxes(text: str, units: str, width: int, height: int, default_label: str) -> list[tuple[tuple[float, ...], str]]:
    """Typed boxes, one per line `x0, y0, x1, y1[, label]`, as normalized (box, label) pairs; ValueError names the bad line."""
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) not in (4, 5):
            raise ValueError(f"box line {number} ({line!r}) must be `x0, y0, x1, y1` or `x0, y0, x1, y1, label`")
        try:
            values = [float(p) for p in parts[:4]]
        except ValueError as exc:
            raise ValueError(f"box line {number} ({line!r}) holds a value that is not a number") from exc
        if units == "pixels":
            if width <= 0 or height <= 0:
                raise ValueError("pixel boxes need the image size: set image_width and image_height or connect the image")
            values = [values[0] / width, values[1] / height, values[2] / width, values[3] / height]
        out.append((tuple(values), parts[4] if len(parts) == 5 else default_label))
    return out
