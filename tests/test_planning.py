"""Tile planner, chess schedule, batches and square crop planner (issue 3, items 5-6)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from luna_semantic_detailer.kernels.planning import (
    FIT_BAND, Crop, Tile, batches, chess_phases, least_tile_counts, plan_crop, plan_tiles,
)

FAST = settings(max_examples=100, deadline=None)


@st.composite
def tile_case(draw, max_canvas=5000, max_per_axis=30):
    """(width, height, tile, overlap, factor) with at most about `max_per_axis` tiles per axis."""
    factor = draw(st.sampled_from([8, 8, 8, 1, 4, 16]))
    width, height = draw(st.integers(64, max_canvas)), draw(st.integers(64, max_canvas))
    min_step = max(1, math.ceil(max(width, height) / max_per_axis / factor)) * factor
    tile = factor * draw(st.integers(max(min_step, 16) // factor, max(min_step, 1600) // factor))
    overlap = draw(st.integers(0, tile - min_step))
    return width, height, tile, overlap, factor


def spans(tiles: list[Tile], axis: str) -> list[tuple[int, int]]:
    """Distinct (start, end) intervals of the tiles along one axis, in grid order."""
    if axis == "x":
        return sorted({(t.col, t.x, t.x + t.width) for t in tiles})
    return sorted({(t.row, t.y, t.y + t.height) for t in tiles})


def intersect(a: Tile, b: Tile) -> bool:
    return a.x < b.x + b.width and b.x < a.x + a.width and a.y < b.y + b.height and b.y < a.y + a.height


@FAST
@given(tile_case())
def test_tiles_cover_stay_inside_on_grid_and_spread_evenly(case):
    width, height, tile, overlap, factor = case
    tiles = plan_tiles(width, height, tile, overlap, factor)
    for axis, length in (("x", width), ("y", height)):
        intervals = spans(tiles, axis)
        assert [i for i, _, _ in intervals] == list(range(len(intervals)))
        starts = [s for _, s, _ in intervals]
        ends = [e for _, _, e in intervals]
        assert starts[0] == 0 and ends[-1] == length
        assert all(s % factor == 0 for s in starts)
        assert all(0 <= s < e <= length for s, e in zip(starts, ends))
        padded = math.ceil(length / factor) * factor
        if padded <= tile:
            assert intervals == [(0, 0, length)]
            continue
        assert all(e - s == tile for s, e in zip(starts[:-1], ends[:-1]))
        assert tile - factor < ends[-1] - starts[-1] <= tile
        assert all(e - s2 >= overlap for e, s2 in zip(ends, starts[1:]))
        spacing = np.diff(starts)
        assert spacing.max() - spacing.min() <= factor
        fewer = len(intervals) - 2
        assert fewer == 0 or fewer * ((tile - overlap) // factor) * factor < padded - tile
    cols, rows = len(spans(tiles, "x")), len(spans(tiles, "y"))
    assert len(tiles) == rows * cols
    assert [(t.row, t.col) for t in tiles] == [(r, c) for r in range(rows) for c in range(cols)]
    by_col = {t.col: (t.x, t.width) for t in tiles}
    by_row = {t.row: (t.y, t.height) for t in tiles}
    assert all((t.x, t.width) == by_col[t.col] and (t.y, t.height) == by_row[t.row] for t in tiles)


def area(tiles: list[Tile]) -> int:
    return sum(t.width * t.height for t in tiles)


def band(tile: int, factor: int) -> tuple[int, int]:
    return math.ceil(tile * FIT_BAND[0] / factor) * factor, int(tile * FIT_BAND[1]) // factor * factor


def spread_origins(padded: int, extent: int, count: int, factor: int) -> list[int]:
    free = (padded - extent) // factor
    return [round(i * free / (count - 1) + 1e-9) * factor if count > 1 else 0 for i in range(count)]


def best_axis(length: int, tile: int, overlap: int, factor: int) -> int | None:
    """Brute force: the least n * e over every count n and grid extent e in the band whose spread keeps overlap."""
    padded = math.ceil(length / factor) * factor
    low, high = band(tile, factor)
    best = None
    for extent in range(low, high + 1, factor):
        for count in range(2, padded // factor + 2):
            origins = [((2 * i * ((padded - extent) // factor) + count - 1) // (2 * (count - 1))) * factor
                       for i in range(count)]
            if max(b - a for a, b in zip(origins, origins[1:])) <= extent - overlap and extent * count >= padded:
                best = min(best or count * extent, count * extent)
                break
    return best


@FAST
@given(tile_case(max_per_axis=12))
def test_fit_tiles_cover_keep_the_overlap_stay_in_the_band_and_sample_no_more_than_exact(case):
    width, height, tile, overlap, factor = case
    tiles = plan_tiles(width, height, tile, overlap, factor, fit="fit")
    exact = plan_tiles(width, height, tile, overlap, factor)
    low, high = band(tile, factor)
    for axis, length in (("x", width), ("y", height)):
        intervals = spans(tiles, axis)
        starts, ends = [s for _, s, _ in intervals], [e for _, _, e in intervals]
        assert starts[0] == 0 and ends[-1] == length and all(s % factor == 0 for s in starts)
        assert all(e - s2 >= overlap for e, s2 in zip(ends, starts[1:]))
        padded = math.ceil(length / factor) * factor
        sizes = {e - s for s, e in zip(starts[:-1], ends[:-1])}
        if padded <= high:
            assert intervals == [(0, 0, length)]
        elif best_axis(length, tile, overlap, factor) is not None:
            assert len(sizes) == 1 and low <= sizes.pop() <= high
            assert len(intervals) * (ends[0] - starts[0]) == best_axis(length, tile, overlap, factor)
    assert area(tiles) <= area(exact) or math.ceil(max(width, height) / factor) * factor <= int(tile * FIT_BAND[1])


@pytest.mark.parametrize("width,height,most", [(2048, 1536, 4.5e6), (4096, 4096, 21.5e6), (3840, 2160, 12 * 1152**2)])
def test_fit_meets_issue_21s_sampled_area_targets(width, height, most):
    """The last bound: UltimateSDUpscale's plan at 1024 / 128 padding, a 4 x 3 grid of 1152² samples."""
    tiles = plan_tiles(width, height, 1024, 128, 8, fit="fit")
    assert area(tiles) <= most < area(plan_tiles(width, height, 1024, 128, 8)) + (width == 3840) * 1e12
    assert len({(t.width, t.height) for t in tiles}) == 1


