"""Master noise scaffold of a canvas and exact 1:1 latent slicing of it (no interpolation)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Box = tuple[int, int, int, int]

_SEED_MIN, _SEED_MAX = 0, 2**64 - 1


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def latent_size(width: int, height: int, factor: int = 8) -> tuple[int, int]:
    """(height, width) in latent cells of a width x height pixel canvas: partial cells count (ceil)."""
    _check_int("width", width, 1)
    _check_int("height", height, 1)
    _check_int("factor", factor, 1)
    return math.ceil(height / factor), math.ceil(width / factor)


def make_scaffold(width: int, height: int, seed: int, channels: int = 4, factor: int = 8) -> torch.Tensor:
    """Standard normal [1, C, ceil(H/f), ceil(W/f)] float32 CPU map drawn from `seed`: identical on every device and run."""
    _check_int("channels", channels, 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or not _SEED_MIN <= seed <= _SEED_MAX:
        raise ValueError(f"seed must be an int in [0, 2**64 - 1], got {seed!r}")
    rows, cols = latent_size(width, height, factor)
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn((1, channels, rows, cols), generator=generator, dtype=torch.float32, device="cpu")


def snap_box(x: int, y: int, w: int, h: int, factor: int, canvas_w: int, canvas_h: int) -> Box:
    """Smallest grid-aligned pixel box containing (x, y, w, h), clipped to the latent canvas (ceil(W/f)*f x ceil(H/f)*f)."""
    _check_int("factor", factor, 1)
    rows, cols = latent_size(canvas_w, canvas_h, factor)
    if w <= 0 or h <= 0:
        raise ValueError(f"box size must be positive, got w={w}, h={h}")
    x0 = max(0, math.floor(x / factor)) * factor
    y0 = max(0, math.floor(y / factor)) * factor
    x1 = min(cols, math.ceil((x + w) / factor)) * factor
    y1 = min(rows, math.ceil((y + h) / factor)) * factor
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {(x, y, w, h)} lies outside the {canvas_w}x{canvas_h} canvas")
    return x0, y0, x1 - x0, y1 - y0


def latent_box(box: Box, factor: int) -> Box:
    """Latent (x, y, w, h) of a pixel box whose x, y, w, h are all multiples of `factor`."""
    _check_int("factor", factor, 1)
    if len(box) != 4:
        raise ValueError(f"box must be (x, y, w, h), got {box!r}")
    if any(isinstance(v, bool) or int(v) != v for v in box):
        raise ValueError(f"box {tuple(box)} must hold integer pixels")
    x, y, w, h = (int(v) for v in box)
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise ValueError(f"box {tuple(box)} needs x, y >= 0 and w, h > 0")
    if x % factor or y % factor or w % factor or h % factor:
        snapped = (x // factor * factor, y // factor * factor,
                   -(-(x + w) // factor) * factor - x // factor * factor,
                   -(-(y + h) // factor) * factor - y // factor * factor)
        raise ValueError(
            f"box {tuple(box)} is not on the latent grid (multiples of {factor}); "
            f"snap it first, e.g. snap_box(...) -> {snapped}"
        )
    return x // factor, y // factor, w // factor, h // factor


def slice_noise(scaffold: torch.Tensor, boxes: Sequence[Box], factor: int) -> torch.Tensor:
    """Exact scaffold regions under equal-size grid-aligned pixel boxes, stacked: [N, C, h/f, w/f]."""
    if scaffold.dim() != 4 or scaffold.shape[0] != 1:
        raise ValueError(f"scaffold must be [1, C, h, w], got {tuple(scaffold.shape)}")
    if len(boxes) == 0:
        raise ValueError("slice_noise needs at least one box")
    latent = [latent_box(tuple(b), factor) for b in boxes]
    sizes = {(w, h) for _, _, w, h in latent}
    if len(sizes) != 1:
        raise ValueError(f"all boxes must have the same size to be stacked, got pixel sizes {sorted({tuple(b)[2:] for b in boxes})}")
    rows, cols = scaffold.shape[2], scaffold.shape[3]
    for box, (lx, ly, lw, lh) in zip(boxes, latent):
        if lx + lw > cols or ly + lh > rows:
            raise ValueError(
                f"box {tuple(box)} leaves the scaffold ({cols * factor}x{rows * factor} pixels, {cols}x{rows} cells)"
            )
    return torch.stack([scaffold[0, :, ly:ly + lh, lx:lx + lw] for lx, ly, lw, lh in latent])


def region_seed(seed: int, box: Box) -> int:
    """A seed of its own for the scaffold region under a pixel box, so its resample does not depend on batching."""
    x, y, w, h = box
    return (seed * 0x9E3779B97F4A7C15 + x * 0x85EBCA6B + y * 0xC2B2AE35 + w * 0x27D4EB2F + h) % 2**63
