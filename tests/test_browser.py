"""End to end in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) on the session's
ComfyUI server. Each bundled workflow is opened from the Templates browser; the Luna extension, the node widgets,
the refiner's tile plan and the UI → API conversion are checked; one workflow is queued with the Run button."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import browser
from bundled_workflows import NAMES, api, for_tests, write_canvas_image

pytestmark = [pytest.mark.host, pytest.mark.skipif(browser.available() is not None, reason=str(browser.available()))]

ARTIFACTS = Path(os.environ.get("LSD_ARTIFACTS", Path(__file__).parent / "artifacts"))
PACK = "luna_semantic_detailer"
TEST_IMAGE = "lsd_browser_canvas.png"


@pytest.fixture(scope="module")
def page(comfy_server):
    write_canvas_image(comfy_server.workdir / "input" / TEST_IMAGE)
    with browser.open_ui(comfy_server.url) as page:
        yield page
        assert page.errors == [], page.errors


def open_template(page, name: str) -> None:
    """Templates browser → the pack's category → the workflow's card, as an artist would."""
    page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.locator(".p-dialog").filter(has_text="Templates")
    dialog.get_by_text(PACK, exact=True).click()
    dialog.get_by_text(name, exact=True).first.click()
    page.wait_for_function("(n) => app.graph._nodes.length === n", arg=len(json.loads(
        (Path(__file__).parents[1] / "example_workflows" / f"{name}.json").read_text())["nodes"]))
    page.wait_for_function("() => !document.querySelector('.p-dialog')?.innerText.includes('Templates')")


def redraw(page) -> None:
    page.evaluate("() => { app.canvas.setDirty(true, true); app.canvas.draw(true, true); }")


def test_the_luna_extension_is_registered(page):
    assert page.evaluate("() => app.extensions.some((e) => e.name === 'Luna.SemanticDetailer')")


def test_the_extension_tile_plan_is_the_python_planner(page):
    """The overlay's plan is fetched from the pack's route, i.e. the planner the node runs, for odd sizes too."""
    from luna_semantic_detailer.kernels.planning import chess_phases
    from luna_semantic_detailer.pipeline.tiles import canvas_tiles

    cases = [(4096, 4096, 1024, 128, "fit"), (4095, 2161, 1024, 128, "fit"), (3000, 2000, 1536, 200, "exact"),
             (768, 768, 256, 64, "fit"), (1024, 1024, 1024, 128, "exact"), (4104, 2300, 1024, 96, "exact")]
    got = page.evaluate(f"""async (cases) => {{
        const luna = await import('/extensions/{PACK}/luna.js');
        const plans = await Promise.all(cases.map(([w, h, t, o, fit]) =>
            new Promise((done) => luna.tilePlan(w, h, t, o, fit, 'chess', 8, done))));
        return plans.map((p) => [p.count, p.phases, p.tiles.map((x) => [x.x, x.y, x.w, x.h])]);
    }}""", cases)
    for (w, h, t, o, fit), (count, phases, rects) in zip(cases, got):
        tiles = canvas_tiles(w, h, t, o, 8, fit)
        assert count == len(tiles) and phases == len(chess_phases(tiles)), (w, h, t, o, fit)
        assert rects == [[u.x, u.y, u.width, u.height] for u in tiles], (w, h, t, o, fit)


MISSING_NODES = re.compile(r"missing (custom )?nodes|nodes (are|were) missing|some nodes", re.IGNORECASE)


@pytest.mark.parametrize("name", NAMES)
def test_template_opens_with_every_node_known_and_luna_nodes_drawn(name, page):
    open_template(page, name)
    state = page.evaluate("""() => {
        const dialogs = Array.from(document.querySelectorAll('.p-dialog')).map((d) => d.innerText);
        const nodes = app.graph._nodes;
        return {
          dialogs,
          unknown: nodes.filter((n) => !(n.type in LiteGraph.registered_node_types)).map((n) => n.type),
          lunaErrors: nodes.filter((n) => n.type.startsWith('Luna') && n.has_errors).map((n) => n.type),
          luna: nodes.filter((n) => n.type.startsWith('Luna')).map((n) => ({
            type: n.type, color: n.color, bgcolor: n.bgcolor, isLuna: n.isLuna,
            widgets: (n.widgets || []).map((w) => w.name).filter((w) => w !== 'control_after_generate'),
          })),
        };
    }""")
    assert not [d for d in state["dialogs"] if MISSING_NODES.search(d)], state["dialogs"]
    assert state["unknown"] == [] and state["lunaErrors"] == []
    assert state["luna"], "no Luna node in the workflow"
    for node in state["luna"]:
        assert (node["color"], node["bgcolor"], node["isLuna"]) == ("#2b2f5a", "#1b1f3b", True), node
    object_info = page.evaluate("async () => (await fetch('/object_info')).json()")
    for node in state["luna"]:
        spec = object_info[node["type"]]["input"]
        widgets = [k for s in ("required", "optional") for k, v in spec.get(s, {}).items()
                   if isinstance(v[0], list) or v[0] in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")]
        assert node["widgets"] == widgets, node["type"]
    prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
    bundled = api(name)
    for node in (*prompt.values(), *bundled.values()):
        node.pop("_meta", None)  # titles: the frontend leaves untitled nodes' None
    assert prompt == bundled, "the UI workflow does not convert to the bundled API workflow"
    if name == "lsd_full_pipeline":
        page.set_viewport_size({"width": 2600, "height": 1000})  # the whole pipeline at a readable zoom
        page.evaluate("() => { app.canvas.ds.scale = 0.6; app.canvas.ds.offset = [60, 160]; }")
        redraw(page)
        page.wait_for_function("""() => { app.canvas.draw(true, true); return app.graph._nodes.every((n) =>
            !['LunaGlobalRefiner', 'LunaSAM3Detailer'].includes(n.type) || n.lunaPlan?.plan || n.lunaPlan?.sizes); }""")
        drawn = page.evaluate("""() => Object.fromEntries(app.graph._nodes.filter((n) => n.lunaPlan)
                                   .map((n) => [n.type, n.lunaPlan]))""")
        plan = drawn["LunaGlobalRefiner"]
        assert plan["plan"]["count"] == 16 and plan["plan"]["tile_sizes"] == [[1120, 1120]], plan
        assert plan["text"].startswith("4×4 = 16 tiles of 1120px on 4096×4096 · parallel · 20.1 MP sampled"), plan["text"]
        detailer = drawn["LunaSAM3Detailer"]
        assert detailer["sizes"] == [1024, 1536] and "4096×4096" in detailer["text"], detailer
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "lsd_full_pipeline.png"))
        page.set_viewport_size(browser.VIEWPORT)
        assert (ARTIFACTS / "lsd_full_pipeline.png").stat().st_size > 20_000


@pytest.mark.parametrize("name, prefix", [("lsd_global_only", "refined"), ("lsd_detail_only", "detailed")])
def test_a_template_queued_with_the_run_button(name, prefix, page, comfy_server):
    """A template from the Templates browser, its loaders swapped in the graph for the test models and its widgets
    set to the test sizes, queued with Run; the detector shows its preview on the node."""
    open_template(page, name)
    small = for_tests(api(name), TEST_IMAGE)
    page.evaluate("""(small) => {
        const g = app.graph;
        const models = LiteGraph.createNode('LSDTestModels');
        g.add(models);
        for (const [type, slots] of [['CheckpointLoaderSimple', [0, 1, 2]], ['CLIPVisionLoader', [3]]]) {
          const old = g._nodes.find((n) => n.type === type);
          old.outputs.forEach((out, i) => (out.links || []).slice().forEach((id) => {
            const link = g.links[id];
            models.connect(slots[i], g.getNodeById(link.target_id), link.target_slot);
          }));
          g.remove(old);
        }
        for (const node of g._nodes) {
          const wanted = small[String(node.id)]?.inputs ?? {};
          for (const w of node.widgets ?? []) if (w.name in wanted && !Array.isArray(wanted[w.name])) w.value = wanted[w.name];
        }
    }""", small)
    before = set(comfy_server.get("/history"))
    with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST") as queued:
        page.get_by_role("button", name="Run", exact=True).first.click()
    assert queued.value.status == 200, queued.value.text()
    prompt_id = queued.value.json()["prompt_id"]
    assert prompt_id not in before
    entry = comfy_server.wait(prompt_id, timeout=600)
    saved = [img for out in entry["outputs"].values() for img in out.get("images", []) if img["type"] == "output"]
    assert saved and saved[0]["filename"].startswith(prefix) and saved[0]["subfolder"] == "lsd"
    detector = next((k for k, n in small.items() if n["class_type"] == "LunaSAM3Detector"), None)
    if detector:
        page.wait_for_function("(id) => (app.nodeOutputs?.[id]?.images?.length ?? 0) > 0", arg=detector, timeout=30_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}_after_run.png"))
