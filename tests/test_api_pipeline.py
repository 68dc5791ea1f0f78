"""The Luna graph queued through POST /prompt on the real host, with the tiny test models."""
from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.host

FORMAT = "SD1.5 / SDXL (4 ch, ÷8)"


def pipeline(canvas: int, draft: int) -> dict:
    """Draft from the downscaled scaffold → upscale → manual detection → detailer → global refiner → save."""
    sampler = {"steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal"}
    return {
        "models": {"class_type": "LSDTestModels", "inputs": {"seed": 0, "latent_channels": 4}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["models", 1], "text": "a portrait"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["models", 1], "text": "blurry"}},
        "scaffold": {"class_type": "LunaNoiseScaffold", "inputs": {"width": canvas, "height": canvas, "seed": 11, "latent_format": FORMAT, "vae": ["models", 2]}},
        "noise": {"class_type": "LunaScaffoldNoise", "inputs": {"master_scaffold": ["scaffold", 0]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": draft, "height": draft, "batch_size": 1}},
        "guider": {"class_type": "CFGGuider", "inputs": {"model": ["models", 0], "positive": ["pos", 0], "negative": ["neg", 0], "cfg": 3.0}},
        "ksampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["models", 0], "scheduler": "normal", "steps": 2, "denoise": 1.0}},
        "draft": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["ksampler", 0], "sigmas": ["sigmas", 0], "latent_image": ["latent", 0]}},
        "draft_image": {"class_type": "VAEDecode", "inputs": {"samples": ["draft", 0], "vae": ["models", 2]}},
        "upscale": {"class_type": "ImageScale", "inputs": {"image": ["draft_image", 0], "upscale_method": "bicubic", "width": canvas, "height": canvas, "crop": "disabled"}},
        "region": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}},
        "region_canvas": {"class_type": "MaskComposite", "inputs": {"destination": ["blank", 0], "source": ["region", 0], "x": 96, "y": 96, "operation": "add"}},
        "blank": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": draft, "height": draft}},
        "detections": {"class_type": "LunaDetectionsFromMask", "inputs": {"mask": ["region_canvas", 0], "label": "face", "image_index": 0, "split": "connected regions", "min_pixels": 16}},
        "detail": {"class_type": "LunaSAM3Detailer", "inputs": {
            "image": ["upscale", 0], "master_scaffold": ["scaffold", 0], "detection_data": ["detections", 0],
            "model": ["models", 0], "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["models", 2],
            "clip_vision": ["models", 3], **sampler, "denoise": 0.5, "crop_size": "512", "context_padding": 1.5,
            "mask_dilation": 8, "mask_feather": 16, "vision_strength": 0.5, "max_batch": 4, "labels": "face"}},
        "refine": {"class_type": "LunaGlobalRefiner", "inputs": {
            "image": ["detail", 0], "master_scaffold": ["scaffold", 0], "model": ["models", 0], "positive": ["pos", 0],
            "negative": ["neg", 0], "vae": ["models", 2], "clip_vision": ["models", 3], "tile_size": 256, "overlap": 64,
            **sampler, "denoise": 0.3, "vision_strength": 0.5, "max_batch": 4}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["refine", 0], "filename_prefix": "lsd_pipeline"}},
        "crops": {"class_type": "PreviewImage", "inputs": {"images": ["detail", 1]}},
    }


def test_draft_detail_and_refine_run_through_the_queue(comfy_server):
    from PIL import Image

    entry = comfy_server.run(pipeline(canvas=768, draft=256), timeout=900)
    saved = entry["outputs"]["save"]["images"]
    assert len(saved) == 1
    path = comfy_server.workdir / "output" / saved[0]["subfolder"] / saved[0]["filename"]
    assert Image.open(path).size == (768, 768)
    assert len(entry["outputs"]["crops"]["images"]) == 1


