"""Rectangles and the masks in them: a whole-image mask cut to normalized rectangles, box masks, and rounds of
rectangles that never overlap (the chess strategy's phases of crops)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

Rect = tuple[int, int, int, int]


def mask_regions(mask: torch.Tensor, regions: torch.Tensor, size: int) -> torch.Tensor:
    """Cut normalized regions [N, 4] (x0, y0, x1, y1 in 0..1) out of a whole-image mask [N, h, w], bilinear, as [N, size, size].

    Beyond the image the mask continues its edge values, so a mask that touches the image's border stays whole up to it."""
    n = regions.shape[0]
    theta = torch.zeros(n, 2, 3, dtype=torch.float32, device=mask.device)
    regions = regions.to(device=mask.device, dtype=torch.float32)
    theta[:, 0, 0] = regions[:, 2] - regions[:, 0]
    theta[:, 0, 2] = regions[:, 2] + regions[:, 0] - 1
    theta[:, 1, 1] = regions[:, 3] - regions[:, 1]
    theta[:, 1, 2] = regions[:, 3] + regions[:, 1] - 1
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    return F.grid_sample(mask[:, None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0]


def box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Whole-image masks [N, height, width] that are 1 inside normalized boxes [N, 4] (x0, y0, x1, y1)."""
    ys = (torch.arange(height, device=boxes.device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=boxes.device, dtype=torch.float32) + 0.5) / width
    inside_y = (ys[None] >= boxes[:, 1, None]) & (ys[None] < boxes[:, 3, None])
    inside_x = (xs[None] >= boxes[:, 0, None]) & (xs[None] < boxes[:, 2, None])
    return (inside_y[:, :, None] & inside_x[:, None, :]).float()


def rects_overlap(a: Rect, b: Rect) -> bool:
    """Whether two pixel rectangles (x, y, w, h) share any pixel."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def overlap_rounds(rects: Sequence[Rect]) -> list[list[int]]:
    """Greedy colouring in the given order: each round holds indices whose rectangles do not overlap one another."""
    rounds: list[list[int]] = []
    for i, rect in enumerate(rects):
        for members in rounds:
            if not any(rects_overlap(rect, rects[j]) for j in members):
                members.append(i)
                break
        else:
            rounds.append([i])
    return rounds
