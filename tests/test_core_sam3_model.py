"""Real core SAM3 into Luna detections: a tiny random-weight core SAM3.1 (the test node LSDTestCoreSAM3, made as
CheckpointLoaderSimple makes a SAM3 checkpoint's MODEL and CLIP) through core's own CLIPTextEncode, SAM3_Detect,
SAM3_VideoTrack and SAM3_TrackToMask on a real server, then LunaDetectionsFromCoreSAM3 -> LSDTestDetectionsProbe.

What core emits is read back from core's nodes (boxes through PreviewAny, masks dumped as exact floats) in one prompt,
and the conversion of the same (cached) outputs runs in a second one, so that a conversion error leaves core's outputs
readable. Runs on hosts with core SAM3 (ComfyUI 0.28+); on 0.3.75 only the node's registration and its error are tested.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from fixtures.lsd_test_models import NODE_CLASS_MAPPINGS as TEST_NODES
from fixtures.lsd_test_models.core_sam3 import EMBED_DIM, LSDTestCoreSAM3, has_core_sam3

W, H = 384, 256
FRAMES = 4
MAX_OBJECTS = 3
PROMPT = "face:3"
"""Core's prompt syntax: 'face', up to 3 detections (SAM3_Detect keeps one per prompt without the ':3')."""
THRESHOLD = 0.2
"""Seed 0's queries score about 0.17-0.40 on any picture (core_sam3.DECODER_BRANCH_SCALE): several pass."""


def _host_version() -> tuple[int, ...]:
    import comfyui_version

    return tuple(int(p) for p in re.findall(r"\d+", comfyui_version.__version__)[:3])


def _version() -> str:
    return ".".join(map(str, _host_version()))


@pytest.fixture(scope="module")
def core_sam3_host():
    """Passes on a host with core SAM3; skips on one before 0.28; fails on 0.28 or newer without it."""
    if has_core_sam3():
        return
    if _host_version() >= (0, 28):
        pytest.fail(f"ComfyUI {_version()} should have core SAM3 (comfy.ldm.sam3)")
    pytest.skip(f"ComfyUI {_version()} has no core SAM3 (it came with 0.28)")


# ------------------------------------------------------------------------------------------------ in process

def test_the_node_registers_on_every_host():
    assert TEST_NODES["LSDTestCoreSAM3"] is LSDTestCoreSAM3
    assert LSDTestCoreSAM3.RETURN_TYPES == ("MODEL", "CLIP")
    assert LSDTestCoreSAM3.INPUT_TYPES()["required"]["variant"][0] == ["SAM3.1", "SAM3"]


def test_without_core_sam3_the_node_says_what_it_needs():
    if has_core_sam3():
        pytest.skip(f"ComfyUI {_version()} has core SAM3")
    with pytest.raises(RuntimeError, match=re.escape(f"needs core SAM3 (comfy.ldm.sam3, ComfyUI 0.28 or newer); this "
                                                     f"host is ComfyUI")):
        LSDTestCoreSAM3().load(0, "SAM3.1")


def test_a_server_lists_the_node_and_without_core_sam3_running_it_says_why(comfy_server):
    from comfy_server import PromptFailed

    info = comfy_server.get("/object_info/LSDTestCoreSAM3")["LSDTestCoreSAM3"]
    assert info["output"] == ["MODEL", "CLIP"] and info["input"]["required"]["variant"][0] == ["SAM3.1", "SAM3"]
    if has_core_sam3():
        return
    prompt = {"sam": {"class_type": "LSDTestCoreSAM3", "inputs": {"seed": 0, "variant": "SAM3.1"}},
              "show": {"class_type": "PreviewAny", "inputs": {"source": ["sam", 1]}}}
    with pytest.raises(PromptFailed, match=re.escape("needs core SAM3 (comfy.ldm.sam3, ComfyUI 0.28 or newer)")):
        comfy_server.run(prompt, timeout=120)


