"""Core ComfyUI SAM3 into Luna detections (LunaDetectionsFromCoreSAM3): SAM3_VideoTrack's track data and
SAM3_Detect's boxes and masks.

Track data is made as core makes it (its `pack_masks` where the host has it; on 0.3.75 a packer proven equal to it on
the newer hosts) for squares whose pixels are known, and every detection is checked against a naive per-pixel loop; on
a host with core SAM3 the masks are also checked against core's own SAM3_TrackToMask, as the detailer samples them.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from fixtures.lsd_test_models.tracks import core_pack_masks, moving_squares, pack_bits, square_masks, track_data
from luna_semantic_detailer.kernels.interop.core_sam3 import (detect_to_detections, tracks_to_detections,
                                                              unpack_bits)
from luna_semantic_detailer.kernels.planning import Crop
from luna_semantic_detailer.nodes.interop import LunaDetectionsFromCoreSAM3
from luna_semantic_detailer.pipeline.crops import crop_mask

W, H, FRAMES = 640, 384, 6


def _host_version() -> tuple[int, ...]:
    import comfyui_version

    return tuple(int(p) for p in re.findall(r"\d+", comfyui_version.__version__)[:3])


def core_or_skip(found, what: str):
    """`found` on a host that should have it (0.28 or newer: a failure without it), else a skip."""
    if found is None:
        if _host_version() >= (0, 28):
            pytest.fail(f"ComfyUI {'.'.join(map(str, _host_version()))} should have core {what}")
        pytest.skip(f"ComfyUI {'.'.join(map(str, _host_version()))} has no core {what} (it came with 0.28)")
    return found


def naive_extent(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Normalized (x0, y0, x1, y1) of the on-pixels of one [h, w] mask, by a loop over pixels; None when empty."""
    h, w = mask.shape
    xs, ys = [], []
    for y in range(h):
        for x in range(w):
            if mask[y, x]:
                xs.append(x)
                ys.append(y)
    if not xs:
        return None
    return min(xs) / w, min(ys) / h, (max(xs) + 1) / w, (max(ys) + 1) / h


def clip_masks() -> torch.Tensor:
    return square_masks(moving_squares(FRAMES))


def test_the_test_packer_is_core_pack_masks():
    pack_masks = core_or_skip(core_pack_masks(), "pack_masks (comfy.ldm.sam3.tracker)")
    masks = torch.rand(3, 2, 16, 40, generator=torch.Generator().manual_seed(0)) > 0.5
    assert torch.equal(pack_bits(masks), pack_masks(masks))
    assert torch.equal(unpack_bits(pack_masks(masks)), masks)


def test_unpack_bits_inverts_pack_bits_bit_for_bit():
    masks = torch.rand(2, 5, 8, 24, generator=torch.Generator().manual_seed(1)) > 0.3
    assert torch.equal(unpack_bits(pack_bits(masks)), masks)


def test_every_tracked_object_is_a_detection_in_each_frame_it_is_in():
    masks = clip_masks()
    data = tracks_to_detections(track_data(masks, H, W, scores=[0.9, 0.75]), label=" hand ")
    expected = []
    for frame in range(FRAMES):
        for track in range(masks.shape[1]):
            box = naive_extent(masks[frame, track].numpy())
            if box is not None:
                expected.append((frame, track, box))
    assert [(d.image_index, d.track_id) for d in data.detections] == [(f, t) for f, t, _ in expected]
    for detection, (frame, track, box) in zip(data.detections, expected):
        assert detection.box == pytest.approx(box, abs=1e-7)
        assert torch.equal(detection.mask, masks[frame, track])
        assert detection.score == pytest.approx([0.9, 0.75][track])
        assert detection.label == "hand"
    assert data.image_size == (W, H) and data.meta == {"source": "SAM3_TRACK_DATA", "frames": FRAMES}
    assert data.track_ids() == [0, 1]
    assert sum(d.track_id == 1 for d in data.detections) == FRAMES // 2  # the still square left halfway


def test_the_detailer_sees_the_mask_core_track_to_mask_gives():
    """Each detection's mask, cut at a crop as the detailer cuts it (one sample per pixel), equals core's
    SAM3_TrackToMask output for that object at the frame's full size, under the same crop."""
    import importlib

    nodes_sam3 = core_or_skip(importlib.util.find_spec("comfy_extras.nodes_sam3"), "SAM3 nodes")
    track_to_mask = importlib.import_module(nodes_sam3.name).SAM3_TrackToMask
    masks = clip_masks()
    data = track_data(masks, H, W)
    detections = tracks_to_detections(data)
    crops = (Crop(64, 32, 256, 256), Crop(W - 200, H - 200, 200, 200))
    for track in range(masks.shape[1]):
        core = track_to_mask.execute(data, str(track))[0]
        for d in (d for d in detections.detections if d.track_id == track):
            for crop in crops:
                ours = crop_mask(d, crop, W, H, crop.size)
                reference = core[d.image_index, crop.y:crop.y + crop.size, crop.x:crop.x + crop.size]
                assert torch.isfinite(ours).all()
                assert (ours - reference).abs().max() < 1e-5


