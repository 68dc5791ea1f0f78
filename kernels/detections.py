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