@pytest.mark.parametrize("variant, image_model", [("SAM3.1", "SAM31"), ("SAM3", "SAM3")])
def test_the_node_gives_what_the_checkpoint_loader_gives_for_a_sam3_checkpoint(core_sam3_host, variant, image_model):
    """A ModelPatcher over model_base.SAM3 of supported_models' SAM3 class, whose weights core's own checkpoint
    detection reads as that class (the key layout of a loaded checkpoint); a CLIP of sam3_clip that encodes a prompt as
    CLIPTextEncode hands it to SAM3_Detect (32 tokens, an attention mask)."""
    import comfy.model_base
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.sd
    import comfy.supported_models
    import comfy.text_encoders.sam3_clip as sam3_clip
    import nodes

    model, clip = LSDTestCoreSAM3().load(0, variant)
    config_class = getattr(comfy.supported_models, image_model)
    assert isinstance(model, comfy.model_patcher.ModelPatcher)
    assert type(model.model) is comfy.model_base.SAM3 and type(model.model.model_config) is config_class
    detected = comfy.model_detection.model_config_from_unet(model.model.diffusion_model.state_dict(), "")
    assert type(detected) is config_class

    assert isinstance(clip, comfy.sd.CLIP)
    assert isinstance(clip.tokenizer, sam3_clip.SAM3TokenizerWrapper)
    assert isinstance(clip.cond_stage_model, sam3_clip.SAM3ClipModelWrapper)
    assert isinstance(clip.cond_stage_model.sam3_clip, sam3_clip.SAM3ClipModel)
    assert sam3_clip.SAM3_CLIP_CONFIG["hidden_size"] == 1024, "the tiny encoder changed core's config"
    ((cond, extra),) = nodes.CLIPTextEncode().encode(clip, "face")[0]
    assert cond.shape == (1, 32, EMBED_DIM) and torch.isfinite(cond).all()
    assert extra["attention_mask"].shape == (1, 32)
    again = LSDTestCoreSAM3().load(0, variant)
    assert again[0] is model and again[1] is clip, "cached per process, as the other test models"


# ------------------------------------------------------------------------------------------- through a server

def _sam3() -> dict:
    return {"sam": {"class_type": "LSDTestCoreSAM3", "inputs": {"seed": 0, "variant": "SAM3.1"}},
            "text": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["sam", 1], "text": PROMPT}}}


def _dump(node: str, mask: list) -> dict:
    return {f"{node}_image": {"class_type": "MaskToImage", "inputs": {"mask": mask}},
            node: {"class_type": "LSDTestImageDump",
                   "inputs": {"images": [f"{node}_image", 0], "filename_prefix": node}}}


def detect_prompt() -> dict:
    """SAM3_Detect with individual masks (refined once by the SAM decoder) and with one union mask (the detector's
    own), on one 384x256 picture; boxes via PreviewAny."""
    prompt = {**_sam3(), "image": {"class_type": "LSDTestCanvas", "inputs": {"width": W, "height": H, "seed": 0}}}
    for kind, individual, refine in (("individual", True, 1), ("union", False, 0)):
        prompt[f"detect_{kind}"] = {"class_type": "SAM3_Detect", "inputs": {
            "model": ["sam", 0], "image": ["image", 0], "conditioning": ["text", 0], "threshold": THRESHOLD,
            "refine_iterations": refine, "individual_masks": individual}}
        prompt[f"boxes_{kind}"] = {"class_type": "PreviewAny", "inputs": {"source": [f"detect_{kind}", 1]}}
        prompt.update(_dump(f"masks_{kind}", [f"detect_{kind}", 0]))
    return prompt


def detect_conversion_prompt() -> dict:
    prompt = detect_prompt()
    for kind in ("individual", "union"):
        prompt[f"luna_{kind}"] = {"class_type": "LunaDetectionsFromCoreSAM3", "inputs": {
            "label": "face", "bboxes": [f"detect_{kind}", 1], "masks": [f"detect_{kind}", 0], "image": ["image", 0]}}
        prompt[f"probe_{kind}"] = {"class_type": "LSDTestDetectionsProbe",
                                   "inputs": {"detection_data": [f"luna_{kind}", 0]}}
    return prompt


