"""Issue 15's targets, with models whose right answer is known (tests/fixtures/fidelity.py), 1024 tiles / 128 overlap.

Each tiled run is compared with the same run untiled (one tile = the canvas, same scaffold). The default tiling must
reproduce the untiled run with the local exact model, be the best strategy with the tile-global one, keep the detail
energy and show no grid bands; the tile-constant probe must show no step steeper than the smoothstep allows.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fixtures.fidelity import (bands, block_vae, ellipse, energy, error, exact_model, flat_canvas, job_for, max_step_ratio,
                               structured_canvas, whole_canvas_region)
from pipeline_helpers import refine_regions, refine_tiles, scaffold_for
from luna_semantic_detailer.kernels.compositing import intersection
from luna_semantic_detailer.kernels.rect_masks import overlap_rounds
from luna_semantic_detailer.luna_types import Detection
from luna_semantic_detailer.nodes.common import sampler_inputs
from luna_semantic_detailer.nodes.refiner import DEFAULT_TILING
from luna_semantic_detailer.pipeline.canvas import canvas_noise
from luna_semantic_detailer.pipeline.crops import CropSettings, MaskEdge, canonical, crop_regions
from luna_semantic_detailer.pipeline.strategies import offered

TILINGS = offered("refiner")
from luna_semantic_detailer.pipeline.tiles import canvas_tiles

WIDTH, HEIGHT, TILE, OVERLAP = 2048, 1536, 1024, 128
CANVASES = {"flat": flat_canvas, "structured": structured_canvas}


def runs(kind: str, canvas_name: str, tilings, fit: str = "fit") -> tuple[torch.Tensor, torch.Tensor, dict]:
    scaffold = scaffold_for(WIDTH, HEIGHT, seed=3)
    job = job_for(exact_model(kind), block_vae(), scaffold.seed)
    canvas = CANVASES[canvas_name](HEIGHT, WIDTH)
    untiled = refine_tiles(job, canvas, scaffold, 1 << 14, OVERLAP, DEFAULT_TILING)
    return canvas, untiled, {t: refine_tiles(job, canvas, scaffold, TILE, OVERLAP, t, fit) for t in tilings}


def assert_no_grid(tiled, untiled, canvas):
    assert 0.95 <= energy(tiled, untiled, canvas) <= 1.05
    peak, dip = bands(tiled, untiled, canvas)
    assert 0.85 <= peak <= 1.15 and 0.85 <= dip <= 1.15, (peak, dip)


@pytest.mark.parametrize("fit", ["fit", "exact"])
@pytest.mark.parametrize("canvas_name", list(CANVASES))
def test_the_default_tiling_reproduces_the_untiled_run_with_the_local_exact_model(canvas_name, fit):
    canvas, untiled, tiled = runs("local", canvas_name, [DEFAULT_TILING, "chess"], fit)
    assert error(tiled[DEFAULT_TILING], untiled, canvas) <= 0.05
    assert_no_grid(tiled[DEFAULT_TILING], untiled, canvas)
    assert bands(tiled["chess"], untiled, canvas)[0] > 1.3, "the chess order's twice-refined overlaps must show"


@pytest.mark.parametrize("fit", ["fit", "exact"])
@pytest.mark.parametrize("canvas_name", list(CANVASES))
def test_the_default_tiling_is_the_best_strategy_with_the_tile_global_model(canvas_name, fit):
    canvas, untiled, tiled = runs("tile-global", canvas_name, list(TILINGS), fit)
    errors = {t: error(out, untiled, canvas) for t, out in tiled.items()}
    assert errors[DEFAULT_TILING] <= 1.01 * min(errors.values()), errors
    assert errors["chess"] > 1.1 * errors[DEFAULT_TILING], errors
    assert_no_grid(tiled[DEFAULT_TILING], untiled, canvas)


def test_the_tile_constant_probe_on_the_real_4096_plan_has_no_step_steeper_than_the_smoothstep():
    size = 4096
    g = torch.Generator().manual_seed(1)
    canvas = F.interpolate(torch.rand(1, 3, size // 64, size // 64, generator=g), size=(size, size), mode="nearest")
    canvas = canvas.movedim(1, -1).contiguous()
    scaffold = scaffold_for(size, size, seed=3)
    job = job_for(exact_model("tile-constant"), block_vae("bilinear"), scaffold.seed, steps=2)
    out = refine_tiles(job, canvas, scaffold, TILE, OVERLAP, DEFAULT_TILING)
    tiles = canvas_tiles(size, size, TILE, OVERLAP, 8, "fit")
    centres = [out[0, t.y + t.height // 2, t.x + t.width // 2] for t in tiles]
    rects = [(t.x, t.y, t.width, t.height) for t in tiles]
    difference = max(float((centres[i] - centres[j]).abs().max()) for i in range(len(tiles)) for j in range(i)
                     if intersection(rects[i], rects[j]))
    assert difference > 0.02
    assert max_step_ratio(out, OVERLAP, difference) <= 1.0


def test_overlapping_detections_are_refined_once_and_match_one_whole_canvas_region():
    """Crops all sampled from the input (the detailer) against the same weights on one region: the local model cannot
    tell them apart; overlapping crops in rounds (later ones see the earlier results) refine the overlap twice."""
    boxes = [(0.1, 0.15, 0.3, 0.45), (0.22, 0.3, 0.42, 0.6), (0.6, 0.55, 0.75, 0.8)]
    detections = canonical([Detection(b, ellipse(b, HEIGHT // 2, WIDTH // 2), 1.0, "face") for b in boxes])
    scaffold = scaffold_for(WIDTH, HEIGHT, seed=3)
    canvas = structured_canvas(HEIGHT, WIDTH)
    noise = canvas_noise(scaffold, HEIGHT, WIDTH)
    regions = crop_regions(detections, WIDTH, HEIGHT, CropSettings((1024, 1536), 1.5, MaskEdge(16, 32)), 8, scaffold.seed)
    job = job_for(exact_model("local"), block_vae(), scaffold.seed, denoise=0.6)
    reference = refine_regions(job, canvas, noise, [whole_canvas_region(regions, WIDTH, HEIGHT)])
    together = refine_regions(job, canvas, noise, regions)
    rounds = refine_regions(job, canvas, noise, regions, "chess")
    assert len(overlap_rounds([r.rect for r in regions])) > 1
    assert error(together, reference, canvas) <= 0.005
    assert error(rounds, reference, canvas) > 10 * error(together, reference, canvas)


CFG_PP = [name for name in sampler_inputs(0.5)["sampler_name"][0] if name.endswith("_cfg_pp")]


@pytest.mark.parametrize("sampler", CFG_PP)
def test_cfg_pp_samplers_under_fused_tiling_reproduce_the_untiled_run(sampler):
    """CFG++ steps with the canvas's uncond prediction: under fused tiling it is assembled from the tiles' with the
    same shares as the prediction, so the tiled run is the untiled one (issue 28; euler's bound)."""
    scaffold = scaffold_for(WIDTH, HEIGHT, seed=3)
    job = job_for(exact_model("local"), block_vae(), scaffold.seed, sampler=sampler)
    canvas = structured_canvas(HEIGHT, WIDTH)
    untiled = refine_tiles(job, canvas, scaffold, 1 << 14, OVERLAP, DEFAULT_TILING)
    fused = refine_tiles(job, canvas, scaffold, TILE, OVERLAP, "fused")
    assert len(canvas_tiles(WIDTH, HEIGHT, TILE, OVERLAP, 8, "fit")) > 1
    assert (untiled - canvas).abs().mean() > 0.01, "the refinement must change the canvas"
    assert error(fused, untiled, canvas) <= 0.05
