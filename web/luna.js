// Luna Semantic Detailer: recognisable nodes, and what the refiner/detailer will do before it runs.
import { app } from "../../scripts/app.js";

const LUNA_COLOR = { color: "#2b2f5a", bgcolor: "#1b1f3b" };
const FACTOR = 8;

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name)?.value;
}

function sourceNode(node, inputName) {
  const input = node.inputs?.find((i) => i.name === inputName);
  const link = input?.link != null ? app.graph.links[input.link] : null;
  return link ? app.graph.getNodeById(link.origin_id) : null;
}

// Mirrors kernels/planning.py: the fewest evenly spread tiles whose spacing leaves `overlap`.
export function tilesPerAxis(length, tile, overlap) {
  if (length <= tile) return 1;
  return Math.ceil((length - tile) / (tile - overlap)) + 1;
}

export function chessPhases(length, tile, overlap) {
  const n = tilesPerAxis(length, tile, overlap);
  if (n === 1) return 1;
  const spacing = Math.floor((length - tile) / (n - 1) / FACTOR) * FACTOR;
  let k = 2;
  while (k * spacing < tile && k < n) k += 1;
  return Math.min(k, n);
}

function canvasSize(node) {
  const scaffold = sourceNode(node, "master_scaffold");
  if (scaffold?.comfyClass !== "LunaNoiseScaffold") return null;
  return { width: widget(scaffold, "width"), height: widget(scaffold, "height") };
}

function refinerPlan(node) {
  const size = canvasSize(node);
  if (!size) return "tile plan: connect a Luna Noise Scaffold";
  const tile = widget(node, "tile_size");
  const overlap = widget(node, "overlap");
  if (overlap >= tile) return "overlap must be smaller than the tile";
  const cols = tilesPerAxis(size.width, tile, overlap);
  const rows = tilesPerAxis(size.height, tile, overlap);
  const phases = chessPhases(size.width, tile, overlap) * chessPhases(size.height, tile, overlap);
  const batch = widget(node, "max_batch");
  return `${cols}×${rows} tiles of ${tile}px on ${size.width}×${size.height} · ${phases} chess phases · ≤${batch} per batch`;
}

function detailerPlan(node) {
  const choice = widget(node, "crop_size") ?? "";
  const pad = widget(node, "context_padding");
  if (choice.startsWith("auto")) return `crops: 1024px (1536px when object × ${pad} > 1024; larger sampled at 1536)`;
  return `crops: ${choice}px (larger objects sampled at ${choice}px), context × ${pad}`;
}

const PLANS = { LunaGlobalRefiner: refinerPlan, LunaSAM3Detailer: detailerPlan };

app.registerExtension({
  name: "Luna.SemanticDetailer",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.category?.startsWith("Luna")) return;
    const plan = PLANS[nodeData.name];
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      Object.assign(this, LUNA_COLOR);
      return result;
    };
    if (!plan) return;
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      const result = onDrawForeground?.apply(this, arguments);
      if (this.flags?.collapsed) return result;
      ctx.save();
      ctx.font = "11px sans-serif";
      ctx.fillStyle = "#b9c0ff";
      ctx.fillText(`🌙 ${plan(this)}`, 8, this.size[1] + 14);
      ctx.restore();
      return result;
    };
  },
});
