"""End to end in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) on three
frontends (tests/frontends.py), each in the classic renderer and in Nodes 2.0 (the Vue renderer). Each bundled
workflow is opened from the Templates browser; the Luna colours and badge, the node widgets, the refiner's and the
detailer's plan preview (a DOM widget: its text from the pack's planner, its drawing, its updates as widgets and links
change) and the UI → API conversion are checked; one workflow per frontend is queued with the Run button; nothing in
the console comes from the Luna extension or its routes."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import browser
from bundled_workflows import (DISTRIBUTED, NAMES, api, for_tests, skip_if_the_host_lacks_its_core_nodes, ui,
                               write_canvas_image)
from frontends import ui_params
from server_log import deprecation_warnings, warnings_naming_the_pack

pytestmark = [pytest.mark.host, pytest.mark.skipif(browser.available() is not None, reason=str(browser.available()))]

ARTIFACTS = Path(os.environ.get("LSD_ARTIFACTS", Path(__file__).parent / "artifacts"))
PACK = "luna_semantic_detailer"
TEST_IMAGE = "lsd_browser_canvas.png"
EXTENSION = "luna-semantic-detailer.NodePreviews"
PREVIEW = "luna_preview"
BADGE = "☾ Luna"
LUNA_SOURCES = (f"/extensions/{PACK}/", "/luna/")

# Page helpers: the graph through the frontend's non-deprecated accessors where it has them.
HELPERS = """() => {
  const graph = () => app.rootGraph ?? app.graph;
  const nodes = () => graph().nodes ?? graph()._nodes;
  const badgeTexts = (n) => (n.badges ?? []).map((b) => (typeof b === 'function' ? b() : b)?.text ?? '');
  const preview = (n) => n.widgets?.find((w) => w.name === '%s')?.element ?? null;
  window.lsd = { graph, nodes, badgeTexts, preview, byType: (t) => nodes().find((n) => n.type === t) };
}""" % PREVIEW


@dataclass
class UI:
    page: object
    server: object
    host: object
    renderer: str
    version: str
    log_start: int


@pytest.fixture(scope="module", params=ui_params())
def ui_(request, comfy_server, other_servers):
    host, renderer = request.param
    if host.missing():
        pytest.skip(host.missing())
    server = comfy_server if host.comfyui is None else other_servers(host)
    log_start = len(server.log)
    write_canvas_image(server.workdir / "input" / TEST_IMAGE)
    with browser.open_ui(server.url) as page:
        page.evaluate(HELPERS)
        page.evaluate(browser.REPEAT_WARNINGS)
        page.keyboard.press("Escape")  # a new user's first page opens the Templates browser
        vue = page.evaluate("""async (vue) => {
            const settings = app.extensionManager.setting;
            if (settings.get('Comfy.VueNodes.Enabled') === undefined) return null;
            await settings.set('Comfy.VueNodes.Enabled', vue);
            return settings.get('Comfy.VueNodes.Enabled');
        }""", renderer == "vue")
        if vue is None:
            pytest.skip("this frontend has no Nodes 2.0 renderer")
        assert vue == (renderer == "vue")
        version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
        yield UI(page, server, host, renderer, version, log_start)
        assert page.errors == [], page.errors


def open_template(page, name: str) -> None:
    """Templates browser → the pack's category → the workflow's card, as an artist would."""
    page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.locator("[role=dialog]").filter(has_text="Templates")
    dialog.get_by_text(PACK, exact=True).first.click()
    dialog.get_by_text(name, exact=True).first.click()
    page.wait_for_function("(n) => lsd.nodes().length === n", arg=len(ui(name)["nodes"]))
    page.wait_for_function("() => ![...document.querySelectorAll('[role=dialog]')].some((d) => "
                           "d.innerText.includes('Templates'))")


def test_the_frontend_is_the_one_meant(ui_):
    """The pinned newest one where it is served from --front-end-root, else the host venv's own package."""
    import subprocess
    import sys

    from frontends import NEWEST

    python = ui_.host.python or sys.executable
    installed = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                                "print(m.version('comfyui-frontend-package'))"], capture_output=True, text=True,
                               check=True).stdout.strip()
    assert ui_.version == (NEWEST if ui_.host.front_end_root else installed)


def test_the_luna_extension_is_registered_under_its_pack_name(ui_):
    names = ui_.page.evaluate("() => app.extensions.map((e) => e.name)")
    assert EXTENSION in names and not [n for n in names if n.startswith("Luna.")]


