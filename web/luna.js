// Luna Semantic Detailer: recognisable nodes, and what the refiner/detailer will do before it runs.
// Public extension API only (app.registerExtension, beforeRegisterNodeDef, node prototype callbacks).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

export const LUNA_COLOR = { color: "#2b2f5a", bgcolor: "#1b1f3b" };
const FACTOR = 8;
const TEXT = "#b9c0ff";
const PHASE_COLORS = ["#5b6cff", "#ff9f43", "#2ecc71", "#e056fd", "#f6e58d", "#7ed6df", "#ff7979", "#badc58", "#c7ecee"];
const GRID_HEIGHT = 96;

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name)?.value;
}

function linkOf(node, inputName) {
  const input = node.inputs?.find((i) => i.name === inputName);
  return input?.link != null ? node.graph?.links?.[input.link] ?? app.graph.links[input.link] : null;
}

function sourceNode(node, inputName) {
  const link = linkOf(node, inputName);
  return link ? (node.graph ?? app.graph).getNodeById(link.origin_id) : null;
}

// The plans come from Python (GET /luna/plan, /luna/crop_sizes: the planner the nodes run), cached per query.
const plans = new Map();
let cropChoices = null;

function fetchJson(url, onDone) {
  return api.fetchApi(url).then((r) => r.json()).then(onDone).catch((e) => onDone({ error: String(e) }));
}

// The refiner's plan for a canvas as the node will sample it, or null while it is being fetched.
export function tilePlan(width, height, tile, overlap, fit = "fit", tiling = "parallel", factor = FACTOR, onReady = () => {}) {
  const query = new URLSearchParams({ width, height, tile, overlap, fit, tiling, factor }).toString();
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
  const linked = ["width", "height"].some((name) => linkOf(scaffold, name));
  if (!linked) return { width: widget(scaffold, "width"), height: widget(scaffold, "height"), from: "scaffold" };
  const img = sourceNode(node, "image")?.imgs?.[0];
  if (img?.naturalWidth) return { width: img.naturalWidth, height: img.naturalHeight, from: "image" };
  return { width: null, height: null, from: "image" };
}

function factorOf(node) {
  const format = String(widget(sourceNode(node, "master_scaffold"), "latent_format") ?? "");
  const match = format.match(/÷(\d+)/);
  return match ? parseInt(match[1], 10) : FACTOR;
}

export function refinerPlan(node) {
  const size = canvasSize(node);
  if (!size) return { text: "tile plan: connect a Luna Noise Scaffold" };
  if (!size.width) return { text: "tile plan: the canvas is the input image's size (load it to see the grid)" };
  const tile = widget(node, "tile_size");
  const overlap = widget(node, "overlap");
  const fit = widget(node, "tile_fit") ?? "fit";
  const tiling = widget(node, "tiling") ?? "parallel";
  const plan = tilePlan(size.width, size.height, tile, overlap, fit, tiling, factorOf(node), () => node.setDirtyCanvas?.(true, true));
  if (!plan) return { text: "tile plan: …" };
  if (plan.error) return { text: `tile plan: ${plan.error}` };
  const batch = widget(node, "max_batch");
  const sizes = plan.tile_sizes.map(([w, h]) => (w === h ? `${w}px` : `${w}×${h}px`)).join(", ");
  const phases = tiling === "chess" ? ` · ${plan.phases} chess phases` : "";
  return {
    plan,
    text: `${plan.cols}×${plan.rows} = ${plan.count} tiles of ${sizes} on ${size.width}×${size.height} · ${tiling}${phases} · ` +
      `${plan.sampled_mp.toFixed(1)} MP sampled · ≤${batch} per batch`,
  };
}

export function detailerPlan(node) {
  const choice = String(widget(node, "crop_size") ?? "");
  const pad = widget(node, "context_padding");
  const sizes = loadCropChoices(() => node.setDirtyCanvas?.(true, true))[choice];
  const size = canvasSize(node);
  const canvas = size?.width ? ` on ${size.width}×${size.height}` : "";
  if (!sizes) return { text: `crops${canvas}: …` };
  const largest = sizes[sizes.length - 1];
  const text = sizes.length > 1
    ? `crops${canvas}: ${sizes.slice(0, -1).join(", ")}px if object × ${pad} fits, else ${largest}px (larger: sampled at ${largest})`
    : `crops${canvas}: ${sizes[0]}px (larger objects sampled at ${sizes[0]}px), context × ${pad}`;
  return { text, sizes, canvas: size?.width ? size : null };
}

