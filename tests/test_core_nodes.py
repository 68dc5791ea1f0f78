"""Core BOUNDING_BOX and MASK batches into Luna detections, on a ComfyUI that has the core nodes (the 0.33 host:
`make test-compat`).

The boxes come from the host's own `PrimitiveBoundingBox` and `CreateBoundingBoxes` nodes and the per-object masks from
its `BatchMasksNode`, as `SAM3_Detect` hands them on (one box list per image, MASK [N, H, W] in box order). On 0.3.75
these nodes do not exist and the tests that need them are skipped; on 0.28 (known to have them) or newer a missing node
is a failure.
"""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.host

CORE_NODES = ("PrimitiveBoundingBox", "CreateBoundingBoxes", "BatchMasksNode")
FORMAT = "SD1.5 / SDXL (4 ch, ÷8)"
W, H = 768, 512
SMALL = {"x": 48, "y": 64, "width": 96, "height": 96}  # 2.3 % of the canvas
LARGE = {"x": 384, "y": 160, "width": 256, "height": 224}  # 14.6 % of the canvas
PRIMITIVE = {"x": 64, "y": 32, "width": 128, "height": 96}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


@pytest.fixture(scope="module")
def core_bbox_host(comfy_server):
    """The server, when it has the core BOUNDING_BOX nodes; a skip on older ComfyUI, a failure on 0.28 or newer (0.28
    had them)."""
    version = comfy_server.get("/system_stats")["system"]["comfyui_version"]
    missing = [name for name in CORE_NODES if name not in comfy_server.get(f"/object_info/{name}")]
    if missing and _version(version) >= (0, 28):
        pytest.fail(f"ComfyUI {version} lacks the core nodes {', '.join(missing)}; see the server log:\n{comfy_server.log[-3000:]}")
    if missing:
        pytest.skip(f"ComfyUI {version} has no core BOUNDING_BOX nodes ({', '.join(missing)}; they came after 0.3.75): "
                    "`make test-compat` runs these on the 0.33 host")
    return comfy_server


def _normalized(box: dict) -> list[float]:
    return [box["x"] / W, box["y"] / H, (box["x"] + box["width"]) / W, (box["y"] + box["height"]) / H]


def _placed_mask(name: str, box: dict) -> dict:
    """A canvas-size MASK that is 1 inside `box` (SolidMask pasted onto a blank canvas)."""
    return {
        f"{name}_solid": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": box["width"], "height": box["height"]}},
        name: {"class_type": "MaskComposite", "inputs": {"destination": ["blank", 0], "source": [f"{name}_solid", 0],
                                                         "x": box["x"], "y": box["y"], "operation": "add"}},
    }


def detections_prompt() -> dict:
    """Core boxes and masks → LunaDetectionsFromBBoxes → LunaDetectionFilter, every result read by a probe node."""
    editor_state = [dict(box, metadata={"type": "obj", "text": "", "desc": desc, "palette": []})
                    for box, desc in ((SMALL, "small"), (LARGE, "large"))]
    bbox_inputs = {"image_width": W, "image_height": H, "mask_mode": "auto", "label": "object"}
    prompt = {
        "blank": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": W, "height": H}},
        "full": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": W, "height": H}},
        **_placed_mask("mask_small", SMALL),
        **_placed_mask("mask_large", LARGE),
        "masks": {"class_type": "BatchMasksNode", "inputs": {"masks.mask0": ["mask_small", 0], "masks.mask1": ["mask_large", 0]}},
        "primitive": {"class_type": "PrimitiveBoundingBox", "inputs": dict(PRIMITIVE)},
        "drawn": {"class_type": "CreateBoundingBoxes", "inputs": {"width": W, "height": H, "editor_state": {"__value__": editor_state}}},
        "from_primitive": {"class_type": "LunaDetectionsFromBBoxes", "inputs": {
            "bboxes": ["primitive", 0], **bbox_inputs, "label": "face", "mask": ["full", 0], "mask_mode": "union (cut by box)"}},
        "from_drawn": {"class_type": "LunaDetectionsFromBBoxes", "inputs": {"bboxes": ["drawn", 1], **bbox_inputs, "mask": ["masks", 0]}},
        "filter": {"class_type": "LunaDetectionFilter", "inputs": {
            "detection_data": ["from_drawn", 0], "labels": "", "score_min": 0.0, "score_max": 1.0, "area_min": 0.05,
            "area_max": 1.0, "top_k": 0, "top_by": "score", "order": "score desc"}},
    }
    for name, source in (("primitive", "from_primitive"), ("drawn", "from_drawn"), ("kept", "filter"), ("rejected", "filter")):
        prompt[f"probe_{name}"] = {"class_type": "LSDTestDetectionsProbe",
                                   "inputs": {"detection_data": [source, 1 if name == "rejected" else 0]}}
    return prompt


