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


def signed_distance(region: torch.Tensor, inside: bool = True, reach: float = float("inf")) -> torch.Tensor:
    """Per cell of boolean masks [N, h, w]: the Euclidean distance to the nearest region cell outside the region; inside
    it, 1 - the distance to the nearest outside cell (inside False: 0).

    So the region is exactly `d <= 0`, `d <= r` grows it by a disc of radius r and `d <= -r` shrinks it by one
    (scipy's exact distance transform). Cells farther than `reach` from the region may be +inf instead (the transform
    then runs on the region's bounding box grown by `reach`); an empty mask is +inf everywhere, a full one -inf.
    """
    if region.ndim != 3 or region.dtype != torch.bool:
        raise ValueError(f"region must be a boolean [N, h, w] tensor, got {region.dtype} {tuple(region.shape)}")
    on = region.cpu().numpy()
    out = np.full(on.shape, np.inf, dtype=np.float32)
    for i, cells in enumerate(on):
        rows, cols = np.flatnonzero(cells.any(axis=1)), np.flatnonzero(cells.any(axis=0))
        if rows.size == 0:
            continue
        if cells.all():
            out[i] = -np.inf if inside else 0.0
            continue
        margin = int(min(max(cells.shape), np.ceil(reach))) + 1
        box = (slice(max(0, rows[0] - margin), rows[-1] + margin + 1), slice(max(0, cols[0] - margin), cols[-1] + margin + 1))
        part = cells[box]
        distance = ndimage.distance_transform_edt(~part) if not part.all() else np.zeros(part.shape)
        if inside:
            distance = np.where(part, 1.0 - ndimage.distance_transform_edt(part), distance)
        out[i][box] = distance
    return torch.from_numpy(out).to(region.device)


def feather(distance: torch.Tensor, dilation: float, width: float) -> torch.Tensor:
    """Blend weight of a signed distance d in pixels: 1 on the grown object (d <= dilation), a smoothstep falling to 0 over `width` px past its edge.

    The grown object's edge lies half a pixel past its last pixel, so the weight is
    smoothstep((dilation + 0.5 + width - d) / width): 1 up to d = dilation + 0.5, exactly 0 from
    d = dilation + width + 0.5 on. width 0 is a hard edge (1 for d <= dilation).
    """
    if width < 0:
        raise ValueError(f"feather must be >= 0, got {width}")
    if width == 0:
        return (distance <= dilation).to(torch.float32)
    return smoothstep((dilation + 0.5 + width - distance) / width)


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


def detection_alpha(masks: torch.Tensor, cell: int, size: tuple[int, int], dilation: float, width: float) -> torch.Tensor:
    """Blend weights [N, h, w] of detection masks [N, h/cell, w/cell] (>= 0.5 is the object), one cell = `cell` px; size = (h, w).

    The signed distance is taken on the cells (`signed_distance`, in pixels: times `cell`, less (cell - 1)/2 so that
    the last pixel of a boundary cell is at 0 as with cell 1) and `feather`ed there, then bilinearly resampled to
    pixel centres: exact to about half a cell, with no pass per pixel of feather. A feather narrower than a cell
    resamples the distance instead, so the edge stays as sharp as asked.
    """
    height, width_px = size
    if masks.ndim != 3 or masks.shape[1] * cell != height or masks.shape[2] * cell != width_px:
        raise ValueError(f"masks must be [N, {height // max(cell, 1)}, {width_px // max(cell, 1)}] for {width_px}x{height} px "
                         f"at {cell} px per cell, got {tuple(masks.shape)}")
    reach = (max(dilation, 0) + width) / cell + 1
    distance = signed_distance(masks >= 0.5, inside=dilation < 0, reach=reach) * cell - (cell - 1) / 2
    if cell == 1:
        return feather(distance, dilation, width)
    upsample = lambda t: F.interpolate(t[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]  # noqa: E731
    if width < cell:
        return feather(upsample(distance.clamp(-2.0 * max(size), 2.0 * max(size))), dilation, width)
    return upsample(feather(distance, dilation, width))
