"""Interop (issue 8): Impact SEGS <-> Luna detections, core BOUNDING_BOX lists, and the detection filter."""
from __future__ import annotations

import math
from collections import namedtuple
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from luna_semantic_detailer.kernels.interop.filter import ORDERS, filter_detections
from luna_semantic_detailer.kernels.interop.segs import SEG, make_crop_region
from luna_semantic_detailer.luna_types import Detection, DetectionData
from luna_semantic_detailer.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from luna_semantic_detailer.nodes.detections import LunaDetectionsFromBoxes
from luna_semantic_detailer.nodes.interop import (
    LunaDetectionFilter,
    LunaDetectionsFromBBoxes,
    LunaDetectionsFromSEGS,
    LunaDetectionsToSEGS,
)

IMPACT_FIELDS = ("cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label", "control_net_wrapper")
# Impact-Pack's own SEG, rebuilt here: the pack must read any object with these fields.
ImpactSEG = namedtuple("SEG", IMPACT_FIELDS, defaults=[None])
NEW_NODES = ("LunaDetectionsFromSEGS", "LunaDetectionsToSEGS", "LunaDetectionsFromBBoxes", "LunaDetectionFilter")

from_segs = LunaDetectionsFromSEGS().convert


def to_segs(*args, **kwargs):
    (segs,) = LunaDetectionsToSEGS().convert(*args, **kwargs)
    return segs


from_bboxes = LunaDetectionsFromBBoxes().convert
from_typed = LunaDetectionsFromBoxes().convert
detection_filter = LunaDetectionFilter().filter


# ------------------------------------------------------------------------------------------------------ helpers


def soft_mask(h: int, w: int, bbox, rng: np.random.Generator) -> np.ndarray:
    """A full-size float32 mask with soft random values inside bbox (and a hole), zero outside."""
    x1, y1, x2, y2 = bbox
    mask = np.zeros((h, w), dtype=np.float32)
    mask[y1:y2, x1:x2] = rng.uniform(0.05, 1.0, size=(y2 - y1, x2 - x1)).astype(np.float32)
    mask[y1, x1] = 0.0
    return mask


def impact_seg(canvas: np.ndarray, bbox, crop_region, confidence, label, *, numpy_slice=False) -> ImpactSEG:
    """A SEG as Impact's detectors make it: the mask cut at crop_region (zeros where the region leaves the canvas,
    or, with numpy_slice, only the in-canvas part as numpy slicing gives it)."""
    h, w = canvas.shape
    x1, y1, x2, y2 = crop_region
    if numpy_slice:
        cropped = canvas[max(y1, 0) : y2, max(x1, 0) : x2].copy()
    else:
        cropped = np.zeros((y2 - y1, x2 - x1), dtype=np.float32)
        tx1, ty1, tx2, ty2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        cropped[ty1 - y1 : ty2 - y1, tx1 - x1 : tx2 - x1] = canvas[ty1:ty2, tx1:tx2]
    return ImpactSEG(None, cropped, confidence, list(crop_region), np.array(bbox, dtype=np.float32), label, None)


def stored(canvas: np.ndarray) -> np.ndarray:
    """A soft mask as an import keeps it: rounded to float16 (compact_mask), read back as float32."""
    return canvas.astype(np.float16).astype(np.float32)


def canvas_of(seg, h: int, w: int) -> np.ndarray:
    """The full-size mask of a SEG whose crop region lies inside the canvas."""
    x1, y1, x2, y2 = seg.crop_region
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, seg.crop_region
    out = np.zeros((h, w), dtype=np.float32)
    out[y1:y2, x1:x2] = seg.cropped_mask
    return out


