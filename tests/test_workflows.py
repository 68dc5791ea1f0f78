"""The bundled workflows (example_workflows/): valid against the live /object_info, UI and API files in agreement,
served to the Templates browser, and each API workflow run through POST /prompt with the tiny test models, with no
warning about the pack in the server log. A workflow that uses core nodes an older host lacks (lsd_core_sam3 on 0.3.75)
is skipped there, with their names; on the newest tested host every workflow runs."""
from __future__ import annotations

import asyncio
import io
import json
import time
import uuid

import pytest

from bundled_workflows import (CLIP_FRAMES, DISTRIBUTED, MODEL_FILE_INPUTS, NAMES, TEST_CLIP, WORKFLOWS, api, builder,
                               for_tests, is_link, skip_if_the_host_lacks_its_core_nodes, ui, write_canvas_image,
                               write_test_clip)
from server_log import deprecation_warnings, warnings_naming_the_pack

pytestmark = pytest.mark.host

TEST_IMAGE = "lsd_test_canvas.png"


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.get("/object_info")


@pytest.fixture(scope="module")
def input_image(comfy_server):
    write_canvas_image(comfy_server.workdir / "input" / TEST_IMAGE)
    write_test_clip(comfy_server.workdir / "input" / TEST_CLIP)
    return TEST_IMAGE


@pytest.fixture
def server_for(request, comfy_server):
    """The server a workflow runs on: the test cluster's master (ComfyUI-Distributed installed) for DISTRIBUTED ones,
    with the test image in every server's input folder (local workers share the master's ComfyUI folder; remote ones
    get it from the extension's media sync); the session's server for the rest."""
    def pick(name: str):
        if name not in DISTRIBUTED:
            return comfy_server
        cluster = request.getfixturevalue("cluster")
        for server in cluster.servers:
            write_canvas_image(server.workdir / "input" / TEST_IMAGE)
        return cluster.master
    return pick


def host_object_info(server, name: str) -> dict:
    """The server's /object_info; skips workflow `name` where this (older) ComfyUI lacks a core node it uses."""
    object_info = server.get("/object_info")
    skip_if_the_host_lacks_its_core_nodes(name, object_info, server.get("/system_stats")["system"]["comfyui_version"])
    return object_info


def test_every_workflow_has_ui_api_and_thumbnail():
    for name in NAMES:
        assert (WORKFLOWS / f"{name}.json").is_file(), name
        assert (WORKFLOWS / "api" / f"{name}.json").is_file(), name
        assert (WORKFLOWS / f"{name}.jpg").stat().st_size > 5000, name


def test_every_luna_node_is_in_a_bundled_workflow():
    from luna_semantic_detailer import NODE_CLASS_MAPPINGS

    shown = {node["type"] for name in NAMES for node in ui(name)["nodes"]}
    assert set(NODE_CLASS_MAPPINGS) - shown == set()


def test_luna_nodes_carry_the_registry_id_and_version_as_the_frontend_records_them():
    """properties.cnr_id / ver in the UI files (ComfyUI-Manager and the frontend's missing-node lookup read them) and
    _meta.cnr_id / ver in the API files (frontend 1.58 writes them there): pyproject's name and version, on Luna
    nodes only."""
    import tomllib

    from luna_semantic_detailer import NODE_CLASS_MAPPINGS

    project = tomllib.loads((WORKFLOWS.parent / "pyproject.toml").read_text())["project"]
    identity = {"cnr_id": project["name"], "ver": project["version"]}
    for name in NAMES:
        for node in ui(name)["nodes"]:
            recorded = {k: node["properties"][k] for k in identity if k in node["properties"]}
            assert recorded == (identity if node["type"] in NODE_CLASS_MAPPINGS else {}), (name, node["type"])
        for node in api(name).values():
            recorded = {k: node["_meta"][k] for k in identity if k in node["_meta"]}
            assert recorded == (identity if node["class_type"] in NODE_CLASS_MAPPINGS else {}), (name, node)


