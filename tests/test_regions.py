"""Detailer regions: masks cut from whole-image masks, box masks, and rounds of non-overlapping crops."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from luna_semantic_detailer.kernels.detections import mask_boxes
from luna_semantic_detailer.kernels.rect_masks import box_mask, mask_regions, overlap_rounds, rects_overlap


def test_mask_regions_reproduces_a_linear_ramp_exactly_inside_the_image():
    h, w = 40, 64
    ramp = ((torch.arange(w) + 0.5) / w).expand(h, w)
    regions = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.1, 0.3, 0.5, 0.7]])
    out = mask_regions(ramp.expand(2, h, w), regions, 32)
    u = (torch.arange(32) + 0.5) / 32
    expected = regions[:, 0, None] + u[None] * (regions[:, 2] - regions[:, 0])[:, None]
    torch.testing.assert_close(out, expected[:, None, :].expand(2, 32, 32), atol=1e-5, rtol=0)


def test_a_mask_that_fills_the_image_stays_whole_at_its_edges_and_corners():
    """A mask touching the image border is cut as it is up to the border (and continued beyond it), not faded into 0."""
    full = torch.ones(1, 96, 96)
    regions = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.6, 0.7, 1.0, 1.0], [-0.1, -0.2, 0.5, 0.4]])
    out = mask_regions(full.expand(3, -1, -1), regions, 512)
    torch.testing.assert_close(out, torch.ones_like(out), atol=1e-6, rtol=0)
    edge = torch.zeros(1, 96, 96)
    edge[:, :, 90:] = 1  # an object cut by the right border
    cut = mask_regions(edge, torch.tensor([[0.5, 0.0, 1.0, 1.0]]), 64)
    torch.testing.assert_close(cut[0, :, -4:], torch.ones(64, 4), atol=1e-6, rtol=0)


def test_box_mask_matches_a_pixel_centre_loop():
    boxes = torch.tensor([[0.1, 0.2, 0.56, 0.91], [0.0, 0.0, 1.0, 0.06]])
    got = box_mask(boxes, 20, 30)
    for n, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        for y in range(20):
            for x in range(30):
                cx, cy = (x + 0.5) / 30, (y + 0.5) / 20
                assert got[n, y, x] == float(x0 <= cx < x1 and y0 <= cy < y1)


def test_mask_boxes_match_the_extent_of_the_pixels():
    masks = torch.zeros(3, 10, 16)
    masks[0, 2:5, 3:9] = 1
    masks[1, 9, 15] = 1
    boxes, present = mask_boxes(masks)
    assert present.tolist() == [True, True, False]
    torch.testing.assert_close(boxes[:2], torch.tensor([[3 / 16, 2 / 10, 9 / 16, 5 / 10], [15 / 16, 9 / 10, 1.0, 1.0]]))


rects = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200), st.integers(1, 80), st.integers(1, 80)), max_size=25)


@settings(max_examples=100, deadline=None)
@given(rects)
def test_overlap_rounds_never_put_overlapping_rectangles_together(items):
    rounds = overlap_rounds(items)
    assert sorted(i for r in rounds for i in r) == list(range(len(items)))
    for members in rounds:
        for a in members:
            for b in members:
                if a < b:
                    ax, ay, aw, ah = items[a]
                    bx, by, bw, bh = items[b]
                    pixels_shared = max(0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0, min(ay + ah, by + bh) - max(ay, by))
                    assert pixels_shared == 0
                    assert not rects_overlap(items[a], items[b])
    for later, members in enumerate(rounds):
        for i in members:
            for earlier in rounds[:later]:
                assert any(rects_overlap(items[i], items[j]) for j in earlier)
