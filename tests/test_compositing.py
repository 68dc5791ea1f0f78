"""The one compositor: shares that sum to 1 with the original, against a float64 per-pixel reference; no hard steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from luna_semantic_detailer.kernels.compositing import (
    Layer, add_share_, axis_weights, intersection, lerp_, sequential_share, share, tile_layers,
)
from luna_semantic_detailer.kernels.planning import chess_phases, plan_tiles

FAST = settings(max_examples=40, deadline=None)


def smoothstep64(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def reference_composite(height, width, layers, values, original):
    """Per pixel, in float64: original + A * sum_i w_i (x_i - original) / sum_i w_i, A = max coverage."""
    out = original.astype(np.float64).copy()
    for i in range(height):
        for j in range(width):
            weights, covers, xs = [], [], []
            for layer, value in zip(layers, values):
                x, y, w, h = layer.rect
                if x <= j < x + w and y <= i < y + h:
                    weights.append(float(layer.weight[i - y, j - x]))
                    covers.append(1.0 if layer.coverage is None else float(layer.coverage[i - y, j - x]))
                    xs.append(value[i - y, j - x].astype(np.float64))
            total = sum(weights)
            if total > 0:
                mixed = sum(wt * x for wt, x in zip(weights, xs)) / total
                out[i, j] = original[i, j] + max(covers) * (mixed - original[i, j])
    return out


@st.composite
def layer_case(draw):
    height, width = draw(st.integers(4, 20)), draw(st.integers(4, 20))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32)))
    layers, values = [], []
    for _ in range(draw(st.integers(1, 5))):
        w, h = draw(st.integers(1, width)), draw(st.integers(1, height))
        x, y = draw(st.integers(0, width - w)), draw(st.integers(0, height - h))
        weight = torch.rand(h, w, generator=g) * (torch.rand(h, w, generator=g) > 0.2)
        coverage = None if draw(st.booleans()) else weight
        layers.append(Layer((x, y, w, h), weight, coverage))
        values.append(torch.randn(h, w, 3, generator=g))
    original = torch.randn(1, height, width, 3, generator=g)
    return height, width, layers, values, original


@FAST
@given(layer_case())
def test_composite_matches_the_float64_per_pixel_reference(case):
    height, width, layers, values, original = case
    out = original.clone()
    for i, (layer, value) in enumerate(zip(layers, values)):
        add_share_(out, layer.rect, value[None], share(layers, i), base=original)
    expected = reference_composite(height, width, layers, [v.numpy() for v in values], original[0].numpy())
    np.testing.assert_allclose(out[0].double().numpy(), expected, rtol=0, atol=1e-5)
    covered = torch.zeros(height, width, dtype=torch.bool)
    for layer in layers:
        x, y, w, h = layer.rect
        covered[y:y + h, x:x + w] |= layer.weight > 0
    assert torch.equal(out[0][~covered], original[0][~covered])


@FAST
@given(st.integers(17, 160), st.integers(17, 160), st.sampled_from([16, 24, 40]), st.data())
def test_tile_shares_are_a_partition_of_unity_and_chess_order_gives_the_same_sum(width, height, tile, data):
    overlap = data.draw(st.integers(0, tile - 8))
    tiles = plan_tiles(width, height, tile, overlap, 8)
    layers = tile_layers(tiles)
    total = torch.zeros(height, width, dtype=torch.float64)
    for i, layer in enumerate(layers):
        x, y, w, h = layer.rect
        total[y:y + h, x:x + w] += share(layers, i).double()
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-6)

    g = torch.Generator().manual_seed(0)
    colours = [torch.rand(3, generator=g).expand(layer.rect[3], layer.rect[2], 3) for layer in layers]
    original = torch.rand(1, height, width, 3, generator=g)
    together, ordered = original.clone(), original.clone()
    for i, (layer, colour) in enumerate(zip(layers, colours)):
        add_share_(together, layer.rect, colour[None], share(layers, i), base=original)
    done: list[int] = []
    for phase in chess_phases(tiles):
        for i in phase:
            lerp_(ordered, layers[i].rect, colours[i][None], sequential_share(layers, i, done))
        done.extend(phase)
    torch.testing.assert_close(ordered, together, rtol=0, atol=1e-5)


def test_the_first_tile_in_an_order_replaces_the_original_and_a_lone_detection_lerps_by_its_alpha():
    tile = Layer((0, 0, 4, 4), torch.full((4, 4), 0.01))
    assert torch.equal(sequential_share([tile], 0, []), torch.ones(4, 4))
    alpha = torch.linspace(0, 1, 16).reshape(4, 4)
    detection = Layer((0, 0, 4, 4), alpha, alpha)
    torch.testing.assert_close(sequential_share([detection], 0, []), alpha, rtol=0, atol=1e-7)


@FAST
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 120)), min_size=1, max_size=6))
def test_axis_weights_ramp_across_each_whole_overlap_and_sum_to_one(spans):
    spans = sorted({(o, n) for o, n in spans})
    ends = [o + n for o, n in spans]
    if len({o for o, _ in spans}) < len(spans) or any(spans[i + 1][0] < ends[i - 1] for i in range(1, len(spans) - 1)) or any(
            ends[i + 1] <= ends[i] for i in range(len(spans) - 1)):
        return  # only chains where each span overlaps at most its neighbours and reaches further
    weights = axis_weights(spans)
    length = max(ends)
    total = torch.zeros(length, dtype=torch.float64)
    for (o, n), w in zip(spans, weights):
        total[o:o + n] += w.double()
    covered = total > 0
    torch.testing.assert_close(total[covered], torch.ones(int(covered.sum()), dtype=torch.float64), rtol=0, atol=1e-6)
    first, last = weights[0], weights[-1]
    assert first[0] == 1 and last[-1] == 1
    if len(spans) > 1 and ends[0] > spans[1][0]:
        n = ends[0] - spans[1][0]
        expected = smoothstep64((np.arange(n) + 0.5) / n)
        np.testing.assert_allclose(weights[1][:n].double().numpy(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size,tile,overlap", [(4096, 1024, 128), (2048, 1024, 128), (1000, 256, 32), (3000, 1536, 256)])
def test_tile_constants_composite_without_a_step_steeper_than_the_smoothstep(size, tile, overlap):
    """The tile-constant probe on the compositor alone: every pixel step <= 1.5 / overlap x the largest tile difference."""
    tiles = plan_tiles(size, size, tile, overlap, 8)
    layers = tile_layers(tiles)
    values = torch.rand(len(tiles), generator=torch.Generator().manual_seed(size))
    out = torch.zeros(1, size, size, 1)
    for i, layer in enumerate(layers):
        add_share_(out, layer.rect, values[i].expand(1, layer.rect[3], layer.rect[2], 1), share(layers, i))
    pairs = [abs(float(values[i] - values[j])) for i in range(len(tiles)) for j in range(i)
             if intersection(layers[i].rect, layers[j].rect)]
    step = max(float(out.diff(dim=1).abs().max()), float(out.diff(dim=2).abs().max()))
    assert step <= 1.5 / overlap * max(pairs) * (1 + 1e-5)


def test_regions_outside_the_canvas_are_refused():
    with pytest.raises(ValueError, match="leaves the canvas"):
        add_share_(torch.zeros(1, 8, 8, 3), (4, 4, 8, 4), torch.zeros(1, 4, 8, 3), torch.ones(4, 8))
    with pytest.raises(ValueError, match="leaves the canvas"):
        lerp_(torch.zeros(1, 4, 8, 8), (0, 0, 9, 2), torch.zeros(1, 4, 2, 9), torch.ones(2, 9), channels_last=False)


def test_latent_layout_and_a_weight_of_zero_leave_the_canvas_bit_identical():
    canvas = torch.randn(2, 4, 6, 6)
    before = canvas.clone()
    add_share_(canvas, (1, 1, 3, 3), torch.randn(2, 4, 3, 3), torch.zeros(3, 3), base=before, channels_last=False)
    assert torch.equal(canvas, before)
    lerp_(canvas, (1, 1, 3, 3), torch.ones(2, 4, 3, 3), torch.ones(3, 3), channels_last=False)
    assert canvas[:, :, 1:4, 1:4].eq(1).all() and torch.equal(canvas[:, :, 0], before[:, :, 0])
