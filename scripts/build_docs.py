#!/usr/bin/env python3
"""Write web/docs/<NodeName>.md, the page the ComfyUI frontend's node-info panel shows for each Luna node.

The frontend fetches /extensions/<pack>/docs/<NodeName>.md for custom nodes (WEB_DIRECTORY is ./web). Each page is
the hand-written guide below plus the inputs and outputs with their tooltips, taken from a running server's
/object_info:
    python scripts/build_docs.py --url http://127.0.0.1:8188
"""
from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "web" / "docs"


def sampler_help(region: str) -> str:
    """The long help of sampler_inputs' `sampler_name` (nodes/common.py), for a node that samples `region`s."""
    return f"""- `sampler_name`: any of ComfyUI's samplers. Ancestral and SDE samplers take their per-step
  noise from the canvas's noise field, so every {region} gets its own and `max_batch` changes nothing
  (dpm_adaptive runs one {region} per call).
"""


def anchoring_help(region: str) -> str:
    """The long help of anchoring_inputs and vision_strength_input (nodes/common.py)."""
    return f"""- `anchoring`: how each {region}'s own image, encoded by `clip_vision`, anchors its refinement
  (nothing is anchored without a CLIP-ViT). `vision_strength` scales it (ReVision: the image embedding; style
  model and raw tokens: the appended tokens); 0 turns it off.
  - *auto*: a connected `style_model`, else ReVision (SDXL with CLIP-ViT-bigG; SD2.1-unCLIP), else raw tokens.
  - *revision*: the {region}'s image embedding as the pooled vector (SDXL) / unCLIP input, as unCLIPConditioning.
  - *style model*: the style model's tokens of the {region} after the prompt (Flux Redux, SD1 T2I style), as
    StyleModelApply.
  - *raw tokens (experimental)*: every CLIP-ViT token projected into the text context after the prompt (the spec's
    path; no model was trained on it, expect a diluted prompt).
  - *off*: no anchoring.
"""


def color_match_help(region: str) -> str:
    """The long help of color_match_input (nodes/common.py)."""
    return f"""- `color_match`: with *low-frequency* each refined {region} keeps its detail but takes the input's local
  colour and tone (its blur over 1/8 of the {region}'s side is replaced by the input's) before it is blended,
  so no {region} can shift colour against its surroundings. *off*: the sampler's colours as they come.
"""


def shard_help(regions: str, extra: str = "") -> str:
    """The long help of shard_inputs (nodes/common.py); `extra`: what else sharding asks of the node, as lines."""
    return f"""- `shard_index`, `shard_count` (ComfyUI-Distributed): the {regions} are split into `shard_count` shares,
  balanced by sampled area. Set `shard_count` to 1 + the number of workers and connect DistributedSeed with seed 0
  to `shard_index` (the master gets 0, worker i gets i); with `shard_count` 1 the node samples all of them.
  Above 1 the image output is this machine's refined {regions}, packed for DistributedCollector →
  *Luna Shard Merge* (with the master's `shard_plan`).
{extra}"""


