"""Smoothstep blending and feather masks (issue 3, item 4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from luna_semantic_detailer.kernels.masks import blend_, detection_alpha, smoothstep, tile_alpha, tile_feather
from luna_semantic_detailer.kernels.planning import chess_phases, feather_flags, plan_tiles

FAST = settings(max_examples=60, deadline=None)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def smoothstep64(m: np.ndarray) -> np.ndarray:
    m = np.clip(np.asarray(m, dtype=np.float64), 0.0, 1.0)
    return 3 * m**2 - 2 * m**3


@FAST
@given(st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=1, max_size=64))
def test_smoothstep_matches_formula(values):
    m = torch.tensor(values, dtype=torch.float32)
    np.testing.assert_allclose(smoothstep(m).double().numpy(), smoothstep64(m.double().numpy()), rtol=0, atol=1e-6)


def test_smoothstep_ends_and_c1():
    ends = smoothstep(torch.tensor([-1.0, 0.0, 1.0, 2.0]))
    assert ends.tolist() == [0.0, 0.0, 1.0, 1.0]
    m = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(smoothstep(m).sum(), m)
    assert grad.tolist() == [0.0, 0.0]
    h = torch.tensor([1e-3, 1e-4], dtype=torch.float64)
    zero, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    assert torch.all(((smoothstep(h) - smoothstep(zero)) / h).abs() < 4 * h)
    assert torch.all(((smoothstep(one) - smoothstep(1 - h)) / h).abs() < 4 * h)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(smoothstep(1 - t), 1 - smoothstep(t), rtol=0, atol=1e-15)
    assert torch.all(smoothstep(t).diff() >= 0)


@st.composite
def blend_case(draw):
    b = draw(st.integers(1, 3))
    height, width, c = draw(st.integers(1, 24)), draw(st.integers(1, 24)), draw(st.sampled_from([1, 3, 4]))
    h, w = draw(st.integers(1, height)), draw(st.integers(1, width))
    x, y = draw(st.integers(0, width - w)), draw(st.integers(0, height - h))
    seed = draw(st.integers(0, 2**32))
    g = torch.Generator().manual_seed(seed)
    canvas = torch.randn((b, height, width, c), generator=g) * 10
    refined = torch.randn((draw(st.sampled_from([1, b])), h, w, c), generator=g)
    alpha = torch.rand((draw(st.sampled_from([1, b])), h, w), generator=g)
    if draw(st.booleans()):
        alpha = alpha[0]
    return canvas, refined, alpha, x, y


@FAST
@given(blend_case())
def test_blend_matches_float64_reference(case):
    canvas, refined, alpha, x, y = case
    original = canvas.clone()
    h, w = refined.shape[1:3]
    a = alpha.double().reshape(-1, h, w, 1)
    expected = original.double().clone()
    expected[:, y:y + h, x:x + w] = refined.double() * a + original.double()[:, y:y + h, x:x + w] * (1 - a)
    pointer = canvas.data_ptr()
    out = blend_(canvas, refined, alpha, x, y)
    assert out is canvas and out.data_ptr() == pointer
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)
    outside = torch.ones(canvas.shape[:3], dtype=torch.bool)
    outside[:, y:y + h, x:x + w] = False
    assert torch.equal(out[outside], original[outside])


@FAST
@given(blend_case())
def test_blend_alpha_zero_is_bit_identical_and_one_is_refined(case):
    canvas, refined, alpha, x, y = case
    original = canvas.clone()
    blend_(canvas, refined, torch.zeros_like(alpha), x, y)
    assert torch.equal(canvas, original)
    blend_(canvas, refined, torch.ones_like(alpha), x, y)
    h, w = refined.shape[1:3]
    assert torch.equal(canvas[:, y:y + h, x:x + w], refined.expand(canvas.shape[0], -1, -1, -1))


@pytest.mark.parametrize("device", DEVICES)
def test_blend_moves_inputs_to_the_canvas_device_and_dtype(device):
    canvas = torch.zeros((1, 8, 8, 3), dtype=torch.float16, device=device)
    blend_(canvas, torch.ones((1, 4, 4, 3), dtype=torch.float64), torch.full((4, 4), 0.25), 2, 3)
    assert canvas.dtype == torch.float16 and canvas.device.type == device
    assert canvas[0, 3:7, 2:6].eq(0.25).all() and canvas.sum().item() == 0.25 * 48


@pytest.mark.parametrize("args", [
    ((1, 8, 8, 3), (1, 4, 4, 3), (4, 4), 5, 0),     # leaves the canvas
    ((1, 8, 8, 3), (1, 4, 4, 3), (4, 4), -1, 0),
    ((1, 8, 8, 3), (1, 4, 4, 4), (4, 4), 0, 0),     # channel mismatch
    ((2, 8, 8, 3), (3, 4, 4, 3), (4, 4), 0, 0),     # batch mismatch
    ((1, 8, 8, 3), (1, 4, 4, 3), (4, 5), 0, 0),     # alpha shape
])
def test_blend_validation(args):
    canvas, refined, alpha, x, y = args
    with pytest.raises(ValueError):
        blend_(torch.zeros(canvas), torch.zeros(refined), torch.zeros(alpha), x, y)


def naive_ramp(length: int, overlap: int, low: bool, high: bool) -> list[float]:
    out = []
    for i in range(length):
        v = 1.0
        if low and i < overlap:
            v = min(v, (i + 0.5) / overlap)
        if high and length - 1 - i < overlap:
            v = min(v, (length - 1 - i + 0.5) / overlap)
        out.append(v)
    return out


@FAST
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 24), st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_tile_feather_and_alpha_match_naive_reference(height, width, overlap, left, top, right, bottom):
    ry, rx = naive_ramp(height, overlap, top, bottom), naive_ramp(width, overlap, left, right)
    feather = tile_feather(height, width, overlap, left, top, right, bottom)
    alpha = tile_alpha(height, width, overlap, left, top, right, bottom)
    assert feather.shape == alpha.shape == (height, width)
    for i in range(height):
        for j in range(width):
            assert abs(feather[i, j].item() - ry[i] * rx[j]) < 1e-6
            assert abs(alpha[i, j].item() - smoothstep64(ry[i]) * smoothstep64(rx[j])) < 1e-6
    assert feather.min() > 0 and alpha.min() > 0 and feather.max() <= 1
    if not (left or right or top or bottom) or overlap == 0:
        assert torch.equal(alpha, torch.ones(height, width))


@FAST
@given(st.integers(1, 32), st.integers(1, 64))
def test_tile_ramps_across_an_exact_overlap_sum_to_one(overlap, extra):
    size = overlap + extra
    left_tile = tile_alpha(4, size, overlap, left=False, top=False, right=True, bottom=False)[0, -overlap:]
    right_tile = tile_alpha(4, size, overlap, left=True, top=False, right=False, bottom=False)[0, :overlap]
    torch.testing.assert_close(left_tile + right_tile, torch.ones(overlap), rtol=0, atol=1e-6)
    assert tile_alpha(4, size, overlap, True, False, False, False)[0, overlap:].eq(1).all()


@FAST
@given(st.integers(17, 120), st.integers(17, 120), st.sampled_from([16, 24, 32]), st.data())
def test_sequential_blending_with_feather_flags_replaces_every_original_pixel(width, height, tile, data):
    overlap = data.draw(st.integers(0, tile - 8))
    tiles = plan_tiles(width, height, tile, overlap, 8)
    phases = chess_phases(tiles)
    flags = feather_flags(tiles, phases)
    canvas = torch.ones((1, height, width, 1), dtype=torch.float64)
    for phase in phases:
        for i in phase:
            t = tiles[i]
            alpha = tile_alpha(t.height, t.width, overlap, *flags[i]).double()
            blend_(canvas, torch.zeros((1, t.height, t.width, 1), dtype=torch.float64), alpha, t.x, t.y)
    assert canvas.abs().max().item() == 0.0


def test_feathering_every_touching_side_would_leak_the_original():
    tiles = plan_tiles(64, 16, 32, 16, 8)
    canvas = torch.ones((1, 16, 64, 1), dtype=torch.float64)
    for t in tiles:
        alpha = tile_alpha(t.height, t.width, 16, t.col > 0, False, t.col < len(tiles) - 1, False).double()
        blend_(canvas, torch.zeros((1, t.height, t.width, 1), dtype=torch.float64), alpha, t.x, t.y)
    assert canvas.max().item() > 0.1


def chebyshev_distance(region: np.ndarray) -> np.ndarray:
    """Naive: for each pixel, min over region pixels of max(|dy|, |dx|); inf when the region is empty."""
    h, w = region.shape
    points = np.argwhere(region)
    out = np.full((h, w), np.inf)
    for i in range(h):
        for j in range(w):
            if len(points):
                out[i, j] = np.max(np.abs(points - [i, j]), axis=1).min()
    return out


def reference_alpha(mask: np.ndarray, dilation: int, feather: int) -> np.ndarray:
    binary = mask >= 0.5
    if dilation > 0:
        binary = ndimage.binary_dilation(binary, structure=np.ones((2 * dilation + 1,) * 2), border_value=0)
    elif dilation < 0:
        binary = ndimage.binary_erosion(binary, structure=np.ones((-2 * dilation + 1,) * 2), border_value=1)
    ramp = np.clip((feather + 1 - chebyshev_distance(binary)) / (feather + 1), 0, 1)
    return smoothstep64(ramp)


@st.composite
def mask_case(draw):
    b, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 14)), draw(st.integers(1, 14))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32)))
    density = draw(st.sampled_from([0.02, 0.1, 0.4, 0.9]))
    mask = torch.rand((b, h, w), generator=g) * (torch.rand((b, h, w), generator=g) < density)
    return mask, draw(st.integers(-3, 4)), draw(st.integers(0, 5))


@FAST
@given(mask_case())
def test_detection_alpha_matches_scipy_and_naive_distance(case):
    mask, dilation, feather = case
    out = detection_alpha(mask, dilation, feather)
    assert out.shape == mask.shape and out.dtype == torch.float32
    for i in range(mask.shape[0]):
        expected = reference_alpha(mask[i].numpy(), dilation, feather)
        np.testing.assert_allclose(out[i].double().numpy(), expected, rtol=0, atol=1e-6)


@FAST
@given(mask_case())
def test_detection_alpha_is_zero_beyond_dilation_plus_feather(case):
    mask, dilation, feather = case
    dilation = abs(dilation)
    out = detection_alpha(mask, dilation, feather)
    for i in range(mask.shape[0]):
        obj = mask[i].numpy() >= 0.5
        distance = chebyshev_distance(obj)
        alpha = out[i].numpy()
        assert np.all(alpha[distance > dilation + feather] == 0)
        assert np.all(alpha[distance <= dilation] == 1)
        assert np.all(alpha[distance <= dilation + feather] > 0)


def test_detection_alpha_shapes_and_edge_cases():
    assert detection_alpha(torch.zeros(5, 7), 3, 4).eq(0).all()
    assert detection_alpha(torch.ones(2, 5, 7), -2, 4).eq(1).all()
    mask = torch.zeros(9, 9)
    mask[4, 4] = 0.5
    out = detection_alpha(mask, 1, 0)
    assert out.shape == (9, 9) and out.sum().item() == 9 and out[3:6, 3:6].eq(1).all()
    assert detection_alpha(mask.bool(), 0, 0).dtype == torch.float32
    assert detection_alpha(mask.double(), 0, 0).dtype == torch.float64
    with pytest.raises(ValueError):
        detection_alpha(mask, 1, -1)
    with pytest.raises(ValueError):
        detection_alpha(mask[None, None], 1, 1)


@pytest.mark.parametrize("device", DEVICES)
def test_detection_alpha_device(device):
    mask = (torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(0)) > 0.97).float()
    out = detection_alpha(mask.to(device), 2, 3)
    assert out.device.type == device
    torch.testing.assert_close(out.cpu(), detection_alpha(mask, 2, 3))
