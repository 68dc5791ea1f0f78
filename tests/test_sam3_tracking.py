"""LunaSAM3Detector tracking over the frames of a clip (transformers' Sam3VideoModel), on the tiny SAM3 whose checkpoint
also holds a tiny tracker (fixtures.tiny_sam3.build_tiny_tracker: seeded random weights made a known-answer tracker that
repeats the mask it remembers, on the feature grid).

The tiny detector scores a few queries per concept near 0.84 (face) and 0.87 (hand) on any picture and the others at
0.80 and below, so THRESHOLD keeps one object per concept: transformers' video model keeps objects of one concept from
overlapping (its random masks overlap), which would hide the second one, and that is SAM3's rule, not a tracking
failure to test here.
"""
from __future__ import annotations

from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F

import comfy.model_management as mm
from fixtures.tiny_sam3 import build_tiny_sam3, config_json, meta_state, shared_tiny_video, write_hf_checkpoint
from luna_semantic_detailer.daemon.errors import Sam3TrackerMissing
from luna_semantic_detailer.daemon.tracking import tracked_frames
from luna_semantic_detailer.kernels.detections import mask_boxes
from luna_semantic_detailer.nodes.sam3 import PER_FRAME, TRACK, LunaSAM3Detector, LunaSAM3Loader

THRESHOLD = 0.82
CHECKPOINTS = ["model.safetensors", "sam3.pt"]


@pytest.fixture(scope="module")
def tiny():
    return shared_tiny_video()


@pytest.fixture(scope="module", params=CHECKPOINTS)
def handle(request, tiny):
    h = LunaSAM3Loader().load(request.param, "cpu", "fp32")[0]
    yield h
    h.slot.release()


def _image(seed: int, height: int = 90, width: int = 130) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, height // 10 + 1, width // 10 + 1, generator=g)
    return F.interpolate(base, size=(height, width), mode="bilinear", align_corners=False).movedim(1, -1).clamp(0, 1)


def _still(frames: int, seed: int = 0) -> torch.Tensor:
    return _image(seed).expand(frames, -1, -1, -1).contiguous()


def _track(h, clip, detect_every=1, prompts="face, hand", threshold=THRESHOLD, max_detections=0, min_area=0.0):
    return LunaSAM3Detector().detect(h, clip, prompts, threshold, max_detections, min_area, 0, TRACK, detect_every)


def _per_frame(h, images, prompts="face, hand", threshold=THRESHOLD):
    return LunaSAM3Detector().detect(h, images, prompts, threshold, 0, 0.0, 0)[0]


def _tracks(data) -> dict[int, list]:
    out = defaultdict(list)
    for d in data.detections:
        out[d.track_id].append(d)
    return {k: sorted(v, key=lambda d: d.image_index) for k, v in out.items()}


@pytest.mark.parametrize("detect_every", [1, 2])
def test_a_still_clip_keeps_one_id_per_object_and_repeats_its_mask(handle, detect_every):
    clip = _still(4)
    data, preview, union = _track(handle, clip, detect_every)
    first = _per_frame(handle, clip[:1])
    assert sorted(d.label for d in first.detections) == ["face", "hand"]
    tracks = _tracks(data)
    assert None not in tracks and len(tracks) == 2 and data.track_ids() == sorted(tracks)
    assert sorted(track[0].label for track in tracks.values()) == ["face", "hand"]  # one id per concept, none shared
    for track in tracks.values():
        assert [d.image_index for d in track] == [0, 1, 2, 3]
        assert len({d.label for d in track}) == 1 and len({d.score for d in track}) == 1
        (same,) = [d for d in first.detections if d.label == track[0].label]
        assert torch.equal(track[0].mask.float(), same.mask.float())  # frame 0: the detection itself
        assert track[0].score == pytest.approx(same.score, abs=1e-5)
        for later in track[2:]:  # tracked frames: the remembered mask, the same every frame
            assert torch.equal(later.mask, track[1].mask) and later.box == track[1].box
        assert bool(track[1].mask.any())
    assert data.image_size == (130, 90) and data.meta["mode"] == "track" and data.meta["detect_every"] == detect_every
    assert preview.shape == clip.shape and union.shape == (4, 90, 130)