def test_nothing_tracked_gives_no_detections_of_that_clip():
    data = tracks_to_detections(track_data(None, H, W, frames=4))
    assert len(data) == 0 and data.image_size == (W, H) and data.meta["frames"] == 4
    zero_objects = {"packed_masks": torch.zeros(4, 0, 8, 8, dtype=torch.uint8), "n_frames": 4, "scores": [],
                    "orig_size": (H, W)}
    assert len(tracks_to_detections(zero_objects)) == 0


@pytest.mark.parametrize("change, message", [
    (lambda t: t.update(packed_masks=t["packed_masks"].float()), "expected bit-packed uint8 masks"),
    (lambda t: t.update(packed_masks=t["packed_masks"][0]), "shape (2, 64, 8); expected bit-packed uint8"),
    (lambda t: t.update(packed_masks=[[1, 2]]), "packed_masks is a list"),
    (lambda t: t.update(n_frames=FRAMES + 1), f"hold {FRAMES} frames but n_frames is {FRAMES + 1}"),
    (lambda t: t.update(orig_size=(H,)), "expected (height, width)"),
    (lambda t: t.update(orig_size=(0, W)), "orig_size height is 0"),
    (lambda t: t.update(scores=[float("nan"), 1.0]), "score of object 0 is nan"),
    (lambda t: t.pop("packed_masks"), "expected SAM3_TRACK_DATA, a dict with packed_masks"),
])
def test_malformed_track_data_is_a_clear_error(change, message):
    data = track_data(clip_masks(), H, W)
    change(data)
    with pytest.raises(ValueError, match=re.escape(message)):
        tracks_to_detections(data)


def test_track_data_of_another_clip_than_the_image_is_a_clear_error():
    data = track_data(clip_masks(), H, W)
    node = LunaDetectionsFromCoreSAM3()
    with pytest.raises(ValueError, match=f"covers {FRAMES} frames but the image has {FRAMES - 1}"):
        node.convert(track_data=data, image=torch.zeros(FRAMES - 1, H, W, 3))
    with pytest.raises(ValueError, match=f"made on {W}x{H} .* the image is {H}x{W}, another aspect"):
        node.convert(track_data=data, image=torch.zeros(FRAMES, W, H, 3))
    (upscaled,) = node.convert(track_data=data, image=torch.zeros(FRAMES, H * 4, W * 4, 3))  # a 4x copy is fine
    assert len(upscaled) == len(tracks_to_detections(data))
    with pytest.raises(ValueError, match="track_data is str"):
        node.convert(track_data="track")
    with pytest.raises(ValueError, match="not both"):
        node.convert(track_data=data, masks=torch.zeros(1, H, W))
    with pytest.raises(ValueError, match="Nothing to convert"):
        node.convert()


def test_without_orig_size_the_image_gives_the_frame_size():
    data = track_data(clip_masks(), H, W)
    del data["orig_size"]
    (detections,) = LunaDetectionsFromCoreSAM3().convert(track_data=data, image=torch.zeros(FRAMES, H, W, 3))
    assert detections.image_size == (W, H)
    with pytest.raises(ValueError, match="no orig_size"):
        tracks_to_detections(data)


# ------------------------------------------------------------------------------------------------- SAM3_Detect


def _placed(box: dict, height: int = H, width: int = W) -> torch.Tensor:
    mask = torch.zeros(height, width)
    mask[box["y"]:box["y"] + box["height"], box["x"]:box["x"] + box["width"]] = 1
    return mask


A = {"x": 40, "y": 30, "width": 100, "height": 60, "score": 0.8}
B = {"x": 300, "y": 200, "width": 120, "height": 90, "score": 0.6}
C = {"x": 500, "y": 10, "width": 60, "height": 60, "score": 0.7}


def _normalized(box: dict) -> tuple[float, float, float, float]:
    return box["x"] / W, box["y"] / H, (box["x"] + box["width"]) / W, (box["y"] + box["height"]) / H