GUIDES = {
    "LunaNoiseScaffold": """
Make **one** scaffold per canvas and connect it to every Luna stage: the 1K draft (through *Luna Scaffold Noise*),
the 1.5K light refine, the detailer and the global refiner. Every stage then takes its noise from the same map
(downscaled variance-preserving where the stage is smaller), so structure stays consistent from draft to 4K.

- Set width/height to the **final canvas** (e.g. 4096×4096), or link them from *Get Image Size* when you refine an
  existing image.
- Connect the checkpoint's **VAE** so the latent format (channels, ÷8) matches the model; otherwise pick it.
- Keep `control after generate` on **fixed**: a new seed means new noise DNA for every stage.
""",
    "LunaScaffoldNoise": """
A `NOISE` for **SamplerCustomAdvanced** (instead of *RandomNoise*). Connect the master scaffold; the noise is the
scaffold area-downscaled to the latent being sampled, with the variance kept at 1. Use it for the 1K draft and for
the light refine at 1.5K: both then share the 4K canvas's noise.

The latent must not be larger than the scaffold and must have its aspect ratio.
""",
    "LunaScaffoldPreview": """
Shows the first three latent channels of the scaffold as an RGB image (mid-grey is 0, ±2σ saturates): a quick check
that two workflows use the same scaffold (same seed, same size).
""",
    "LunaSAM3Loader": """
Put SAM3 into `models/sam3/`: Hugging Face **facebook/sam3** `model.safetensors` (with its config/tokenizer files next
to it, as downloaded) or Meta's **sam3.pt**. The loader returns a handle; the weights load on the first detection and
are shared by every loader with the same checkpoint, device and precision. ComfyUI's *Unload models* frees them; the
next detection loads them again.
""",
    "LunaSAM3Detector": """
Type what to find, comma-separated (`face, hand`, `eyes`, `the red car`): each concept's instances become
detections labelled with that concept. Detect on the **1K draft** (fast) and detail the 4K canvas: boxes and masks
are normalized, so they apply to any canvas with the same aspect ratio.

After a run the node shows the **preview** (masks tinted per label, boxes, scores). Too many hits: raise
`threshold`, lower `max_detections`, or raise `min_area`.

**Video**: connect the clip's frames as one batch and set `mode` to *track over frames*. SAM3's video model (from the
same checkpoint file: facebook/sam3's `model.safetensors` and Meta's `sam3.pt` hold the tracker) finds the concepts
on the first frame and every `detect_every` frames, and follows each object in between: every object keeps one track
id over the clip (ids are unique across concepts), and has a detection in each frame it is in, so the detailer crops
it the same way frame after frame. Left on *per frame*, a batch is unrelated images, each detected on its own.

## More on the inputs

- `mode`: *per frame* (default) detects each image of the batch on its own, as before; *track over frames* treats
  the batch as a clip. Tracking loads the checkpoint's tracker beside the detector (about 20 M parameters; the image
  encoder is the detector's, loaded once); a checkpoint without it is refused with what to use instead.
- `detect_every`: how often tracking looks for new objects: on the first frame and every N frames (1, the default
  as in core's *Run SAM3 Video Track*, is every frame). Between those frames the tracker alone follows the objects
  already found, from the image features computed once per frame; higher is faster, later to pick up newcomers.
- With tracking, `threshold` is also the score a detection needs to start a new track, `max_detections` caps the
  objects tracked in the whole clip (0: no limit), `min_area` drops an object from the frames where its mask is
  smaller. A tracked box is its mask's extent, in every frame. SAM3 keeps objects of one concept from overlapping and
  drops, in the first frames, tracks that duplicate an older one.
""",
    "LunaDetectionsFromMask": """
Manual regions without SAM3: open your image's **Load Image** node in the *MaskEditor*, paint the regions to repaint,
and connect its `MASK` here. The detections go to the detailer like SAM3's.
""",
    "LunaDetectionsFromBoxes": """
Type regions in by hand, one box per line (`x0, y0, x1, y1, label`), normalized 0–1 or in pixels: the quickest way
to point the detailer at a known spot without SAM3 or painting a mask.
""",
    "LunaDetectionsFromSEGS": """
Use Impact-Pack's detectors (BBOX/SEGM/SAM) with the Luna detailer: connect their `SEGS` here. Impact-Pack itself is
not needed by this node.
""",
    "LunaDetectionsToSEGS": """
Send Luna detections to Impact-Pack's SEGS tools (filters, previews, SEGSPaste). Connect the image to get each SEG's
cropped image at that image's size.
""",
    "LunaDetectionsFromBBoxes": """
Detections from core `BOUNDING_BOX` lists (e.g. ComfyUI's own SAM3 Detect), with optional masks. Connect the image
the boxes were found on, or set its width and height.
""",
    "LunaDetectionsFromCoreSAM3": """
ComfyUI's own SAM3 (0.28 or newer) into the Luna Detailer, without loading SAM3 twice.

- **Images**: *SAM3 Detect* → connect its `masks` and `bboxes` (and the image). With `individual_masks` on, each box
  keeps its own mask; off, each image's union mask is cut by each box. Point or box prompts give masks without boxes:
  each mask is then one detection.
- **Video**: *Run SAM3 Video Track* → connect `track_data` (and the frames). Every tracked object becomes one
  detection in each frame where its mask is not empty: `image_index` is the frame, and the object keeps its track id
  across frames. An object absent from a frame has no detection there, so the detailer leaves that frame alone.

Core SAM3 gives no labels: set `label` to what you prompted for (the detailer's label prompts and filters read it).
Masks stay at the tracker's resolution; the detailer samples them at the canvas size, as core's *SAM3 Track to Mask*
does. Use the Luna Detector instead for several concepts with their own labels in one node, and for ComfyUI 0.3.75.
""",
    "LunaDetectionFilter": """
Keep only the detections you want before the detailer: by label, score and area, then the top k per image. What is
dropped comes out of `rejected`.
""",
    "LunaSAM3Detailer": """
Repaints each detection in a square crop of the **4K canvas** at the model's native size: 1024 px, or 1536 px when
the object (× `context_padding`) is larger; larger objects are cropped bigger and sampled at 1536. The crop's noise
is its exact slice of the master scaffold, the crop's own image anchors its structure (`anchoring`: a style model,
ReVision or raw CLIP-ViT tokens of `clip_vision`),
and the result is blended back with the crop's weight; pixels outside every mask stay bit-identical.

The weight is the mask grown by `mask_dilation` and feathered over `mask_feather` px by Euclidean distance (a
smoothstep: 1 at the grown mask, 0 `mask_feather` px past it), and it always reaches 0 before a crop edge that is not
the canvas edge (a fade of max(feather, 8) px), so the crop square never shows. The sampler repaints exactly the
latent cells the weight touches and keeps the rest of the crop as context, so what you see is that weight.

All crops are sampled from the input canvas and batched together; where they overlap, each pixel takes their
results in proportion to their weights (measured: rounds that see earlier results refine the overlap twice,
BENCHMARKS.md). Under the node the extension shows the crop sizes it will use on this canvas. Typical settings:
`denoise` 0.35–0.5, `labels` empty (all) or e.g. `face`.

## More on the inputs

- `label_prompts`: one line per detection label, e.g. `face: detailed face, sharp eyes` and
  `hand: a hand with five fingers`; `*: ...` is the prompt of every other label. Labels without a line keep the
  positive prompt. The lines are encoded with the `clip` input as CLIPTextEncode does (embeddings and `(word:1.2)`
  weights work); `label_prompt_mode` appends them to the positive prompt or replaces it.
""" + sampler_help("crop") + anchoring_help("crop") + color_match_help("crop") + shard_help("crops"),
    "LunaGlobalRefiner": """
Polishes the whole canvas in tiles (1024 or 1536 px) that overlap by at least `overlap`. Each tile's noise is its
1:1 slice of the master scaffold, so overlapping tiles start from the same noise where they overlap. `tiling`:

- **parallel** (default): every tile sampled from the input canvas, batched, blended by smoothstep ramps across each
  whole overlap (the weights of every pixel sum to 1). With the same noise and the same input, overlapping tiles
  agree: measured, the result matches the canvas refined as one tile (BENCHMARKS.md, "Tiling strategies").
- **fused**: one sampler run on the whole canvas latent; at every step each tile predicts its part and the
  predictions are averaged with the same weights (MultiDiffusion). As faithful here, slower on the CPU.
- **chess**: the spec's order; tiles in chess phases, each phase sampled from the canvas that already holds the
  earlier phases. Overlaps are refined twice (a grid of over-refined bands, measured), kept for those who want it.

Under the node the extension draws the tile grid for the current canvas, tile and overlap (4096² with 1024 px
tiles and 128 px overlap: 4×4 = 16 tiles of 1120 px with `tile_fit` fit, 5×5 = 25 of 1024 px with exact). Typical
`denoise`: 0.2–0.35.

## More on the inputs

- `tile_fit`: *fit* (default) takes per axis the fewest tiles and resizes each to the canvas within 0.85–1.1×
  `tile_size` (on the latent grid, rectangular if need be), so overlaps stay near `overlap` and the least area is
  sampled: 4096² at 1024/128 gives 16 tiles of 1120², 20.1 MP, instead of 25 of 1024², 26.2 MP. *exact*: every
  tile is `tile_size` and the overlaps grow to fill the canvas. Either way every tile samples its exact 1:1 scaffold
  slice.
- `tiling`: the strategies above; parallel won the fidelity table (BENCHMARKS.md).
""" + sampler_help("tile") + anchoring_help("tile") + color_match_help("tile") + shard_help(
        "tiles", "  Only parallel tiling can be split (fused and chess need the whole canvas at every step or phase);\n"
        "  template `lsd_distributed`.\n"),
    "LunaShardMerge": """
The master's end of a refiner or detailer run split over ComfyUI-Distributed's workers (`shard_count` > 1 on the Luna
node, `shard_index` from DistributedSeed with seed 0). Connect DistributedCollector's images to `shards` and the Luna
node's `shard_plan` to `shard_plan`; the merge blends every tile or crop exactly as the node does on one machine.

- Each image carries the number of its region and shard in a header row that survives the 8-bit transfer, so the
  order the collector returns them in does not matter; the only loss is one 8-bit rounding of each region's pixels.
- `missing`: a worker that failed or timed out sends nothing, and the collector still reports success. *sample them
  here* refines the missing regions on the master (the result is the same); *stop with an error* names the shards
  and what to check in ComfyUI-Distributed's worker list.
- Every machine must run the same workflow and models: an image of another plan is refused.
""",
}


