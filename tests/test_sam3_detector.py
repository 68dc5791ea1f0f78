"""LunaSAM3Loader → LunaSAM3Detector on a tiny random SAM3, checked against transformers' own Sam3Processor + Sam3Model."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fixtures.tiny_sam3 import reference_processor, shared_tiny
from luna_semantic_detailer import NODE_CLASS_MAPPINGS
from luna_semantic_detailer.daemon.inference import PromptError
from luna_semantic_detailer.luna_types import DETECTION_DATA, SAM3_MODEL
from luna_semantic_detailer.nodes.sam3 import LunaSAM3Detector, LunaSAM3Loader


@pytest.fixture(scope="module")
def tiny():
    return shared_tiny()


@pytest.fixture(scope="module")
def handle(tiny):
    return LunaSAM3Loader().load("model.safetensors", "cpu", "fp32")[0]


@pytest.fixture(scope="module")
def processor():
    return reference_processor()


def _image(seed: int, height: int = 90, width: int = 130) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, height // 10 + 1, width // 10 + 1, generator=g)
    return F.interpolate(base, size=(height, width), mode="bilinear", align_corners=False).movedim(1, -1).clamp(0, 1)


def _run(handle, image, prompts="face, hand", threshold=0.3, max_detections=0, min_area=0.0, detect_resolution=0):
    return LunaSAM3Detector().detect(handle, image, prompts, threshold, max_detections, min_area, detect_resolution)


def _reference(model, processor, image: torch.Tensor, concept: str, threshold: float) -> dict:
    """transformers' pipeline on one image [H, W, 3]: pixel boxes, scores and binary masks above threshold."""
    height, width = image.shape[0], image.shape[1]
    inputs = processor(images=image.movedim(-1, 0), text=concept, do_rescale=False, return_tensors="pt")
    with torch.no_grad():
        outputs = model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                        attention_mask=inputs["attention_mask"])
    return processor.post_process_instance_segmentation(outputs, threshold=threshold, mask_threshold=0.5,
                                                        target_sizes=[(height, width)])[0]


def test_nodes_are_registered_with_tooltips():
    assert NODE_CLASS_MAPPINGS["LunaSAM3Loader"] is LunaSAM3Loader
    assert NODE_CLASS_MAPPINGS["LunaSAM3Detector"] is LunaSAM3Detector
    assert LunaSAM3Loader.RETURN_TYPES == (SAM3_MODEL,)
    assert LunaSAM3Detector.RETURN_TYPES == (DETECTION_DATA, "IMAGE", "MASK")
    for node in (LunaSAM3Loader, LunaSAM3Detector):
        assert node.CATEGORY == "Luna/SAM3" and node.DESCRIPTION
        for name, (_kind, options) in node.INPUT_TYPES()["required"].items():
            assert options.get("tooltip"), name


def test_loader_lists_the_sam3_folder(tiny):
    names = LunaSAM3Loader.INPUT_TYPES()["required"]["checkpoint"][0]
    assert {"model.safetensors", "sam3.pt"} <= set(names)


def test_detections_match_transformers_reference(tiny, handle, processor):
    model, _ = tiny
    image = _image(0)
    threshold = 0.3
    data, _preview, _mask = _run(handle, image, "face, hand", threshold)
    assert data.image_size == (130, 90)
    total = 0
    for concept in ("face", "hand"):
        ref = _reference(model, processor, image[0], concept, threshold)
        ours = sorted((d for d in data.detections if d.label == concept), key=lambda d: -d.score)
        order = torch.argsort(ref["scores"], descending=True)
        assert len(ours) == len(order), concept
        total += len(ours)
        for det, i in zip(ours, order.tolist()):
            assert det.score == pytest.approx(float(ref["scores"][i]), abs=1e-5)
            pixel_box = torch.tensor(det.box) * torch.tensor([130, 90, 130, 90])
            torch.testing.assert_close(pixel_box, ref["boxes"][i].clamp(min=0).minimum(torch.tensor([130, 90, 130, 90.0])),
                                       atol=1e-3, rtol=0)
            assert det.mask.shape == (90, 130)
            assert (det.mask == ref["masks"][i].float()).float().mean() > 0.999
    assert 0 < total < 2 * model.config.detr_decoder_config.num_queries


def test_output_contract_boxes_sorted_thresholds_and_limit(handle):
    image = torch.cat([_image(1), _image(2)])
    full, _, _ = _run(handle, image, "face, hand, car", threshold=0.2)
    assert len(full) > 6
    for det in full.detections:
        x0, y0, x1, y1 = det.box
        assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
        assert det.score > 0.2 and det.label in {"face", "hand", "car"}
        assert set(det.mask.unique().tolist()) <= {0.0, 1.0}
    for index in (0, 1):
        scores = [d.score for d in full.for_image(index)]
        assert scores == sorted(scores, reverse=True)
    limited, _, _ = _run(handle, image, "face, hand, car", threshold=0.2, max_detections=3)
    for index in (0, 1):
        assert [d.score for d in limited.for_image(index)] == [d.score for d in full.for_image(index)][:3]
    stricter, _, _ = _run(handle, image, "face, hand, car", threshold=0.6)
    assert [d.score for d in stricter.detections] == [d.score for d in full.detections if d.score > 0.6]


