"""Master noise scaffold of a canvas, exact 1:1 latent slicing of it, and the per-step noise field of the canvas."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .. import validation

Box = tuple[int, int, int, int]

def latent_size(width: int, height: int, factor: int = 8) -> tuple[int, int]:
    """(height, width) in latent cells of a width x height pixel canvas: partial cells count (ceil)."""
    validation.positive_int("width", width)
    validation.positive_int("height", height)
    validation.positive_int("factor", factor)
    return math.ceil(height / factor), math.ceil(width / factor)


def make_scaffold(width: int, height: int, seed: int, channels: int = 4, factor: int = 8) -> torch.Tensor:
    """Standard normal [1, C, ceil(H/f), ceil(W/f)] float32 CPU map drawn from `seed`: identical on every device and run."""
    validation.positive_int("channels", channels)
    validation.seed(seed)
    rows, cols = latent_size(width, height, factor)
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn((1, channels, rows, cols), generator=generator, dtype=torch.float32, device="cpu")


def latent_box(box: Box, factor: int) -> Box:
    """Latent (x, y, w, h) of a pixel box whose x, y, w, h are all multiples of `factor`."""
    validation.positive_int("factor", factor)
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
            f"the smallest grid box containing it is {snapped}"
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


def frame_seed(seed: int, frame: int) -> int:
    """The seed (or noise stream) of latent frame `frame` along a time axis: frame 0 its own, so a clip of one frame is
    an image; every other frame an independent draw."""
    return seed if frame == 0 else _mix(seed, 1 << 50, frame)


def region_seed(seed: int, box: Box) -> int:
    """A seed of its own for the scaffold region under a pixel box, so its resample does not depend on batching."""
    return _mix(seed, *box)


FIELD_BLOCK = 64
_MASK64 = (1 << 64) - 1


def _mix(*values: int) -> int:
    """splitmix64 over the values in turn: a well-spread 63-bit seed."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & _MASK64
        state ^= state >> 29
    return state >> 1


def field_noise(seed: int, stream: int, boxes: Sequence[Box], channels: int) -> torch.Tensor:
    """Standard normal [N, C, h, w] under equal-size latent boxes (x, y, w, h) of the canvas noise field `stream` of `seed`.

    The field is drawn in blocks of FIELD_BLOCK x FIELD_BLOCK cells, block (row, col) from its own CPU generator, so a
    cell's value depends only on (seed, stream, cell): overlapping boxes agree where they overlap, and no batching or
    box order changes it.
    """
    if len({(w, h) for _, _, w, h in boxes}) != 1:
        raise ValueError(f"field_noise needs one or more boxes of one size, got {list(boxes)}")
    cache: dict[tuple[int, int], torch.Tensor] = {}

    def block(row: int, col: int) -> torch.Tensor:
        if (row, col) not in cache:
            generator = torch.Generator("cpu").manual_seed(_mix(seed, stream, row, col))
            cache[row, col] = torch.randn((channels, FIELD_BLOCK, FIELD_BLOCK), generator=generator)
        return cache[row, col]

    out = []
    for x, y, w, h in boxes:
        rows = range(y // FIELD_BLOCK, -(-(y + h) // FIELD_BLOCK))
        cols = range(x // FIELD_BLOCK, -(-(x + w) // FIELD_BLOCK))
        grid = torch.cat([torch.cat([block(r, c) for c in cols], dim=2) for r in rows], dim=1)
        oy, ox = y - rows[0] * FIELD_BLOCK, x - cols[0] * FIELD_BLOCK
        out.append(grid[:, oy:oy + h, ox:ox + w])
    return torch.stack(out)


def own_noise(seed: int, stream: int, shape: Sequence[int]) -> torch.Tensor:
    """Standard normal of `shape` from a CPU generator of its own for (seed, stream)."""
    return torch.randn(tuple(shape), generator=torch.Generator("cpu").manual_seed(_mix(seed, stream)))
