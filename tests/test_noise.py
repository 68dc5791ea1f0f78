"""Master noise scaffold and exact 1:1 slicing (issue 3, items 1-2)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from luna_semantic_detailer.kernels.noise import (
    FIELD_BLOCK, field_noise, latent_box, latent_size, make_scaffold, own_noise, slice_noise,
)
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
        with pytest.raises(ValueError, match="not on the latent grid"):
            latent_box(box, factor)


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
    with pytest.raises(ValueError, match="not on the latent grid"):
        slice_noise(scaffold, [(4, 0, 16, 16)], 8)
    with pytest.raises(ValueError):
        slice_noise(scaffold, [], 8)
    with pytest.raises(ValueError):
        slice_noise(scaffold[0], [(0, 0, 8, 8)], 8)


@FAST
@given(st.integers(0, 2**64 - 1), st.integers(0, 5), st.integers(1, 150), st.integers(1, 150), st.data())
def test_field_noise_is_one_field_whatever_the_boxes_and_their_order(seed, stream, w, h, data):
    """A cell's value depends only on (seed, stream, cell): boxes of one size agree where they overlap, in any batch."""
    origins = data.draw(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200)), min_size=1, max_size=4))
    boxes = [(x, y, w, h) for x, y in origins]
    together = field_noise(seed, stream, boxes, 2)
    assert together.shape == (len(boxes), 2, h, w) and together.dtype == torch.float32
    right = max(x for x, _ in origins) + w
    bottom = max(y for _, y in origins) + h
    whole = field_noise(seed, stream, [(0, 0, right, bottom)], 2)[0]
    for n, (x, y) in enumerate(origins):
        assert torch.equal(together[n], whole[:, y:y + h, x:x + w])
        assert torch.equal(field_noise(seed, stream, [boxes[n]], 2)[0], together[n])


def test_field_noise_streams_and_seeds_differ_and_the_field_is_standard_normal():
    box = [(0, 0, 3 * FIELD_BLOCK, 2 * FIELD_BLOCK)]
    a, b, c = field_noise(1, 1, box, 4), field_noise(1, 2, box, 4), field_noise(2, 1, box, 4)
    assert not torch.equal(a, b) and not torch.equal(a, c)
    for noise in (a, b, c):
        assert abs(float(noise.mean())) < 0.02 and abs(float(noise.std()) - 1) < 0.02
    blocks = a[0, 0].unfold(0, FIELD_BLOCK, FIELD_BLOCK).unfold(1, FIELD_BLOCK, FIELD_BLOCK).reshape(6, -1)
    correlation = torch.corrcoef(blocks)
    assert (correlation - torch.eye(6)).abs().max() < 0.05
    assert torch.equal(own_noise(5, 1, (2, 3)), own_noise(5, 1, (2, 3))) and not torch.equal(own_noise(5, 1, (2, 3)), own_noise(5, 2, (2, 3)))
    with pytest.raises(ValueError, match="one size"):
        field_noise(1, 1, [(0, 0, 4, 4), (0, 0, 5, 4)], 1)