@FAST
@given(tile_case(max_per_axis=40), st.sampled_from(["fit", "exact"]))
def test_least_tile_counts_never_exceed_the_plan(case, fit):
    """The O(1) floor GET /luna/plan refuses huge plans by: at most the planner's columns and rows, exactly them for
    exact tiles whose advance is on the grid."""
    width, height, tile, overlap, factor = case
    tiles = plan_tiles(*case, fit=fit)
    floor = least_tile_counts(*case, fit)
    planned = (tiles[-1].col + 1, tiles[-1].row + 1)
    assert floor[0] <= planned[0] and floor[1] <= planned[1]
    if fit == "exact" and overlap % factor == 0:
        assert floor == planned


def test_unknown_fit_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown tile fit 'tight'"):
        plan_tiles(100, 100, 64, 8, fit="tight")


@FAST
@given(tile_case(max_canvas=300))
def test_tiles_cover_every_pixel_of_small_canvases(case):
    width, height, tile, overlap, factor = case
    covered = np.zeros((height, width), dtype=np.int32)
    for t in plan_tiles(width, height, tile, overlap, factor):
        covered[t.y:t.y + t.height, t.x:t.x + t.width] += 1
    assert covered.min() >= 1


def test_default_4k_plan_is_5_by_5_with_even_spacing():
    tiles = plan_tiles(4096, 4096, 1024, 128)
    assert len(tiles) == 25
    assert sorted({t.x for t in tiles}) == [0, 768, 1536, 2304, 3072]
    assert all(t.width == t.height == 1024 for t in tiles)


