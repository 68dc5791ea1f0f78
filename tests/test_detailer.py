"""LunaSAM3Detailer in-process with tiny real-architecture models: untouched pixels, batching, exact noise, edge cases."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline_helpers import encode_prompt, models, sampler_spy, scaffold_for, smooth_canvas
from scipy import ndimage

from fixtures.fidelity import block_vae, exact_model
from luna_semantic_detailer.kernels.masks import feather
from luna_semantic_detailer.kernels.noise import region_seed
from luna_semantic_detailer.kernels.planning import plan_crop
from luna_semantic_detailer.kernels.resample import downscale_noise
from luna_semantic_detailer.luna_types import Detection, DetectionData
from luna_semantic_detailer.nodes.detailer import LunaSAM3Detailer

CROP = "512"
SETTINGS = dict(steps=2, cfg=3.0, sampler_name="euler", scheduler="normal", denoise=0.6, context_padding=1.5,
                mask_dilation=4, mask_feather=8, vision_strength=0.0, labels="")


def ellipse_mask(box, height=96, width=96) -> torch.Tensor:
    """A whole-image mask [height, width] of the ellipse inscribed in a normalized box."""
    x0, y0, x1, y1 = box
    ys = (torch.arange(height) + 0.5) / height
    xs = (torch.arange(width) + 0.5) / width
    cy, cx, ry, rx = (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2, (x1 - x0) / 2
    return ((((ys[:, None] - cy) / ry) ** 2 + ((xs[None] - cx) / rx) ** 2) <= 1).float()


def detections(boxes, labels=None, image_index=0) -> DetectionData:
    labels = labels or ["face"] * len(boxes)
    return DetectionData(tuple(Detection(b, ellipse_mask(b), 0.9, l, image_index) for b, l in zip(boxes, labels)), (96, 96))


def detail(image, data, *, crop=CROP, max_batch=4, scaffold=None, model=None, vae=None, **extra):
    default_model, default_vae = models()
    h, w = image.shape[1:3]
    settings = {**SETTINGS, **extra}
    return LunaSAM3Detailer().detail(
        image, scaffold or scaffold_for(w, h), data, model or default_model, encode_prompt("a face"), encode_prompt(""),
        vae or default_vae, crop_size=crop, max_batch=max_batch, **settings,
    )[:2]


def object_distance(data: DetectionData, height: int, width: int) -> torch.Tensor:
    """Exact Euclidean distance (px, pixel centres) of every canvas pixel to the nearest detection pixel, at canvas size."""
    on = torch.zeros(height, width, dtype=torch.bool)
    for d in data.detections:
        on |= torch.nn.functional.interpolate(d.mask[None, None], size=(height, width), mode="bilinear",
                                              align_corners=False)[0, 0] >= 0.5
    return torch.from_numpy(ndimage.distance_transform_edt(~on.numpy())).float()


FAR_APART = [(0.05, 0.05, 0.12, 0.12), (0.80, 0.05, 0.87, 0.12), (0.05, 0.80, 0.12, 0.87), (0.80, 0.80, 0.87, 0.87)]


def test_pixels_outside_every_feathered_mask_are_bit_identical():
    """Beyond dilation + feather (+ half a pixel, + the blend's cells of up to 3 px) of every mask: the input, bit for bit."""
    image = smooth_canvas(1, 1024, 1024)
    data = detections(FAR_APART[:2])
    out, _ = detail(image, data)
    distance = object_distance(data, 1024, 1024)
    far = distance > SETTINGS["mask_dilation"] + SETTINGS["mask_feather"] + 0.5 + 3
    assert torch.equal(out[0][far], image[0][far])
    assert not torch.equal(out[0][distance <= SETTINGS["mask_dilation"]], image[0][distance <= SETTINGS["mask_dilation"]])


def test_the_visible_profile_is_the_feather_of_the_tooltip():
    """A model that paints each crop one colour: out = input + weight x (colour - input), and the weight is the tooltip's
    smoothstep of the exact Euclidean distance (1 up to the dilation, 0 past dilation + feather), within a blend cell."""
    image = torch.full((1, 1024, 1024, 3), 0.2)
    image[:, :, 512:] = 0.8
    box = (0.4, 0.35, 0.6, 0.6)
    data = detections([box])
    dilation, width = 12, 40
    out, _ = detail(image, data, crop="1024", model=exact_model("tile-constant"), vae=block_vae(), cfg=1.0,
                    mask_dilation=dilation, mask_feather=width)
    colour = out[0, 512, 512, 0]
    assert 0.3 < float(colour) < 0.7
    profile = ((out - image) / (colour - image))[0, ..., 0]
    expected = feather(object_distance(data, 1024, 1024), dilation, width)
    cell = 2  # a 1024 crop's blend weight is taken on 2 px cells
    assert (profile - expected).abs().max() <= 1.5 / width * cell * 1.5


@pytest.mark.parametrize("dilation,width,context", [(256, 512, 1.0), (0, 512, 1.0), (64, 0, 1.0), (-32, 256, 1.5)])
def test_the_blend_reaches_zero_before_the_crop_edge_whatever_the_knobs(dilation, width, context):
    """Dilation and feather far past the crop, a crop that hugs the box: the crop's border ring is still the input."""
    image = smooth_canvas(1, 1536, 1536, seed=4)
    box = (0.35, 0.40, 0.55, 0.62)
    data = detections([box])
    out, _ = detail(image, data, crop="512", context_padding=context, mask_dilation=dilation, mask_feather=width)
    crop = plan_crop(box, 1536, 1536, context, (512,), 8)
    ring = torch.ones(crop.size, crop.size, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    inside = out[0, crop.y:crop.y + crop.size, crop.x:crop.x + crop.size]
    before = image[0, crop.y:crop.y + crop.size, crop.x:crop.x + crop.size]
    assert (inside - before).abs()[ring].max() < 2e-3
    outside = torch.ones(1536, 1536, dtype=torch.bool)
    outside[crop.y:crop.y + crop.size, crop.x:crop.x + crop.size] = False
    assert torch.equal(out[0][outside], image[0][outside])
    assert not torch.equal(inside, before)


def test_a_one_pixel_mask_repaints_a_small_neighbourhood():
    image = smooth_canvas(1, 1024, 1024, seed=6)
    mask = torch.zeros(96, 96)
    mask[40, 50] = 1
    data = DetectionData((Detection((50 / 96, 40 / 96, 51 / 96, 41 / 96), mask, 1.0, "dot"),), (96, 96))
    out, _ = detail(image, data, mask_dilation=0, mask_feather=4)
    changed = (out != image).any(-1)[0]
    assert changed.any() and torch.isfinite(out).all()
    distance = object_distance(data, 1024, 1024)
    assert distance[changed].max() <= 4 + 0.5 + 3


def test_batch_size_does_not_change_the_canvas_and_counts_sampler_calls():
    image = smooth_canvas(1, 1024, 1024, seed=2)
    data = detections(FAR_APART)
    with sampler_spy() as calls_one:
        one, _ = detail(image, data, max_batch=1)
    with sampler_spy() as calls_three:
        three, _ = detail(image, data, max_batch=3)
    assert len(calls_one) == 4 and len(calls_three) == math.ceil(4 / 3)
    # float32 convolutions round differently at other batch sizes; seen: 2.1e-4 at worst, 2.8e-6 on average where
    # the detailer painted.
    torch.testing.assert_close(one, three, atol=5e-4, rtol=0)
    painted = (one != image).any(-1)
    assert (one - three).abs()[painted].mean() < 3e-5


def test_initial_noise_is_the_exact_scaffold_slice():
    image = smooth_canvas(1, 1024, 1024)
    scaffold = scaffold_for(1024, 1024)
    data = detections(FAR_APART[:3])
    with sampler_spy() as calls:
        detail(image, data, scaffold=scaffold, max_batch=8)
    noise = calls[0]["noise"]
    crops = sorted((plan_crop(d.box, 1024, 1024, 1.5, (512,), 8) for d in data.detections), key=lambda c: (c.x, c.y))
    for crop in crops:
        expected = scaffold.noise[0, :, crop.y // 8:(crop.y + crop.size) // 8, crop.x // 8:(crop.x + crop.size) // 8]
        assert any(torch.equal(n, expected) for n in noise)


def test_crops_larger_than_the_sampling_size_use_the_resampled_slice():
    image = smooth_canvas(1, 1024, 1024)
    scaffold = scaffold_for(1024, 1024)
    box = (0.2, 0.2, 0.7, 0.7)
    data = detections([box])
    with sampler_spy() as calls:
        detail(image, data, scaffold=scaffold, crop="512")
    crop = plan_crop(box, 1024, 1024, 1.5, (512,), 8)
    assert crop.size > crop.sample_size == 512
    region = scaffold.noise[:, :, crop.y // 8:(crop.y + crop.size) // 8, crop.x // 8:(crop.x + crop.size) // 8]
    expected = downscale_noise(region, (64, 64), seed=[region_seed(scaffold.seed, (crop.x, crop.y, crop.size, crop.size))])
    assert torch.equal(calls[0]["noise"], expected)


def test_overlapping_detections_are_sampled_together_from_the_input_in_any_order():
    image = smooth_canvas(1, 1024, 1024, seed=5)
    boxes = [(0.30, 0.30, 0.45, 0.45), (0.40, 0.35, 0.55, 0.50), (0.05, 0.70, 0.15, 0.80)]
    with sampler_spy() as calls:
        a, _ = detail(image, detections(boxes))
    b, _ = detail(image, detections(boxes[::-1]))
    assert torch.equal(a, b)
    assert [call["noise"].shape[0] for call in calls] == [3]


def test_empty_detections_return_the_canvas_unchanged_without_sampling():
    image = smooth_canvas(1, 256, 256)
    with sampler_spy() as calls:
        out, crops = detail(image, DetectionData())
        filtered, _ = detail(image, detections(FAR_APART[:1], ["hand"]), labels="face")
    assert out is image and filtered is image and calls == []
    assert crops.ndim == 4


def test_label_filter_refines_only_the_chosen_labels():
    image = smooth_canvas(1, 1024, 1024)
    data = detections(FAR_APART[:2], ["face", "hand"])
    with sampler_spy() as calls:
        out, crops = detail(image, data, labels="hand")
    assert calls[0]["noise"].shape[0] == 1 and crops.shape[0] == 1
    face = plan_crop(FAR_APART[0], 1024, 1024, 1.5, (512,), 8)
    assert torch.equal(out[0, face.y:face.y + face.size, face.x:face.x + face.size],
                       image[0, face.y:face.y + face.size, face.x:face.x + face.size])


def test_a_batch_of_canvases_with_per_image_detections():
    image = smooth_canvas(2, 768, 768)
    data = DetectionData(detections([FAR_APART[0]]).detections + detections([FAR_APART[3]], image_index=1).detections)
    out, _ = detail(image, data)
    assert out.shape == image.shape
    assert not torch.equal(out[0, :256, :256], image[0, :256, :256])
    assert torch.equal(out[1, :256, :256], image[1, :256, :256])
    assert not torch.equal(out[1, -256:, -256:], image[1, -256:, -256:])


def test_detections_for_a_missing_image_are_a_clear_error():
    image = smooth_canvas(1, 256, 256)
    with pytest.raises(ValueError, match="canvas batch has 1"):
        detail(image, detections([FAR_APART[0]], image_index=3))


def test_each_crop_carries_its_own_clip_vision_tokens():
    from fixtures.tiny_models import tiny_clip_vision
    from luna_semantic_detailer.pipeline.anchoring import encode, vision_tokens

    image = smooth_canvas(1, 1024, 1024, seed=9)
    image[:, 512:] = 1 - image[:, 512:]
    data = detections([FAR_APART[0], FAR_APART[3]])
    with sampler_spy() as calls:
        detail(image, data, max_batch=2, vision_strength=0.7, clip_vision=tiny_clip_vision(0))
    (cond,) = [call["positive"][0][0] for call in calls]
    crops = sorted((plan_crop(d.box, 1024, 1024, 1.5, (512,), 8) for d in data.detections), key=lambda c: (c.x, c.y))
    pixels = torch.stack([image[0, c.y:c.y + c.size, c.x:c.x + c.size] for c in crops])
    expected = 0.7 * vision_tokens(tiny_clip_vision(0), encode(tiny_clip_vision(0), pixels))
    assert cond.shape[0] == 2
    torch.testing.assert_close(cond[:, 77:], expected.to(cond), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(cond[0, 77:], cond[1, 77:])


def test_a_detection_larger_than_the_canvas_and_one_at_the_edge():
    image = smooth_canvas(1, 384, 320)
    data = DetectionData((Detection((0.0, 0.0, 1.0, 1.0), None, 1.0, "all"), Detection((0.9, 0.9, 1.0, 1.0), None, 1.0, "edge")))
    out, crops = detail(image, data)
    assert out.shape == image.shape and torch.isfinite(out).all()
    for d in data.detections:
        c = plan_crop(d.box, 320, 384, 1.5, (512,), 8)
        assert c.x >= 0 and c.y >= 0 and c.x + c.size <= 320 and c.y + c.size <= 384