def test_detection_runs_on_the_first_frame_and_every_nth_and_image_features_once_per_frame(tiny, monkeypatch):
    h = LunaSAM3Loader().load("model.safetensors", "cpu", "fp32")[0]
    detector = h.slot.video_model().detector_model
    events: list[str] = []

    def spy(event, attribute):
        method = getattr(detector, attribute)

        def call(*args, **kwargs):
            events.append(event)
            return method(*args, **kwargs)
        monkeypatch.setattr(detector, attribute, call)

    spy("V", "get_vision_features")
    spy("T", "get_text_features")
    spy("D", "forward")
    data, _, _ = _track(h, _still(5), detect_every=2)
    frames = "".join(events).replace("V", "|V").split("|")[1:]
    assert "".join(events).startswith("V") and events.count("T") == 2  # text features once per concept per clip
    detected = [i for i, frame in enumerate(frames) if "D" in frame]
    assert detected == tracked_frames(5, 2) == [0, 2, 4]
    assert [frame.count("V") for frame in frames] == [1] * 5
    assert all(frame.count("D") == 2 for frame in frames if "D" in frame)  # each concept on the frame's features
    assert {d.image_index for d in data.detections} == set(range(5)) and len(data.track_ids()) == 2


def _same(got, want) -> None:
    """A tracked object on the frame it was found is that frame's detection: its score and mask; its box is the mask's
    extent, as on every tracked frame (transformers' Sam3VideoProcessor and core's track conversion give it so), where
    the per-frame path's box is SAM3's box head."""
    assert got.label == want.label and got.score == pytest.approx(want.score, abs=1e-5)
    assert (got.mask.float() == want.mask.float()).float().mean() > 0.999
    assert got.box == pytest.approx(tuple(mask_boxes(want.mask.float()[None])[0][0].tolist()), abs=1.5 / 90)


def test_the_first_frame_is_what_the_per_frame_path_gives(handle):
    clip = torch.cat([_image(0), _image(1), _image(2)])
    for frames, threshold in ((1, 0.6), (3, THRESHOLD)):
        data, _, _ = _track(handle, clip[:frames], threshold=threshold)
        tracked = sorted(data.for_image(0), key=lambda d: (d.label, -d.score))
        alone = sorted(_per_frame(handle, clip[:1], threshold=threshold).detections, key=lambda d: (d.label, -d.score))
        assert len(tracked) == len(alone) >= 2 and len(set(data.track_ids())) == len(tracked)
        for got, want in zip(tracked, alone):
            _same(got, want)


def test_objects_sam3_finds_duplicated_are_dropped_from_every_frame(handle):
    """transformers' hot start: tracks that keep matching the same detections as an older track in the first frames
    are removed from the whole clip (its random masks overlap, so with a low threshold most of a concept's are)."""
    clip = torch.cat([_image(0), _image(1), _image(2)])
    data, _, _ = _track(handle, clip, threshold=0.6)
    alone = _per_frame(handle, clip[:1], threshold=0.6).detections
    tracks = _tracks(data)
    assert 2 <= len(tracks) < len(alone)
    for track in tracks.values():
        assert [d.image_index for d in track] == [0, 1, 2]
        _same(track[0], max((d for d in alone if d.label == track[0].label), key=lambda d: float(
            (d.mask.float() == track[0].mask.float()).float().mean())))


def test_max_detections_limits_the_objects_tracked(handle):
    data, _, _ = _track(handle, _still(3), max_detections=1)
    assert len(data.track_ids()) == 1 and {d.label for d in data.detections} == {"hand"}  # the best score
    assert [d.image_index for d in data.detections] == [0, 1, 2]


