"""LunaSAM3Daemon: one model per (checkpoint, device, dtype), ComfyUI memory management, threads, and the full-size SAM3."""
from __future__ import annotations

import gc
import threading
import time

import pytest
import torch

import comfy.model_management as mm
from fixtures.tiny_sam3 import shared_tiny
from luna_semantic_detailer.daemon.host import Sam3Patcher, daemon, resolve_dtype
from luna_semantic_detailer.nodes.sam3 import LunaSAM3Detector, LunaSAM3Loader


@pytest.fixture(scope="module")
def tiny():
    return shared_tiny()


@pytest.fixture()
def handle(tiny):
    h = LunaSAM3Loader().load("sam3.pt", "cpu", "fp32")[0]
    h.slot.release()
    yield h
    h.slot.release()


def _image(seed: int) -> torch.Tensor:
    return torch.rand(1, 64, 96, 3, generator=torch.Generator().manual_seed(seed))


def _detect(h, image, threshold=0.2):
    data, _, _ = LunaSAM3Detector().detect(h, image, "face, hand", threshold, 0, 0.0, 0)
    return [(d.label, d.box, round(d.score, 5)) for d in data.detections]


def _in_comfy(h) -> bool:
    return any(m is h.slot.patcher for m in mm.loaded_models())


def test_two_loaders_share_one_model(handle, tiny):
    model, _ = tiny
    other = LunaSAM3Loader().load("sam3.pt", "cpu", "fp32")[0]
    assert other.slot is handle.slot
    _detect(handle, _image(0))
    _detect(other, _image(1))
    assert handle.slot.loads == 1
    reports = [r for r in daemon().report() if r["checkpoint"] == "sam3.pt" and r["device"] == "cpu"]
    assert len(reports) == 1
    report = reports[0]
    assert report["loaded"] and report["on_device"] and report["dtype"] == "fp32" and report["weights_on"] == "cpu"
    assert report["bytes"] == sum(t.numel() * t.element_size() for t in model.state_dict().values())


def test_keys_differ_by_checkpoint_and_dtype(handle):
    assert LunaSAM3Loader().load("model.safetensors", "cpu", "fp32")[0].slot is not handle.slot
    bf16 = LunaSAM3Loader().load("sam3.pt", "cpu", "bf16")[0]
    assert bf16.slot is not handle.slot and bf16.key.dtype == "bf16"
    assert resolve_dtype("auto", torch.device("cpu")) == "fp32"
    with pytest.raises(ValueError, match="fp16"):
        resolve_dtype("fp16", torch.device("cpu"))


def test_nothing_loads_before_the_first_detection(handle):
    assert not handle.slot.held() and handle.slot.loads == 0


def test_detection_registers_with_comfy_and_unload_all_models_frees_it(handle):
    image = _image(2)
    first = _detect(handle, image)
    assert isinstance(handle.slot.patcher, Sam3Patcher) and _in_comfy(handle)
    mm.unload_all_models()
    assert not _in_comfy(handle) and not handle.slot.held()
    report = handle.slot.report()
    assert report["bytes"] == 0 and report["evictions"] == 1 and not report["on_device"]
    assert _detect(handle, image) == first
    assert handle.slot.loads == 2 and _in_comfy(handle)


def test_free_memory_for_another_model_evicts_it(handle):
    _detect(handle, _image(3))
    mm.free_memory(1e30, torch.device("cpu"))
    assert not _in_comfy(handle) and not handle.slot.held()
    _detect(handle, _image(3))
    assert handle.slot.loads == 2


