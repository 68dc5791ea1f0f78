// Luna Semantic Detailer: recognisable nodes, and what the refiner/detailer will do before it runs, in the classic
// canvas and in Nodes 2.0 (the Vue renderer) alike. Public, non-deprecated extension API only: app.registerExtension,
// node.addDOMWidget (a DOM element both renderers show), node.badges, node.color/bgcolor, and links read through
// node.findInputSlot / isInputConnected / getInputNode.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

export const EXTENSION_NAME = "luna-semantic-detailer.NodePreviews";
export const PREVIEW_WIDGET = "luna_preview";
export const LUNA_COLOR = { color: "#2b2f5a", bgcolor: "#1b1f3b" };
export const BADGE_TEXT = "☾ Luna";
const FACTOR = 8;
const TEXT = "#b9c0ff";
const BACKDROP = "#11132a";
const PHASE_COLORS = ["#5b6cff", "#ff9f43", "#2ecc71", "#e056fd", "#f6e58d", "#7ed6df", "#ff7979", "#badc58", "#c7ecee"];
const DRAWING = { width: 200, height: 96 };
const PREVIEW_HEIGHT = 150;
const REFRESH_MS = 250;

function widgetValue(node, name) {
  return node?.widgets?.find((w) => w.name === name)?.value;
}

function inputSlot(node, name) {
  return node?.findInputSlot?.(name) ?? -1;
}

function isLinked(node, name) {
  const slot = inputSlot(node, name);
  return slot >= 0 && node.isInputConnected(slot);
}

function sourceNode(node, name) {
  const slot = inputSlot(node, name);
  return slot >= 0 && node.graph ? node.getInputNode(slot) : null;
}

// The plans come from Python (GET /luna/plan, /luna/crop_sizes: the planner the nodes run), cached per query.
const plans = new Map();
let cropChoices = null;

function fetchJson(url, onDone) {
  return api.fetchApi(url).then((r) => r.json()).then(onDone).catch((e) => onDone({ error: String(e) }));
}

// The refiner's plan for a canvas as the node will sample it, or null while it is being fetched. `latent`: the
// scaffold's {latent_format} (its factor and the model's patch), or {factor}.
export function tilePlan(width, height, tile, overlap, fit = "fit", tiling = "parallel", latent = { factor: FACTOR },
                         onReady = () => {}) {
  const query = new URLSearchParams({ width, height, tile, overlap, fit, tiling, ...latent }).toString();
  if (!plans.has(query)) {
    plans.set(query, null);
    fetchJson(`/luna/plan?${query}`, (plan) => { plans.set(query, plan); onReady(plan); });
  }
  return plans.get(query);
}

export function loadCropChoices(onReady = () => {}) {
  if (cropChoices === null) {
    cropChoices = {};
    fetchJson("/luna/crop_sizes", (choices) => { cropChoices = choices; onReady(choices); });
  }
  return cropChoices;
}

// The canvas the node works on: the scaffold's width/height widgets, or the loaded image's size when they are linked.
export function canvasSize(node) {
  const scaffold = sourceNode(node, "master_scaffold");
  if (scaffold?.comfyClass !== "LunaNoiseScaffold") return null;
  if (!isLinked(scaffold, "width") && !isLinked(scaffold, "height")) {
    return { width: widgetValue(scaffold, "width"), height: widgetValue(scaffold, "height"), from: "scaffold" };
  }
  const img = sourceNode(node, "image")?.imgs?.[0];
  if (img?.naturalWidth) return { width: img.naturalWidth, height: img.naturalHeight, from: "image" };
  return { width: null, height: null, from: "image" };
}

function latentOf(node) {
  const format = widgetValue(sourceNode(node, "master_scaffold"), "latent_format");
  return format ? { latent_format: format } : { factor: FACTOR };
}