def test_the_extension_tile_plan_is_the_python_planner(ui_):
    """The preview's plan is fetched from the pack's route, i.e. the planner the node runs, for odd sizes too."""
    from luna_semantic_detailer.kernels.planning import chess_phases
    from luna_semantic_detailer.pipeline.tiles import canvas_tiles

    cases = [(4096, 4096, 1024, 128, "fit"), (4095, 2161, 1024, 128, "fit"), (3000, 2000, 1536, 200, "exact"),
             (768, 768, 256, 64, "fit"), (1024, 1024, 1024, 128, "exact"), (4104, 2300, 1024, 96, "exact")]
    got = ui_.page.evaluate(f"""async (cases) => {{
        const luna = await import('/extensions/{PACK}/luna.js');
        const plans = await Promise.all(cases.map(([w, h, t, o, fit]) =>
            new Promise((done) => luna.tilePlan(w, h, t, o, fit, 'chess', {{ factor: 8 }}, done))));
        return plans.map((p) => [p.count, p.phases, p.tiles.map((x) => [x.x, x.y, x.w, x.h])]);
    }}""", cases)
    for (w, h, t, o, fit), (count, phases, rects) in zip(cases, got):
        tiles = canvas_tiles(w, h, t, o, 8, fit)
        assert count == len(tiles) and phases == len(chess_phases(tiles)), (w, h, t, o, fit)
        assert rects == [[u.x, u.y, u.width, u.height] for u in tiles], (w, h, t, o, fit)


MISSING_NODES = re.compile(r"missing (custom )?nodes|nodes (are|were) missing|some nodes", re.IGNORECASE)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in DISTRIBUTED])
def test_template_opens_with_every_node_known_and_luna_nodes_marked(name, ui_):
    if ui_.renderer == "vue" and not ui_.host.front_end_root and name != "lsd_full_pipeline":
        pytest.skip("Nodes 2.0 of an older frontend opens lsd_full_pipeline only; the newest opens every template")
    skip_if_the_host_lacks_its_core_nodes(name, ui_.server.get("/object_info"),
                                          ui_.server.get("/system_stats")["system"]["comfyui_version"])
    assert_template_opens(ui_.page, name, ui_.renderer == "vue")


