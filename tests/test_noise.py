"""Master noise scaffold and exact 1:1 slicing (issue 3, items 1-2)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from luna_semantic_detailer.kernels.noise import latent_box, latent_size, make_scaffold, slice_noise, snap_box
from luna_semantic_detailer.kernels.planning import plan_tiles

FAST = settings(max_examples=60, deadline=None)


@FAST
@given(st.integers(1, 600), st.integers(1, 600), st.sampled_from([1, 4, 16]), st.integers(1, 16))
def test_scaffold_shape_dtype_device(width, height, channels, factor):
    noise = make_scaffold(width, height, seed=7, channels=channels, factor=factor)
    assert noise.shape == (1, channels, -(-height // factor), -(-width // factor))
    assert noise.dtype == torch.float32 and noise.device.type == "cpu"
    assert latent_size(width, height, factor) == (-(-height // factor), -(-width // factor))


def test_scaffold_is_the_documented_cpu_generator_draw():
    expected = torch.randn((1, 4, 13, 20), generator=torch.Generator("cpu").manual_seed(2**64 - 1))
    assert torch.equal(make_scaffold(160, 100, seed=2**64 - 1, factor=8), expected)


def test_scaffold_deterministic_and_seed_dependent():
    a, b = make_scaffold(512, 384, seed=123), make_scaffold(512, 384, seed=123)
    assert torch.equal(a, b)
    assert not torch.equal(a, make_scaffold(512, 384, seed=124))


def test_default_canvas_is_standard_normal():
    noise = make_scaffold(4096, 4096, seed=0).double()
    assert noise.shape == (1, 4, 512, 512)
    n = noise.numel()
    assert abs(noise.mean().item()) < 5 / math.sqrt(n)
    assert abs(noise.std().item() - 1) < 5 / math.sqrt(2 * n)


@pytest.mark.parametrize("kwargs", [
    dict(width=0, height=8, seed=0), dict(width=8, height=-1, seed=0), dict(width=8, height=8, seed=0, factor=0),
    dict(width=8, height=8, seed=0, channels=0), dict(width=8, height=8, seed=-1), dict(width=8, height=8, seed=2**64),
    dict(width=8.0, height=8, seed=0), dict(width=8, height=8, seed=True),
])
def test_scaffold_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_scaffold(**kwargs)


@FAST
@given(st.integers(0, 50), st.integers(0, 50), st.integers(1, 50), st.integers(1, 50), st.integers(1, 16))
def test_latent_box_divides_grid_boxes(x, y, w, h, factor):
    assert latent_box((x * factor, y * factor, w * factor, h * factor), factor) == (x, y, w, h)


@FAST
@given(st.integers(0, 400), st.integers(0, 400), st.integers(1, 400), st.integers(1, 400), st.integers(2, 16))
def test_latent_box_refuses_off_grid_boxes(x, y, w, h, factor):
    box = (x, y, w, h)
    if all(v % factor == 0 for v in box):
        assert latent_box(box, factor) == tuple(v // factor for v in box)
    else:
        with pytest.raises(ValueError, match="snap"):
            latent_box(box, factor)


@FAST
@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 12), st.data())
def test_snap_box_is_the_smallest_grid_box_containing_the_box(canvas_w, canvas_h, factor, data):
    x = data.draw(st.integers(0, canvas_w - 1))
    y = data.draw(st.integers(0, canvas_h - 1))
    w = data.draw(st.integers(1, canvas_w - x))
    h = data.draw(st.integers(1, canvas_h - y))
    sx, sy, sw, sh = snap_box(x, y, w, h, factor, canvas_w, canvas_h)
    assert all(v % factor == 0 for v in (sx, sy, sw, sh))
    assert sx <= x and sy <= y and sx + sw >= x + w and sy + sh >= y + h
    assert sx + sw <= -(-canvas_w // factor) * factor and sy + sh <= -(-canvas_h // factor) * factor
    grid_x0 = max(g for g in range(0, x + 1, factor))
    grid_x1 = min(g for g in range(x + w, x + w + factor) if g % factor == 0)
    assert (sx, sw) == (grid_x0, grid_x1 - grid_x0)


@FAST
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 6), st.integers(1, 6), st.integers(1, 8), st.data())
def test_slices_equal_scaffold_cells_bit_for_bit(cols, rows, box_w, box_h, factor, data):
    box_w, box_h = min(box_w, cols), min(box_h, rows)
    scaffold = make_scaffold(cols * factor, rows * factor, seed=data.draw(st.integers(0, 2**32)), channels=3, factor=factor)
    origins = data.draw(st.lists(st.tuples(st.integers(0, cols - box_w), st.integers(0, rows - box_h)), min_size=1, max_size=4))
    boxes = [(lx * factor, ly * factor, box_w * factor, box_h * factor) for lx, ly in origins]
    out = slice_noise(scaffold, boxes, factor)
    assert out.shape == (len(boxes), 3, box_h, box_w)
    for n, (lx, ly) in enumerate(origins):
        for c in range(3):
            for i in range(box_h):
                for j in range(box_w):
                    assert out[n, c, i, j].item() == scaffold[0, c, ly + i, lx + j].item()


def test_neighbouring_tile_slices_agree_on_their_overlap():
    width, height, factor = 1000, 600, 8
    scaffold = make_scaffold(width, height, seed=5, factor=factor)
    tiles = plan_tiles(width, height, tile=256, overlap=64, factor=factor)
    slices = {}
    for t in tiles:
        box = (t.x, t.y, -(-t.width // factor) * factor, -(-t.height // factor) * factor)
        slices[(t.row, t.col)] = (t, slice_noise(scaffold, [box], factor)[0])
    checked = 0
    for (r, c), (a, sa) in slices.items():
        for key in ((r, c + 1), (r + 1, c), (r + 1, c + 1)):
            if key not in slices:
                continue
            b, sb = slices[key]
            x0, y0 = max(a.x, b.x) // factor, max(a.y, b.y) // factor
            x1 = min(a.x + sa.shape[-1] * factor, b.x + sb.shape[-1] * factor) // factor
            y1 = min(a.y + sa.shape[-2] * factor, b.y + sb.shape[-2] * factor) // factor
            assert x1 > x0 and y1 > y0
            ax, ay, bx, by = a.x // factor, a.y // factor, b.x // factor, b.y // factor
            assert torch.equal(sa[:, y0 - ay:y1 - ay, x0 - ax:x1 - ax], sb[:, y0 - by:y1 - by, x0 - bx:x1 - bx])
            checked += 1
    assert checked > 0


def test_slice_noise_validation():
    scaffold = make_scaffold(64, 64, seed=0)
    with pytest.raises(ValueError, match="leaves the scaffold"):
        slice_noise(scaffold, [(32, 32, 40, 8)], 8)
    with pytest.raises(ValueError, match="same size"):
        slice_noise(scaffold, [(0, 0, 16, 16), (8, 8, 16, 8)], 8)
    with pytest.raises(ValueError, match="snap"):
        slice_noise(scaffold, [(4, 0, 16, 16)], 8)
    with pytest.raises(ValueError):
        slice_noise(scaffold, [], 8)
    with pytest.raises(ValueError):
        slice_noise(scaffold[0], [(0, 0, 8, 8)], 8)