def track_prompt() -> dict:
    """SAM3_VideoTrack of 4 different 384x256 frames (text-prompted, detection every 2nd frame, at most 3 objects) and
    SAM3_TrackToMask of each object index it may use."""
    prompt = _sam3()
    for frame in range(FRAMES):
        prompt[f"frame{frame}"] = {"class_type": "LSDTestCanvas",
                                   "inputs": {"width": W, "height": H, "seed": 10 + frame}}
    previous = "frame0"
    for frame in range(1, FRAMES):
        node = "frames" if frame == FRAMES - 1 else f"batch{frame}"
        prompt[node] = {"class_type": "ImageBatch", "inputs": {"image1": [previous, 0], "image2": [f"frame{frame}", 0]}}
        previous = node
    prompt["track"] = {"class_type": "SAM3_VideoTrack", "inputs": {
        "images": ["frames", 0], "model": ["sam", 0], "conditioning": ["text", 0], "detection_threshold": THRESHOLD,
        "max_objects": MAX_OBJECTS, "detect_interval": 2}}
    for k in range(MAX_OBJECTS):
        prompt[f"object{k}"] = {"class_type": "SAM3_TrackToMask", "inputs": {"track_data": ["track", 0],
                                                                             "object_indices": str(k)}}
        prompt.update(_dump(f"object{k}_masks", [f"object{k}", 0]))
    return prompt


def track_conversion_prompt() -> dict:
    prompt = track_prompt()
    prompt["luna"] = {"class_type": "LunaDetectionsFromCoreSAM3", "inputs": {
        "label": "face", "track_data": ["track", 0], "image": ["frames", 0]}}
    prompt["probe"] = {"class_type": "LSDTestDetectionsProbe", "inputs": {"detection_data": ["luna", 0]}}
    return prompt


def _arrays(server, history: dict) -> dict[str, np.ndarray]:
    from distributed_cluster import load_outputs

    return load_outputs(server, history)


def _boxes(history: dict, kind: str) -> list[list[dict]]:
    return json.loads(history["outputs"][f"boxes_{kind}"]["text"][0])


def _run_both(server, core_prompt: dict, conversion_prompt: dict) -> tuple[dict, dict | Exception]:
    """Core's prompt, then at once the conversion of its outputs (ComfyUI keeps the last prompt's outputs only, so
    core's nodes are cached, not run again): (core's history, the conversion's history or its PromptFailed)."""
    from comfy_server import PromptFailed

    core = server.run(core_prompt, timeout=900)
    try:
        return core, server.run(conversion_prompt, timeout=900)
    except PromptFailed as failure:
        return core, failure


@pytest.fixture(scope="module")
def detected(core_sam3_host, comfy_server) -> dict:
    """What core's SAM3_Detect gave (per kind its boxes, one list per image, and masks [N, H, W]) and the conversion's
    history (or its error)."""
    history, converted = _run_both(comfy_server, detect_prompt(), detect_conversion_prompt())
    arrays = _arrays(comfy_server, history)
    return {"converted": converted, **{kind: {"boxes": _boxes(history, kind), "masks": arrays[f"masks_{kind}"][..., 0]}
                                       for kind in ("individual", "union")}}


@pytest.fixture(scope="module")
def tracked(core_sam3_host, comfy_server) -> dict:
    """Core's SAM3_TrackToMask of objects 0..MAX_OBJECTS-1, [objects, frames, H, W] (zeros past the tracked count), and
    the conversion's history (or its error)."""
    history, converted = _run_both(comfy_server, track_prompt(), track_conversion_prompt())
    arrays = _arrays(comfy_server, history)
    return {"converted": converted, "masks": np.stack([arrays[f"object{k}_masks"][..., 0] for k in range(MAX_OBJECTS)])}


def _converted(run: dict) -> dict:
    if isinstance(run["converted"], Exception):
        raise run["converted"]
    return run["converted"]


