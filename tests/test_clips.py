"""A track sampled as one clip by a video model (issue 35, item 4): the exact-score video model (a Gaussian prior
correlated in space and time, tests/fixtures/video.py) through the detailer's crops against its untiled run, one clip
of the whole frames; a tiny Wan 2.1 built through ComfyUI's own classes through the node."""
from __future__ import annotations

import logging

import pytest
import torch

from fixtures.clips import box_masks, moving_square
from fixtures.fidelity import error, job_for
from fixtures.lsd_test_models.families import tiny_family_conditioning, tiny_family_model, tiny_family_vae
from fixtures.video import block_video_vae, empty_conditioning, exact_video_model
from luna_semantic_detailer.kernels.noise import make_scaffold
from luna_semantic_detailer.luna_types import NoiseScaffold
from luna_semantic_detailer.nodes.detailer import LunaSAM3Detailer
from luna_semantic_detailer.pipeline.clips import CLIPS
from luna_semantic_detailer.pipeline.crops import CropSettings, MaskEdge, support_mask
from luna_semantic_detailer.pipeline.plan import RegionPlan
from luna_semantic_detailer.pipeline.regions import Region
from luna_semantic_detailer.pipeline.canvas import canvas_noise
from luna_semantic_detailer.pipeline.tracks import TrackSettings, track_regions

W, H, SIDE, CHANNELS = 768, 512, 128, 16
SETTINGS = dict(steps=4, cfg=1.0, sampler_name="euler", scheduler="normal", denoise=0.6, crop_size="512",
                context_padding=1.5, mask_dilation=8, mask_feather=16, vision_strength=0.0, max_batch=4, labels="")


def scaffold(seed: int = 3) -> NoiseScaffold:
    return NoiseScaffold(make_scaffold(W, H, seed, CHANNELS), W, H, 8, seed)


def clip_of(frames: int, step: int = 8):
    return moving_square(frames, step=step, width=W, height=H, side=SIDE, origin=(256, 192))


def detail(clip, detections, model, vae, positive, negative, **options):
    return LunaSAM3Detailer().detail(clip, scaffold(), detections, model, positive, negative, vae,
                                     **{**SETTINGS, **options})


def test_a_track_as_one_clip_through_the_crops_is_the_untiled_one_clip_run():
    """The fixed square of a track, sampled as one clip in its crop, against one clip of the whole frames with the
    same weights and noise: the local model cannot tell them apart."""
    clip, detections = clip_of(5)
    model, vae, empty = exact_video_model(), block_video_vae(), empty_conditioning()
    out, crops, _ = detail(clip, detections, model, vae, empty, empty, track_crops="fixed square",
                           clip_sampling="one clip per track (video model)")
    assert crops.shape[0] == 1, "the crops preview shows a track once, its first frame"
    regions = track_regions(detections.detections, W, H, TrackSettings(CropSettings((512,), 1.5, MaskEdge(8, 16)),
                                                                       "fixed square"), 8, 3)
    whole = []
    for r in regions:
        x, y, w, h = r.rect
        weight = torch.zeros(H, W)
        weight[y:y + h, x:x + w] = r.weight
        whole.append(Region(r.image, (0, 0, W, H), (W, H), weight, weight, support_mask(weight, (W, H), 8), track=0))
    job = job_for(model, vae, 3, steps=4, denoise=0.6)
    plan = RegionPlan(source="detailer", job=job, canvas=clip, scaffold=scaffold(), noise=canvas_noise(scaffold(), H, W),
                      regions=tuple(whole), width=W, height=H, settings=None)
    reference = CLIPS.run(plan, None)
    assert (reference - clip).abs().mean() > 1e-3, "the refinement must change the clip"
    assert error(out, reference, clip) <= 0.01, error(out, reference, clip)


def test_a_tiny_wan_details_a_clip_track_by_track(caplog):
    """Wan 2.1 through ComfyUI's own classes: the object leaves the clip in frame 3, so its track is two clips of three
    frames (no jump reaches the model), each padded to five for the VAE (said in the log); every frame
    outside its masks bit-exact, a frame where the object is absent untouched."""
    clip, detections = clip_of(7)
    kept = detections.with_detections([d for d in detections.detections if d.image_index != 3])
    model, vae = tiny_family_model("wan21", 0), tiny_family_vae("wan21", 0)
    positive, negative = tiny_family_conditioning("wan21")
    with caplog.at_level(logging.INFO):
        out = detail(clip, kept, model, vae, positive, negative)[0]
    assert caplog.text.count("a clip of 3 frames is padded with its last frame to 5") == 2
    assert out.shape == clip.shape and torch.isfinite(out).all()
    assert torch.equal(out[3], clip[3])
    masks = box_masks(kept, 7, W, H)
    outside = ~torch.nn.functional.max_pool2d(masks.float()[:, None], 2 * 26 + 1, 1, 26)[:, 0].bool()
    assert torch.equal(out[outside], clip[outside])
    assert all((out[t] - clip[t]).abs().max() > 1e-3 for t in (0, 1, 2, 4, 5, 6))


def test_one_clip_per_track_needs_a_video_model():
    from fixtures.fidelity import block_vae, exact_model

    clip, detections = clip_of(2)
    empty = empty_conditioning()
    with pytest.raises(ValueError, match="needs a video model"):
        LunaSAM3Detailer().detail(clip, NoiseScaffold(make_scaffold(W, H, 3, 4), W, H, 8, 3), detections,
                                  exact_model("local"), empty, empty, block_vae(), **SETTINGS,
                                  clip_sampling="one clip per track (video model)")