def test_nothing_test_only_is_shipped():
    for name in NAMES:
        text = (WORKFLOWS / f"{name}.json").read_text() + (WORKFLOWS / "api" / f"{name}.json").read_text()
        assert "LSDTestModels" not in text and "lsd_test" not in text, name


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_is_valid_against_object_info(name, server_for):
    prompt = api(name)
    object_info = host_object_info(server_for(name), name)
    for node_id, node in prompt.items():
        kind = node["class_type"]
        assert kind in object_info, f"{name}: {node_id} has unknown type {kind}"
        info = object_info[kind]
        required, optional = info["input"].get("required", {}), info["input"].get("optional", {})
        missing = set(required) - set(node["inputs"])
        assert not missing, f"{name}: {kind} ({node_id}) lacks required inputs {sorted(missing)}"
        for input_name, value in node["inputs"].items():
            spec = required.get(input_name) or optional.get(input_name)
            assert spec is not None, f"{name}: {kind} has no input {input_name}"
            if is_link(value):
                source = prompt[value[0]]
                out_type = object_info[source["class_type"]]["output"][value[1]]
                want = "COMBO" if isinstance(spec[0], list) else spec[0]
                assert want in (out_type, "*") or out_type == "*", f"{name}: {kind}.{input_name} gets {out_type}"
            elif isinstance(spec[0], list) and input_name not in MODEL_FILE_INPUTS:
                assert value in spec[0], f"{name}: {kind}.{input_name}={value!r} not in {spec[0]}"
            elif spec[0] in ("INT", "FLOAT"):
                options = spec[1] if len(spec) > 1 else {}
                assert options.get("min", -float("inf")) <= value <= options.get("max", float("inf")), (kind, input_name)


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_workflows_agree(name):
    workflow, prompt = ui(name), api(name)
    active = {str(n["id"]): n for n in workflow["nodes"] if n.get("mode", 0) == 0}
    assert {k: n["type"] for k, n in active.items()} == {k: n["class_type"] for k, n in prompt.items()}
    ui_links = set()
    for link_id, origin, origin_slot, target, target_slot, _type in workflow["links"]:
        if str(target) in active:
            input_name = active[str(target)]["inputs"][target_slot]["name"]
            ui_links.add((str(target), input_name, str(origin), origin_slot))
            assert active[str(target)]["inputs"][target_slot]["link"] == link_id
    api_links = {(k, i, v[0], v[1]) for k, n in prompt.items() for i, v in n["inputs"].items() if is_link(v)}
    assert ui_links == api_links
    for node_id, node in prompt.items():
        widgets = active[node_id].get("widgets_values", [])
        for input_name, value in node["inputs"].items():
            if not is_link(value):
                assert value in widgets, f"{name}: {node['class_type']}.{input_name}={value!r} not in the UI's widgets"


@pytest.mark.parametrize("name", NAMES)
def test_files_are_what_the_builder_makes_from_the_live_node_definitions(name, server_for):
    """scripts/build_workflows.py regenerates both files; a node whose inputs changed shows up here."""
    object_info = host_object_info(server_for(name), name)
    make = builder()
    spec = next(f() for f in make.WORKFLOWS if f().name == name)
    workflow, prompt = make.build(spec, object_info)
    assert prompt == api(name), "stale: run scripts/build_workflows.py --url <server> --thumbnails"
    assert workflow == ui(name), "stale: run scripts/build_workflows.py --url <server> --thumbnails"


def test_templates_browser_lists_and_serves_them(comfy_server):
    listed = comfy_server.get("/workflow_templates")
    assert sorted(listed.get("luna_semantic_detailer", [])) == sorted(NAMES)  # api/ is a sub-folder: not listed
    for name in NAMES:
        served = comfy_server.get(f"/api/workflow_templates/luna_semantic_detailer/{name}.json")
        served = served if isinstance(served, dict) else json.loads(served)
        assert served == ui(name)
        thumb = comfy_server.get(f"/api/workflow_templates/luna_semantic_detailer/{name}.jpg")
        assert thumb[:3] == b"\xff\xd8\xff"


async def follow(server, prompt: dict, timeout: float) -> tuple[str, list[dict]]:
    """Queue `prompt` with our client id and read /ws until it succeeds or fails; (status, events)."""
    import aiohttp

    client_id = uuid.uuid4().hex
    events: list[dict] = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as ws:
            async with session.post(f"{server.url}/prompt", json={"prompt": prompt, "client_id": client_id}) as resp:
                body = await resp.json()
                if resp.status != 200:
                    return "rejected", [body]
            prompt_id = body["prompt_id"]
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg = await ws.receive(timeout=max(1.0, deadline - time.monotonic()))
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue  # binary: latent previews
                event = json.loads(msg.data)
                if event.get("data", {}).get("prompt_id") not in (None, prompt_id):
                    continue
                events.append(event)
                if event["type"] == "execution_success":
                    return prompt_id, events
                if event["type"] in ("execution_error", "execution_interrupted"):
                    raise AssertionError(json.dumps(event["data"], indent=1)[:4000])
    raise TimeoutError(f"no execution_success within {timeout} s")


def run_followed(server, prompt: dict, timeout: float = 900.0) -> tuple[dict, list[dict]]:
    prompt_id, events = asyncio.run(follow(server, prompt, timeout))
    return server.wait(prompt_id, timeout=60), events  # /history is written just after execution_success


def saved_video_frames(server, video: dict) -> tuple[int, int, int]:
    """(frames, height, width) of a video the server saved, decoded."""
    import av

    query = f"/view?filename={video['filename']}&subfolder={video['subfolder']}&type={video['type']}"
    with av.open(io.BytesIO(server.get(query))) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return len(frames), *frames[0].shape[:2]