def test_the_bounding_box_input_is_a_socket_in_every_frontend(comfy_server):
    """Frontends from 1.45 (ComfyUI 0.28 on) draw BOUNDING_BOX as a box-editor widget; forceInput keeps it a socket,
    as core SAM3_Detect's."""
    bboxes = comfy_server.get("/object_info/LunaDetectionsFromBBoxes")["LunaDetectionsFromBBoxes"]["input"]["required"]["bboxes"]
    assert bboxes[0] == "BOUNDING_BOX" and bboxes[1].get("forceInput") is True


def test_core_boxes_and_a_mask_batch_become_luna_detections(core_bbox_host):
    outputs = core_bbox_host.run(detections_prompt(), timeout=300)["outputs"]

    (primitive,) = outputs["probe_primitive"]["detections"]
    assert primitive["box"] == pytest.approx(_normalized(PRIMITIVE))
    assert (primitive["label"], primitive["score"], primitive["image_index"]) == ("face", 1.0, 0)
    assert primitive["mask_shape"] == [H, W] and primitive["mask_sum"] == PRIMITIVE["width"] * PRIMITIVE["height"]
    assert outputs["probe_primitive"]["image_size"] == [[W, H]]

    drawn = outputs["probe_drawn"]["detections"]
    assert [d["box"] for d in drawn] == [pytest.approx(_normalized(SMALL)), pytest.approx(_normalized(LARGE))]
    assert [d["label"] for d in drawn] == ["object", "object"]
    assert [d["mask_sum"] for d in drawn] == [box["width"] * box["height"] for box in (SMALL, LARGE)]

    assert [d["box"] for d in outputs["probe_kept"]["detections"]] == [pytest.approx(_normalized(LARGE))]
    assert [d["box"] for d in outputs["probe_rejected"]["detections"]] == [pytest.approx(_normalized(SMALL))]


def test_core_boxes_drive_the_detailer(core_bbox_host):
    """The filtered core boxes through LunaSAM3Detailer with the tiny models: one crop per kept box, canvas size kept."""
    sampler = {"steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal"}
    prompt = detections_prompt()
    prompt.update({
        "models": {"class_type": "LSDTestModels", "inputs": {"seed": 0, "latent_channels": 4}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["models", 1], "text": "a portrait"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["models", 1], "text": "blurry"}},
        "scaffold": {"class_type": "LunaNoiseScaffold", "inputs": {"width": W, "height": H, "seed": 11, "latent_format": FORMAT, "vae": ["models", 2]}},
        "canvas": {"class_type": "EmptyImage", "inputs": {"width": W, "height": H, "batch_size": 1, "color": 0x808080}},
        "detail": {"class_type": "LunaSAM3Detailer", "inputs": {
            "image": ["canvas", 0], "master_scaffold": ["scaffold", 0], "detection_data": ["filter", 0],
            "model": ["models", 0], "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["models", 2],
            "clip_vision": ["models", 3], **sampler, "denoise": 0.5, "crop_size": "512", "context_padding": 1.5,
            "mask_dilation": 8, "mask_feather": 16, "vision_strength": 0.5, "max_batch": 4, "labels": ""}},
        "crops": {"class_type": "PreviewImage", "inputs": {"images": ["detail", 1]}},
        "result": {"class_type": "PreviewImage", "inputs": {"images": ["detail", 0]}},
    })
    outputs = core_bbox_host.run(prompt, timeout=600)["outputs"]
    assert len(outputs["crops"]["images"]) == 1
    assert len(outputs["result"]["images"]) == 1
    import io
    import urllib.parse

    from PIL import Image

    image = outputs["result"]["images"][0]
    png = core_bbox_host.get("/view?" + urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")}))
    assert Image.open(io.BytesIO(png)).size == (W, H)


def test_a_core_box_that_does_not_fit_the_image_is_an_error_naming_the_size_the_box_and_the_fix(core_bbox_host):
    """A 4K PrimitiveBoundingBox into LunaDetectionsFromBBoxes left at its default 1024x1024: the prompt fails with the
    image size, the box and what to do, instead of turning it into a box clipped to the corner."""
    from comfy_server import PromptFailed

    defaults = core_bbox_host.get("/object_info/LunaDetectionsFromBBoxes")["LunaDetectionsFromBBoxes"]["input"]["required"]
    prompt = {
        "box": {"class_type": "PrimitiveBoundingBox", "inputs": {"x": 800, "y": 600, "width": 900, "height": 700}},
        "luna": {"class_type": "LunaDetectionsFromBBoxes", "inputs": {
            "bboxes": ["box", 0], "image_width": defaults["image_width"][1]["default"],
            "image_height": defaults["image_height"][1]["default"], "mask_mode": "auto", "label": "object"}},
        "probe": {"class_type": "LSDTestDetectionsProbe", "inputs": {"detection_data": ["luna", 0]}},
    }
    with pytest.raises(PromptFailed) as info:
        core_bbox_host.run(prompt, timeout=120)
    text = str(info.value)
    assert "1024x1024" in text and "x 800..1700, y 600..1300" in text and "by 676 px" in text
    assert "Connect the image the boxes were made on" in text and "image_width and image_height" in text
