"""Smoothstep, and the blend weight of a detection: its mask grown, feathered by Euclidean distance, faded at the crop edge."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


def smoothstep(m: torch.Tensor) -> torch.Tensor:
    """m clamped to [0, 1], then m*m*(3 - 2m): 0 at 0, 1 at 1, zero slope at both ends."""
    m = m.clamp(0.0, 1.0)
    return m * m * (3.0 - 2.0 * m)


def signed_distance(region: torch.Tensor) -> torch.Tensor:
    """Per cell of boolean masks [N, h, w]: Euclidean distance to the nearest region cell outside it, 1 - distance to the nearest outside cell inside it.

    So the region is exactly `d <= 0`, `d <= r` grows it by a disc of radius r and `d <= -r` shrinks it by one
    (scipy's exact distance transform; an empty mask is +inf everywhere, a full one -inf).
    """
    if region.ndim != 3 or region.dtype != torch.bool:
        raise ValueError(f"region must be a boolean [N, h, w] tensor, got {region.dtype} {tuple(region.shape)}")
    on = region.cpu().numpy()
    out = np.empty(on.shape, dtype=np.float32)
    for i, cells in enumerate(on):
        if not cells.any():
            out[i] = np.inf
        elif cells.all():
            out[i] = -np.inf
        else:
            out[i] = np.where(cells, 1.0 - ndimage.distance_transform_edt(cells), ndimage.distance_transform_edt(~cells))
    return torch.from_numpy(out).to(region.device)


def feather(distance: torch.Tensor, dilation: float, width: float) -> torch.Tensor:
    """Blend weight of a signed distance in pixels: 1 up to `dilation`, a smoothstep falling over `width` more pixels, then 0.

    width 0 is a hard edge (1 for d <= dilation). Otherwise smoothstep((dilation + width + 1 - d) / (width + 1)),
    which is 1 at d = dilation and exactly 0 beyond dilation + width.
    """
    if width < 0:
        raise ValueError(f"feather must be >= 0, got {width}")
    if width == 0:
        return (distance <= dilation).to(torch.float32)
    return smoothstep((dilation + width + 1.0 - distance) / (width + 1.0))


def edge_fade(height: int, width: int, size: float, sides: tuple[bool, bool, bool, bool]) -> torch.Tensor:
    """[height, width] weights falling to 0 at the flagged (left, top, right, bottom) borders: smoothstep((i + 0.5) / size) from each."""
    if size <= 0:
        raise ValueError(f"fade size must be > 0, got {size}")
    left, top, right, bottom = sides

    def axis(length: int, low: bool, high: bool) -> torch.Tensor:
        i = torch.arange(length, dtype=torch.float32)
        ramp = torch.ones(length)
        if low:
            ramp = torch.minimum(ramp, smoothstep((i + 0.5) / size))
        if high:
            ramp = torch.minimum(ramp, smoothstep((length - 1 - i + 0.5) / size))
        return ramp

    return torch.outer(axis(height, top, bottom), axis(width, left, right))


def detection_alpha(masks: torch.Tensor, cell: int, size: int, dilation: float, width: float) -> torch.Tensor:
    """Blend weights [N, size, size] of detection masks [N, size/cell, size/cell] (>= 0.5 is the object), one cell = `cell` px.

    The signed distance is taken on the cells (`signed_distance`, in pixels: times `cell`), bilinearly resampled to
    pixel centres (less (cell - 1)/2, so the last pixel of a boundary cell is at 0 as with cell 1), then `feather`ed:
    exact to about half a cell, with no pass per pixel of feather.
    """
    if masks.ndim != 3 or masks.shape[1] * cell != size or masks.shape[2] * cell != size:
        raise ValueError(f"masks must be [N, {size // max(cell, 1)}, {size // max(cell, 1)}] for {size} px at {cell} px per cell, "
                         f"got {tuple(masks.shape)}")
    distance = signed_distance(masks >= 0.5) * cell
    if cell > 1:
        finite = distance.clamp(-2.0 * size, 2.0 * size)[:, None]
        distance = F.interpolate(finite, size=(size, size), mode="bilinear", align_corners=False)[:, 0] - (cell - 1) / 2
    return feather(distance, dilation, width)