def test_batch_gives_per_image_results(handle):
    a, b = _image(3), _image(4)
    both, _, _ = _run(handle, torch.cat([a, b]))
    for index, single in enumerate((a, b)):
        alone, _, _ = _run(handle, single)
        got = both.for_image(index)
        assert [d.label for d in got] == [d.label for d in alone.detections]
        for x, y in zip(got, alone.detections):
            assert x.box == pytest.approx(y.box, abs=1e-5)
            assert x.score == pytest.approx(y.score, abs=1e-5)
            assert (x.mask == y.mask).float().mean() > 0.999


def test_chunks_that_split_the_batch_give_each_image_its_own_results(handle):
    images = [_image(10 + i) for i in range(5)]
    chunked = handle.detect(torch.cat(images), ["face", "hand"], threshold=0.3, chunk_size=2)
    assert chunked.detections
    for index, single in enumerate(images):
        alone = handle.detect(single, ["face", "hand"], threshold=0.3, chunk_size=2)
        got = chunked.for_image(index)
        assert [d.image_index for d in got] == [index] * len(got)
        assert [d.label for d in got] == [d.label for d in alone.detections]
        for x, y in zip(got, alone.detections):
            assert x.box == pytest.approx(y.box, abs=1e-5)
            assert x.score == pytest.approx(y.score, abs=1e-5)
            assert (x.mask == y.mask).float().mean() > 0.999


def test_deterministic(handle):
    image = _image(5)
    first, p1, m1 = _run(handle, image)
    second, p2, m2 = _run(handle, image)
    assert [(d.label, d.box, d.score) for d in first.detections] == [(d.label, d.box, d.score) for d in second.detections]
    assert torch.equal(p1, p2) and torch.equal(m1, m2)


def test_min_area_drops_small_masks(handle):
    image = _image(6)
    full, _, _ = _run(handle, image, threshold=0.1)
    areas = sorted(float(d.mask.mean()) for d in full.detections)
    cut = areas[len(areas) // 2]
    kept, _, _ = _run(handle, image, threshold=0.1, min_area=cut)
    assert [d.box for d in kept.detections] == [d.box for d in full.detections if float(d.mask.mean()) >= cut]
    assert 0 < len(kept) < len(full)


def test_detect_resolution_downscales_before_detection(handle):
    big = _image(7, height=200, width=300)
    data, preview, mask = _run(handle, big, detect_resolution=120)
    assert data.image_size == (120, 80)
    assert preview.shape == (1, 80, 120, 3) and mask.shape == (1, 200, 300)
    small = F.interpolate(big.movedim(-1, 1), size=(80, 120), mode="bilinear", align_corners=False,
                          antialias=True).movedim(1, -1)
    direct, _, _ = _run(handle, small)
    assert [(d.label, d.box) for d in data.detections] == [(d.label, d.box) for d in direct.detections]
    assert data.meta["source_size"] == (300, 200) and data.meta["checkpoint"] == "model.safetensors"


def test_union_mask_is_max_of_detection_masks(handle):
    image = torch.cat([_image(8), _image(9)])
    data, _, mask = _run(handle, image)
    for index in (0, 1):
        masks = [d.mask for d in data.for_image(index)]
        want = torch.stack(masks).amax(0) if masks else torch.zeros(90, 130)
        assert torch.equal(mask[index], want)


def test_preview_draws_only_where_detected(handle):
    image = _image(10)
    data, preview, _ = _run(handle, image, threshold=0.3)
    assert len(data) > 0
    changed = (preview[0] - image[0]).abs().amax(-1) > 1.5 / 255
    covered = torch.zeros(90, 130, dtype=torch.bool)
    for det in data.detections:
        covered |= det.mask > 0
        x0, y0, x1, y1 = det.box
        left, right = max(0, int(x0 * 130) - 2), max(int(x1 * 130) + 2, int(x0 * 130) + 8 * len(det.label) + 40)
        covered[max(0, int(y0 * 90) - 14):int(y1 * 90) + 2, left:right] = True
    assert changed.any() and not (changed & ~covered).any()


def test_no_detections_is_empty_data_and_untouched_image(handle):
    image = _image(11)
    data, preview, mask = _run(handle, image, threshold=1.0)
    assert len(data) == 0 and data.detections == () and data.labels() == [] and data.for_image(0) == []
    assert data.image_size == (130, 90) and data.meta["prompts"] == ["face", "hand"]
    assert torch.allclose(preview, image, atol=1 / 255) and not mask.any()


@pytest.mark.parametrize("prompts", ["", " , ,\n", ";"])
def test_empty_prompts_are_a_clear_error(handle, prompts):
    with pytest.raises(PromptError, match="face, hand"):
        _run(handle, _image(12), prompts)


def test_prompts_are_split_trimmed_and_deduplicated(handle):
    data, _, _ = _run(handle, _image(13), " face ,\nhand,Face,  red   car ", threshold=0.0)
    assert data.meta["prompts"] == ["face", "hand", "red car"]
    assert data.labels() == ["face", "hand", "red car"]