def test_min_area_drops_an_object_where_its_mask_is_small(handle):
    full, _, _ = _track(handle, _still(3))
    tracked_area = min(float(d.mask.float().mean()) for d in full.detections if d.image_index > 0)
    first_area = min(float(d.mask.float().mean()) for d in full.for_image(0))
    cut = (min(tracked_area, first_area) + max(tracked_area, first_area)) / 2
    data, _, _ = _track(handle, _still(3), min_area=cut)
    assert 0 < len(data) < len(full)
    assert all(float(d.mask.float().mean()) >= cut for d in data.detections)
    assert set(data.track_ids()) <= set(full.track_ids())


def test_a_stopped_run_stops_between_frames(tiny, monkeypatch):
    h = LunaSAM3Loader().load("model.safetensors", "cpu", "fp32")[0]
    detector = h.slot.video_model().detector_model
    seen: list[int] = []
    vision = detector.get_vision_features
    monkeypatch.setattr(detector, "get_vision_features", lambda *a, **k: seen.append(1) or vision(*a, **k))

    class Stop(Exception):
        pass

    def progress(done, total):
        assert total == 5
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        h.track(_still(5), ["face", "hand"], threshold=THRESHOLD, progress=progress)
    assert len(seen) == 2


def test_the_node_cancels_through_comfyui(tiny, monkeypatch):
    calls: list[int] = []

    def interrupted():
        calls.append(1)
        if len(calls) == 2:
            raise mm.InterruptProcessingException()

    monkeypatch.setattr(mm, "throw_exception_if_processing_interrupted", interrupted)
    h = LunaSAM3Loader().load("model.safetensors", "cpu", "fp32")[0]
    with pytest.raises(mm.InterruptProcessingException):
        _track(h, _still(4))
    assert len(calls) == 2


def test_the_tracker_follows_comfyui_memory_management(tiny):
    h = LunaSAM3Loader().load("sam3.pt", "cpu", "fp32")[0]
    h.slot.release()
    before = h.slot.report()
    assert not before["tracker_loaded"] and before["tracker_bytes"] == 0
    clip = _still(3)
    first, _, _ = _track(h, clip)
    report = h.slot.report()
    assert report["tracker_loaded"] and report["tracker_on_device"] and report["tracker_bytes"] > 0
    assert report["loaded"] and report["tracker_loads"] == before["tracker_loads"] + 1
    assert report["loads"] == before["loads"] + 1  # one detector, shared by detection and tracking
    _per_frame(h, clip)
    assert h.slot.report()["loads"] == report["loads"]
    mm.unload_all_models()
    evicted = h.slot.report()
    assert not evicted["tracker_loaded"] and not evicted["loaded"]
    assert evicted["tracker_evictions"] == report["tracker_evictions"] + 1
    again, _, _ = _track(h, clip)
    assert h.slot.report()["tracker_loads"] == report["tracker_loads"] + 1
    assert [(d.track_id, d.image_index, d.box) for d in again.detections] == \
           [(d.track_id, d.image_index, d.box) for d in first.detections]
    h.slot.release()
    assert not h.slot.tracker_held() and not h.slot.held()


@pytest.fixture()
def no_tracker_folder(tmp_path):
    """A sam3 folder of the tiny detector alone, in both layouts, registered with folder_paths."""
    import json

    import folder_paths

    model = build_tiny_sam3()
    folder = tmp_path / "sam3"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config_json(model)))
    write_hf_checkpoint(model, folder / "detector-only.safetensors", with_tracker=False)
    torch.save(meta_state(model, with_tracker=False), folder / "detector-only.pt")
    multiplex = meta_state(model, with_tracker=False)
    multiplex["tracker.model.sam_mask_decoder.conv_s0.weight"] = torch.zeros(2, 2, 1, 1)
    torch.save(multiplex, folder / "sam3.1-like.pt")
    folder_paths.add_model_folder_path("sam3", str(folder))
    return folder


@pytest.mark.parametrize("name", ["detector-only.safetensors", "detector-only.pt"])
def test_a_checkpoint_without_the_tracker_is_refused_with_the_fix(no_tracker_folder, name):
    h = LunaSAM3Loader().load(name, "cpu", "fp32")[0]
    with pytest.raises(Sam3TrackerMissing) as err:
        _track(h, _still(2))
    text = str(err.value)
    assert name in text and "holds no SAM3 video tracker" in text
    assert "facebook/sam3's model.safetensors or Meta's sam3.pt" in text and "mode to 'per frame'" in text
    assert not h.slot.held() and not h.slot.tracker_held()  # refused before anything loaded
    data = _per_frame(h, _still(2))
    assert len(data) and all(d.track_id is None for d in data.detections)
    h.slot.release()