def test_individual_masks_of_two_images_follow_their_boxes():
    """SAM3_Detect with individual_masks: one box list per image, the masks of all images in box order."""
    bboxes = [[A, B], [C]]
    masks = torch.stack([_placed(A), _placed(B), _placed(C)])
    data = detect_to_detections(bboxes, masks, "face", (2, H, W))
    assert [(d.image_index, d.box, d.score) for d in data.detections] == [
        (0, pytest.approx(_normalized(A)), 0.8), (0, pytest.approx(_normalized(B)), 0.6),
        (1, pytest.approx(_normalized(C)), 0.7)]
    for d, m in zip(data.detections, masks):
        assert torch.equal(d.mask.float(), m)
    assert {d.label for d in data.detections} == {"face"} and data.meta == {"source": "SAM3_Detect"}


def test_a_union_mask_per_image_is_cut_by_each_box():
    bboxes = [[A, B], [C]]
    union = torch.stack([_placed(A) + _placed(B), _placed(C)]).clamp(0, 1)
    data = detect_to_detections(bboxes, union, "face", (2, H, W))
    for d, box in zip(data.detections, (A, B, C)):
        assert torch.equal(d.mask.float(), _placed(box))


def test_masks_without_boxes_are_one_detection_each():
    """Point or box prompts: SAM3_Detect gives masks and empty box lists."""
    union = torch.stack([_placed(A), torch.zeros(H, W), _placed(C)])
    data = detect_to_detections([[], [], []], union, "object", (3, H, W))
    assert [(d.image_index, d.box) for d in data.detections] == [(0, pytest.approx(_normalized(A))),
                                                                  (2, pytest.approx(_normalized(C)))]
    one_image = detect_to_detections([[]], torch.stack([_placed(A), _placed(B)]), "object", (1, H, W))
    assert [d.box for d in one_image.detections] == [pytest.approx(_normalized(A)), pytest.approx(_normalized(B))]
    with pytest.raises(ValueError, match="individual_masks off"):
        detect_to_detections([[], []], torch.stack([_placed(A), _placed(B), _placed(C)]), "object", (2, H, W))


def test_detect_outputs_without_an_image_take_the_masks_size_and_nothing_is_an_error():
    data = detect_to_detections([[A]], _placed(A)[None], "face")
    assert data.image_size == (W, H) and data.detections[0].box == pytest.approx(_normalized(A))
    with pytest.raises(ValueError, match="connect the image SAM3_Detect ran on"):
        detect_to_detections([[A]], None, "face")
    assert len(detect_to_detections([[], []], None, "face", (2, H, W))) == 0


def test_boxes_without_area_are_dropped_with_their_masks():
    """A detector may give a box of zero or negative size; it and its individual mask are left out, not an error."""
    flat = {"x": 200, "y": 100, "width": 0, "height": 40, "score": 0.9}
    inverted = {"x": 220, "y": 100, "width": 30, "height": -5, "score": 0.9}
    masks = torch.stack([_placed(A), torch.zeros(H, W), torch.zeros(H, W), _placed(C)])
    data = detect_to_detections([[A, flat], [inverted, C]], masks, "face", (2, H, W))
    assert [(d.image_index, d.box) for d in data.detections] == [(0, pytest.approx(_normalized(A))),
                                                                  (1, pytest.approx(_normalized(C)))]
    assert torch.equal(data.detections[1].mask.float(), _placed(C))


# --------------------------------------------------------------------------------------- through a real server

CLIP_W, CLIP_H, CLIP_FRAMES = 768, 512, 4
DILATION, FEATHER = 4, 8


def clip_prompt() -> dict:
    """Track data of moving squares (LSDTestTrackData) → LunaDetectionsFromCoreSAM3 → LunaSAM3Detailer on the clip's
    frames; the frames, the result and the detections read back exactly."""
    sampler = {"steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal"}
    return {
        "models": {"class_type": "LSDTestModels", "inputs": {"seed": 0, "latent_channels": 4}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["models", 1], "text": "a face"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["models", 1], "text": "blurry"}},
        "frame": {"class_type": "LSDTestCanvas", "inputs": {"width": CLIP_W, "height": CLIP_H, "seed": 3}},
        "frames": {"class_type": "RepeatImageBatch", "inputs": {"image": ["frame", 0], "amount": CLIP_FRAMES}},
        "track": {"class_type": "LSDTestTrackData", "inputs": {"frames": CLIP_FRAMES, "width": CLIP_W, "height": CLIP_H}},
        "luna": {"class_type": "LunaDetectionsFromCoreSAM3", "inputs": {
            "label": "face", "track_data": ["track", 0], "image": ["frames", 0]}},
        "probe": {"class_type": "LSDTestDetectionsProbe", "inputs": {"detection_data": ["luna", 0]}},
        "scaffold": {"class_type": "LunaNoiseScaffold", "inputs": {
            "width": CLIP_W, "height": CLIP_H, "seed": 5, "latent_format": "SD1.5 / SDXL (4 ch, ÷8)", "vae": ["models", 2]}},
        "detail": {"class_type": "LunaSAM3Detailer", "inputs": {
            "image": ["frames", 0], "master_scaffold": ["scaffold", 0], "detection_data": ["luna", 0],
            "model": ["models", 0], "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["models", 2], **sampler,
            "denoise": 0.6, "crop_size": "512", "context_padding": 1.5, "mask_dilation": DILATION,
            "mask_feather": FEATHER, "vision_strength": 0.0, "max_batch": 4, "labels": ""}},
        "before": {"class_type": "LSDTestImageDump", "inputs": {"images": ["frames", 0], "filename_prefix": "before"}},
        "after": {"class_type": "LSDTestImageDump", "inputs": {"images": ["detail", 0], "filename_prefix": "after"}},
    }