export function refinerPlan(node, onReady = () => {}) {
  const size = canvasSize(node);
  if (!size) return { text: "tile plan: connect a Luna Noise Scaffold" };
  if (!size.width) return { text: "tile plan: the canvas is the input image's size (load it to see the grid)" };
  const tile = widgetValue(node, "tile_size");
  const overlap = widgetValue(node, "overlap");
  const fit = widgetValue(node, "tile_fit") ?? "fit";
  const tiling = widgetValue(node, "tiling") ?? "parallel";
  const plan = tilePlan(size.width, size.height, tile, overlap, fit, tiling, latentOf(node), onReady);
  if (!plan) return { text: "tile plan: …" };
  if (plan.error) return { text: `tile plan: ${plan.error}` };
  const batch = widgetValue(node, "max_batch");
  const sizes = plan.tile_sizes.map(([w, h]) => (w === h ? `${w}px` : `${w}×${h}px`)).join(", ");
  const phases = plan.phases > 1 ? ` · ${plan.phases} phases` : "";
  return {
    plan,
    text: `${plan.cols}×${plan.rows} = ${plan.count} tiles of ${sizes} on ${size.width}×${size.height} · ${tiling}${phases} · ` +
      `${plan.sampled_mp.toFixed(1)} MP sampled · ≤${batch} per batch`,
  };
}

export function detailerPlan(node, onReady = () => {}) {
  const choice = String(widgetValue(node, "crop_size") ?? "");
  const pad = widgetValue(node, "context_padding");
  const sizes = loadCropChoices(onReady)[choice];
  const size = canvasSize(node);
  const canvas = size?.width ? ` on ${size.width}×${size.height}` : "";
  if (!sizes) return { text: `crops${canvas}: …` };
  const largest = sizes[sizes.length - 1];
  const text = sizes.length > 1
    ? `crops${canvas}: ${sizes.slice(0, -1).join(", ")}px if object × ${pad} fits, else ${largest}px (larger: sampled at ${largest})`
    : `crops${canvas}: ${sizes[0]}px (larger objects sampled at ${sizes[0]}px), context × ${pad}`;
  return { text, sizes, canvas: size?.width ? size : null };
}

function fitBox(width, height) {
  const scale = Math.min(DRAWING.width / width, DRAWING.height / height);
  return { scale, w: Math.max(1, Math.round(width * scale)), h: Math.max(1, Math.round(height * scale)) };
}

function drawTileGrid(ctx, plan, box) {
  for (const t of plan.tiles) {
    const ordered = plan.phases > 1;
    const colour = PHASE_COLORS[(ordered ? t.phase : t.row + t.col) % PHASE_COLORS.length];
    const [x, y, w, h] = [t.x, t.y, t.w, t.h].map((v) => v * box.scale);
    ctx.globalAlpha = 0.35;
    ctx.fillStyle = colour;
    ctx.fillRect(x, y, w, h);
    ctx.globalAlpha = 1;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x + 0.5, y + 0.5, w - 1, h - 1);
    if (ordered && w > 14) {
      ctx.fillStyle = TEXT;
      ctx.fillText(String(t.phase + 1), x + w / 2 - 3, y + h / 2 + 4);
    }
  }
}

// Each crop size as a square to the canvas's scale, from its bottom-left corner, labelled at its top-right.
function drawCropSquares(ctx, info, box) {
  info.sizes.forEach((size, i) => {
    const side = Math.min(size, info.canvas.width, info.canvas.height) * box.scale;
    const top = box.h - side - 2;
    ctx.strokeStyle = PHASE_COLORS[i];
    ctx.strokeRect(2.5, top + 0.5, side - 1, side - 1);
    ctx.fillStyle = PHASE_COLORS[i];
    ctx.fillText(`${size}px`, side + 6, top + 8);
  });
}