def test_a_sam31_checkpoint_is_refused_by_name(no_tracker_folder):
    h = LunaSAM3Loader().load("sam3.1-like.pt", "cpu", "fp32")[0]
    with pytest.raises(Sam3TrackerMissing, match="SAM 3.1 checkpoint.*mode to 'per frame'"):
        _track(h, _still(2))


def test_the_node_offers_tracking_as_an_option_and_detects_per_frame_by_default(tiny):
    optional = LunaSAM3Detector.INPUT_TYPES()["optional"]
    assert optional["mode"][0] == [PER_FRAME, TRACK] and optional["mode"][1]["default"] == PER_FRAME
    assert optional["detect_every"][1]["default"] == 1 and optional["detect_every"][1]["min"] == 1
    assert all(spec[1]["tooltip"] for spec in optional.values())
    h = LunaSAM3Loader().load("model.safetensors", "cpu", "fp32")[0]
    data, _, _ = LunaSAM3Detector().detect(h, _still(2), "face, hand", THRESHOLD, 0, 0.0, 0)
    assert len(data.for_image(1)) == 2 and data.track_ids() == [] and "mode" not in data.meta
    with pytest.raises(ValueError, match="unknown mode"):
        LunaSAM3Detector().detect(h, _still(2), "face", THRESHOLD, 0, 0.0, 0, "tracking")


@pytest.mark.host
def test_loader_and_tracking_detector_through_the_queue(comfy_server):
    """A 3-frame still clip (stripes, repeated) tracked through POST /prompt; the probe reads the track ids back."""
    prompt = {
        "sam3": {"class_type": "LunaSAM3Loader",
                 "inputs": {"checkpoint": "model.safetensors", "device": "auto", "precision": "auto"}},
        "stripes": {"class_type": "LSDTestValuesImage",
                    "inputs": {"values": " ".join(str(0.1 + 0.8 * ((i * 7) % 10) / 9) for i in range(96)),
                               "height": 64}},
        "clip": {"class_type": "RepeatImageBatch", "inputs": {"image": ["stripes", 0], "amount": 3}},
        "detect": {"class_type": "LunaSAM3Detector", "inputs": {
            "sam3": ["sam3", 0], "image": ["clip", 0], "prompts": "face, hand", "threshold": THRESHOLD,
            "max_detections": 0, "min_area": 0.0, "detect_resolution": 0, "mode": TRACK, "detect_every": 2}},
        "probe": {"class_type": "LSDTestDetectionsProbe", "inputs": {"detection_data": ["detect", 0]}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["detect", 1]}},
    }
    entry = comfy_server.run(prompt, timeout=600)
    found = entry["outputs"]["probe"]["detections"]
    assert entry["outputs"]["probe"]["image_size"] == [[96, 64]]
    tracks = defaultdict(list)
    for d in found:
        tracks[d["track_id"]].append(d)
    assert None not in tracks and len(tracks) == 2
    assert sorted(t[0]["label"] for t in tracks.values()) == ["face", "hand"]
    for track in tracks.values():
        assert sorted(d["image_index"] for d in track) == [0, 1, 2]
        assert len({d["label"] for d in track}) == 1 and all(d["mask_shape"] == [64, 96] for d in track)
        later = sorted(track, key=lambda d: d["image_index"])[1:]
        assert later[0]["mask_sum"] == later[1]["mask_sum"] > 0 and later[0]["box"] == later[1]["box"]
    assert len(entry["outputs"]["preview"]["images"]) == 3
    model = next(m for m in comfy_server.get("/luna/sam3")["models"] if m["checkpoint"] == "model.safetensors")
    assert model["tracker_loaded"] and model["tracker_bytes"] > 0