def test_bad_input_is_reported_and_the_server_keeps_serving(comfy_server):
    from comfy_server import PromptFailed

    prompt = pipeline(canvas=768, draft=256)
    prompt["latent"]["inputs"].update(width=1024, height=1024)
    with pytest.raises(PromptFailed, match="larger than the scaffold"):
        comfy_server.run(prompt, timeout=600)
    assert comfy_server.get("/system_stats")["system"]["comfyui_version"]


def test_sam3_loader_detector_detailer_refiner_run_through_the_queue(comfy_server):
    prompt = pipeline(canvas=768, draft=256)
    for name in ("region", "region_canvas", "blank", "detections"):
        del prompt[name]
    prompt["sam3"] = {"class_type": "LunaSAM3Loader", "inputs": {"checkpoint": "model.safetensors", "device": "auto", "precision": "auto"}}
    prompt["detect"] = {"class_type": "LunaSAM3Detector", "inputs": {
        "sam3": ["sam3", 0], "image": ["draft_image", 0], "prompts": "face, hand", "threshold": 0.0,
        "max_detections": 2, "min_area": 0.0, "detect_resolution": 0}}
    prompt["detail"]["inputs"].update(detection_data=["detect", 0], labels="")
    prompt["detect_preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["detect", 1]}}
    entry = comfy_server.run(prompt, timeout=900)
    assert len(entry["outputs"]["save"]["images"]) == 1
    assert len(entry["outputs"]["detect_preview"]["images"]) == 1


def test_post_free_evicts_sam3_and_the_next_detection_reloads_it(comfy_server):
    prompt = {
        "sam3": {"class_type": "LunaSAM3Loader", "inputs": {"checkpoint": "model.safetensors", "device": "auto", "precision": "auto"}},
        "image": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 1, "color": 0x808080}},
        "detect": {"class_type": "LunaSAM3Detector", "inputs": {
            "sam3": ["sam3", 0], "image": ["image", 0], "prompts": "face", "threshold": 0.0,
            "max_detections": 1, "min_area": 0.0, "detect_resolution": 0}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["detect", 1]}},
    }

    def held() -> dict:
        (model,) = [m for m in comfy_server.get("/luna/sam3")["models"] if m["checkpoint"] == "model.safetensors"]
        return model

    comfy_server.run(prompt, timeout=300)
    before = held()
    assert before["loaded"] and before["bytes"] > 0
    comfy_server.post("/free", {"unload_models": True})
    deadline = time.monotonic() + 60
    while held()["loaded"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not held()["loaded"] and held()["evictions"] > before["evictions"], (before, held(), comfy_server.log[-1500:])
    prompt["detect"]["inputs"]["prompts"] = "hand"
    comfy_server.run(prompt, timeout=300)
    after = held()
    assert after["loaded"] and after["loads"] == before["loads"] + 1


def test_a_latent_format_of_an_earlier_version_still_loads_and_an_unknown_one_is_named(comfy_server):
    """Saved workflows and API prompts name 'SD3 / Flux (16 ch, ÷8)', which became 'Flux.1 / Chroma (16 ch, ÷8)'."""
    from comfy_server import PromptFailed
    from luna_semantic_detailer.pipeline.latent_formats import RENAMED_FORMATS

    def prompt(name: str) -> dict:
        return {"scaffold": {"class_type": "LunaNoiseScaffold",
                             "inputs": {"width": 256, "height": 256, "seed": 1, "latent_format": name}},
                "view": {"class_type": "LunaScaffoldPreview", "inputs": {"master_scaffold": ["scaffold", 0]}},
                "show": {"class_type": "PreviewImage", "inputs": {"images": ["view", 0]}}}

    for old in RENAMED_FORMATS:
        assert comfy_server.run(prompt(old), timeout=120)["status"]["status_str"] == "success"
    with pytest.raises(PromptFailed, match="latent_format 'Flux.3' is not one of: SD1.5 / SDXL"):
        comfy_server.run(prompt("Flux.3"), timeout=120)