// The drawing of a plan on the preview's <canvas>, in canvas pixels scaled into DRAWING; none without a canvas size.
function draw(canvas, info) {
  const area = info.plan ?? info.canvas;
  canvas.hidden = !area || !(info.plan || info.sizes);
  if (canvas.hidden) return;
  const box = fitBox(area.width, area.height);
  const ratio = globalThis.devicePixelRatio || 1;
  canvas.width = Math.round(box.w * ratio);
  canvas.height = Math.round(box.h * ratio);
  canvas.style.width = `${box.w}px`;
  canvas.style.height = `${box.h}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.font = "10px sans-serif";
  ctx.fillStyle = BACKDROP;
  ctx.fillRect(0, 0, box.w, box.h);
  if (info.plan) drawTileGrid(ctx, info.plan, box);
  else drawCropSquares(ctx, info, box);
}

// What the preview shows depends on these: its own widgets and links, and the upstream scaffold's and image's.
function previewKey(node) {
  const scaffold = sourceNode(node, "master_scaffold");
  const own = (node.widgets ?? []).filter((w) => w.name !== PREVIEW_WIDGET).map((w) => w.value);
  return JSON.stringify([own, canvasSize(node), scaffold && widgetValue(scaffold, "latent_format")]);
}

class PlanPreview {
  constructor(node, planOf) {
    this.node = node;
    this.planOf = planOf;
    this.key = null;
    this.element = document.createElement("div");
    this.element.className = "luna-preview";
    Object.assign(this.element.style, {
      display: "flex", flexDirection: "column", gap: "4px", padding: "4px 6px", boxSizing: "border-box",
      font: "11px sans-serif", color: TEXT, overflow: "hidden",
    });
    this.line = document.createElement("div");
    this.line.className = "luna-plan-text";
    this.line.style.whiteSpace = "normal";
    this.canvas = document.createElement("canvas");
    this.canvas.className = "luna-plan-drawing";
    this.element.append(this.line, this.canvas);
    const widget = node.addDOMWidget(PREVIEW_WIDGET, "luna-preview", this.element, {
      serialize: false, hideOnZoom: false, getMinHeight: () => PREVIEW_HEIGHT, getMaxHeight: () => PREVIEW_HEIGHT,
    });
    widget.serialize = false;
  }

  // Redraws when anything the plan depends on changed, or when a plan it waited for arrived.
  refresh(force = false) {
    const key = previewKey(this.node);
    if (!force && key === this.key) return;
    this.key = key;
    const info = this.planOf(this.node, () => this.refresh(true));
    this.line.textContent = `☾ ${info.text}`;
    this.element.dataset.state = info.plan || info.sizes ? "ready" : "waiting";
    draw(this.canvas, info);
  }
}

const PLANS = { LunaGlobalRefiner: refinerPlan, LunaSAM3Detailer: detailerPlan };
const previews = new Set();
let refreshing = null;

function watch(preview) {
  previews.add(preview);
  refreshing ??= setInterval(() => previews.forEach((p) => p.refresh()), REFRESH_MS);
}

function unwatch(preview) {
  previews.delete(preview);
  if (previews.size === 0 && refreshing !== null) {
    clearInterval(refreshing);
    refreshing = null;
  }
}

function lunaBadge() {
  const Badge = globalThis.LGraphBadge;
  return Badge ? new Badge({ text: BADGE_TEXT, fgColor: "#f4d35e", bgColor: LUNA_COLOR.color }) : null;
}

app.registerExtension({
  name: EXTENSION_NAME,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.category?.startsWith("Luna")) return;
    const planOf = PLANS[nodeData.name];
    if (planOf) {
      // Workflows saved before the preview existed (or sized by hand) keep their node size: make room for it.
      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function () {
        const result = onConfigure?.apply(this, arguments);
        const [width, height] = this.computeSize();
        if (this.size[1] < height) this.setSize([Math.max(this.size[0], width), height]);
        return result;
      };
    }
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      Object.assign(this, LUNA_COLOR);
      this.isLuna = true;
      const badge = lunaBadge();
      if (badge) this.badges = [...(this.badges ?? []), badge];
      if (planOf) {
        const preview = new PlanPreview(this, planOf);
        watch(preview);
        const onRemoved = this.onRemoved;
        this.onRemoved = function () {
          unwatch(preview);
          return onRemoved?.apply(this, arguments);
        };
      }
      return result;
    };
  },
});