def test_concurrent_detections_from_two_threads(handle):
    images = [_image(10 + i) for i in range(4)]
    expected = [_detect(handle, im) for im in images]
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def work(indices):
        try:
            for i in indices:
                results[i] = _detect(handle, images[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=([0, 1, 2, 3],)), threading.Thread(target=work, args=([3, 2, 1, 0],))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert [results[i] for i in range(4)] == expected
    assert handle.slot.loads == 1


def test_eviction_waits_for_a_running_detection(handle):
    image = _image(20)
    expected = _detect(handle, image)
    inside, go = threading.Event(), threading.Event()
    out: dict[str, object] = {}

    def progress(done, total):
        inside.set()
        go.wait(30)

    def detect():
        data = handle.detect(image, ["face", "hand"], threshold=0.2, progress=progress)
        out["dets"] = [(d.label, d.box, round(d.score, 5)) for d in data.detections]

    worker = threading.Thread(target=detect)
    worker.start()
    assert inside.wait(60)
    evictor = threading.Thread(target=mm.unload_all_models)
    evictor.start()
    time.sleep(0.3)
    assert evictor.is_alive() and handle.slot.held()
    go.set()
    worker.join(60)
    evictor.join(60)
    assert out["dets"] == expected
    assert not handle.slot.held() and not _in_comfy(handle)


def test_eviction_waits_for_a_running_tracking(handle):
    clip = _image(21).expand(3, -1, -1, -1).contiguous()
    inside, go = threading.Event(), threading.Event()
    out: dict[str, object] = {}

    def progress(done, total):
        inside.set()
        go.wait(30)

    def track():
        data = handle.track(clip, ["face", "hand"], threshold=0.82, progress=progress)
        out["tracks"] = data.track_ids()

    worker = threading.Thread(target=track)
    worker.start()
    assert inside.wait(120)
    evictor = threading.Thread(target=mm.unload_all_models)
    evictor.start()
    time.sleep(0.3)
    assert evictor.is_alive() and handle.slot.held() and handle.slot.tracker_held()
    go.set()
    worker.join(120)
    evictor.join(60)
    assert len(out["tracks"]) == 2
    assert not handle.slot.held() and not handle.slot.tracker_held() and not _in_comfy(handle)


def test_slots_live_as_long_as_handles(tiny):
    h = LunaSAM3Loader().load("model.safetensors", "cpu", "bf16")[0]
    key = h.key
    _detect(h, _image(30))
    assert any(s.key == key for s in daemon().slots())
    del h
    gc.collect()
    mm.cleanup_models()
    assert not any(s.key == key for s in daemon().slots())
    assert not any(isinstance(m, Sam3Patcher) and m.model.dtype_ == torch.bfloat16 for m in mm.loaded_models())


@pytest.mark.slow
def test_full_size_sam3_runs_one_1008px_detection_and_tracks_two_frames(tmp_path):
    """The real SAM3 architecture (~840M parameters, random weights) through the daemon at 1008 px, and its video
    model (the same file's ~20M-parameter tracker beside it) over two frames."""
    import folder_paths
    from safetensors.torch import save_file
    from transformers import Sam3VideoConfig, Sam3VideoModel

    torch.manual_seed(0)
    video = Sam3VideoModel(Sam3VideoConfig()).eval()
    params = sum(p.numel() for p in video.detector_model.parameters())
    tracker_tensors = sum(v.numel() for k, v in video.state_dict().items() if not k.startswith("detector_model."))
    assert 800e6 < params < 900e6 and 15e6 < tracker_tensors < 25e6
    folder = tmp_path / "sam3"
    folder.mkdir()
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in video.state_dict().items()},
              str(folder / "full.safetensors"))
    folder_paths.add_model_folder_path("sam3", str(folder))
    del video
    gc.collect()
    h = LunaSAM3Loader().load("full.safetensors", "cpu", "fp32")[0]
    image = torch.rand(1, 1008, 1008, 3, generator=torch.Generator().manual_seed(0))
    data, preview, mask = LunaSAM3Detector().detect(h, image, "face", 0.0, 5, 0.0, 1008)
    assert len(data) == 5 and data.image_size == (1008, 1008)
    assert all(d.mask.shape == (1008, 1008) for d in data.detections)
    assert preview.shape == (1, 1008, 1008, 3) and mask.shape == (1, 1008, 1008)
    assert h.slot.report()["bytes"] == params * 4 and not h.slot.report()["tracker_loaded"]
    clip = torch.nn.functional.interpolate(image.movedim(-1, 1), size=(252, 252)).movedim(1, -1).expand(2, -1, -1, -1)
    tracked, _, _ = LunaSAM3Detector().detect(h, clip.contiguous(), "face", 0.0, 2, 0.0, 252, "track over frames", 2)
    assert [(d.image_index, d.track_id) for d in tracked.for_image(0)] == [(0, 0), (0, 1)]
    assert all(d.mask.shape == (252, 252) for d in tracked.detections)
    report = h.slot.report()
    assert report["tracker_bytes"] == tracker_tensors * 4 and report["loads"] == report["tracker_loads"] == 1
    h.slot.release()