def hand_segs(h: int, w: int, seed: int):
    """Hand-made SEGS of an h x w image: a centred object, one at the bottom-right corner, and one whose crop region
    leaves the canvas on the top-left (as a detector hook or crop_factor > image would make it)."""
    rng = np.random.default_rng(seed)
    boxes = [
        (w // 4, h // 4, w // 4 + max(w // 3, 2), h // 4 + max(h // 3, 2)),
        (w - max(w // 5, 2), h - max(h // 6, 2), w, h),
        (0, 0, max(w // 6, 2), max(h // 5, 2)),
    ]
    canvases = [soft_mask(h, w, b, rng) for b in boxes]
    confidences = [np.float32(0.91), np.array([0.42], dtype=np.float32), torch.tensor(0.77)]
    segs = []
    for n, (box, canvas, conf) in enumerate(zip(boxes, canvases, confidences)):
        if n == 2:
            region = (box[0] - 7, box[1] - 5, box[2] + 9, box[3] + 4)
        else:
            region = make_crop_region(w, h, box, 2.0)
        segs.append(impact_seg(canvas, box, region, conf, ("face", "hand", None)[n]))
    return ((h, w), segs), boxes, canvases


SIZES = [(48, 64), (91, 37), (128, 128), (33, 200), (17, 9)]


# ---------------------------------------------------------------------------------------------- SEGS round trips


@pytest.mark.parametrize("h,w", SIZES)
def test_segs_round_trip_keeps_boxes_and_masks(h, w):
    segs, boxes, canvases = hand_segs(h, w, seed=h * 1000 + w)
    (data,) = from_segs(segs, image_index=0)
    assert data.image_size == (w, h) and len(data) == 3
    for det, box, canvas in zip(data.detections, boxes, canvases):
        assert det.box == pytest.approx((box[0] / w, box[1] / h, box[2] / w, box[3] / h), abs=1e-7)
        assert det.mask.shape == (h, w) and det.mask.dtype == torch.float16
        np.testing.assert_array_equal(det.mask.float().numpy(), stored(canvas))
    assert [d.label for d in data.detections] == ["face", "hand", ""]
    assert [d.score for d in data.detections] == pytest.approx([0.91, 0.42, 0.77], abs=1e-6)

    (shape, items) = to_segs(data, image_index=0, crop_factor=3.0)
    assert tuple(shape) == (h, w) and len(items) == 3
    for seg, box, canvas, det in zip(items, boxes, canvases, data.detections):
        assert type(seg).__name__ == "SEG" and seg._fields == IMPACT_FIELDS
        assert max(abs(a - b) for a, b in zip(seg.bbox, box)) <= 1
        assert seg.cropped_mask.dtype == np.float32
        x1, y1, x2, y2 = seg.crop_region
        assert seg.cropped_mask.shape == (y2 - y1, x2 - x1)
        assert x1 <= seg.bbox[0] and y1 <= seg.bbox[1] and seg.bbox[2] <= x2 and seg.bbox[3] <= y2
        np.testing.assert_array_equal(canvas_of(seg, h, w), stored(canvas))
        assert float(seg.confidence) == pytest.approx(det.score)
        assert seg.cropped_image is None and seg.control_net_wrapper is None

    # and back again: Luna -> SEGS -> Luna is the identity on boxes and masks
    (again,) = from_segs((shape, items))
    for a, b in zip(again.detections, data.detections):
        assert a.box == pytest.approx(b.box, abs=0.5 / min(w, h))
        assert torch.equal(a.mask, b.mask)


def test_segs_round_trip_keeps_the_original_crop_when_the_factor_matches():
    h, w = 96, 80
    segs, _, _ = hand_segs(h, w, seed=3)
    (data,) = from_segs(segs)
    _, items = to_segs(data, crop_factor=2.0)
    for original, seg in zip(segs[1][:2], items[:2]):
        assert list(seg.crop_region) == list(original.crop_region)
        np.testing.assert_array_equal(seg.cropped_mask, stored(original.cropped_mask))


def test_numpy_sliced_crop_at_the_canvas_edge_is_accepted():
    h, w = 40, 50
    rng = np.random.default_rng(1)
    box = (38, 30, 50, 40)
    canvas = soft_mask(h, w, box, rng)
    seg = impact_seg(canvas, box, (30, 25, 58, 45), 0.5, "x", numpy_slice=True)
    assert seg.cropped_mask.shape == (15, 20)
    (data,) = from_segs(((h, w), [seg]))
    np.testing.assert_array_equal(data.detections[0].mask.float().numpy(), stored(canvas))


def test_duck_typed_seg_and_confidence_kinds():
    mask = torch.ones(1, 4, 6)  # a [1, h, w] tensor
    items = [
        SimpleNamespace(cropped_image=None, cropped_mask=mask, confidence=torch.tensor([0.25]), crop_region=(2, 3, 8, 7), bbox=(3, 4, 7, 6), label="a", control_net_wrapper=None),
        SimpleNamespace(cropped_image=None, cropped_mask=None, confidence=None, crop_region=(0, 0, 4, 4), bbox=[1.0, 1.0, 3.0, 3.0], label=None, control_net_wrapper=None),
        SimpleNamespace(cropped_image=None, cropped_mask=np.full((4, 6), 255, np.uint8), confidence=np.float64(0.5), crop_region=[2, 3, 8, 7], bbox=(3, 4, 7, 6), label="b", control_net_wrapper=None),
    ]
    (data,) = from_segs(((10, 12), items), image_index=2)
    a, b, c = data.detections
    assert (a.score, b.score, c.score) == pytest.approx((0.25, 1.0, 0.5))
    assert a.mask[3:7, 2:8].eq(1).all() and a.mask.sum() == 24 and torch.equal(a.mask, c.mask)
    assert b.mask is None and b.label == "" and b.box == pytest.approx((1 / 12, 1 / 10, 3 / 12, 3 / 10))
    assert {d.image_index for d in data.detections} == {2}
    _, segs = to_segs(data, image_index=2, crop_factor=1.0)
    assert segs[1].cropped_mask.sum() == 4  # a box-only detection exports its box as the mask
    assert to_segs(data, image_index=0)[1] == []


def test_to_segs_with_image_gives_cropped_images_at_the_image_size():
    det = Detection(box=(0.25, 0.25, 0.5, 0.5), mask=None, score=0.8, label="face")
    data = DetectionData((det,), image_size=(64, 64))
    image = torch.rand(1, 128, 96, 3)
    (shape, items) = to_segs(data, crop_factor=1.5, image=image)
    assert tuple(shape) == (128, 96)
    seg = items[0]
    assert list(seg.bbox) == [24, 32, 48, 64]
    x1, y1, x2, y2 = seg.crop_region
    assert torch.equal(seg.cropped_image, image[:, y1:y2, x1:x2, :])


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 300),
    st.integers(1, 300),
    st.data(),
    st.floats(1.0, 6.0),
)
def test_crop_region_holds_the_box_inside_the_image(w, h, data, factor):
    x1 = data.draw(st.integers(0, w))
    x2 = data.draw(st.integers(x1, w))
    y1 = data.draw(st.integers(0, h))
    y2 = data.draw(st.integers(y1, h))
    cx1, cy1, cx2, cy2 = make_crop_region(w, h, (x1, y1, x2, y2), factor)
    assert 0 <= cx1 <= x1 and x2 <= cx2 <= w and 0 <= cy1 <= y1 and y2 <= cy2 <= h
    assert cx2 - cx1 == min(w, max(math.ceil((x2 - x1) * factor - 1e-9), 1))
    assert cy2 - cy1 == min(h, max(math.ceil((y2 - y1) * factor - 1e-9), 1))


def impact_crop_region(w, h, bbox, factor):
    """Impact-Pack's crop region, as its utils describe it: the box scaled about its centre, start truncated to int,
    moved back inside the image when it starts before 0 or ends past the edge, and cut only when larger than the image."""
    out = []
    for lo, hi, limit in ((bbox[0], bbox[2], w), (bbox[1], bbox[3], h)):
        size = (hi - lo) * factor
        start = int(lo + (hi - lo) / 2 - size / 2)
        if start < 0:
            out.append((0, int(min(limit, size))))
        elif start + size > limit:
            out.append((int(max(0, limit - size)), limit))
        else:
            out.append((start, int(min(limit, start + size))))
    (x1, x2), (y1, y2) = out
    return x1, y1, x2, y2


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 300), st.integers(2, 300), st.data(), st.sampled_from([1.0, 2.0, 3.0, 4.0]))
def test_crop_region_matches_impact_for_whole_factors(w, h, data, factor):
    x1 = data.draw(st.integers(0, w - 1))
    x2 = data.draw(st.integers(x1 + 1, w))
    y1 = data.draw(st.integers(0, h - 1))
    y2 = data.draw(st.integers(y1 + 1, h))
    assert make_crop_region(w, h, (x1, y1, x2, y2), factor) == impact_crop_region(w, h, (x1, y1, x2, y2), factor)


def test_empty_segs_is_empty_detection_data():
    (data,) = from_segs(((30, 40), []))
    assert len(data) == 0 and data.image_size == (40, 30)
    assert to_segs(data) == ((30, 40), [])


def good_seg(**changes):
    fields = dict(cropped_image=None, cropped_mask=np.ones((4, 4), np.float32), confidence=0.9, crop_region=[0, 0, 4, 4], bbox=[1, 1, 3, 3], label="a", control_net_wrapper=None)
    fields.update(changes)
    return ImpactSEG(**fields)


@pytest.mark.parametrize(
    "segs, message",
    [
        ([good_seg()], "expected SEGS as"),
        (((8, 8), [good_seg()], "extra"), "length 3"),
        ("SEGS", "expected SEGS as"),
        (((8,), [good_seg()]), "image shape"),
        (((0, 8), [good_seg()]), "positive integers"),
        (((8, 8), None), "SEGS items"),
        (((8, 8), [good_seg(bbox=[1, float("nan"), 3, 3])]), "NaN"),
        (((8, 8), [good_seg(bbox=[3, 1, 1, 3])]), "negative size"),
        (((8, 8), [good_seg(bbox=[1, 1, 3])]), "4 finite numbers"),
        (((8, 8), [good_seg(crop_region=[0, 0, 5, 4])]), "crop region's size"),
        (((8, 8), [good_seg(confidence=float("nan"))]), "confidence"),
        (((8, 8), [good_seg(confidence=np.array([0.1, 0.2]))]), "confidence"),
        (((8, 8), [good_seg(cropped_mask=np.ones((2, 4, 4)))]), "2-D mask"),
        (((8, 8), [(None, None, 0.9)]), "expected an Impact SEG"),
    ],
)
def test_malformed_segs_raise_clear_errors(segs, message):
    with pytest.raises(ValueError, match=message) as info:
        from_segs(segs)
    assert "expected" in str(info.value)


def test_to_segs_errors():
    det = Detection(box=(0.1, 0.1, 0.2, 0.2), mask=None)
    with pytest.raises(ValueError, match="image_size"):
        to_segs(DetectionData((det,)))
    with pytest.raises(ValueError, match="NaN"):
        to_segs(DetectionData((Detection(box=(0.1, math.nan, 0.2, 0.2), mask=None),), image_size=(8, 8)))
    with pytest.raises(ValueError, match="image batch has 2 images"):
        to_segs(DetectionData((det,), image_size=(8, 8)), image_index=3, image=torch.zeros(2, 8, 8, 3))
    with pytest.raises(ValueError, match="crop_factor"):
        to_segs(DetectionData((det,), image_size=(8, 8)), crop_factor=0.5)


# ------------------------------------------------------------------------------------------------ BOUNDING_BOX


def test_flat_bounding_box_list_gives_hand_computed_boxes():
    bboxes = [{"x": 10, "y": 20, "width": 30, "height": 40, "score": 0.9}, {"x": -0.5, "y": 0, "width": 100.9, "height": 5, "label": "sky"}]
    (data,) = from_bboxes(bboxes, 100, 80, "auto", "person")
    a, b = data.detections
    assert data.image_size == (100, 80)
    assert a.box == pytest.approx((0.10, 0.25, 0.40, 0.75)) and a.score == pytest.approx(0.9) and a.label == "person"
    assert b.box == pytest.approx((0.0, 0.0, 1.0, 0.0625)) and b.score == 1.0 and b.label == "sky"  # half a pixel over: clipped
    assert a.mask is None and a.image_index == b.image_index == 0


def test_per_image_lists_and_image_size_from_image():
    bboxes = [[{"x": 8, "y": 4, "width": 16, "height": 8}], [], [{"x": 0, "y": 32, "width": 64, "height": 32, "score": 0.3}]]
    image = torch.zeros(3, 64, 128, 3)
    (data,) = from_bboxes(bboxes, 1, 1, "auto", "obj", image=image)
    assert data.image_size == (128, 64)
    assert [d.image_index for d in data.detections] == [0, 2]
    assert data.detections[0].box == pytest.approx((8 / 128, 4 / 64, 24 / 128, 12 / 64))
    assert data.detections[1].box == pytest.approx((0.0, 0.5, 0.5, 1.0))


def test_per_object_masks_follow_box_order():
    masks = torch.rand(3, 20, 30)
    bboxes = [{"x": 0, "y": 0, "width": 10, "height": 10}, {"x": 10, "y": 5, "width": 10, "height": 10}, {"x": 20, "y": 10, "width": 10, "height": 10}]
    (data,) = from_bboxes(bboxes, 30, 20, "auto", "", mask=masks)
    for k, det in enumerate(data.detections):
        assert torch.equal(det.mask, masks[k])


def test_union_mask_is_cut_by_each_box():
    union = torch.zeros(1, 20, 30)
    union[0, 2:8, 1:9] = 1.0
    union[0, 10:18, 15:28] = 0.5
    bboxes = [{"x": 1, "y": 2, "width": 8, "height": 6}, {"x": 15, "y": 10, "width": 13, "height": 8}]
    (data,) = from_bboxes(bboxes, 30, 20, "auto", "", mask=union)
    expected = torch.zeros(2, 20, 30)
    expected[0, 2:8, 1:9] = 1.0
    expected[1, 10:18, 15:28] = 0.5
    for det, exp in zip(data.detections, expected):
        assert torch.equal(det.mask, exp)
    # a union at twice the resolution is cut by the same (normalized) boxes
    (data2,) = from_bboxes(bboxes, 30, 20, "union (cut by box)", "", mask=union.repeat_interleave(2, 1).repeat_interleave(2, 2))
    for det, exp in zip(data2.detections, expected):
        assert torch.equal(det.mask, exp.repeat_interleave(2, 0).repeat_interleave(2, 1))
    # one box, one mask: "auto" reads it per object, the union mode cuts it
    (single,) = from_bboxes(bboxes[:1], 30, 20, "auto", "", mask=union)
    (cut,) = from_bboxes(bboxes[:1], 30, 20, "union (cut by box)", "", mask=union)
    assert torch.equal(single.detections[0].mask, union[0]) and torch.equal(cut.detections[0].mask, expected[0])


@pytest.mark.parametrize(
    "bboxes, kwargs, message",
    [
        ([{"x": 1, "y": 1, "width": -3, "height": 2}], {}, "negative size"),
        ([{"x": float("nan"), "y": 1, "width": 3, "height": 2}], {}, "NaN"),
        ([{"x": 1, "y": 1, "width": 3}], {}, "no height"),
        ("boxes", {}, "BOUNDING_BOX is a str"),
        ([[{"x": 1, "y": 1, "width": 3, "height": 2}], 5], {}, "contains a int"),
        ([{"x": 1, "y": 1, "width": 3, "height": 2}] * 3, {"mask": torch.zeros(2, 8, 8)}, "2 masks for 3 boxes"),
        ([{"x": 1, "y": 1, "width": 3, "height": 2}] * 3, {"mask": torch.zeros(2, 8, 8), "mask_mode": "per object"}, "one mask per box"),
    ],
)
def test_malformed_bounding_boxes_raise_clear_errors(bboxes, kwargs, message):
    kwargs = {"mask_mode": "auto", **kwargs}
    with pytest.raises(ValueError, match=message) as info:
        from_bboxes(bboxes, 8, 8, label="", **kwargs)
    assert "expected" in str(info.value)


# ------------------------------------------------------------------------------- pixel boxes must fit their image


BOX_4K = {"x": 800, "y": 600, "width": 900, "height": 700}  # a box of a 3840x2160 image


def test_a_4k_box_on_the_default_size_is_an_error_naming_the_size_the_box_and_the_fix():
    required = LunaDetectionsFromBBoxes.INPUT_TYPES()["required"]
    width, height = required["image_width"][1]["default"], required["image_height"][1]["default"]
    assert (width, height) == (1024, 1024)
    with pytest.raises(ValueError) as info:
        from_bboxes([BOX_4K], width, height, "auto", "")
    text = str(info.value)
    assert "1024x1024" in text and "{'x': 800, 'y': 600, 'width': 900, 'height': 700}" in text
    assert "x 800..1700, y 600..1300" in text and "by 676 px" in text
    assert "Connect the image" in text and "image_width and image_height" in text
    (data,) = from_bboxes([BOX_4K], width, height, "auto", "", image=torch.zeros(1, 2160, 3840, 3))
    assert data.detections[0].box == pytest.approx((800 / 3840, 600 / 2160, 1700 / 3840, 1300 / 2160))


# A box may overhang by half a pixel (rounding; clipped), not more, on every side.
OVERHANGS = [((-0.5, 0, 10, 10), True), ((-0.51, 0, 10, 10), False), ((0, -0.5, 10, 10), True),
             ((0, -0.6, 10, 10), False), ((30, 0, 40.5, 10), True), ((30, 0, 40.6, 10), False),
             ((0, 10, 10, 20.5), True), ((0, 10, 10, 20.51), False)]


def overhang_case(box, fits, convert):
    """`convert` of box (x1, y1, x2, y2) px on a 40x20 image: the clipped normalized box, or the error's text."""
    if fits:
        x1, y1, x2, y2 = box
        return convert(box) == pytest.approx((max(x1, 0) / 40, max(y1, 0) / 20, min(x2, 40) / 40, min(y2, 20) / 20))
    with pytest.raises(ValueError, match=r"does not fit the 40x20 \(width x height\) image") as info:
        convert(box)
    return "spans x" in str(info.value)


@pytest.mark.parametrize("box, fits", OVERHANGS)
def test_bounding_boxes_fit_to_half_a_pixel(box, fits):
    x1, y1, x2, y2 = box
    item = {"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1}
    assert overhang_case(box, fits, lambda b: from_bboxes([item], 40, 20, "auto", "")[0].detections[0].box)


@pytest.mark.parametrize("box, fits", OVERHANGS)
def test_typed_pixel_boxes_fit_to_half_a_pixel(box, fits):
    line = ", ".join(f"{v:g}" for v in box)
    assert overhang_case(box, fits, lambda b: from_typed(line, "pixels", "", 40, 20, 0)[0].detections[0].box)


@pytest.mark.parametrize("box, fits", OVERHANGS)
def test_seg_bboxes_fit_to_half_a_pixel(box, fits):
    seg = good_seg(bbox=list(box), crop_region=[0, 0, 40, 20], cropped_mask=np.ones((20, 40), np.float32))
    assert overhang_case(box, fits, lambda b: from_segs(((20, 40), [seg]))[0].detections[0].box)


def test_typed_pixel_boxes_off_the_image_name_the_line_and_the_fix():
    with pytest.raises(ValueError) as info:
        from_typed("0.1, 0.1, 0.2, 0.2\n800, 600, 1700, 1300, face", "pixels", "", 1024, 1024, 0)
    text = str(info.value)
    assert "box line 2 ('800, 600, 1700, 1300, face')" in text and "1024x1024" in text
    assert "image_width and image_height" in text and "normalized units" in text


def test_segs_of_a_4k_image_labelled_1024_are_an_error():
    seg = good_seg(bbox=[800, 600, 1700, 1300], crop_region=[350, 250, 2150, 1650], cropped_mask=np.ones((1400, 1800), np.float32))
    with pytest.raises(ValueError) as info:
        from_segs(((1024, 1024), [seg]))
    text = str(info.value)
    assert "SEG 0 bbox spans x 800..1700, y 600..1300" in text and "1024x1024" in text and "SEGS made on this image" in text


def test_a_seg_mask_reaching_past_the_image_is_an_error_an_empty_margin_is_not():
    crop = np.zeros((10, 10), np.float32)
    crop[2:8, 5:8] = 1.0  # the object, at x 0..3 of the image: the crop region starts 5 px left of the image
    (data,) = from_segs(((20, 30), [good_seg(bbox=[0, 2, 3, 8], crop_region=[-5, 0, 5, 10], cropped_mask=crop)]))
    expected = torch.zeros(20, 30, dtype=torch.bool)
    expected[2:8, 0:3] = True
    assert torch.equal(data.detections[0].mask, expected)
    crop[2:8, 3:5] = 1.0  # now the mask reaches 2 px beyond the left edge
    with pytest.raises(ValueError, match=r"reaches outside the 30x20 .* 12 of its mask pixels lie beyond the edge"):
        from_segs(((20, 30), [good_seg(bbox=[0, 2, 3, 8], crop_region=[-5, 0, 5, 10], cropped_mask=crop)]))


# ------------------------------------------------------------------------------ imported masks are stored small


def test_segs_masks_are_one_byte_a_pixel_when_binary_and_two_when_soft():
    h, w = 2160, 3840
    binary = np.ones((200, 300), np.float32)
    soft = np.linspace(0, 1, 200 * 300, dtype=np.float32).reshape(200, 300)
    items = [good_seg(bbox=[100 * k, 100, 100 * k + 300, 300], crop_region=[100 * k, 100, 100 * k + 300, 300],
                      cropped_mask=soft if k % 2 else binary) for k in range(10)]
    (data,) = from_segs(((h, w), items))
    for k, det in enumerate(data.detections):
        assert det.mask.shape == (h, w)
        assert det.mask.dtype == (torch.float16 if k % 2 else torch.bool)
        assert det.mask.nbytes == h * w * (2 if k % 2 else 1)  # a float32 mask would be 4 * h * w
        window = det.mask[100:300, 100 * k:100 * k + 300].float().numpy()
        np.testing.assert_allclose(window, soft if k % 2 else binary, atol=2.5e-4, rtol=0)
        assert float(det.mask.float().sum()) == pytest.approx(float(window.sum()))


def test_per_object_masks_are_views_and_cut_union_masks_are_compact():
    masks = (torch.rand(3, 20, 30) > 0.5).float()
    bboxes = [{"x": 10 * k, "y": 0, "width": 10, "height": 20} for k in range(3)]
    (data,) = from_bboxes(bboxes, 30, 20, "auto", "", mask=masks)
    assert all(d.mask.untyped_storage().data_ptr() == masks.untyped_storage().data_ptr() for d in data.detections)
    (cut,) = from_bboxes(bboxes, 30, 20, "union (cut by box)", "", mask=masks[:1])
    for k, det in enumerate(cut.detections):
        assert det.mask.dtype == torch.bool
        expected = torch.zeros(20, 30)
        expected[:, 10 * k:10 * k + 10] = masks[0, :, 10 * k:10 * k + 10]
        assert torch.equal(det.mask.float(), expected)


# ------------------------------------------------------------------------------------------------------- filter


def reference_filter(dets, labels, smin, smax, amin, amax, k, by, order):
    """The filter written out plainly: loops, selection of maxima, insertion sort."""
    wanted = [part.strip().lower() for part in labels.split(",") if part.strip()]

    def area(d):
        return max(0.0, d.box[2] - d.box[0]) * max(0.0, d.box[3] - d.box[1])

    kept = []
    for i, d in enumerate(dets):
        if wanted and d.label.strip().lower() not in wanted:
            continue
        if d.score < smin or d.score > smax or area(d) < amin or area(d) > amax:
            continue
        kept.append(i)
    if k > 0:
        measure = (lambda d: d.score) if by == "score" else area
        chosen = []
        for image in sorted({dets[i].image_index for i in kept}):
            left = [i for i in kept if dets[i].image_index == image]
            for _ in range(min(k, len(left))):
                best = left[0]
                for i in left:
                    if measure(dets[i]) > measure(dets[best]):
                        best = i
                chosen.append(best)
                left.remove(best)
        kept = [i for i in kept if i in chosen]

    def before(a, b):  # strictly before
        if order == "score desc":
            return a.score > b.score
        if order == "area desc":
            return area(a) > area(b)
        if order == "left-to-right":
            return (a.box[0], a.box[1]) < (b.box[0], b.box[1])
        if order == "top-to-bottom":
            return (a.box[1], a.box[0]) < (b.box[1], b.box[0])
        return False

    result = []
    for i in kept:
        pos = len(result)
        while pos > 0 and before(dets[i], result[pos - 1]):
            pos -= 1
        result.insert(pos, dets[i])
    rejected = [d for i, d in enumerate(dets) if i not in kept]
    return result, rejected


coords = st.integers(0, 10).map(lambda v: v / 10)


@st.composite
def detections(draw):
    x0, x1 = sorted((draw(coords), draw(coords)))
    y0, y1 = sorted((draw(coords), draw(coords)))
    assume(x0 < x1 and y0 < y1)
    score = draw(st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.floats(0, 1)))
    label = draw(st.sampled_from(["face", "hand", "Face ", "person", ""]))
    return Detection(box=(x0, y0, x1, y1), mask=None, score=score, label=label, image_index=draw(st.integers(0, 2)))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(detections(), max_size=14),
    st.sampled_from(["", "face", "face, hand", " HAND ,person,", "cat"]),
    st.tuples(st.sampled_from([0.0, 0.25, 0.4]), st.sampled_from([0.5, 1.0])),
    st.tuples(st.sampled_from([0.0, 0.01, 0.1]), st.sampled_from([0.2, 1.0])),
    st.integers(0, 4),
    st.sampled_from(["score", "area"]),
    st.sampled_from(ORDERS),
)
def test_filter_matches_plain_reference(dets, labels, score_range, area_range, k, by, order):
    expected = reference_filter(dets, labels, *score_range, *area_range, k, by, order)
    assert filter_detections(dets, labels, score_range, area_range, k, by, order) == expected
    data = DetectionData(tuple(dets), image_size=(64, 48), meta={"source": "test"})
    kept, rejected = detection_filter(data, labels, *score_range, *area_range, k, by, order)
    assert list(kept.detections) == expected[0] and list(rejected.detections) == expected[1]
    assert kept.image_size == rejected.image_size == (64, 48) and kept.meta == {"source": "test"}