def test_core_track_data_drives_the_detailer_frame_by_frame(comfy_server):
    """Each frame is repainted inside its own objects' masks only: outside every mask of a frame (grown by the
    dilation and feather) the frame is bit-exact, and an object that left the clip leaves its old place untouched."""
    from distributed_cluster import load_outputs

    history = comfy_server.run(clip_prompt(), timeout=900)
    detections = history["outputs"]["probe"]["detections"]
    masks = square_masks(moving_squares(CLIP_FRAMES))
    expected = [(f, t) for f in range(CLIP_FRAMES) for t in range(2) if masks[f, t].any()]
    assert [(d["image_index"], d["track_id"]) for d in detections] == expected
    assert {d["label"] for d in detections} == {"face"}
    assert history["outputs"]["probe"]["image_size"] == [[CLIP_W, CLIP_H]]

    arrays = load_outputs(comfy_server, history)
    before, after = arrays["before"], arrays["after"]
    assert before.shape == after.shape == (CLIP_FRAMES, CLIP_H, CLIP_W, 3) and np.isfinite(after).all()
    reach = DILATION + FEATHER + 2
    for frame in range(CLIP_FRAMES):
        union = torch.nn.functional.interpolate(masks[frame].float()[None], size=(CLIP_H, CLIP_W), mode="bilinear",
                                                align_corners=False)[0].amax(0) > 0
        grown = torch.nn.functional.max_pool2d(union.float()[None, None], 2 * reach + 1, 1, reach)[0, 0] > 0
        outside = ~grown.numpy()
        assert np.array_equal(after[frame][outside], before[frame][outside]), f"frame {frame} changed outside its masks"
        inside = union.numpy()
        assert np.abs(after[frame][inside] - before[frame][inside]).mean() > 1e-3, f"frame {frame} not repainted"


def test_boxes_past_the_image_edge_are_clipped_to_it():
    """Core SAM3_Detect does not clip its boxes: an object at the edge gives a box past it (seen with core's model:
    y -55 px); the box is cut to the image, and one wholly outside it is dropped with its mask."""
    past = {"x": 600, "y": -55, "width": 100, "height": 120, "score": 0.4}
    outside = {"x": 700, "y": 10, "width": 50, "height": 50, "score": 0.3}
    masks = torch.stack([_placed({"x": 600, "y": 0, "width": 40, "height": 65}), torch.zeros(H, W)])
    data = detect_to_detections([[past, outside]], masks, "face", (1, H, W))
    (d,) = data.detections
    assert d.box == pytest.approx((600 / W, 0.0, 1.0, 65 / H)) and d.score == pytest.approx(0.4)
    assert torch.equal(d.mask.float(), masks[0])


def test_one_union_mask_per_image_is_not_taken_for_one_mask_per_box():
    """SAM3_Detect's default (individual_masks off) on two images with two faces and none: two union masks and two
    boxes, whose counts agree by chance; each box is cut from its own image's union, so the second face keeps its
    mask instead of taking image 1's empty one."""
    unions = torch.stack([(_placed(A) + _placed(B)).clamp(0, 1), torch.zeros(H, W)])
    data = detect_to_detections([[A, B], []], unions, "face", (2, H, W))
    assert [d.image_index for d in data.detections] == [0, 0]
    for d, box in zip(data.detections, (A, B)):
        assert torch.equal(d.mask.float(), _placed(box))


def test_scores_given_as_a_tensor_are_read():
    data = track_data(clip_masks(), H, W)
    data["scores"] = torch.tensor([0.3, 0.6])
    assert {d.track_id: d.score for d in tracks_to_detections(data).detections} == {0: pytest.approx(0.3),
                                                                                     1: pytest.approx(0.6)}
