"""Colour that stays put (issue 20): each refined tile/crop keeps its detail and takes the input's low frequencies."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from fixtures.fidelity import bands, block_vae, ellipse, energy, exact_model, job_for, structured_canvas
from pipeline_helpers import refine_regions, refine_tiles, scaffold_for
from luna_semantic_detailer.kernels.color import low_frequencies, match_low_frequencies
from luna_semantic_detailer.luna_types import Detection
from luna_semantic_detailer.pipeline.canvas import canvas_noise
from luna_semantic_detailer.pipeline.crops import CropSettings, MaskEdge, crop_regions
from luna_semantic_detailer.pipeline.tiles import canvas_tiles

WIDTH, HEIGHT = 2048, 1536
# The bound on the mean colour difference (0..1) between two tiles' interiors, and between a crop's fully repainted
# core and the input, with the match on. Measured with the tile-bias model at denoise 0.6: tiles 0.026 (off: 0.137),
# crop core 0.013 (off: 0.050).
STEP_BOUND = 0.04


@pytest.mark.parametrize("sigma", [1.0, 2.5, 7.0])
def test_low_frequencies_are_a_gaussian_blur_with_edges_replicated(sigma):
    image = torch.rand(1, 40, 56, 3, generator=torch.Generator().manual_seed(0))
    expected = np.stack([ndimage.gaussian_filter(image[0, ..., c].double().numpy(), sigma, mode="nearest", truncate=3.0)
                         for c in range(3)], axis=-1)
    if sigma < 4:  # below 4 px the blur is taken at full resolution: exact
        np.testing.assert_allclose(low_frequencies(image, sigma)[0].double().numpy(), expected, rtol=0, atol=2e-3)
    else:  # on cells of sigma/4 px: close to the exact blur
        assert np.abs(low_frequencies(image, sigma)[0].double().numpy() - expected).mean() < 0.01


def test_a_colour_offset_is_removed_and_detail_is_left_alone():
    g = torch.Generator().manual_seed(1)
    reference = torch.rand(2, 96, 96, 3, generator=g) * 0.5 + 0.25
    detail = torch.randn(2, 96, 96, 3, generator=g) * 0.05
    shifted = reference + detail + torch.tensor([0.1, -0.08, 0.05])
    matched = match_low_frequencies(shifted, reference, 12.0)
    assert (matched - reference).mean(dim=(1, 2)).abs().max() < 5e-3
    torch.testing.assert_close(matched - low_frequencies(reference, 12.0), shifted - low_frequencies(shifted, 12.0),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(matched.diff(dim=2), shifted.diff(dim=2), rtol=0, atol=0.02)


def interior_offsets(out, canvas, tiles):
    r = (out - canvas)[0]
    return [r[t.y + t.height // 4:t.y + 3 * t.height // 4, t.x + t.width // 4:t.x + 3 * t.width // 4].mean(dim=(0, 1))
            for t in tiles]


def test_tiles_keep_the_inputs_colour_and_their_detail_with_the_match_on():
    scaffold = scaffold_for(WIDTH, HEIGHT, seed=3)
    canvas = structured_canvas(HEIGHT, WIDTH)
    job = job_for(exact_model("tile-bias"), block_vae(), scaffold.seed, denoise=0.6)
    tiles = canvas_tiles(WIDTH, HEIGHT, 1024, 128, 8, "fit")
    off = refine_tiles(job, canvas, scaffold, 1024, 128, "parallel", "fit")
    on = refine_tiles(replace(job, color_match=True), canvas, scaffold, 1024, 128, "parallel", "fit")

    def steps(out):
        o = interior_offsets(out, canvas, tiles)
        return max(float((o[i] - o[j]).abs().max()) for i in range(len(o)) for j in range(i))

    assert steps(off) > 2.5 * STEP_BOUND, "the model's tile offsets must show without the match"
    assert steps(on) <= STEP_BOUND
    high = lambda out: (out - canvas) - low_frequencies(out - canvas, 128.0)  # noqa: E731
    assert 0.95 <= float(high(on).std() / high(off).std()) <= 1.05
    untiled = refine_tiles(job, canvas, scaffold, 1 << 14, 128, "parallel")
    peak, dip = bands(on, untiled, canvas)
    assert 0.85 <= peak <= 1.15 and 0.85 <= dip <= 1.15


def test_a_crop_keeps_the_colour_of_its_surroundings_with_the_match_on():
    scaffold = scaffold_for(WIDTH, HEIGHT, seed=3)
    canvas = structured_canvas(HEIGHT, WIDTH)
    noise = canvas_noise(scaffold, HEIGHT, WIDTH)
    box = (0.3, 0.3, 0.55, 0.65)
    regions = crop_regions([Detection(box, ellipse(box, HEIGHT // 2, WIDTH // 2), 1.0, "face")], WIDTH, HEIGHT,
                           CropSettings((1024, 1536), 1.5, MaskEdge(16, 32)), 8, scaffold.seed)
    job = job_for(exact_model("tile-bias"), block_vae(), scaffold.seed, denoise=0.6)
    (region,) = regions
    x, y, w, h = region.rect
    core = region.weight == 1

    def core_offset(out):
        return float((out - canvas)[0, y:y + h, x:x + w][core].mean(dim=0).abs().max())

    off = core_offset(refine_regions(job, canvas, noise, regions))
    on = core_offset(refine_regions(replace(job, color_match=True), canvas, noise, regions))
    assert off > STEP_BOUND and on <= STEP_BOUND / 2, (off, on)
