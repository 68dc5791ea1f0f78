"""The pack's routes under hostile queries: GET /luna/plan takes only what the nodes take, refuses the rest in a few
milliseconds with a message, never blocks the server; GET /luna/sam3 names no file on disk."""
from __future__ import annotations

import json
import statistics
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from luna_semantic_detailer import plan_query
from luna_semantic_detailer.pipeline.latent_formats import LATENT_FORMATS
from luna_semantic_detailer.pipeline.tiles import canvas_tiles

pytestmark = pytest.mark.host

GOOD = {"width": "4096", "height": "4096", "tile": "1024", "overlap": "128"}


def fetch(server, path: str, timeout: float = 30.0) -> tuple[int, bytes, float]:
    """(status, body, seconds) of a GET, error statuses included."""
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(server.url + path, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    return status, body, time.perf_counter() - start


def query(**values) -> str:
    """A /luna/plan path from GOOD with `values` replaced (None drops a parameter), each value sent as written."""
    merged = {**GOOD, **values}
    return "/luna/plan?" + "&".join(f"{k}={urllib.parse.quote(str(v), safe='')}" for k, v in merged.items()
                                    if v is not None)


def test_the_limits_are_the_nodes_own_as_the_server_declares_them(comfy_server):
    info = comfy_server.get("/object_info")
    scaffold, refiner = info["LunaNoiseScaffold"]["input"]["required"], info["LunaGlobalRefiner"]["input"]
    declared = {"width": scaffold["width"][1], "height": scaffold["height"][1],
                "tile": refiner["required"]["tile_size"][1], "overlap": refiner["required"]["overlap"][1]}
    limits = plan_query.limits()
    assert limits.numbers == {k: (v["min"], v["max"]) for k, v in declared.items()}
    assert limits.choices["fit"] == tuple(refiner["optional"]["tile_fit"][0])
    assert limits.choices["tiling"] == tuple(refiner["optional"]["tiling"][0])
    formats = info["LunaNoiseScaffold"]["input"]["required"]["latent_format"][0]
    assert set(limits.choices["factor"]) == {int(name.rsplit("÷", 1)[1].rstrip(")")) for name in formats}
    assert limits.choices["latent_format"] == tuple(formats) and set(limits.choices["patch"]) == {1, 2}
    assert limits.defaults == {"factor": 8, "patch": 1, "latent_format": None,
                               "fit": refiner["optional"]["tile_fit"][1]["default"],
                               "tiling": refiner["optional"]["tiling"][1]["default"]}


def edges() -> list[dict]:
    """Values one past each limit and at it, for every number."""
    cases = []
    for name, (lowest, highest) in plan_query.limits().numbers.items():
        cases += [{name: lowest - 1}, {name: highest + 1}]
    return cases


HOSTILE = [
    {"width": 100000, "height": 100000, "tile": 64, "overlap": 0},  # issue 29: 8.3 s and 191 MB before
    {"width": 10**400}, {"tile": 0}, {"overlap": -8}, {"width": -4096}, {"width": "NaN"}, {"height": "inf"},
    {"tile": "1024.0"}, {"overlap": "1e2"}, {"width": "0x1000"}, {"width": " 4096"}, {"width": "４０９６"},
    {"width": None}, {"overlap": None}, {"tile": ""}, {"fit": "tight"}, {"tiling": "zigzag"}, {"factor": 7},
    {"factor": 0}, {"fit": "FIT"}, {"width": "9" * 10_000}, {"tiling": "x" * 10_000},
    {"tile": 64, "overlap": 56, "width": 16384, "height": 16384},  # in every limit, but 2041² tiles
    {"tile": 64, "overlap": 0, "width": 16384, "height": 64},  # 256 tiles in a row
    {"tile": 1024, "overlap": 1024},  # overlap > tile - factor
    {"tile": 1000, "factor": 16},  # not on the latent grid
    {"patch": 3}, {"latent_format": "Flux.3 (16 ch, ÷8)"}, {"latent_format": "x" * 10_000},
    {"tile": 1032, "patch": 2},  # 129 cells: not whole 2 x 2 patches
    {"factor": 8, "latent_format": "Flux.1 / Chroma (16 ch, ÷8)"},  # both
]


@pytest.mark.parametrize("values", HOSTILE + edges(), ids=lambda v: json.dumps(v)[:60])
def test_a_hostile_query_is_refused_fast_with_a_message(comfy_server, values):
    status, body, seconds = fetch(comfy_server, query(**values))
    assert status == 400, body[:300]
    if body.startswith(b"{"):  # aiohttp refuses request lines over 8 KiB itself
        assert json.loads(body)["error"]
    assert seconds < 0.05 or min(fetch(comfy_server, query(**values))[2] for _ in range(3)) < 0.05


def test_unknown_and_repeated_parameters_are_refused(comfy_server):
    for path in (query() + "&colour=red", query() + "&width=2048", "/luna/plan?" + "a" * 3000 + "=1"):
        status, body, _ = fetch(comfy_server, path)
        assert status == 400 and len(json.loads(body)["error"]) < 300, body[:300]


# The largest plans within the caps, found by timing the planner over the limits' extremes; the route must still
# answer them at once. Their tile counts come from the planner in this process.
LARGEST = [(1000, 16384, 128, 8, "fit"), (4096, 4096, 128, 8, "fit"), (16384, 16384, 512, 0, "exact"),
           (8192, 4096, 512, 384, "fit"), (16384, 16384, 1024, 128, "exact"), (16384, 64, 128, 0, "fit")]


@pytest.mark.parametrize("width, height, tile, overlap, fit", LARGEST)
def test_the_largest_plans_within_the_caps_are_served_in_under_50_ms(comfy_server, width, height, tile, overlap, fit):
    from luna_semantic_detailer.pipeline.tiles import canvas_tiles

    path = query(width=width, height=height, tile=tile, overlap=overlap, fit=fit, tiling="chess")
    timings = []
    for _ in range(3):
        status, body, seconds = fetch(comfy_server, path)
        timings.append(seconds)
    assert status == 200, body[:300]
    assert json.loads(body)["count"] == len(canvas_tiles(width, height, tile, overlap, 8, fit))
    assert statistics.median(timings) < 0.05, timings


def test_the_server_answers_object_info_within_a_second_after_200_hostile_queries(comfy_server):
    from comfy_server import final_exceptions

    paths = [query(**HOSTILE[i % len(HOSTILE)]) for i in range(200)]
    log_start = len(comfy_server.log)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: fetch(comfy_server, p), paths))
    assert {status for status, _, _ in answers} == {400}
    assert max(seconds for _, _, seconds in answers) < 2.0
    start = time.perf_counter()
    info = comfy_server.get("/object_info", timeout=5)
    assert time.perf_counter() - start < 1.0 and "LunaGlobalRefiner" in info
    refusals = final_exceptions(comfy_server.log[log_start:])  # aiohttp logs each request line over 8 KiB it refuses
    assert all(line.startswith("aiohttp.http_exceptions.LineTooLong") for line in refusals), refusals


