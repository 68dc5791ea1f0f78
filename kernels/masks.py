"""Smoothstep blending in place on the canvas, and feather masks for tiles and detections."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def smoothstep(m: torch.Tensor) -> torch.Tensor:
    """m clamped to [0, 1], then m*m*(3 - 2m): 0 at 0, 1 at 1, zero slope at both ends."""
    m = m.clamp(0.0, 1.0)
    return m * m * (3.0 - 2.0 * m)


def blend_(canvas: torch.Tensor, refined: torch.Tensor, alpha: torch.Tensor, x: int, y: int) -> torch.Tensor:
    """In place: canvas[:, y:y+h, x:x+w] = refined*alpha + canvas*(1-alpha); returns canvas.

    canvas is [B, H, W, C] (ComfyUI IMAGE), refined [B or 1, h, w, C], alpha [B or 1, h, w] or [h, w] in 0..1
    (already smoothstepped). Uses lerp_, which is exact at the ends: alpha 0 keeps the canvas bit for bit,
    alpha 1 writes `refined` exactly. refined and alpha are moved to the canvas's device and dtype.
    """
    if canvas.dim() != 4 or refined.dim() != 4:
        raise ValueError(f"canvas and refined must be [B, H, W, C], got {tuple(canvas.shape)} and {tuple(refined.shape)}")
    _, h, w, c = refined.shape
    if c != canvas.shape[3] or refined.shape[0] not in (1, canvas.shape[0]):
        raise ValueError(f"refined {tuple(refined.shape)} does not match canvas {tuple(canvas.shape)} (batch 1 or B, same C)")
    if x < 0 or y < 0 or x + w > canvas.shape[2] or y + h > canvas.shape[1]:
        raise ValueError(f"region x={x}, y={y}, {w}x{h} leaves the {canvas.shape[2]}x{canvas.shape[1]} canvas")
    if alpha.dim() == 2:
        alpha = alpha.unsqueeze(0)
    if alpha.dim() != 3 or tuple(alpha.shape[1:]) != (h, w) or alpha.shape[0] not in (1, canvas.shape[0]):
        raise ValueError(f"alpha must be [h, w] or [B or 1, h, w] with h, w = {h}, {w}; got {tuple(alpha.shape)}")
    region = canvas[:, y:y + h, x:x + w]
    region.lerp_(refined.to(canvas.device, canvas.dtype), alpha.unsqueeze(-1).to(canvas.device, canvas.dtype))
    return canvas


def _axis_ramp(length: int, overlap: int, low: bool, high: bool,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Weights [length]: (i + 0.5)/overlap over the first/last `overlap` cells on flagged ends, 1 elsewhere."""
    ramp = torch.ones(length, dtype=torch.float32, device=device)
    if overlap == 0:
        return ramp
    i = torch.arange(length, dtype=torch.float32, device=device)
    if low:
        ramp = torch.minimum(ramp, (i + 0.5) / overlap)
    if high:
        ramp = torch.minimum(ramp, (length - 1 - i + 0.5) / overlap)
    return ramp


def _check_tile(height: int, width: int, overlap: int) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"tile size must be positive, got {width}x{height}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")


def tile_feather(height: int, width: int, overlap: int, left: bool, top: bool, right: bool, bottom: bool,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Linear tile ramp [height, width]: product of per-axis ramps (i + 0.5)/overlap on flagged sides, 1 inside.

    The ramp is symmetric: across an overlap of exactly `overlap` pixels the ramp of one tile and the
    mirrored ramp of its neighbour sum to 1, and it never reaches 0, so every flagged pixel takes some of
    the tile. Unflagged sides (canvas border) keep weight 1 up to the edge. For sequential blending
    (blend_ phase by phase) flag only the sides whose neighbour was blended earlier (planning.feather_flags):
    then each pixel's first tile has weight 1 there and no original pixel survives under the tiles.
    """
    _check_tile(height, width, overlap)
    return torch.outer(_axis_ramp(height, overlap, top, bottom, device), _axis_ramp(width, overlap, left, right, device))


def tile_alpha(height: int, width: int, overlap: int, left: bool, top: bool, right: bool, bottom: bool,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Blend weights [height, width] of a tile: smoothstep of each axis ramp of `tile_feather`, multiplied.

    Smoothstepping per axis keeps the partition of unity of `tile_feather` (smoothstep(1-t) = 1-smoothstep(t)),
    also in the corners where four tiles meet; away from corners it equals smoothstep(tile_feather(...)).
    """
    _check_tile(height, width, overlap)
    return torch.outer(smoothstep(_axis_ramp(height, overlap, top, bottom, device)),
                       smoothstep(_axis_ramp(width, overlap, left, right, device)))


def _max_filter(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable (2r+1)^2 square max filter of [B, 1, h, w]; pixels outside the image are ignored."""
    k = 2 * radius + 1
    mask = F.max_pool2d(mask, (1, k), stride=1, padding=(0, radius))
    return F.max_pool2d(mask, (k, 1), stride=1, padding=(radius, 0))


def detection_alpha(mask: torch.Tensor, dilation: int, feather: int) -> torch.Tensor:
    """Blend weights of a detection mask [B, h, w] (or [h, w]) in 0..1, same shape, smoothstepped.

    The mask is binarized (>= 0.5 is the object), dilated by `dilation` pixels with a square
    (2d+1)^2 structuring element (negative: eroded by |d|; outside the image counts as neither object nor
    background, i.e. scipy's border_value 0 for dilation and 1 for erosion), then feathered outward by a
    linear ramp of the Chebyshev distance D to that region: (feather + 1 - D)/(feather + 1) for D <= feather,
    so the region itself is 1 and pixels farther than dilation + feather from the object are exactly 0.
    Finally smoothstep. The ramp is the mean of feather + 1 successive 3x3 dilations (O(feather) per pixel).
    """
    if mask.dim() not in (2, 3):
        raise ValueError(f"mask must be [B, h, w] or [h, w], got {tuple(mask.shape)}")
    if feather < 0:
        raise ValueError(f"feather must be >= 0, got {feather}")
    dtype = mask.dtype if mask.is_floating_point() else torch.float32
    region = (mask >= 0.5).to(dtype).reshape(-1, 1, *mask.shape[-2:])
    if dilation > 0:
        region = _max_filter(region, dilation)
    elif dilation < 0:
        region = -_max_filter(-region, -dilation)
    total = region.clone()
    grown = region
    for _ in range(feather):
        grown = _max_filter(grown, 1)
        total += grown
    return smoothstep(total / (feather + 1)).reshape(mask.shape)