@pytest.mark.parametrize("mode", ["frames (image model)", "one clip per track (video model)"])
def test_progress_counts_frames_times_steps_and_cancel_stops_within_one_step(mode):
    """The bar's total is frames x steps in both modes and it ends full; Cancel (the interrupt flag, raised through the
    progress hook as the server does) stops at the first step, the input untouched."""
    import comfy.model_management as mm
    import comfy.utils

    clip, detections = clip_of(5)
    before = clip.clone()
    model, vae, empty = exact_video_model(), block_video_vae(), empty_conditioning()
    seen = []

    def count(value, total, preview, node_id=None):
        seen.append((value, total))

    comfy.utils.set_progress_bar_global_hook(count)
    try:
        detail(clip, detections, model, vae, empty, empty, clip_sampling=mode, steps=3, sampler_name="euler")
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert seen and {total for _, total in seen} == {5 * 3} and seen[-1][0] == 5 * 3

    steps = []

    def cancel(value, total, preview, node_id=None):
        steps.append(value)
        mm.interrupt_current_processing(True)
        mm.throw_exception_if_processing_interrupted()

    comfy.utils.set_progress_bar_global_hook(cancel)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            detail(clip, detections, model, vae, empty, empty, clip_sampling=mode, steps=3, sampler_name="euler")
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    assert len(steps) == 1
    assert torch.equal(clip, before)


def test_a_clip_too_long_for_memory_is_sampled_in_cross_faded_windows_close_to_one_clip(monkeypatch):
    """21 frames when one call takes five latent frames (17 frames): two windows overlapping by five frames,
    cross-faded; against the one-clip run of the same exact video model the difference stays a small part of the
    refinement."""
    import comfy.sample

    import luna_semantic_detailer.pipeline.clips as clips_module
    from luna_semantic_detailer.kernels.planning import clip_windows

    assert clip_windows(13, 9, 8, 4) == [(0, 9), (8, 13)] and clip_windows(9, 9, 8, 4) == [(0, 9)]
    assert clip_windows(21, 9, 4, 4) == [(0, 9), (8, 17), (16, 21)]
    clip, detections = clip_of(21, step=0)
    model, vae, empty = exact_video_model("replicate"), block_video_vae(), empty_conditioning()
    options = dict(track_crops="fixed square", clip_sampling="one clip per track (video model)", sampler_name="euler")
    whole = detail(clip, detections, model, vae, empty, empty, **options)[0]
    calls = []
    real = comfy.sample.sample_custom

    def counted(model, noise, *args, **kwargs):
        calls.append(tuple(noise.shape))
        return real(model, noise, *args, **kwargs)

    monkeypatch.setattr(comfy.sample, "sample_custom", counted)
    monkeypatch.setattr(clips_module, "max_clip_frames", lambda model, shape: 5)
    windowed = detail(clip, detections, model, vae, empty, empty, **options)[0]
    assert [shape[2] for shape in calls] == [5, 3]
    assert torch.isfinite(windowed).all() and (whole - clip).abs().mean() > 1e-4
    assert error(windowed, whole, clip) <= 0.06, error(windowed, whole, clip)  # measured 0.034


def test_shards_take_whole_clips_and_the_merge_is_the_local_run():
    """Two tracks over two shards: each shard samples one whole clip (a shard never splits a track's frames), and
    the merge of both, the worker's through an 8-bit PNG, is the local run within 1/255."""
    from test_shards import collected

    from luna_semantic_detailer.luna_types import Detection
    from luna_semantic_detailer.nodes.shards import LunaShardMerge

    clip, detections = clip_of(5)
    second = [Detection((0.65, 0.1, 0.8, 0.35), None, 1.0, "object", t, 7) for t in range(5)]
    detections = detections.with_detections([*detections.detections, *second])
    model, vae, empty = exact_video_model(), block_video_vae(), empty_conditioning()
    options = dict(clip_sampling="one clip per track (video model)")
    local = detail(clip, detections, model, vae, empty, empty, **options)[0]
    shards, plan = collected(lambda i, n: detail(clip, detections, model, vae, empty, empty, shard_index=i,
                                                 shard_count=n, **options)[::2], 2)
    owners = {plan.regions[i].track: set() for i in range(len(plan.regions))}
    for i, owner in enumerate(plan.owners):
        owners[plan.regions[i].track].add(owner)
    assert sorted(map(sorted, owners.values())) == [[0], [1]]
    merged = LunaShardMerge().merge(shards, plan, "stop with an error")[0]
    assert (local - clip).abs().max() > 20 / 255
    assert (merged - local).abs().max() <= 1 / 255
    partial = LunaShardMerge().merge(shards[:-1], plan, "sample them here")[0]  # one frame of a clip went missing
    assert (partial - local).abs().max() <= 1 / 255, "the merge samples the missing frame's whole clip again"


@pytest.mark.parametrize("window", [5, 9, 13, 17, 21, 33])
def test_the_windows_cross_fade_weights_sum_to_one_at_every_frame(window):
    """Only neighbouring windows overlap, so the smoothstep ramps across each overlap are a partition of unity: no
    frame comes out brighter or darker for lying in several windows."""
    from luna_semantic_detailer.kernels.compositing import axis_weights
    from luna_semantic_detailer.kernels.planning import clip_windows

    for frames in range(window + 1, 3 * window + 8):
        spans = clip_windows(frames, window, 8, 4)
        total = torch.zeros(frames, dtype=torch.float64)
        for (a, b), weight in zip(spans, axis_weights([(a, b - a) for a, b in spans])):
            total[a:b] += weight.double()
        assert torch.allclose(total, torch.ones(frames, dtype=torch.float64), atol=1e-6), (frames, spans)
        assert spans[0][0] == 0 and spans[-1][1] == frames and all(b - a <= window and a % 4 == 0 for a, b in spans)