function fitBox(width, height, boxWidth, boxHeight) {
  const scale = Math.min(boxWidth / width, boxHeight / height);
  return { scale, w: width * scale, h: height * scale };
}

function drawTileGrid(ctx, plan, x, y, maxWidth) {
  const box = fitBox(plan.width, plan.height, maxWidth, GRID_HEIGHT);
  ctx.fillStyle = "#11132a";
  ctx.fillRect(x, y, box.w, box.h);
  for (const t of plan.tiles) {
    ctx.globalAlpha = 0.35;
    const colour = PHASE_COLORS[(plan.tiling === "chess" ? t.phase : t.row + t.col) % PHASE_COLORS.length];
    ctx.fillStyle = colour;
    ctx.fillRect(x + t.x * box.scale, y + t.y * box.scale, t.w * box.scale, t.h * box.scale);
    ctx.globalAlpha = 1;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x + t.x * box.scale + 0.5, y + t.y * box.scale + 0.5, t.w * box.scale - 1, t.h * box.scale - 1);
  }
  ctx.fillStyle = TEXT;
  if (plan.tiling === "chess") plan.tiles.forEach((t) => {
    if (t.w * box.scale > 14) ctx.fillText(String(t.phase + 1), x + (t.x + t.w / 2) * box.scale - 3, y + (t.y + t.h / 2) * box.scale + 4);
  });
  return box.h;
}

function drawCropSquares(ctx, info, x, y, maxWidth) {
  if (!info.canvas) return 0;
  const box = fitBox(info.canvas.width, info.canvas.height, maxWidth, GRID_HEIGHT * 0.75);
  ctx.fillStyle = "#11132a";
  ctx.fillRect(x, y, box.w, box.h);
  info.sizes.forEach((size, i) => {
    const side = Math.min(size, info.canvas.width, info.canvas.height) * box.scale;
    ctx.strokeStyle = PHASE_COLORS[i];
    ctx.strokeRect(x + 2 + i * 3, y + box.h - side - 2 + i * 0, side, side);
    ctx.fillStyle = PHASE_COLORS[i];
    ctx.fillText(`${size}`, x + box.w + 6, y + 12 + i * 13);
  });
  return box.h;
}

function drawBadge(ctx, node) {
  const h = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  const cx = node.size[0] - h / 2;
  const cy = -h / 2;
  ctx.save();
  ctx.fillStyle = "#f4d35e";
  ctx.beginPath();
  ctx.arc(cx, cy, 7, 0, Math.PI * 2);
  ctx.fill();
  ctx.fillStyle = node.color ?? LUNA_COLOR.color;
  ctx.beginPath();
  ctx.arc(cx + 3.5, cy - 2.5, 6, 0, Math.PI * 2);
  ctx.fill();
  ctx.restore();
}

const PLANS = { LunaGlobalRefiner: refinerPlan, LunaSAM3Detailer: detailerPlan };

app.registerExtension({
  name: "Luna.SemanticDetailer",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.category?.startsWith("Luna")) return;
    const planOf = PLANS[nodeData.name];
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      Object.assign(this, LUNA_COLOR);
      this.isLuna = true;
      return result;
    };
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      const result = onDrawForeground?.apply(this, arguments);
      drawBadge(ctx, this);
      if (!planOf || this.flags?.collapsed) return result;
      const info = planOf(this);
      this.lunaPlan = info;
      ctx.save();
      ctx.font = "11px sans-serif";
      ctx.fillStyle = TEXT;
      ctx.fillText(`🌙 ${info.text}`, 8, this.size[1] + 14);
      if (info.plan) drawTileGrid(ctx, info.plan, 8, this.size[1] + 22, Math.min(this.size[0] - 16, 2 * GRID_HEIGHT));
      else if (info.sizes) drawCropSquares(ctx, info, 8, this.size[1] + 22, Math.min(this.size[0] - 60, 2 * GRID_HEIGHT));
      ctx.restore();
      return result;
    };
  },
});