def saved_size(server, image: dict) -> tuple[int, int]:
    from PIL import Image

    query = f"/view?filename={image['filename']}&subfolder={image['subfolder']}&type={image['type']}"
    return Image.open(io.BytesIO(server.get(query))).size


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_bundled_workflow_runs_through_the_queue(name, server_for, input_image, request):
    """Through POST /prompt; a DISTRIBUTED workflow through POST /distributed/queue to the master and both workers."""
    prompt = for_tests(api(name), input_image)
    comfy_server = server_for(name)
    host_object_info(comfy_server, name)
    if name in DISTRIBUTED:
        run = request.getfixturevalue("all_up").run(prompt, timeout=900)
        save = next(k for k, n in prompt.items() if n["class_type"] == "SaveImage")
        assert run.worker_count == 2 and run.images[save].shape == (1, 768, 768, 3)
        return
    log_start = len(comfy_server.log)
    entry, events = run_followed(comfy_server, prompt)
    said = comfy_server.log[log_start:]
    assert warnings_naming_the_pack(said) == [] and deprecation_warnings(said) == [], said[-3000:]
    kinds = [e["type"] for e in events]
    assert "execution_start" in kinds and "progress" in kinds and kinds[-1] == "execution_success"
    executed = {e["data"]["node"] for e in events if e["type"] == "executing" and e["data"]["node"]}
    executed |= {n for e in events if e["type"] == "execution_cached" for n in e["data"]["nodes"]}
    luna = {k for k, n in prompt.items() if n["class_type"].startswith("Luna")}
    assert luna <= executed | set(entry.get("outputs", {})), f"Luna nodes not run: {luna - executed}"
    saves = [k for k, n in prompt.items() if n["class_type"] == "SaveImage"]
    videos = [k for k, n in prompt.items() if n["class_type"] == "SaveVideo"]
    assert saves or videos
    for node_id in saves:
        images = entry["outputs"][node_id]["images"]
        assert len(images) == 1
        assert saved_size(comfy_server, images[0]) == (768, 768)
    for node_id in videos:
        (video,) = entry["outputs"][node_id]["images"]
        assert saved_video_frames(comfy_server, video) == (CLIP_FRAMES, 768, 768)
    if name == "lsd_manual_regions":  # the transparent square of the test image is a painted region: one real crop
        crops = next(k for k, n in prompt.items() if n["class_type"] == "PreviewImage")
        assert saved_size(comfy_server, entry["outputs"][crops]["images"][0]) == (512, 512)
    if "LunaSAM3Detector" in {n["class_type"] for n in prompt.values()}:
        detector = next(k for k, n in prompt.items() if n["class_type"] == "LunaSAM3Detector")
        assert entry["outputs"][detector]["images"], "the detector shows no preview on its node"


def fault(prompt: dict, kind: str) -> dict:
    node_id = next(k for k, n in prompt.items() if n["class_type"] == kind)
    return prompt[node_id]


@pytest.mark.parametrize("breakage, message", [
    ("missing_model", "Value not in list"),
    ("wrong_type", "Return type mismatch"),
    ("canvas_too_small", "larger than the scaffold"),
])
def test_bad_input_is_a_clear_node_error_and_the_next_prompt_runs(breakage, message, comfy_server, input_image):
    from comfy_server import PromptFailed

    good = for_tests(api("lsd_global_only"), input_image)
    bad = json.loads(json.dumps(good))
    if breakage == "missing_model":
        bad = api("lsd_global_only")  # the shipped file: sd_xl_base_1.0.safetensors is not in the test host
        fault(bad, "LoadImage")["inputs"]["image"] = input_image
    elif breakage == "wrong_type":
        fault(bad, "LunaGlobalRefiner")["inputs"]["master_scaffold"] = fault(bad, "LunaGlobalRefiner")["inputs"]["image"]
    else:
        scaffold = fault(bad, "LunaNoiseScaffold")["inputs"]
        scaffold.update(width=256, height=256)
    with pytest.raises(PromptFailed, match=message):
        comfy_server.run(bad, timeout=600)
    entry = comfy_server.run(good, timeout=900)
    assert entry["status"]["status_str"] == "success"


def test_every_luna_node_is_documented(object_info, comfy_server):
    """A description, a tooltip on every input, and the docs page the node-info panel fetches for custom nodes
    (/extensions/<pack>/docs/<Node>.md), listing every input."""
    luna = {k: v for k, v in object_info.items() if v["python_module"].endswith("luna_semantic_detailer")}
    assert len(luna) >= 12
    for name, info in luna.items():
        assert info["description"], name
        inputs = {k: v for s in ("required", "optional") for k, v in info["input"].get(s, {}).items()}
        untipped = [k for k, v in inputs.items() if len(v) < 2 or not v[1].get("tooltip")]
        assert not untipped, f"{name}: inputs without a tooltip: {untipped}"
        page = comfy_server.get(f"/extensions/luna_semantic_detailer/docs/{name}.md").decode()
        assert page.startswith(f"# {info['display_name']}"), name
        assert all(f"`{k}`" in page for k in inputs), f"{name}: docs page is missing inputs (scripts/build_docs.py)"