@pytest.mark.parametrize("args", [
    (1000, 1000, 1020, 64, 8),   # tile not a multiple of factor
    (1000, 1000, 1024, 1024, 8),  # overlap >= tile
    (1000, 1000, 1024, 1020, 8),  # overlap leaves less than one latent cell of advance
    (1000, 1000, 1024, -1, 8),
    (0, 1000, 1024, 64, 8),
    (1000, 1000, 0, 0, 8),
    (1000, 1000, 1024, 64, 0),
])
def test_plan_tiles_validation(args):
    with pytest.raises(ValueError):
        plan_tiles(*args)


@FAST
@given(tile_case(max_canvas=3000, max_per_axis=12))
def test_chess_phases_partition_tiles_into_disjoint_sets(case):
    tiles = plan_tiles(*case)
    phases = chess_phases(tiles)
    flat = [i for phase in phases for i in phase]
    assert sorted(flat) == list(range(len(tiles)))
    assert all(phases)
    for phase in phases:
        for n, i in enumerate(phase):
            for j in phase[n + 1:]:
                assert not intersect(tiles[i], tiles[j])
    xs = [s for _, s, _ in spans(tiles, "x")]
    ys = [s for _, s, _ in spans(tiles, "y")]
    tile = case[2]
    if all(2 * d >= tile for d in np.diff(xs)) and all(2 * d >= tile for d in np.diff(ys)):
        assert len(phases) <= 4


def test_chess_phases_with_corner_overlap():
    tiles = plan_tiles(4096, 4096, 1024, 128)
    phases = chess_phases(tiles)
    assert len(phases) == 4
    diagonal = {(1, 1), (0, 0)}
    for phase in phases:
        assert len({(tiles[i].row, tiles[i].col) for i in phase} & diagonal) <= 1


def test_chess_phases_need_three_colours_when_tiles_two_apart_overlap():
    tiles = plan_tiles(200, 64, 64, 48, 8)
    xs = sorted({t.x for t in tiles})
    assert xs[2] < xs[0] + 64
    phases = chess_phases(tiles)
    for phase in phases:
        for n, i in enumerate(phase):
            assert all(not intersect(tiles[i], tiles[j]) for j in phase[n + 1:])
    assert len(phases) >= 3


@FAST
@given(st.lists(st.integers(), max_size=50), st.integers(1, 12))
def test_batches_cut_in_order(indices, max_batch):
    out = batches(indices, max_batch)
    assert [i for b in out for i in b] == indices
    assert len(out) == math.ceil(len(indices) / max_batch)
    sizes = [len(b) for b in out]
    assert all(1 <= n <= max_batch for n in sizes)
    assert sizes == sorted(sizes, reverse=True) and (not sizes or sizes[0] - sizes[-1] <= 1)


def test_a_chess_phase_of_nine_tiles_goes_as_five_and_four():
    assert [len(b) for b in batches(range(9), 8)] == [5, 4]
    assert [len(b) for b in batches(range(16), 8)] == [8, 8]
    assert [len(b) for b in batches(range(17), 8)] == [6, 6, 5]


def test_batches_validation():
    with pytest.raises(ValueError):
        batches([1, 2], 0)