def fetch_object_info(url: str) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=60) as resp:
        return json.loads(resp.read())


def kind_of(spec) -> str:
    return "choice" if isinstance(spec[0], list) else spec[0]


def page(name: str, info: dict) -> str:
    lines = [f"# {info['display_name']}", "", info["description"], "", GUIDES[name].strip(), "", "## Inputs", "",
             "| input | type | default | what it does |", "| --- | --- | --- | --- |"]
    for section in ("required", "optional"):
        for input_name in info.get("input_order", {}).get(section) or info["input"].get(section, {}):
            spec = info["input"][section][input_name]
            options = spec[1] if len(spec) > 1 else {}
            default = options.get("default", spec[0][0] if isinstance(spec[0], list) and spec[0] else "")
            tooltip = options.get("tooltip", "")
            if section == "optional":
                tooltip = f"*(optional)* {tooltip}"
            shown = f"`{default}`" if default != "" else ""
            lines.append(f"| `{input_name}` | {kind_of(spec)} | {shown} | {tooltip} |")
    lines += ["", "## Outputs", "", "| output | type | what it is |", "| --- | --- | --- |"]
    tips = info.get("output_tooltips") or [""] * len(info["output"])
    for out_name, out_type, tip in zip(info["output_name"], info["output"], tips):
        lines.append(f"| `{out_name}` | {out_type} | {tip or ''} |")
    lines += ["", "Part of [Luna Semantic Detailer](https://github.com/luna-semantic-detailer/luna-semantic-detailer)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    args = parser.parse_args()
    info = fetch_object_info(args.url)
    OUT.mkdir(parents=True, exist_ok=True)
    luna = sorted(k for k, v in info.items() if v["python_module"].endswith("luna_semantic_detailer"))
    missing = set(luna) - set(GUIDES)
    if missing:
        raise SystemExit(f"no guide for {sorted(missing)}: add one to GUIDES")
    for name in luna:
        (OUT / f"{name}.md").write_text(page(name, info[name]))
    print("wrote", len(luna), "pages to", OUT)


if __name__ == "__main__":
    main()