def test_sam3_status_names_models_as_in_the_models_folder_never_a_path(comfy_server):
    prompt = {
        "sam3": {"class_type": "LunaSAM3Loader", "inputs": {"checkpoint": "model.safetensors", "device": "auto",
                                                             "precision": "auto"}},
        "image": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 1, "color": 0}},
        "detect": {"class_type": "LunaSAM3Detector", "inputs": {
            "sam3": ["sam3", 0], "image": ["image", 0], "prompts": "face", "threshold": 0.0, "max_detections": 1,
            "min_area": 0.0, "detect_resolution": 0}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["detect", 1]}},
    }
    comfy_server.run(prompt, timeout=300)
    models = comfy_server.get("/luna/sam3")["models"]
    choices = comfy_server.get("/object_info/LunaSAM3Loader")["LunaSAM3Loader"]["input"]["required"]["checkpoint"][0]
    assert models and {m["checkpoint"] for m in models} <= set(choices)
    assert all(m["folder"] == "sam3" for m in models)
    text = json.dumps(models)
    assert str(comfy_server.workdir) not in text and str(comfy_server.comfyui) not in text and '"/' not in text


@pytest.mark.parametrize("name", list(LATENT_FORMATS))
def test_a_latent_format_plans_with_its_factor_and_its_models_patch(comfy_server, name):
    """The preview sends the scaffold's latent_format: the plan is the node's for that family (1000 x 744 has odd
    latent sides at ÷8, which a 2 x 2 patch model must not receive)."""
    spec = LATENT_FORMATS[name]
    status, body, _ = fetch(comfy_server, query(width=1000, height=744, tile=512, overlap=64, fit="fit", factor=None,
                                                latent_format=name))
    assert status == 200, body[:300]
    plan = json.loads(body)
    tiles = canvas_tiles(1000, 744, 512, 64, spec.factor, "fit", spec.patch)
    assert [[t["x"], t["y"], t["w"], t["h"]] for t in plan["tiles"]] == [[t.x, t.y, t.width, t.height] for t in tiles]
    assert all(w % (spec.factor * spec.patch) == 0 and h % (spec.factor * spec.patch) == 0 for w, h in plan["tile_sizes"])