@st.composite
def crop_case(draw):
    factor = draw(st.sampled_from([8, 8, 1, 16]))
    width, height = draw(st.integers(64, 5000)), draw(st.integers(64, 5000))
    x0, x1 = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2, unique=True)))
    y0, y1 = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2, unique=True)))
    context = draw(st.sampled_from([1.0, 1.25, 1.5, 2.0, 3.0]))
    if draw(st.booleans()):
        sizes = (1024, 1536)
    else:
        sizes = tuple(factor * draw(st.integers(max(1, 16 // factor), 2048 // factor)) for _ in range(draw(st.integers(1, 3))))
    return (x0, y0, x1, y1), width, height, context, sizes, factor


def grid_origins_containing(lo: float, hi: float, size: int, length: int, factor: int) -> list[int]:
    """Naive: every grid origin keeping the square inside [0, length) and containing the pixels of [lo, hi)."""
    return [o for o in range(0, length - size + 1, factor) if o <= math.floor(lo) and o + size >= math.ceil(hi)]


@settings(max_examples=300, deadline=None)
@given(crop_case())
def test_crop_is_a_grid_square_inside_the_canvas_sized_from_the_targets(case):
    box, width, height, context, sizes, factor = case
    crop = plan_crop(box, width, height, context, sizes, factor)
    assert isinstance(crop, Crop)
    assert crop.x % factor == 0 and crop.y % factor == 0 and crop.size % factor == 0 and crop.size > 0
    assert 0 <= crop.x and crop.x + crop.size <= width and 0 <= crop.y and crop.y + crop.size <= height

    x0, y0, x1, y1 = box
    side = max((x1 - x0) * width, (y1 - y0) * height) * context
    fits = [t for t in sorted(sizes) if t >= side]
    wanted = fits[0] if fits else math.ceil(side / factor) * factor
    assert crop.size == min(wanted, min(width, height) // factor * factor)
    assert crop.sample_size == min(crop.size, max(sizes))

    for lo, hi, length, origin in ((x0 * width, x1 * width, width, crop.x), (y0 * height, y1 * height, height, crop.y)):
        if grid_origins_containing(lo, hi, crop.size, length, factor):
            assert origin <= math.floor(lo) and origin + crop.size >= math.ceil(hi)
        if crop.size >= side:
            centre = (lo + hi) / 2
            padded_lo, padded_hi = max(0.0, centre - side / 2), min(float(length), centre + side / 2)
            assert origin <= padded_lo + factor and origin + crop.size >= padded_hi - factor


def test_crop_examples():
    assert plan_crop((0.45, 0.45, 0.55, 0.55), 4096, 4096) == Crop(1536, 1536, 1024, 1024)
    assert plan_crop((0.4, 0.4, 0.6, 0.6), 4096, 4096) == Crop(1280, 1280, 1536, 1536)
    assert plan_crop((0.3, 0.3, 0.7, 0.7), 4096, 4096) == Crop(816, 816, 2464, 1536)
    assert plan_crop((0.0, 0.0, 0.05, 0.05), 4096, 4096) == Crop(0, 0, 1024, 1024)
    assert plan_crop((0.95, 0.9, 1.0, 1.0), 4096, 2048) == Crop(3072, 1024, 1024, 1024)
    assert plan_crop((0.1, 0.1, 0.9, 0.9), 1000, 700) == Crop(152, 0, 696, 696)
    assert plan_crop((0.4, 0.4, 0.6, 0.6), 4096, 4096, sizes=(512,)) == Crop(1432, 1432, 1232, 512)


@pytest.mark.parametrize("box", [
    (0.5, 0.1, 0.4, 0.2), (0.1, 0.1, 0.1, 0.2), (-0.1, 0.1, 0.4, 0.2), (0.1, 0.1, 0.4, 1.2),
    (float("nan"), 0.1, 0.4, 0.2), (0.1, 0.1, float("inf"), 0.2), (0.1, 0.2, 0.3),
])
def test_crop_rejects_bad_boxes(box):
    with pytest.raises(ValueError):
        plan_crop(box, 1024, 1024)


@pytest.mark.parametrize("kwargs", [
    dict(context=0.5), dict(context=float("nan")), dict(sizes=()), dict(sizes=(1020,)), dict(factor=0),
    dict(canvas_width=4), dict(canvas_height=0),
])
def test_crop_rejects_bad_arguments(kwargs):
    args = dict(box=(0.1, 0.1, 0.2, 0.2), canvas_width=1024, canvas_height=1024) | kwargs
    with pytest.raises(ValueError):
        plan_crop(**args)


@FAST
@given(tile_case(max_canvas=4200), st.sampled_from(["fit", "exact"]), st.sampled_from([2, 2, 4]))
def test_patch_tiles_are_whole_patches_cover_the_latent_canvas_and_keep_the_overlap(case, fit, patch):
    """Issue 28: with a patch model every tile is a whole number of patches (its padded pixel sides multiples of
    factor x patch), origins stay on the latent grid, tiles cover the padded canvas and overlap as asked."""
    width, height, tile, overlap, factor = case
    tile = -(-tile // (factor * patch)) * factor * patch
    overlap = min(overlap, tile - factor)
    padded = (-(-width // factor) * factor, -(-height // factor) * factor)
    if min(padded) < factor * patch:
        return
    tiles = plan_tiles(*padded, tile, overlap, factor, fit, patch)
    for axis, length in zip("xy", padded):
        intervals = spans(tiles, axis)
        assert intervals[0][1] == 0 and intervals[-1][2] == length
        for _, start, end in intervals:
            assert start % factor == 0 and (end - start) % (factor * patch) == 0, (start, end)
        for (_, a0, a1), (_, b0, b1) in zip(intervals, intervals[1:]):
            assert a0 < b0 <= a1, "consecutive tiles must advance and leave no gap"
            assert a1 - b0 >= min(overlap, length - 2 * (length % (factor * patch))), (a1 - b0, overlap)


def test_a_canvas_of_one_tile_with_an_odd_latent_side_is_two_tiles_of_whole_patches():
    tiles = plan_tiles(1000, 600, 1024, 128, 8, "fit", patch=2)
    assert sorted({(t.x, t.width) for t in tiles}) == [(0, 880), (120, 880)]  # the band's foot, 0.85 x 1024
    assert sorted({(t.y, t.height) for t in tiles}) == [(0, 592), (8, 592)]  # the most of 600 px in whole patches
    assert sorted({(t.x, t.width) for t in plan_tiles(1000, 600, 1024, 128, 8, "exact", patch=2)}) == [(0, 992), (8, 992)]
    assert plan_tiles(1008, 608, 1024, 128, 8, "fit", patch=2) == [Tile(0, 0, 1008, 608, 0, 0)]
    assert plan_tiles(1000, 600, 1024, 128, 8, "fit") == [Tile(0, 0, 1000, 600, 0, 0)]


@pytest.mark.parametrize("box, canvas, size, sample", [
    ((0.1, 0.1, 0.5, 0.9), (1000, 744), 736, 736),         # clamped to the canvas: 744 -> 736 px, not 93 cells
    ((0.0, 0.0, 0.9, 0.9), (3840, 2160), 2160, 1024),      # larger than the canvas: its side, resampled to 1024
    ((0.2, 0.1, 0.4075, 0.43), (3840, 2160), 1200, 1024),  # 796.8 px x 1.5 = 1195.2: up to 1200 (16 | 1200), resampled
])
def test_crops_of_a_patch_model_are_whole_patches(box, canvas, size, sample):
    crop = plan_crop(box, *canvas, 1.5, (1024,), 8, patch=2)
    assert (crop.size, crop.sample_size) == (size, sample)
    assert crop.size % 16 == 0 and crop.sample_size % 16 == 0 and crop.x % 8 == 0 and crop.y % 8 == 0


def test_a_tile_that_is_not_whole_patches_is_refused_with_the_size_to_use():
    with pytest.raises(ValueError, match="multiple of 16 px .*use 1008"):
        plan_tiles(2048, 2048, 1000, 64, 8, "exact", patch=2)
