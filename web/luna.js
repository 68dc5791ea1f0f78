// Luna Semantic Detailer: recognisable nodes, and what the refiner/detailer will do before it runs.
// Public extension API only (app.registerExtension, beforeRegisterNodeDef, node prototype callbacks).
import { app } from "../../scripts/app.js";

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

// Mirrors kernels/planning.py _axis_tiles: the fewest grid-snapped, evenly spread tiles overlapping by >= overlap.
export function axisTiles(length, tile, overlap, factor = FACTOR) {
  const padded = Math.ceil(length / factor) * factor;
  if (padded <= tile) return [[0, length]];
  const free = Math.floor((padded - tile) / factor);
  const step = Math.floor((tile - overlap) / factor);
  const gaps = Math.ceil(free / step);
  const out = [];
  for (let i = 0; i <= gaps; i++) {
    const origin = Math.floor((2 * i * free + gaps) / (2 * gaps)) * factor;
    out.push([origin, Math.min(tile, length - origin)]);
  }
  return out;
}

// Mirrors kernels/planning.py _separation: smallest slot distance at which tiles along an axis are disjoint.
function separation(spans) {
  let k = 1;
  while (spans.some((s, i) => i + k < spans.length && spans[i + k][0] < s[0] + s[1])) k += 1;
  return k;
}

// The refiner's tiles and chess phases (kernels/planning.py plan_tiles + chess_phases).
export function tilePlan(width, height, tile, overlap, factor = FACTOR) {
  if (!(width > 0 && height > 0 && tile > 0) || tile % factor || overlap < 0 || overlap > tile - factor) return null;
  const cols = axisTiles(width, tile, overlap, factor);
  const rows = axisTiles(height, tile, overlap, factor);
  const kx = separation(cols);
  const ky = separation(rows);
  const keys = [];
  const tiles = [];
  rows.forEach(([y, h], r) =>
    cols.forEach(([x, w], c) => {
      const key = (r % ky) * kx + (c % kx);
      if (!keys.includes(key)) keys.push(key);
      tiles.push({ x, y, w, h, row: r, col: c, key });
    })
  );
  keys.sort((a, b) => a - b);
  for (const t of tiles) t.phase = keys.indexOf(t.key);
  return { width, height, tile, overlap, cols: cols.length, rows: rows.length, count: tiles.length, phases: keys.length, tiles };
}

// Mirrors kernels/planning.py plan_crop's size rule: the smallest crop target >= object side × context.
export function cropSizes(choice) {
  const fixed = parseInt(choice, 10);
  return Number.isFinite(fixed) ? [fixed] : [1024, 1536];
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

export function refinerPlan(node) {
  const size = canvasSize(node);
  if (!size) return { text: "tile plan: connect a Luna Noise Scaffold" };
  if (!size.width) return { text: "tile plan: the canvas is the input image's size (load it to see the grid)" };
  const tile = widget(node, "tile_size");
  const overlap = widget(node, "overlap");
  const plan = tilePlan(size.width, size.height, tile, overlap);
  if (!plan) return { text: `overlap must be at most tile − ${FACTOR} and the tile a multiple of ${FACTOR}` };
  const batch = widget(node, "max_batch");
  return {
    plan,
    text: `${plan.cols}×${plan.rows} = ${plan.count} tiles of ${tile}px on ${size.width}×${size.height} · ${plan.phases} chess phases · ≤${batch} per batch`,
  };
}

export function detailerPlan(node) {
  const choice = String(widget(node, "crop_size") ?? "");
  const pad = widget(node, "context_padding");
  const sizes = cropSizes(choice);
  const size = canvasSize(node);
  const canvas = size?.width ? ` on ${size.width}×${size.height}` : "";
  const text = sizes.length > 1
    ? `crops${canvas}: 1024px if object × ${pad} ≤ 1024, else 1536px (larger: sampled at 1536)`
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
    ctx.fillStyle = PHASE_COLORS[t.phase % PHASE_COLORS.length];
    ctx.fillRect(x + t.x * box.scale, y + t.y * box.scale, t.w * box.scale, t.h * box.scale);
    ctx.globalAlpha = 1;
    ctx.strokeStyle = PHASE_COLORS[t.phase % PHASE_COLORS.length];
    ctx.strokeRect(x + t.x * box.scale + 0.5, y + t.y * box.scale + 0.5, t.w * box.scale - 1, t.h * box.scale - 1);
  }
  ctx.fillStyle = TEXT;
  plan.tiles.forEach((t) => {
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