def test_core_sam3_detect_finds_boxes_with_a_mask_each(detected):
    individual, union = detected["individual"], detected["union"]
    assert len(individual["boxes"]) == 1 and 1 <= len(individual["boxes"][0]) <= 3, individual["boxes"]
    assert union["boxes"] == individual["boxes"]
    assert individual["masks"].shape == (len(individual["boxes"][0]), H, W)
    assert union["masks"].shape == (1, H, W)
    assert all((m > 0).any() for m in individual["masks"])
    assert all(0.0 < box["score"] <= 1.0 and box["width"] > 0 and box["height"] > 0 for box in individual["boxes"][0])


def test_core_sam3_video_track_tracks_an_object(tracked):
    masks = tracked["masks"]
    assert masks.shape == (MAX_OBJECTS, FRAMES, H, W)
    assert (masks[0] > 0).any(axis=(1, 2)).any(), "object 0 is empty in every frame"


def test_detect_gives_one_detection_per_box_with_its_own_mask(detected):
    """As many detections as SAM3_Detect gave boxes, in their order: each box clipped to the image (0..1), its score,
    and with individual masks the mask of its own object, else the union's part inside its box."""
    history = _converted(detected)
    boxes = detected["individual"]["boxes"][0]
    for kind in ("individual", "union"):
        report = history["outputs"][f"probe_{kind}"]
        detections = report["detections"]
        assert report["image_size"] == [[W, H]]
        assert len(detections) == len(boxes), kind
        for d, box in zip(detections, boxes):
            x0, y0, x1, y1 = d["box"]
            assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0, (kind, d["box"], box)
            expected = [min(max(v, 0.0), 1.0) for v in (box["x"] / W, box["y"] / H, (box["x"] + box["width"]) / W,
                                                        (box["y"] + box["height"]) / H)]
            assert d["box"] == pytest.approx(expected, abs=1e-6)
            assert d["score"] == pytest.approx(box["score"]) and d["label"] == "face" and d["image_index"] == 0
            assert d["mask_shape"] == [H, W] and d["track_id"] is None
    for d, mask in zip(history["outputs"]["probe_individual"]["detections"], detected["individual"]["masks"]):
        assert d["mask_sum"] == pytest.approx(float(mask.sum()), rel=1e-5)
    for d in history["outputs"]["probe_union"]["detections"]:
        assert d["mask_sum"] <= float(detected["union"]["masks"].sum()) + 1e-3


def test_video_track_gives_a_detection_per_object_exactly_in_the_frames_it_is_in(tracked):
    """One detection per tracked object per frame where core's SAM3_TrackToMask of that object is not empty, and none
    elsewhere; each carries its object's index as track id, its frame as image index, a box in 0..1 and its score."""
    report = _converted(tracked)["outputs"]["probe"]
    detections = report["detections"]
    assert detections, "no detections from a clip core tracked objects in"
    assert report["image_size"] == [[W, H]]
    present = (tracked["masks"] > 0).any(axis=(2, 3))  # [object, frame]: core's SAM3_TrackToMask is not empty
    found = np.zeros_like(present)
    for d in detections:
        track, frame = d["track_id"], d["image_index"]
        assert track in range(MAX_OBJECTS) and frame in range(FRAMES), d
        assert not found[track, frame], f"two detections of object {track} in frame {frame}"
        found[track, frame] = True
        x0, y0, x1, y1 = d["box"]
        assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0, d
        assert d["label"] == "face" and 0.0 < d["score"] <= 1.0
        assert d["mask_sum"] > 0 and len(d["mask_shape"]) == 2
    assert np.array_equal(found, present), f"detections in (object, frame) {np.argwhere(found).tolist()}, core's " \
                                           f"SAM3_TrackToMask not empty in {np.argwhere(present).tolist()}"
    for track in {d["track_id"] for d in detections}:
        assert len({d["score"] for d in detections if d["track_id"] == track}) == 1, f"object {track}'s score varies"
    assert [(d["image_index"], d["track_id"]) for d in detections] == sorted((d["image_index"], d["track_id"])
                                                                             for d in detections)
