"""Clips in the detailer (issue 35): a track's crops are one square size following the object, every frame samples
the track's own noise, each frame is blended with its own mask. Known answers: a still clip gives the same refined
frame every time; an object moving by whole pixels over a uniform background, refined by the translation-equivariant
exact-score model, comes out moving with it; frame by frame it does not."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures.clips import ORIGIN, SIDE, STEP, box_masks, flicker, motion_error, moving_square
from fixtures.fidelity import block_vae, exact_model
from luna_semantic_detailer.kernels.noise import make_scaffold
from luna_semantic_detailer.kernels.planning import Crop, crop_at, smooth_path
from luna_semantic_detailer.luna_types import Detection, DetectionData, NoiseScaffold
from luna_semantic_detailer.nodes.detailer import LunaSAM3Detailer
from luna_semantic_detailer.pipeline.crops import CropSettings, MaskEdge
from luna_semantic_detailer.pipeline.tracks import TrackSettings, track_crops, track_path, track_regions

EMPTY = [[torch.zeros(1, 1, 64), {}]]
CROP = 512


def detail(clip: torch.Tensor, detections: DetectionData, track_crops: str, seed: int = 3) -> torch.Tensor:
    """The detailer node with the exact-score model and the block VAE on `clip` [frames, H, W, 3]."""
    height, width = clip.shape[1:3]
    scaffold = NoiseScaffold(make_scaffold(width, height, seed, 4), width, height, 8, seed)
    return LunaSAM3Detailer().detail(
        clip, scaffold, detections, exact_model("local"), EMPTY, EMPTY, block_vae(), steps=4, cfg=1.0,
        sampler_name="euler_ancestral", scheduler="normal", denoise=0.6, crop_size=str(CROP), context_padding=1.5,
        mask_dilation=8, mask_feather=16, vision_strength=0.0, max_batch=4, labels="", track_crops=track_crops)[0]


@pytest.mark.parametrize("radius", [0, 1, 2, 5])
def test_smoothing_follows_a_steady_motion_exactly_ends_and_gaps_included(radius):
    times = [0, 1, 2, 4, 5, 7, 8]
    values = [3.0 + 16.5 * t for t in times]
    assert smooth_path(times, values, radius) == pytest.approx(values, abs=1e-9)


def test_smoothing_is_a_local_least_squares_line():
    g = np.random.default_rng(0)
    times = list(range(12))
    values = list(g.normal(size=12))
    got = smooth_path(times, values, 2)
    for t, value in zip(times, got):
        near = [s for s in times if abs(s - t) <= 2]
        slope, intercept = np.polyfit(near, [values[s] for s in near], 1)
        assert value == pytest.approx(slope * t + intercept, abs=1e-9)
    assert smooth_path(times, values, 0) == values
    assert np.std(np.diff(got)) < np.std(np.diff(values))


def test_a_track_keeps_one_square_side_that_follows_its_object_on_the_grid():
    clip, detections = moving_square(6)
    settings = TrackSettings(CropSettings((CROP,), 1.5, MaskEdge(8, 16)))
    track = list(detections.detections)
    path = track_path(track, clip.shape[2], clip.shape[1], settings)
    crops = track_crops(track, path, clip.shape[2], clip.shape[1], settings, 8)
    assert {c.size for c in crops} == {CROP}
    assert [c.x for c in crops] == [ORIGIN[0] + SIDE // 2 - CROP // 2 + STEP * t for t in range(6)]
    fixed = track_crops(track, path, clip.shape[2], clip.shape[1], TrackSettings(settings.crops, "fixed square"), 8)
    assert len(set(fixed)) == 1 and fixed[0].x <= ORIGIN[0] and fixed[0].x + fixed[0].size >= ORIGIN[0] + 5 * STEP + SIDE
    assert crop_at((5.0, 5.0), (4.0, 4.0), Crop(0, 0, 64, 64), 100, 100) == Crop(0, 0, 64, 64)


def test_every_frame_of_a_track_takes_the_home_noise_and_its_own_weight():
    clip, detections = moving_square(4)
    settings = TrackSettings(CropSettings((CROP,), 1.5, MaskEdge(8, 16)))
    regions = track_regions(detections.detections, clip.shape[2], clip.shape[1], settings, 8, seed=3)
    assert [r.image for r in regions] == [0, 1, 2, 3]
    assert {r.noise_home for r in regions} == {regions[0].rect} and {r.own_seed for r in regions} == {regions[0].own_seed}
    assert [r.rect[0] for r in regions] == [regions[0].rect[0] + STEP * t for t in range(4)]
    for r in regions[1:]:
        assert torch.equal(r.weight, regions[0].weight)


def test_a_still_clip_gives_the_same_refined_frame_every_time():
    clip, detections = moving_square(3, step=0)
    out = detail(clip, detections, "follow (smoothed)")
    assert (out[0] - clip[0]).abs().max() > 0.02, "the refinement must change the frame"
    assert torch.equal(out[1], out[0]) and torch.equal(out[2], out[0])


def test_a_moving_object_is_refined_moving_with_it_and_frame_by_frame_is_not():
    frames = 5
    clip, detections = moving_square(frames)
    square = (ORIGIN[0] + SIDE // 2 - CROP // 2, ORIGIN[1] + SIDE // 2 - CROP // 2, CROP)
    follow = detail(clip, detections, "follow (smoothed)")
    frame_by_frame = detail(clip, detections, "frame by frame")
    assert torch.isfinite(follow).all() and torch.isfinite(frame_by_frame).all()
    assert motion_error(follow, clip, square, STEP) <= 0.01
    assert motion_error(frame_by_frame, clip, square, STEP) > 0.2
    masks = box_masks(detections, frames, clip.shape[2], clip.shape[1])
    outside = ~torch.nn.functional.max_pool2d(masks.float()[:, None], 2 * 26 + 1, 1, 26)[:, 0].bool()
    assert torch.equal(follow[outside], clip[outside]), "the canvas outside every mask must stay bit-exact"
    assert flicker(follow, clip, masks) >= 0


def test_a_frame_where_the_object_is_absent_is_left_untouched():
    clip, detections = moving_square(4)
    kept = [d for d in detections.detections if d.image_index != 2]
    out = detail(clip, detections.with_detections(kept), "follow (smoothed)")
    assert torch.equal(out[2], clip[2])
    assert not torch.equal(out[1], clip[1]) and not torch.equal(out[3], clip[3])


def test_untracked_detections_are_detailed_frame_by_frame_beside_the_tracks():
    clip, detections = moving_square(2)
    loose = Detection((0.7, 0.1, 0.85, 0.35), None, 1.0, "object", 1)
    out = detail(clip, detections.with_detections([*detections.detections, loose]), "follow (smoothed)")
    x0, y0, x1, y1 = (round(v * s) for v, s in zip(loose.box, (clip.shape[2], clip.shape[1]) * 2))
    assert not torch.equal(out[1, y0:y1, x0:x1], clip[1, y0:y1, x0:x1])
    assert torch.equal(out[0, y0:y1, x0:x1], clip[0, y0:y1, x0:x1])


def test_a_still_object_with_wandering_boxes_keeps_its_noise_and_does_not_flicker():
    """A detector's boxes wander by up to 6 px on a still square: the square's crop may jump a grid step, but the noise
    stays under the object (the track's motion is held to whole latent cells), so the refined frames barely differ,
    as little as frame by frame (whose noise is the canvas's)."""
    from fixtures.clips import jittered_still

    clip, detections = jittered_still(5)
    masks = box_masks(detections, 5, clip.shape[2], clip.shape[1])
    smoothed = flicker(detail(clip, detections, "follow (smoothed)"), clip, masks)
    frame_by_frame = flicker(detail(clip, detections, "frame by frame"), clip, masks)
    assert smoothed <= 1e-3 and frame_by_frame <= 1e-3, (smoothed, frame_by_frame)


def test_held_steps_follow_motion_and_ignore_jitter():
    from luna_semantic_detailer.pipeline.tracks import held_step

    held, out = 0, []
    for target in (0.4, -0.6, 0.7, 2.0, 4.0, 4.5, 3.6, 6.0):
        held = held_step(target, held)
        out.append(held)
    assert out == [0, 0, 0, 2, 4, 4, 4, 6]


def test_the_filter_keeps_or_drops_whole_tracks():
    """top_k on a clip: tracks compete by their best frame, so object A is kept in every frame and B in none, where
    per frame the two would alternate (B scores higher in frame 1); untracked detections still compete per image."""
    from luna_semantic_detailer.kernels.interop.filter import filter_detections

    a = [Detection((0.1, 0.1, 0.3, 0.3), None, s, "face", t, 0) for t, s in enumerate((0.9, 0.5, 0.9))]
    b = [Detection((0.5, 0.5, 0.7, 0.7), None, s, "face", t, 1) for t, s in enumerate((0.6, 0.8, 0.6))]
    loose = [Detection((0.8, 0.1, 0.9, 0.2), None, s, "hand", 1) for s in (0.4, 0.7)]
    kept, rejected = filter_detections([*a, *b, *loose], top_k=1, order="input order")
    assert kept == [*a, loose[1]] and rejected == [*b, loose[0]]