def test_filter_rejects_bad_ranges():
    with pytest.raises(ValueError, match="min 0.8 > max 0.2"):
        filter_detections([], "", (0.8, 0.2))
    with pytest.raises(ValueError, match="area range"):
        filter_detections([], "", (0.0, 1.0), (0.5, 0.1))
    with pytest.raises(ValueError, match="finite"):
        filter_detections([Detection(box=(0, 0, 1, 1), mask=None, score=math.nan)])


# -------------------------------------------------------------------------------------------------------- nodes


def test_nodes_are_registered_with_tooltips():
    assert NODE_CLASS_MAPPINGS["LunaDetectionsFromMask"].__name__ == "LunaDetectionsFromMask"
    for name in NEW_NODES:
        cls = NODE_CLASS_MAPPINGS[name]
        assert name in NODE_DISPLAY_NAME_MAPPINGS and cls.DESCRIPTION and cls.CATEGORY == "Luna/Detection"
        assert callable(getattr(cls(), cls.FUNCTION)) and len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
        for section in cls.INPUT_TYPES().values():
            for input_name, spec in section.items():
                assert spec[1].get("tooltip"), (name, input_name)
    assert LunaDetectionsFromSEGS.INPUT_TYPES()["required"]["segs"][0] == "SEGS"
    assert LunaDetectionsToSEGS.RETURN_TYPES == ("SEGS",)
    assert LunaDetectionsFromBBoxes.INPUT_TYPES()["required"]["bboxes"][0] == "BOUNDING_BOX"
    assert SEG._fields == IMPACT_FIELDS
