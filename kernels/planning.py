"""Tile planning and chess schedule for the global pass; square crop planning for the detailer, and the path of a
track's square through a clip."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .. import validation


@dataclass(frozen=True)
class Tile:
    """A tile of the global pass in canvas pixels; (row, col) is its place in the tile grid."""

    x: int
    y: int
    width: int
    height: int
    row: int
    col: int


@dataclass(frozen=True)
class Crop:
    """A square detailer crop of side `size` at (x, y) in canvas pixels, sampled at `sample_size` (<= size)."""

    x: int
    y: int
    size: int
    sample_size: int


TILE_FITS = ("fit", "exact")
FIT_BAND = (0.85, 1.10)


def _spread(padded: int, extent: int, count: int, factor: int) -> list[int]:
    """Origins of `count` tiles of `extent` over [0, padded): round(i * (padded - extent) / (count - 1)) on the grid."""
    free = (padded - extent) // factor
    gaps = count - 1
    return [((2 * i * free + gaps) // (2 * gaps)) * factor for i in range(count)] if gaps else [0]


def _axis_exact(padded: int, tile: int, overlap: int, factor: int) -> tuple[int, int]:
    """(count, extent): tiles of exactly `tile`, the fewest whose grid-snapped spacing is <= tile - overlap."""
    free = (padded - tile) // factor
    step = (tile - overlap) // factor
    return -(-free // step) + 1, tile


def _longest_spacing(origins: list[int]) -> int:
    return max((b - a for a, b in zip(origins, origins[1:])), default=0)


def _axis_fit(padded: int, tile: int, overlap: int, factor: int, unit: int) -> tuple[int, int]:
    """(count, extent) sampling the least length: per count, the shortest extent on the `unit` grid within FIT_BAND x
    tile whose grid-snapped spacing is <= extent - overlap (an extent below the band's foot is raised to it); ties:
    fewer tiles."""
    low = math.ceil(tile * FIT_BAND[0] / unit) * unit
    high = int(tile * FIT_BAND[1]) // unit * unit
    best: tuple[int, int] | None = None
    count = 2
    while best is None or count * low < best[0] * best[1]:
        if count > padded // factor + 1:
            break
        extent = max(low, -(-(padded + (count - 1) * overlap) // count // unit) * unit)
        while extent <= high and _longest_spacing(_spread(padded, extent, count, factor)) > extent - overlap:
            extent += unit
        if extent <= high and (best is None or count * extent < best[0] * best[1]):
            best = (count, extent)
        count += 1
    return best if best is not None else _axis_exact(padded, tile, overlap, factor)


def _axis_pair(padded: int, tile: int, overlap: int, unit: int, fit: str) -> tuple[int, int]:
    """(2, extent): an axis of one tile's length that is not whole patches, as two tiles of whole patches, each as
    near the tile size as the axis allows (the band's foot for "fit"), overlapping by at least `overlap`."""
    foot = math.ceil(tile * FIT_BAND[0] / unit) * unit if fit == "fit" else tile
    extent = min(padded // unit * unit, max(foot, -(-(padded + overlap) // 2 // unit) * unit))
    if extent < unit:
        raise ValueError(f"the canvas side ({padded} px) is shorter than one model patch ({unit} px)")
    return 2, extent


def _axis_tiles(length: int, tile: int, overlap: int, factor: int, fit: str, patch: int) -> list[tuple[int, int]]:
    """(origin, extent) of the tiles along one axis, see plan_tiles."""
    unit = factor * patch
    padded = -(-length // factor) * factor
    single = tile if fit == "exact" else int(tile * FIT_BAND[1]) // unit * unit
    if padded <= single:
        if padded % unit == 0:
            return [(0, length)]
        count, extent = _axis_pair(padded, tile, overlap, unit, fit)
    elif fit == "exact":
        count, extent = _axis_exact(padded, tile, overlap, factor)
    else:
        count, extent = _axis_fit(padded, tile, overlap, factor, unit)
    return [(o, min(extent, length - o)) for o in _spread(padded, extent, count, factor)]


def _check_plan(width: int, height: int, tile: int, overlap: int, factor: int, fit: str, patch: int = 1) -> None:
    for name, value in (("width", width), ("height", height), ("tile", tile), ("factor", factor), ("patch", patch)):
        validation.positive_int(name, value)
    unit = factor * patch
    if tile % unit:
        raise ValueError(f"tile must be a multiple of {unit} px (the latent factor {factor} x the model's patch "
                         f"{patch}): got {tile}, use {-(-tile // unit) * unit}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap <= tile - factor:
        raise ValueError(
            f"overlap must be an int in [0, tile - factor] = [0, {tile - factor}] so tiles advance by at least one "
            f"latent cell, got {overlap!r}"
        )
    validation.one_of("tile fit", fit, TILE_FITS)


def plan_tiles(width: int, height: int, tile: int, overlap: int, factor: int = 8, fit: str = "exact",
               patch: int = 1) -> list[Tile]:
    """Tiles overlapping by at least `overlap`, covering the canvas, row-major; all tiles of an axis one size.

    Per axis the latent canvas L = ceil(len/f)*f is covered by n tiles of one extent e, with origins
    round(i*(L - e)/(n - 1)) on the grid (multiples of f), so spacings differ by at most f and the last tile is never
    thin. fit "exact": e = tile, n the fewest whose spacing is <= tile - overlap (overlaps grow to fill the canvas).
    fit "fit": per axis the (n, e) sampling the least length n * e, e on the grid within FIT_BAND x tile, spacing
    <= e - overlap (tiles may then be rectangular). A canvas axis not longer than one tile (for "fit": the band's
    top) gets one tile of the canvas length. Tiles are clipped to the canvas: when len is not a multiple of f, the
    last tile (or the single one) is narrower by < f pixels; the caller pads the pixels to the grid.
    patch: latent cells per side of the model's patch (2 for Flux, SD3, Qwen-Image, Z-Image; 1 for UNets): every
    extent is a whole number of patches (the band's grid is f * patch); an axis of one tile's length that is not
    gets two tiles that are, each as near the tile size as the axis allows.
    """
    _check_plan(width, height, tile, overlap, factor, fit, patch)
    columns = _axis_tiles(width, tile, overlap, factor, fit, patch)
    rows = _axis_tiles(height, tile, overlap, factor, fit, patch)
    return [Tile(x, y, w, h, r, c) for r, (y, h) in enumerate(rows) for c, (x, w) in enumerate(columns)]


def least_tile_counts(width: int, height: int, tile: int, overlap: int, factor: int, fit: str,
                      patch: int = 1) -> tuple[int, int]:
    """(columns, rows) that plan_tiles gives at least, in O(1), for refusing a plan before it is made.

    An axis of latent length L holds n tiles of one extent e <= E (E = tile, or for "fit" the band's top when larger)
    advancing by at most e - overlap, so (n - 1) * (e - overlap) + e >= L, hence n >= ceil((L - E) / (E - overlap)) + 1.
    """
    _check_plan(width, height, tile, overlap, factor, fit, patch)
    largest = tile if fit == "exact" else max(tile, int(tile * FIT_BAND[1]) // factor * factor)

    def least(length: int) -> int:
        padded = -(-length // factor) * factor
        return 1 if padded <= largest else -(-(padded - largest) // (largest - overlap)) + 1

    return least(width), least(height)


def _separation(spans: dict[int, tuple[int, int]]) -> int:
    """Smallest k such that grid slots k apart on this axis never share a pixel."""
    order = sorted(spans)
    k = 1
    while any(spans[order[i + k]][0] < spans[order[i]][1] for i in range(len(order) - k)):
        k += 1
    return k


def chess_phases(tiles: Sequence[Tile]) -> list[list[int]]:
    """Tile indices in phases whose tiles never share a pixel: colour (row % ky, col % kx), in lexicographic order.

    kx (ky) is the smallest column (row) distance at which tiles are disjoint along x (y), e.g. 2 when
    spacing * 2 >= tile; two tiles of one colour are >= kx columns or >= ky rows apart, hence disjoint,
    diagonal neighbours included. Empty phases are dropped.
    """
    cols = {t.col: (t.x, t.x + t.width) for t in tiles}
    rows = {t.row: (t.y, t.y + t.height) for t in tiles}
    kx, ky = _separation(cols), _separation(rows)
    phases: dict[tuple[int, int], list[int]] = {}
    for index, t in enumerate(tiles):
        phases.setdefault((t.row % ky, t.col % kx), []).append(index)
    return [phases[key] for key in sorted(phases)]


def batches(indices: Sequence[int], max_batch: int) -> list[list[int]]:
    """`indices` in order, cut into the fewest consecutive batches of at most `max_batch`, larger first, sizes differing by at most 1.

    9 tiles at max_batch 8 go as 5 + 4 rather than 8 + 1: as many sampler calls, none at a size far below the rest.
    """
    validation.positive_int("max_batch", max_batch)
    items = list(indices)
    count = -(-len(items) // max_batch)
    size, extra = divmod(len(items), count) if count else (0, 0)
    out, start = [], 0
    for n in [size + 1] * extra + [size] * (count - extra):
        out.append(items[start:start + n])
        start += n
    return out


def _crop_origin(lo: float, hi: float, size: int, length: int, factor: int) -> int:
    """Grid origin of a `size` square centred on [lo, hi), inside [0, length), containing [lo, hi) when the grid allows."""
    last = (length - size) // factor
    first_px, end_px = math.floor(lo), math.ceil(hi)
    keep_lo = max(0, -(-(end_px - size) // factor))
    keep_hi = min(last, first_px // factor)
    ideal = round(((lo + hi) / 2 - size / 2) / factor)
    if keep_lo <= keep_hi:
        return min(max(ideal, keep_lo), keep_hi) * factor
    return min(max(ideal, 0), last) * factor


def plan_crop(box: tuple[float, float, float, float], canvas_width: int, canvas_height: int,
              context: float = 1.5, sizes: tuple[int, ...] = (1024, 1536), factor: int = 8, patch: int = 1) -> Crop:
    """Square grid-aligned crop for a normalized detection box (x0, y0, x1, y1) on the canvas.

    The side is s = max(box w, box h) * context; the crop takes the smallest target in `sizes` >= s, or
    s rounded up to the grid when s exceeds every target (then sample_size = max(sizes) and the noise slice
    is downscaled with resample.downscale_noise); sample_size = min(size, max(sizes)). The square is
    centred on the box and shifted, never shrunk, to lie inside the canvas, with its origin on the grid
    (preferring an origin that keeps the whole box); only a canvas smaller than the side shrinks it to
    min(W, H) snapped down to the grid. Sides are whole model patches: multiples of factor * patch.
    """
    for name, value in (("canvas_width", canvas_width), ("canvas_height", canvas_height), ("factor", factor),
                        ("patch", patch)):
        validation.positive_int(name, value)
    unit = factor * patch
    if len(box) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
        raise ValueError(f"box must be 4 finite numbers (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise ValueError(f"box must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {box!r}")
    if not (isinstance(context, (int, float)) and math.isfinite(context) and context >= 1.0):
        raise ValueError(f"context must be a finite number >= 1, got {context!r}")
    if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < unit or s % unit for s in sizes):
        raise ValueError(f"sizes must be positive multiples of {unit} px (factor {factor} x patch {patch}), got {sizes!r}")
    smallest = min(canvas_width, canvas_height) // unit * unit
    if smallest == 0:
        raise ValueError(f"canvas {canvas_width}x{canvas_height} is smaller than one model patch ({unit} px)")
    targets = sorted(sizes)
    left, right = x0 * canvas_width, x1 * canvas_width
    top, bottom = y0 * canvas_height, y1 * canvas_height
    side = max(right - left, bottom - top) * context
    size = next((t for t in targets if t >= side), -(-math.ceil(side) // unit) * unit)
    size = min(size, smallest)
    return Crop(
        x=_crop_origin(left, right, size, canvas_width, factor),
        y=_crop_origin(top, bottom, size, canvas_height, factor),
        size=size,
        sample_size=min(size, targets[-1]),
    )


def smooth_path(times: Sequence[float], values: Sequence[float], radius: float) -> list[float]:
    """`values` at `times` smoothed by a local straight line: at each time t, the least-squares line through the samples
    within `radius` of t, read at t (radius 0: the values as they are). A steady motion comes out exact, ends and gaps
    included; a jitter is averaged over the window."""
    if len(times) != len(values):
        raise ValueError(f"times and values differ in length: {len(times)} and {len(values)}")
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius >= 0):
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    out = []
    for t in times:
        near = [(s, v) for s, v in zip(times, values) if abs(s - t) <= radius]
        mean_s = sum(s for s, _ in near) / len(near)
        mean_v = sum(v for _, v in near) / len(near)
        spread = sum((s - mean_s) ** 2 for s, _ in near)
        slope = sum((s - mean_s) * (v - mean_v) for s, v in near) / spread if spread > 0 else 0.0
        out.append(mean_v + slope * (t - mean_s))
    return out


def crop_at(centre: tuple[float, float], extent: tuple[float, float], crop: Crop, canvas_width: int, canvas_height: int,
            factor: int = 8) -> Crop:
    """`crop`'s square moved to be centred on `centre` (px), its origin on the grid and inside the canvas, keeping an
    object of `extent` (w, h px) around the centre inside it when the grid allows."""
    (cx, cy), (w, h) = centre, extent
    return Crop(x=_crop_origin(cx - w / 2, cx + w / 2, crop.size, canvas_width, factor),
                y=_crop_origin(cy - h / 2, cy + h / 2, crop.size, canvas_height, factor),
                size=crop.size, sample_size=crop.sample_size)


def clip_windows(frames: int, window: int, overlap: int, step: int) -> list[tuple[int, int]]:
    """Windows (start, stop) of at most `window` frames covering [0, frames): each starts on a multiple of `step` (a
    video VAE's temporal compression) and overlaps the one before by up to `overlap` frames, never so much that a
    frame lies in three windows (the stride is at least half a window); one window when the clip fits in one."""
    for name, value in (("frames", frames), ("window", window), ("step", step)):
        validation.positive_int(name, value)
    validation.int_at_least("overlap", overlap, 0)
    if frames <= window:
        return [(0, frames)]
    half = -(-(-(-window // 2)) // step) * step
    stride = max(half, (window - overlap) // step * step)
    out, start = [], 0
    while True:
        out.append((start, min(start + window, frames)))
        if start + window >= frames:
            return out
        start += stride
