"""The one compositor: every region's result enters the canvas with its share of a partition of unity.

A region i covers a rectangle with a blend weight w_i >= 0 and a coverage c_i in [0, 1] (tiles cover their whole
rectangle: c_i = 1; a detection covers its feathered mask: c_i = w_i = alpha_i). At a pixel p covered by the set K(p):

    share_i(p)    = A(p) * w_i(p) / sum_{j in K(p)} w_j(p),      A(p) = max_{j in K(p)} c_j(p)
    out(p)        = original(p) + sum_i share_i(p) * (x_i(p) - original(p))

so the shares and the original's 1 - A(p) sum to 1, and a pixel under no region (A = 0) keeps the original bit for bit.
Tile weights are products of per-axis smoothstep ramps across each overlap, themselves a partition of unity per axis,
so across an overlap of n pixels the result moves by at most 1.5/n of the tiles' difference per pixel.

Blending in an order (later regions sampled from a canvas that holds earlier results) uses
`sequential_share`: lerp toward x_i by c_i * w_i / (sum of w over the regions blended so far, i included). Where the
coverages are 1 (tiles) the end result is the same sum as above and the first region to reach a pixel replaces it; a
lone detection lerps by its own alpha.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from .masks import smoothstep
from .planning import Tile

Rect = tuple[int, int, int, int]


@dataclass(frozen=True)
class Layer:
    """One region's place in the canvas: blend `weight` [h, w] over `rect` (x, y, w, h); `coverage` [h, w], None for all 1."""

    rect: Rect
    weight: torch.Tensor
    coverage: torch.Tensor | None = None


def intersection(a: Rect, b: Rect) -> Rect | None:
    """The rectangle two rectangles share, or None."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def _within(rect: Rect, inner: Rect) -> tuple[slice, slice]:
    """(rows, cols) of `inner` in the coordinates of `rect`."""
    return slice(inner[1] - rect[1], inner[1] - rect[1] + inner[3]), slice(inner[0] - rect[0], inner[0] - rect[0] + inner[2])


def _sums(layers: Sequence[Layer], index: int, among: Iterable[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of weights, max of coverages) over rect `index` of the layers `among`."""
    rect = layers[index].rect
    own = layers[index].weight
    total = torch.zeros_like(own, dtype=torch.float32)
    cover = torch.zeros_like(total)
    for j in among:
        shared = intersection(rect, layers[j].rect)
        if shared is None:
            continue
        here, there = _within(rect, shared), _within(layers[j].rect, shared)
        total[here] += layers[j].weight[there].to(total)
        other = layers[j].coverage
        cover[here] = torch.maximum(cover[here], other[there].to(cover) if other is not None else torch.ones_like(cover[here]))
    return total, cover


def share(layers: Sequence[Layer], index: int) -> torch.Tensor:
    """share_index [h, w] over its rect: A * w / sum of w, over all `layers` (see the module docstring)."""
    total, cover = _sums(layers, index, range(len(layers)))
    weight = layers[index].weight.to(total)
    return torch.where(total > 0, weight * cover / total.clamp_min(torch.finfo(total.dtype).tiny), torch.zeros_like(total))


def sequential_share(layers: Sequence[Layer], index: int, earlier: Iterable[int]) -> torch.Tensor:
    """Lerp weight [h, w] of region `index` blended after the regions `earlier`: c * w / (sum of their w and its own)."""
    total, _ = _sums(layers, index, [*earlier, index])
    layer = layers[index]
    weight = layer.weight.to(total) * (layer.coverage.to(total) if layer.coverage is not None else 1.0)
    return torch.where(total > 0, weight / total.clamp_min(torch.finfo(total.dtype).tiny), torch.zeros_like(total))


def region_of(canvas: torch.Tensor, rect: Rect, channels_last: bool) -> torch.Tensor:
    """The view of `canvas` under rect: [B, h, w, C] of a [B, H, W, C] image, or [B, C, h, w] of a latent."""
    x, y, w, h = rect
    height, width = canvas.shape[1:3] if channels_last else canvas.shape[-2:]
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise ValueError(f"region {rect} leaves the canvas {tuple(canvas.shape)}")
    return canvas[:, y:y + h, x:x + w] if channels_last else canvas[..., y:y + h, x:x + w]


def _broadcast(weight: torch.Tensor, like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    weight = weight.to(like.device, like.dtype)
    return weight[..., None] if channels_last else weight[:, None] if weight.ndim == 3 else weight


def add_share_(canvas: torch.Tensor, rect: Rect, values: torch.Tensor, weight: torch.Tensor,
               base: torch.Tensor | None = None, channels_last: bool = True) -> torch.Tensor:
    """In place: canvas[rect] += weight * (values - base[rect]) (base None: 0); weight [h, w] or [B, h, w]; returns canvas."""
    region = region_of(canvas, rect, channels_last)
    delta = values.to(region.device, region.dtype)
    if base is not None:
        delta = delta - region_of(base, rect, channels_last)
    region.add_(_broadcast(weight, region, channels_last) * delta)
    return canvas


def lerp_(canvas: torch.Tensor, rect: Rect, values: torch.Tensor, weight: torch.Tensor,
          channels_last: bool = True) -> torch.Tensor:
    """In place: canvas[rect] moves toward values by weight (exact at 0 and 1); returns canvas."""
    region = region_of(canvas, rect, channels_last)
    region.lerp_(values.to(region.device, region.dtype), _broadcast(weight, region, channels_last))
    return canvas


def axis_weights(spans: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Per-axis tile weights [length] of (origin, length) spans sorted by origin: smoothstep ramps across each overlap.

    Across the overlap of consecutive spans (n pixels) the earlier span ramps down by smoothstep((n - 1 - t + 0.5)/n)
    and the later up by smoothstep((t + 0.5)/n), which sum to 1; a side with no overlapping neighbour keeps 1.
    """
    out = []
    for i, (origin, length) in enumerate(spans):
        weight = torch.ones(length, dtype=torch.float32)
        t = torch.arange(length, dtype=torch.float32)
        if i > 0:
            n = spans[i - 1][0] + spans[i - 1][1] - origin
            if n > 0:
                weight = torch.minimum(weight, smoothstep((t + 0.5) / n))
        if i + 1 < len(spans):
            n = origin + length - spans[i + 1][0]
            if n > 0:
                weight = torch.minimum(weight, smoothstep((length - 1 - t + 0.5) / n))
        out.append(weight)
    return out


def tile_layers(tiles: Sequence[Tile], factor: int = 1) -> list[Layer]:
    """A layer per tile of a row/column grid, in units of `factor` pixels: weight = row ramp x column ramp, coverage 1."""
    if any(v % factor for t in tiles for v in (t.x, t.y, t.width, t.height)):
        raise ValueError(f"tiles must lie on the grid of {factor} px to be weighted in units of {factor} px")
    cols = sorted({(t.col, t.x // factor, t.width // factor) for t in tiles})
    rows = sorted({(t.row, t.y // factor, t.height // factor) for t in tiles})
    col_w = dict(zip((c for c, _, _ in cols), axis_weights([(o, n) for _, o, n in cols])))
    row_w = dict(zip((r for r, _, _ in rows), axis_weights([(o, n) for _, o, n in rows])))
    return [Layer((t.x // factor, t.y // factor, t.width // factor, t.height // factor), torch.outer(row_w[t.row], col_w[t.col]))
            for t in tiles]
