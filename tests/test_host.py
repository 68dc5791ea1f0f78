"""The pack inside a real ComfyUI server: it loads, lists its nodes, runs a prompt, and the server stops cleanly."""
from __future__ import annotations

import re

import pytest

from luna_semantic_detailer import NODE_CLASS_MAPPINGS
from luna_semantic_detailer.nodes import IMPORT_ERRORS

pytestmark = pytest.mark.host


def test_every_node_module_imports():
    assert IMPORT_ERRORS == {}


def test_object_info_lists_every_luna_node_with_its_declared_io(comfy_server):
    info = comfy_server.get("/object_info")
    assert NODE_CLASS_MAPPINGS, "the pack registers no nodes"
    for name, cls in NODE_CLASS_MAPPINGS.items():
        assert name in info, f"{name} missing from /object_info"
        node = info[name]
        declared = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            assert set(node["input"].get(section, {})) == set(declared.get(section, {})), (name, section)
        assert node["output"] == list(cls.RETURN_TYPES), name
        assert node["description"], f"{name} has no description"
        assert node["category"].startswith("Luna"), name


def test_server_log_has_no_import_error_for_the_pack(comfy_server):
    log = comfy_server.log
    assert re.search(r"seconds: .*luna_semantic_detailer", log), "the pack is not in ComfyUI's import times"
    pack_lines = [line for line in log.splitlines() if "luna_semantic_detailer" in line or "[Luna]" in line]
    bad = [line for line in pack_lines if re.search(r"IMPORT FAILED|Cannot import|Traceback|Error", line)]
    assert bad == []


def test_web_extension_is_served(comfy_server):
    extensions = comfy_server.get("/extensions")
    ours = [path for path in extensions if "luna_semantic_detailer" in path]
    assert ours, extensions
    for path in ours:
        assert comfy_server.get(path)


def test_a_prompt_with_luna_nodes_runs_through_the_queue(comfy_server):
    prompt = {
        "1": {"class_type": "LunaNoiseScaffold", "inputs": {"width": 512, "height": 384, "seed": 7, "latent_format": "SD1.5 / SDXL (4 ch, ÷8)"}},
        "2": {"class_type": "LunaScaffoldPreview", "inputs": {"master_scaffold": ["1", 0]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    entry = comfy_server.run(prompt, timeout=300)
    images = entry["outputs"]["3"]["images"]
    assert len(images) == 1 and images[0]["type"] == "temp"


def test_server_stops_cleanly_on_ctrl_c(tmp_path):
    """ComfyUI's answer to SIGINT: "Stopped server", exit code 0, and no traceback but of the interrupt itself."""
    from comfy_server import ComfyServer, final_exceptions
    from conftest import COMFYUI

    server = ComfyServer(COMFYUI, tmp_path).start()
    assert server.get("/system_stats")["system"]["comfyui_version"]
    started = len(server.log)
    code = server.stop()
    shutdown = server.log[started:]
    assert code == 0, f"exit code {code}\n{shutdown[-3000:]}"
    assert "Stopped server" in shutdown
    assert set(final_exceptions(shutdown)) <= {"KeyboardInterrupt"}, shutdown[-3000:]


@pytest.mark.parametrize("width,height,tile,overlap,fit", [(4095, 2161, 1024, 128, "fit"), (4096, 4096, 1024, 128, "exact"),
                                                          (777, 333, 256, 40, "fit"), (2048, 1536, 1536, 0, "exact")])
def test_the_plan_route_is_the_planner_the_refiner_samples(comfy_server, width, height, tile, overlap, fit):
    from luna_semantic_detailer.kernels.planning import chess_phases
    from luna_semantic_detailer.pipeline.tiles import canvas_tiles

    plan = comfy_server.get(f"/luna/plan?width={width}&height={height}&tile={tile}&overlap={overlap}&fit={fit}&tiling=chess")
    tiles = canvas_tiles(width, height, tile, overlap, 8, fit)
    assert [[t["x"], t["y"], t["w"], t["h"]] for t in plan["tiles"]] == [[t.x, t.y, t.width, t.height] for t in tiles]
    phases = chess_phases(tiles)
    assert plan["phases"] == len(phases) and [t["phase"] for t in plan["tiles"]] == [
        next(p for p, members in enumerate(phases) if i in members) for i in range(len(tiles))]
    assert plan["width"] == -(-width // 8) * 8 and plan["height"] == -(-height // 8) * 8
    assert abs(plan["sampled_mp"] - sum(t.width * t.height for t in tiles) / 1e6) < 1e-9


def test_the_plan_route_refuses_bad_input_with_a_message_and_serves_the_crop_sizes(comfy_server):
    import json
    import urllib.error

    from luna_semantic_detailer.pipeline.crops import CROP_SIZES

    for query in ("width=100&height=100&tile=64", "width=100&height=100&tile=60&overlap=8", "width=a&height=1&tile=64&overlap=0",
                  "width=100&height=100&tile=64&overlap=8&tiling=zigzag"):
        with pytest.raises(urllib.error.HTTPError) as info:
            comfy_server.get(f"/luna/plan?{query}")
        assert info.value.code == 400 and json.loads(info.value.read())["error"]
    assert comfy_server.get("/luna/crop_sizes") == {name: list(sizes) for name, sizes in CROP_SIZES.items()}