def assert_template_opens(page, name: str, vue: bool) -> None:
    """Template `name` from the Templates browser: every node known, Luna nodes coloured, badged and identified as
    the bundled file records them, their widgets the server's inputs, the UI converting to the bundled API file."""
    open_template(page, name)
    state = page.evaluate("""(vue) => {
        const dialogs = Array.from(document.querySelectorAll('[role=dialog]')).map((d) => d.innerText);
        const nodes = lsd.nodes();
        return {
          dialogs,
          unknown: nodes.filter((n) => !(n.type in LiteGraph.registered_node_types)).map((n) => n.type),
          lunaErrors: nodes.filter((n) => n.type.startsWith('Luna') && n.has_errors).map((n) => n.type),
          luna: nodes.filter((n) => n.type.startsWith('Luna')).map((n) => {
            const element = vue ? document.querySelector(`[data-node-id="${n.id}"]`) : null;
            return {
              type: n.type, color: n.color, bgcolor: n.bgcolor, isLuna: n.isLuna, badges: lsd.badgeTexts(n),
              properties: { cnr_id: n.properties.cnr_id, ver: n.properties.ver },
              widgets: (n.widgets || []).map((w) => w.name).filter((w) => w !== 'control_after_generate'),
              drawn: element ? element.innerText : null,
            };
          }),
        };
    }""", vue)
    assert not [d for d in state["dialogs"] if MISSING_NODES.search(d)], state["dialogs"]
    assert state["unknown"] == [] and state["lunaErrors"] == []
    assert state["luna"], "no Luna node in the workflow"
    bundled_ui = {n["type"]: n for n in ui(name)["nodes"]}
    for node in state["luna"]:
        assert (node["color"], node["bgcolor"], node["isLuna"]) == ("#2b2f5a", "#1b1f3b", True), node
        assert BADGE in node["badges"], node
        bundled = bundled_ui[node["type"]]["properties"]
        assert node["properties"] == {"cnr_id": bundled["cnr_id"], "ver": bundled["ver"]}, node
        if vue and node["drawn"] is not None:
            assert BADGE in node["drawn"], node
    object_info = page.evaluate("async () => (await fetch('/object_info')).json()")
    for node in state["luna"]:
        spec = object_info[node["type"]]["input"]
        widgets = [k for s in ("required", "optional") for k, v in spec.get(s, {}).items()
                   if isinstance(v[0], list) or v[0] in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")]
        previews = [PREVIEW] if node["type"] in ("LunaGlobalRefiner", "LunaSAM3Detailer") else []
        assert node["widgets"] == widgets + previews, node["type"]
    prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
    bundled = api(name)
    for node_id, node in prompt.items():
        meta, want = node.pop("_meta", {}), bundled[node_id].get("_meta", {})
        assert {k: v for k, v in meta.items() if k in ("cnr_id", "ver")} in ({}, {k: want[k] for k in ("cnr_id", "ver")
                                                                                 if k in want}), (name, node_id, meta)
    for node in bundled.values():
        node.pop("_meta", None)
    for node_id, node in prompt.items():
        added_by_this_core(node, bundled[node_id], object_info)
    assert prompt == bundled, "the UI workflow does not convert to the bundled API workflow"


def added_by_this_core(node: dict, bundled: dict, object_info: dict) -> None:
    """Drop from a core node's converted inputs those the bundled file (built on the oldest tested ComfyUI) lacks and
    this host's core node has at their default: inputs a newer core added (0.33's CreateVideo bit_depth)."""
    if node["class_type"].startswith("Luna"):
        return
    spec = {k: v for s in ("required", "optional") for k, v in object_info[node["class_type"]]["input"].get(s, {}).items()}
    for name in set(node["inputs"]) - set(bundled["inputs"]):
        if name in spec and len(spec[name]) > 1 and node["inputs"][name] == spec[name][1].get("default"):
            del node["inputs"][name]


def preview_state(page, node_type: str) -> dict:
    return page.evaluate("""(type) => {
        const node = lsd.byType(type);
        const element = lsd.preview(node);
        const canvas = element.querySelector('canvas');
        const host = element.closest('[data-node-id]');
        return {
          id: node.id, text: element.querySelector('.luna-plan-text').textContent, state: element.dataset.state,
          inVueNode: host ? host.getAttribute('data-node-id') === String(node.id) : false,
          connected: element.isConnected, canvas: canvas.hidden ? null : [canvas.width, canvas.height],
        };
    }""", node_type)


def expected_refiner_text(width: int, height: int, tile: int, overlap: int) -> str:
    """The refiner's preview line, from the Python planner."""
    from luna_semantic_detailer.pipeline.tiles import canvas_tiles

    tiles = canvas_tiles(width, height, tile, overlap, 8, "fit")
    cols, rows = tiles[-1].col + 1, tiles[-1].row + 1
    sizes = ", ".join(f"{w}px" if w == h else f"{w}×{h}px" for w, h in sorted({(t.width, t.height) for t in tiles}))
    mp = sum(t.width * t.height for t in tiles) / 1e6
    return (f"☾ {cols}×{rows} = {len(tiles)} tiles of {sizes} on {width}×{height} · parallel · {mp:.1f} MP sampled "
            "· ≤4 per batch")


def wait_for_text(page, node_type: str, text: str) -> None:
    page.wait_for_function("([type, text]) => lsd.preview(lsd.byType(type))?.querySelector('.luna-plan-text')"
                           "?.textContent === text", arg=[node_type, text], timeout=15_000)


def screenshot_luna_nodes(ui_) -> None:
    """The detailer and the refiner of the full pipeline as the artist sees them (docs/ shows the newest frontend's)."""
    page = ui_.page
    page.set_viewport_size({"width": 1500, "height": 1050})
    page.mouse.move(1490, 1040)
    page.evaluate("""() => { const n = lsd.byType('LunaSAM3Detailer'); const c = app.canvas;
                             c.ds.scale = 0.9; c.ds.offset = [-n.pos[0] + 90, -n.pos[1] + 170]; c.setDirty(true, true); }""")
    page.wait_for_timeout(1000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"luna_nodes_{ui_.version}_{ui_.renderer}.png"
    page.screenshot(path=str(shot))
    page.set_viewport_size(browser.VIEWPORT)
    assert shot.stat().st_size > 20_000


def test_the_plan_preview_shows_the_planners_plan_and_follows_widgets_and_links(ui_):
    from luna_semantic_detailer.pipeline.crops import CROP_SIZES
    from luna_semantic_detailer.pipeline.tiles import canvas_tiles

    page = ui_.page
    open_template(page, "lsd_full_pipeline")
    wait_for_text(page, "LunaGlobalRefiner", expected_refiner_text(4096, 4096, 1024, 128))
    screenshot_luna_nodes(ui_)
    refiner = preview_state(page, "LunaGlobalRefiner")
    assert refiner["connected"] and refiner["state"] == "ready" and refiner["canvas"], refiner
    if ui_.renderer == "vue":
        assert refiner["inVueNode"], "the preview is not inside the refiner's Vue node"
    # The drawing: every tile's centre is painted, the backdrop shows outside the canvas's aspect.
    tiles = canvas_tiles(4096, 4096, 1024, 128, 8, "fit")
    painted = page.evaluate("""(centres) => {
        const canvas = lsd.preview(lsd.byType('LunaGlobalRefiner')).querySelector('canvas');
        const ctx = canvas.getContext('2d');
        return centres.map(([x, y]) => Array.from(ctx.getImageData(Math.floor(x * canvas.width),
                                                                 Math.floor(y * canvas.height), 1, 1).data));
    }""", [[(t.x + t.width / 2) / 4096, (t.y + t.height / 2) / 4096] for t in tiles])
    backdrop = [0x11, 0x13, 0x2A, 255]
    assert all(pixel != backdrop for pixel in painted), painted
    assert refiner["canvas"][0] == refiner["canvas"][1]  # a square canvas drawn square
    sizes = CROP_SIZES["auto (1024 / 1536)"]
    detailer = preview_state(page, "LunaSAM3Detailer")
    assert detailer["text"] == (f"☾ crops on 4096×4096: {sizes[0]}px if object × 1.5 fits, else {sizes[1]}px "
                                f"(larger: sampled at {sizes[1]})"), detailer
    # A widget change redraws it from the planner; so does a link change.
    page.evaluate("() => { lsd.byType('LunaGlobalRefiner').widgets.find((w) => w.name === 'tile_size').value = 1536; }")
    wait_for_text(page, "LunaGlobalRefiner", expected_refiner_text(4096, 4096, 1536, 128))
    page.evaluate("""() => { const n = lsd.byType('LunaGlobalRefiner');
                             n.disconnectInput(n.findInputSlot('master_scaffold')); }""")
    wait_for_text(page, "LunaGlobalRefiner", "☾ tile plan: connect a Luna Noise Scaffold")
    assert preview_state(page, "LunaGlobalRefiner")["canvas"] is None


def test_a_template_queued_with_the_run_button(ui_):
    """A template from the Templates browser, its loaders swapped in the graph for the test models and its widgets
    set to the test sizes, queued with Run; it finishes and saves its image."""
    host, page = ui_.host, ui_.page
    if ui_.renderer != host.queue_renderer:
        pytest.skip(f"this frontend queues {host.queue} in its {host.queue_renderer} renderer")
    name = host.queue
    open_template(page, name)
    small = for_tests(api(name), TEST_IMAGE)
    page.evaluate("""(small) => {
        const g = lsd.graph();
        const models = LiteGraph.createNode('LSDTestModels');
        g.add(models);
        for (const [type, slots] of [['CheckpointLoaderSimple', [0, 1, 2]], ['CLIPVisionLoader', [3]]]) {
          const old = lsd.byType(type);
          for (const target of [...lsd.nodes()]) {
            (target.inputs ?? []).forEach((_, slot) => {
              if (target.getInputNode(slot) !== old) return;
              models.connect(slots[target.getInputLink(slot).origin_slot], target, slot);
            });
          }
          g.remove(old);
        }
        for (const node of lsd.nodes()) {
          const wanted = small[String(node.id)]?.inputs ?? {};
          for (const w of node.widgets ?? []) if (w.name in wanted && !Array.isArray(wanted[w.name])) w.value = wanted[w.name];
        }
    }""", small)
    before = set(ui_.server.get("/history"))
    with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST") as queued:
        page.get_by_role("button", name="Run", exact=True).first.click()
    assert queued.value.status == 200, queued.value.text()
    prompt_id = queued.value.json()["prompt_id"]
    assert prompt_id not in before
    entry = ui_.server.wait(prompt_id, timeout=600)
    prefix = next(n["inputs"]["filename_prefix"] for n in small.values() if n["class_type"] == "SaveImage")
    saved = [img for out in entry["outputs"].values() for img in out.get("images", []) if img["type"] == "output"]
    assert saved and f"{saved[0]['subfolder']}/{saved[0]['filename']}".startswith(prefix), saved
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}_after_run_{ui_.version}_{ui_.renderer}.png"))


def test_nothing_in_the_console_comes_from_luna(ui_):
    """No warning or error printed by luna.js or through it (deprecated frontend APIs warn from inside the caller),
    and none about its routes or files."""
    assert browser.console_of(ui_.page, *LUNA_SOURCES) == []


def test_nothing_in_the_server_log_comes_from_luna(ui_):
    """While this frontend loaded the extension, opened the templates and ran one: no warning in the server's log names
    the pack, and nothing is reported deprecated (e.g. 0.33's "[DEPRECATION WARNING] Detected import of deprecated
    legacy API", printed when an extension imports the frontend's old /scripts/ui or /extensions/core files)."""
    said = ui_.server.log[ui_.log_start:]
    assert warnings_naming_the_pack(said) == [] and deprecation_warnings(said) == [], said[-3000:]
