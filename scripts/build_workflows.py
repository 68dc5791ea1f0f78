#!/usr/bin/env python3
"""Write the bundled workflows: example_workflows/<name>.json (UI format, what the Templates browser opens) and
example_workflows/api/<name>.json (API format, what POST /prompt takes), both from the specs below.

Widget order and defaults come from a running ComfyUI's /object_info, so the UI files match the node definitions:
    python scripts/build_workflows.py --url http://127.0.0.1:8188
Thumbnails (<name>.jpg, the Templates browser's preview) are screenshots of each workflow loaded in headless
Chromium (needs the `playwright` package and /usr/bin/chromium):
    python scripts/build_workflows.py --url http://127.0.0.1:8188 --thumbnails
"""
from __future__ import annotations

import argparse
import json
import tomllib
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "example_workflows"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# The Registry identity the frontend records on a custom node (properties, and the API format's _meta): the pack's
# Registry id (pyproject's name) and its version.
PACK_IDENTITY = {"cnr_id": PROJECT["name"], "ver": PROJECT["version"]}
# web/luna.js adds a plan preview (a DOM widget of 150 px) below the widgets of these nodes.
PREVIEW_NODES = frozenset({"LunaGlobalRefiner", "LunaSAM3Detailer"})
PREVIEW_HEIGHT = 180

# Model file names the workflows expect (README: "Bundled workflows").
CHECKPOINT = "sd_xl_base_1.0.safetensors"
CLIP_VISION = "clip_vision_g.safetensors"
UPSCALER = "4x-UltraSharp.pth"
SAM3 = "model.safetensors"
CORE_SAM3 = "sam3.safetensors"  # models/checkpoints/, loaded by core's CheckpointLoaderSimple (ComfyUI 0.28+)
INPUT_IMAGE = "example.png"
INPUT_VIDEO = "example.mp4"

POSITIVE = "a portrait of a woman in a sunlit garden, detailed face, natural hands, sharp focus, 4k photograph"
NEGATIVE = "blurry, lowres, deformed hands, extra fingers, jpeg artifacts"
# A dynamic combo (0.33's V3 nodes, e.g. SaveVideo's codec) is a combo widget whose options are {key, inputs}.
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", DYNAMIC_COMBO}
# INT inputs the frontend gives a control_after_generate widget whatever their options say.
SEED_INPUTS = frozenset({"seed", "noise_seed"})
MUTED = 2

# Stage colours (LiteGraph group colours).
BLUE, GREEN, YELLOW, PURPLE, RED, CYAN, BROWN, GREY = ("#3f789e", "#8A8", "#b58b2a", "#a1309b", "#b06634", "#88A",
                                                        "#593930", "#444")


@dataclass
class Node:
    key: str
    type: str
    pos: tuple[int, int]
    values: dict = field(default_factory=dict)  # widget values (others: the input's default)
    links: dict = field(default_factory=dict)   # input name -> (source key, output slot)
    title: str | None = None
    mode: int = 0
    width: int = 330


@dataclass
class Group:
    title: str
    keys: list[str]
    color: str


@dataclass
class Workflow:
    name: str
    nodes: list[Node]
    groups: list[Group]
    note: str


def models_stage(x: int = 0, y: int = 0, clip_vision: bool = True) -> list[Node]:
    nodes = [
        Node("ckpt", "CheckpointLoaderSimple", (x, y), {"ckpt_name": CHECKPOINT}),
        Node("pos", "CLIPTextEncode", (x, y + 300), {"text": POSITIVE}, {"clip": ("ckpt", 1)}, title="Positive prompt"),
        Node("neg", "CLIPTextEncode", (x, y + 520), {"text": NEGATIVE}, {"clip": ("ckpt", 1)}, title="Negative prompt"),
    ]
    if clip_vision:
        nodes.insert(1, Node("clipvision", "CLIPVisionLoader", (x, y + 160), {"clip_name": CLIP_VISION}))
    return nodes


def sampler(steps: int, denoise: float, cfg: float = 7.0) -> dict:
    return {"steps": steps, "cfg": cfg, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": denoise}


def shared(clip_vision: bool = True) -> dict:
    links = {"model": ("ckpt", 0), "positive": ("pos", 0), "negative": ("neg", 0), "vae": ("ckpt", 2)}
    if clip_vision:
        links["clip_vision"] = ("clipvision", 0)
    return links


LABEL_PROMPTS = ("face: detailed face, natural skin texture, sharp eyes\n"
                 "hand: a natural hand with five fingers, detailed knuckles and nails")


def detailer(pos, image, scaffold="scaffold", detections=("detect", 0), clip_vision=True, label_prompts=False,
             **values) -> Node:
    links = {"image": image, "master_scaffold": (scaffold, 0), "detection_data": detections, **shared(clip_vision)}
    if label_prompts:
        links["clip"] = ("ckpt", 1)
        values = {"label_prompts": LABEL_PROMPTS, "label_prompt_mode": "append", **values}
    return Node("detail", "LunaSAM3Detailer", pos,
                {**sampler(25, 0.45), "crop_size": "auto (1024 / 1536)", "context_padding": 1.5, "mask_dilation": 16,
                 "mask_feather": 32, "vision_strength": 0.8, "max_batch": 4, "labels": "", "anchoring": "auto", **values},
                links, width=380)


def refiner(pos, image, scaffold="scaffold") -> Node:
    return Node("refine", "LunaGlobalRefiner", pos,
                {"tile_size": 1024, "overlap": 128, **sampler(25, 0.3), "vision_strength": 0.8, "max_batch": 4,
                 "anchoring": "auto"},
                {"image": image, "master_scaffold": (scaffold, 0), **shared()}, width=380)


def loaded_canvas_stage(x: int, y: int, vae: tuple[str, int] = ("ckpt", 2),
                        latent_format: str = "SD1.5 / SDXL (4 ch, ÷8)") -> list[Node]:
    """LoadImage → GetImageSize → a scaffold exactly the image's size (its format read from `vae`; `latent_format`
    names it on the node)."""
    return [
        Node("load", "LoadImage", (x, y), {"image": INPUT_IMAGE}, width=340),
        Node("size", "GetImageSize", (x, y + 420), {}, {"image": ("load", 0)}, width=240),
        Node("scaffold", "LunaNoiseScaffold", (x + 380, y),
             {"seed": 123, "control_after_generate": "fixed", "latent_format": latent_format},
             {"width": ("size", 0), "height": ("size", 1), "vae": vae}, title="Master scaffold (the image's size)",
             width=360),
    ]


def full_pipeline() -> Workflow:
    nodes = models_stage() + [
        Node("scaffold", "LunaNoiseScaffold", (420, 0), {"width": 4096, "height": 4096, "seed": 123,
                                                          "control_after_generate": "fixed"},
             {"vae": ("ckpt", 2)}, title="Master scaffold (4K canvas)", width=360),
        Node("snoise", "LunaScaffoldNoise", (420, 280), {}, {"master_scaffold": ("scaffold", 0)}, width=360),
        Node("latent", "EmptyLatentImage", (860, 0), {"width": 1024, "height": 1024, "batch_size": 1}, title="1K draft latent"),
        Node("guider", "CFGGuider", (860, 180), {"cfg": 7.0}, {"model": ("ckpt", 0), "positive": ("pos", 0), "negative": ("neg", 0)}),
        Node("ksel", "KSamplerSelect", (860, 340), {"sampler_name": "dpmpp_2m"}),
        Node("sched", "BasicScheduler", (860, 450), {"scheduler": "karras", "steps": 25, "denoise": 1.0}, {"model": ("ckpt", 0)}),
        Node("draft", "SamplerCustomAdvanced", (1230, 0), {},
             {"noise": ("snoise", 0), "guider": ("guider", 0), "sampler": ("ksel", 0), "sigmas": ("sched", 0),
              "latent_image": ("latent", 0)}, title="1K draft (scaffold noise)", width=300),
        Node("draft_image", "VAEDecode", (1230, 230), {}, {"samples": ("draft", 0), "vae": ("ckpt", 2)}, width=300),
        # Prep option A: plain 4× resize (no upscaler needed). Enable it and connect it to the detailer's image.
        Node("prep_a", "ImageScale", (1640, 0), {"upscale_method": "lanczos", "width": 4096, "height": 4096, "crop": "disabled"},
             {"image": ("draft_image", 0)}, title="Option A: 4× resize to 4K", mode=MUTED),
        # Prep option B: upscale model → supersample down to 1.5K → light scaffold refine → upscale model → 4K.
        Node("upscaler", "UpscaleModelLoader", (1640, 300), {"model_name": UPSCALER}),
        Node("up_1", "ImageUpscaleWithModel", (1640, 420), {}, {"upscale_model": ("upscaler", 0), "image": ("draft_image", 0)}),
        Node("to_1536", "ImageScale", (1640, 540), {"upscale_method": "area", "width": 1536, "height": 1536, "crop": "disabled"},
             {"image": ("up_1", 0)}, title="Supersample down to 1.5K"),
        Node("encode_1536", "VAEEncode", (1640, 740), {}, {"pixels": ("to_1536", 0), "vae": ("ckpt", 2)}),
        Node("sched_1536", "BasicScheduler", (2010, 300), {"scheduler": "karras", "steps": 25, "denoise": 0.35},
             {"model": ("ckpt", 0)}, title="Light refine schedule (denoise 0.35)"),
        Node("pass_1536", "SamplerCustomAdvanced", (2010, 480), {},
             {"noise": ("snoise", 0), "guider": ("guider", 0), "sampler": ("ksel", 0), "sigmas": ("sched_1536", 0),
              "latent_image": ("encode_1536", 0)}, title="1.5K light refine (scaffold noise)", width=300),
        Node("image_1536", "VAEDecode", (2010, 710), {}, {"samples": ("pass_1536", 0), "vae": ("ckpt", 2)}, width=300),
        Node("up_2", "ImageUpscaleWithModel", (2380, 300), {}, {"upscale_model": ("upscaler", 0), "image": ("image_1536", 0)}),
        Node("to_4k", "ImageScale", (2380, 420), {"upscale_method": "lanczos", "width": 4096, "height": 4096, "crop": "disabled"},
             {"image": ("up_2", 0)}, title="4K canvas"),
        Node("sam3", "LunaSAM3Loader", (860, 760), {"checkpoint": SAM3, "device": "auto", "precision": "auto"}),
        Node("detect", "LunaSAM3Detector", (1230, 760),
             {"prompts": "face, hand", "threshold": 0.5, "max_detections": 20, "min_area": 0.0005, "detect_resolution": 1008},
             {"sam3": ("sam3", 0), "image": ("draft_image", 0)}, title="Detect on the 1K draft", width=380),
        detailer((2820, 0), ("to_4k", 0)),
        refiner((3260, 0), ("detail", 0)),
        Node("save", "SaveImage", (3700, 0), {"filename_prefix": "lsd/full_4k"}, {"images": ("refine", 0)}, width=400),
        Node("crops", "PreviewImage", (2820, 1100), {}, {"images": ("detail", 1)}, title="Detailer crops", width=380),
        Node("downscale", "ImageScaleBy", (3700, 460), {"upscale_method": "area", "scale_by": 0.5},
             {"image": ("refine", 0)}, title="Optional: final downscale to 2K", mode=MUTED),
        Node("save_small", "SaveImage", (3700, 600), {"filename_prefix": "lsd/full_2k"}, {"images": ("downscale", 0)},
             title="Save 2K", mode=MUTED, width=400),
    ]
    groups = [
        Group("1 · Models and prompts", ["ckpt", "clipvision", "pos", "neg"], BLUE),
        Group("2 · Master noise scaffold", ["scaffold", "snoise"], PURPLE),
        Group("3 · 1K draft from the downscaled scaffold", ["latent", "guider", "ksel", "sched", "draft", "draft_image"], GREEN),
        Group("4A · Option A: plain 4× (unmute, connect)", ["prep_a"], GREY),
        Group("4B · Prep option B: upscaler → 1.5K light refine → 4K",
              ["upscaler", "up_1", "to_1536", "encode_1536", "sched_1536", "pass_1536", "image_1536", "up_2", "to_4k"], YELLOW),
        Group("5 · SAM3 detection on the 1K draft", ["sam3", "detect"], CYAN),
        Group("6 · Detailer on the 4K canvas", ["detail", "crops"], RED),
        Group("7 · Global refiner (tiles)", ["refine"], RED),
        Group("8 · Save (optional 2K downscale)", ["save", "downscale", "save_small"], BROWN),
    ]
    note = ("Full Luna pipeline: 1K draft from the downscaled master scaffold, prep to a 4K canvas (option B: upscaler "
            "and a 1.5K light refine; option A: plain resize), SAM3 detection on the draft, detailer and global refiner "
            "on the 4K canvas.")
    return Workflow("lsd_full_pipeline", nodes, groups, note)


def detail_only() -> Workflow:
    nodes = models_stage() + loaded_canvas_stage(400, 0) + [
        Node("sam3", "LunaSAM3Loader", (1180, 440), {"checkpoint": SAM3, "device": "auto", "precision": "auto"}),
        Node("detect", "LunaSAM3Detector", (1180, 0),
             {"prompts": "face, hand", "threshold": 0.5, "max_detections": 20, "min_area": 0.0005, "detect_resolution": 1008},
             {"sam3": ("sam3", 0), "image": ("load", 0)}, width=380),
        detailer((1600, 0), ("load", 0), label_prompts=True),
        Node("save", "SaveImage", (2030, 0), {"filename_prefix": "lsd/detailed"}, {"images": ("detail", 0)}, width=400),
        Node("crops", "PreviewImage", (2030, 460), {}, {"images": ("detail", 1)}, title="Detailer crops", width=400),
    ]
    groups = [
        Group("1 · Models and prompts", ["ckpt", "clipvision", "pos", "neg"], BLUE),
        Group("2 · Your image and its scaffold", ["load", "size", "scaffold"], PURPLE),
        Group("3 · SAM3 detection", ["sam3", "detect"], CYAN),
        Group("4 · Detailer", ["detail"], RED),
        Group("5 · Save", ["save", "crops"], BROWN),
    ]
    return Workflow("lsd_detail_only", nodes, groups,
                    "Load an existing image, find faces and hands with SAM3, repaint each in a 1024/1536 crop with "
                    "its label's own prompt (label_prompts), save.")


def global_only() -> Workflow:
    nodes = models_stage() + loaded_canvas_stage(400, 0) + [
        refiner((1180, 0), ("load", 0)),
        Node("save", "SaveImage", (1610, 0), {"filename_prefix": "lsd/refined"}, {"images": ("refine", 0)}, width=400),
    ]
    groups = [
        Group("1 · Models and prompts", ["ckpt", "clipvision", "pos", "neg"], BLUE),
        Group("2 · Your image and its scaffold", ["load", "size", "scaffold"], PURPLE),
        Group("3 · Global refiner (tiles)", ["refine"], RED),
        Group("4 · Save", ["save"], BROWN),
    ]
    return Workflow("lsd_global_only", nodes, groups,
                    "Load an image and polish the whole canvas in overlapping tiles from its noise scaffold, save.")


def manual_regions() -> Workflow:
    nodes = models_stage() + loaded_canvas_stage(400, 0) + [
        Node("regions", "LunaDetectionsFromMask", (1180, 0), {"label": "region"}, {"mask": ("load", 1)},
             title="Regions painted in the mask editor", width=380),
        detailer((1600, 0), ("load", 0), detections=("regions", 0)),
        Node("save", "SaveImage", (2030, 0), {"filename_prefix": "lsd/regions"}, {"images": ("detail", 0)}, width=400),
        Node("crops", "PreviewImage", (2030, 460), {}, {"images": ("detail", 1)}, title="Detailer crops", width=400),
    ]
    groups = [
        Group("1 · Models and prompts", ["ckpt", "clipvision", "pos", "neg"], BLUE),
        Group("2 · Your image (right-click → Open in MaskEditor, paint the regions)", ["load", "size", "scaffold"], PURPLE),
        Group("3 · Painted regions as detections", ["regions"], CYAN),
        Group("4 · Detailer", ["detail"], RED),
        Group("5 · Save", ["save", "crops"], BROWN),
    ]
    return Workflow("lsd_manual_regions", nodes, groups,
                    "Paint regions on your image in the mask editor; each painted region is repainted by the detailer. No SAM3 weights needed.")


FLUX = {"unet": "flux1-dev.safetensors", "clip_l": "clip_l.safetensors", "t5": "t5xxl_fp8_e4m3fn.safetensors",
        "vae": "ae.safetensors", "clip_vision": "sigclip_vision_patch14_384.safetensors",
        "redux": "flux1-redux-dev.safetensors"}


def flux_pipeline() -> Workflow:
    """Flux.1-dev (a DiT family): detect → detail (per label) → global refine, anchored by Flux Redux."""
    flux_sampler = {"steps": 20, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple"}
    links = {"model": ("unet", 0), "positive": ("guidance", 0), "negative": ("neg", 0), "vae": ("vae", 0),
             "clip_vision": ("clipvision", 0), "style_model": ("redux", 0)}
    nodes = [
        Node("unet", "UNETLoader", (0, 0), {"unet_name": FLUX["unet"], "weight_dtype": "default"}),
        Node("clip", "DualCLIPLoader", (0, 150), {"clip_name1": FLUX["clip_l"], "clip_name2": FLUX["t5"], "type": "flux"}),
        Node("vae", "VAELoader", (0, 330), {"vae_name": FLUX["vae"]}),
        Node("clipvision", "CLIPVisionLoader", (0, 440), {"clip_name": FLUX["clip_vision"]}),
        Node("redux", "StyleModelLoader", (0, 550), {"style_model_name": FLUX["redux"]}),
        Node("pos", "CLIPTextEncode", (0, 680), {"text": POSITIVE}, {"clip": ("clip", 0)}, title="Positive prompt"),
        Node("guidance", "FluxGuidance", (0, 900), {"guidance": 3.5}, {"conditioning": ("pos", 0)}),
        Node("neg", "CLIPTextEncode", (0, 1010), {"text": ""}, {"clip": ("clip", 0)},
             title="Negative (unused at cfg 1)"),
        *loaded_canvas_stage(400, 0, vae=("vae", 0), latent_format="Flux.1 / Chroma (16 ch, ÷8)"),
        Node("sam3", "LunaSAM3Loader", (1180, 440), {"checkpoint": SAM3, "device": "auto", "precision": "auto"}),
        Node("detect", "LunaSAM3Detector", (1180, 0),
             {"prompts": "face, hand", "threshold": 0.5, "max_detections": 20, "min_area": 0.0005, "detect_resolution": 1008},
             {"sam3": ("sam3", 0), "image": ("load", 0)}, width=380),
        Node("detail", "LunaSAM3Detailer", (1600, 0),
             {**flux_sampler, "denoise": 0.4, "crop_size": "auto (1024 / 1536)", "context_padding": 1.5,
              "mask_dilation": 16, "mask_feather": 32, "vision_strength": 0.5, "max_batch": 4, "labels": "",
              "label_prompts": LABEL_PROMPTS, "label_prompt_mode": "append", "anchoring": "auto"},
             {"image": ("load", 0), "master_scaffold": ("scaffold", 0), "detection_data": ("detect", 0),
              "clip": ("clip", 0), **links}, width=380),
        Node("refine", "LunaGlobalRefiner", (2030, 0),
             {"tile_size": 1024, "overlap": 128, **flux_sampler, "denoise": 0.25, "vision_strength": 0.3,
              "max_batch": 4, "anchoring": "auto"},
             {"image": ("detail", 0), "master_scaffold": ("scaffold", 0), **links}, width=380),
        Node("save", "SaveImage", (2460, 0), {"filename_prefix": "lsd/flux"}, {"images": ("refine", 0)}, width=400),
    ]
    groups = [
        Group("1 · Flux.1-dev and Redux", ["unet", "clip", "vae", "clipvision", "redux", "pos",
                                                                 "guidance", "neg"], BLUE),
        Group("2 · Your image and its scaffold (16 ch)", ["load", "size", "scaffold"], PURPLE),
        Group("3 · SAM3 detection", ["sam3", "detect"], CYAN),
        Group("4 · Detailer and global refiner (cfg 1: one model call per step)", ["detail", "refine"], RED),
        Group("5 · Save", ["save"], BROWN),
    ]
    return Workflow("lsd_flux_pipeline", nodes, groups,
                    "Flux.1-dev: find faces and hands with SAM3 on your image, repaint each with its label's prompt, "
                    "polish the whole canvas in tiles; every crop and tile anchored by its own Flux Redux tokens.")


TYPED_BOXES = ("# x0, y0, x1, y1 (fractions of the image, or pixels with image_width/height), label\n"
               "0.30, 0.15, 0.62, 0.50, face\n"
               "0.10, 0.60, 0.32, 0.88, hand")


def detection_tools() -> Workflow:
    """Detections without SAM3: typed boxes, filtered by label, through Impact-Pack's SEGS and back, detailed; core
    BOUNDING_BOX lists as the muted alternative; the scaffold shown as an image."""
    nodes = models_stage() + loaded_canvas_stage(400, 0) + [
        Node("scaffold_view", "LunaScaffoldPreview", (400, 560), {}, {"master_scaffold": ("scaffold", 0)}, width=360),
        Node("scaffold_image", "PreviewImage", (400, 700), {}, {"images": ("scaffold_view", 0)},
             title="The scaffold's first three channels", width=360),
        Node("boxes", "LunaDetectionsFromBoxes", (1180, 0), {"boxes": TYPED_BOXES, "label": "region"},
             {"image": ("load", 0)}, title="Typed-in boxes", width=380),
        Node("bboxes", "LunaDetectionsFromBBoxes", (1180, 420), {"label": "object"}, {"image": ("load", 0)},
             title="Or: core BOUNDING_BOX lists (connect SAM3 Detect's boxes, unmute)", mode=MUTED, width=380),
        Node("filter", "LunaDetectionFilter", (1600, 0), {"labels": "face"}, {"detection_data": ("boxes", 0)},
             title="Keep the faces", width=340),
        Node("to_segs", "LunaDetectionsToSEGS", (1600, 420), {"crop_factor": 3.0},
             {"detection_data": ("filter", 0), "image": ("load", 0)}, width=340),
        Node("from_segs", "LunaDetectionsFromSEGS", (1600, 620), {}, {"segs": ("to_segs", 0)}, width=340),
        detailer((1990, 0), ("load", 0), detections=("from_segs", 0)),
        Node("save", "SaveImage", (2420, 0), {"filename_prefix": "lsd/boxes"}, {"images": ("detail", 0)}, width=400),
        Node("crops", "PreviewImage", (2420, 460), {}, {"images": ("detail", 1)}, title="Detailer crops", width=400),
    ]
    groups = [
        Group("1 · Models and prompts", ["ckpt", "clipvision", "pos", "neg"], BLUE),
        Group("2 · Your image, its scaffold and a look at it", ["load", "size", "scaffold", "scaffold_view",
                                                                 "scaffold_image"], PURPLE),
        Group("3 · Boxes, no SAM3", ["boxes", "bboxes"], CYAN),
        Group("4 · Filter; SEGS out and back", ["filter", "to_segs", "from_segs"], CYAN),
        Group("5 · Detailer", ["detail"], RED),
        Group("6 · Save", ["save", "crops"], BROWN),
    ]
    return Workflow("lsd_detection_tools", nodes, groups,
                    "Typed-in boxes (or core BOUNDING_BOX lists) as detections, the faces kept by the filter, "
                    "handed to Impact-Pack as SEGS and taken back, each repainted by the detailer; no SAM3 weights.")


def distributed() -> Workflow:
    """The global refiner spread over ComfyUI-Distributed's workers: each machine samples its shard of the tiles
    (DistributedSeed with seed 0: the master 0, worker i i), DistributedCollector gathers them on the master, the
    merge composites them; queue it with the extension's Run (POST /distributed/queue)."""
    nodes = models_stage() + loaded_canvas_stage(400, 0) + [
        Node("shard", "DistributedSeed", (400, 560), {"seed": 0, "control_after_generate": "fixed"},
             title="Shard index (master 0, worker i: i)", width=360),
        Node("refine", "LunaGlobalRefiner", (1180, 0),
             {"tile_size": 1024, "overlap": 128, **sampler(25, 0.3), "vision_strength": 0.8, "max_batch": 4,
              "anchoring": "auto", "tiling": "parallel", "shard_count": 3},
             {"image": ("load", 0), "master_scaffold": ("scaffold", 0), "shard_index": ("shard", 0), **shared()},
             title="Global refiner: this machine's shard of the tiles", width=380),
        Node("collect", "DistributedCollector", (1610, 0), {"load_balance": False}, {"images": ("refine", 0)},
             width=340),
        Node("merge", "LunaShardMerge", (1610, 240), {"missing": "sample them here"},
             {"shards": ("collect", 0), "shard_plan": ("refine", 1)}, width=340),
        Node("save", "SaveImage", (2000, 0), {"filename_prefix": "lsd/distributed"}, {"images": ("merge", 0)},
             width=400),
    ]
    groups = [
        Group("1 · Models and prompts", ["ckpt", "clipvision", "pos", "neg"], BLUE),
        Group("2 · Your image, its scaffold, this machine's shard", ["load", "size", "scaffold", "shard"], PURPLE),
        Group("3 · Refiner, every machine", ["refine"], RED),
        Group("4 · Master: collect, merge, save", ["collect", "merge", "save"], BROWN),
    ]
    return Workflow("lsd_distributed", nodes, groups,
                    "Needs ComfyUI-Distributed: the master and each worker refine their share of the tiles (the same "
                    "scaffold slices and seeds as one machine), the master merges them exactly as the local run "
                    "blends them; set shard_count to 1 + the number of workers and queue with Distributed's Run.")


def core_sam3() -> Workflow:
    """ComfyUI's own SAM3 (CheckpointLoaderSimple → SAM3 Detect) → LunaDetectionsFromCoreSAM3 → detailer; the video
    tracker's track data is the other input of the same node."""
    nodes = models_stage() + loaded_canvas_stage(400, 0) + [
        Node("sam3_ckpt", "CheckpointLoaderSimple", (1180, 0), {"ckpt_name": CORE_SAM3}, title="Core SAM3 checkpoint",
             width=360),
        Node("concept", "CLIPTextEncode", (1180, 160), {"text": "face"}, {"clip": ("sam3_ckpt", 1)},
             title="What to find (SAM3's own text encoder)", width=360),
        Node("sam3_detect", "SAM3_Detect", (1180, 380),
             {"threshold": 0.5, "refine_iterations": 2, "individual_masks": True},
             {"model": ("sam3_ckpt", 0), "image": ("load", 0), "conditioning": ("concept", 0)}, width=360),
        Node("from_core", "LunaDetectionsFromCoreSAM3", (1580, 0), {"label": "face"},
             {"bboxes": ("sam3_detect", 1), "masks": ("sam3_detect", 0), "image": ("load", 0)}, width=380),
        detailer((1990, 0), ("load", 0), detections=("from_core", 0)),
        Node("save", "SaveImage", (2420, 0), {"filename_prefix": "lsd/core_sam3"}, {"images": ("detail", 0)}, width=400),
        Node("crops", "PreviewImage", (2420, 460), {}, {"images": ("detail", 1)}, title="Detailer crops", width=400),
    ]
    groups = [
        Group("1 · Models and prompts", ["ckpt", "clipvision", "pos", "neg"], BLUE),
        Group("2 · Your image and its scaffold", ["load", "size", "scaffold"], PURPLE),
        Group("3 · Core SAM3 (ComfyUI 0.28+)", ["sam3_ckpt", "concept", "sam3_detect"], CYAN),
        Group("4 · Into Luna detections", ["from_core"], CYAN),
        Group("5 · Detailer", ["detail"], RED),
        Group("6 · Save", ["save", "crops"], BROWN),
    ]
    return Workflow("lsd_core_sam3", nodes, groups,
                    "ComfyUI's own SAM3 finds the faces (SAM3 Detect, individual masks); Luna Detections from Core "
                    "SAM3 hands its masks and boxes to the Luna Detailer, which repaints each in its crop. Needs "
                    "ComfyUI 0.28 or newer and a SAM3 checkpoint in models/checkpoints.")


def video_detailer() -> Workflow:
    """A clip: core LoadVideo → its frames → SAM3 detection tracked over the frames → the detailer, track by track
    (noise that travels with each object; one clip per track with a video model) → CreateVideo with the clip's fps and
    audio → SaveVideo."""
    nodes = models_stage() + [
        Node("load", "LoadVideo", (400, 0), {"file": INPUT_VIDEO}, width=340),
        Node("frames", "GetVideoComponents", (400, 420), {}, {"video": ("load", 0)}, width=340),
        Node("size", "GetImageSize", (400, 560), {}, {"image": ("frames", 0)}, width=240),
        Node("scaffold", "LunaNoiseScaffold", (780, 0),
             {"seed": 123, "control_after_generate": "fixed", "latent_format": "SD1.5 / SDXL (4 ch, ÷8)"},
             {"width": ("size", 0), "height": ("size", 1), "vae": ("ckpt", 2)},
             title="Master scaffold (the frames' size)", width=360),
        Node("sam3", "LunaSAM3Loader", (1180, 600), {"checkpoint": SAM3, "device": "auto", "precision": "auto"}),
        Node("detect", "LunaSAM3Detector", (1180, 0),
             {"prompts": "face, hand", "threshold": 0.5, "max_detections": 20, "min_area": 0.0005,
              "detect_resolution": 1008, "mode": "track over frames", "detect_every": 4},
             {"sam3": ("sam3", 0), "image": ("frames", 0)}, title="SAM3: track faces and hands over the frames",
             width=380),
        detailer((1600, 0), ("frames", 0), label_prompts=True),
        Node("video", "CreateVideo", (2030, 0), {"fps": 24.0}, {"images": ("detail", 0), "fps": ("frames", 2),
                                                                 "audio": ("frames", 1)}, width=340),
        Node("save", "SaveVideo", (2030, 200), {"filename_prefix": "lsd/video", "format": "auto", "codec": "auto"},
             {"video": ("video", 0)}, width=400),
        Node("crops", "PreviewImage", (2030, 460), {}, {"images": ("detail", 1)}, title="Detailer crops", width=400),
    ]
    groups = [
        Group("1 · Models and prompts", ["ckpt", "clipvision", "pos", "neg"], BLUE),
        Group("2 · Your clip, its frames and their scaffold", ["load", "frames", "size", "scaffold"], PURPLE),
        Group("3 · SAM3 tracking", ["sam3", "detect"], CYAN),
        Group("4 · Detailer, track by track", ["detail"], RED),
        Group("5 · Back to a video", ["video", "save", "crops"], BROWN),
    ]
    return Workflow("lsd_video_detailer", nodes, groups,
                    "Load a clip, track faces and hands over its frames with SAM3, repaint each object as one track "
                    "(one square that follows it, noise that travels with it; a video model samples it as one clip), "
                    "save it as a video with its own fps and sound.")


WORKFLOWS = (full_pipeline, detail_only, global_only, manual_regions, flux_pipeline, detection_tools, distributed,
             core_sam3, video_detailer)


# ----------------------------------------------------------------------------------------------------------------
# Serialisation


def input_kind(spec) -> str:
    kind = spec[0]
    return "COMBO" if isinstance(kind, list) else kind


def ordered_inputs(info: dict) -> list[tuple[str, list, bool]]:
    """(name, spec, optional) in the node definition's order."""
    out = []
    for section in ("required", "optional"):
        names = info.get("input_order", {}).get(section) or list(info["input"].get(section, {}))
        out += [(name, info["input"][section][name], section == "optional") for name in names]
    return out


def default_value(spec):
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):
        return options.get("default", kind[0] if kind else "")
    if kind == "COMBO":
        return options.get("default", (options.get("options") or [""])[0])
    if kind == DYNAMIC_COMBO:
        return options.get("default", (options.get("options") or [{"key": ""}])[0]["key"])
    return options.get("default", {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[kind])


def pack_identity(info: dict) -> dict:
    """cnr_id and ver for this pack's nodes (all in its Luna category), nothing for others'."""
    return PACK_IDENTITY if info["category"].split("/")[0] == "Luna" else {}


def node_height(n_slots: int, n_widgets: int, multiline: int) -> int:
    return 46 + 22 * n_slots + 26 * n_widgets + 130 * multiline


def build(workflow: Workflow, object_info: dict) -> tuple[dict, dict]:
    """(UI workflow, API prompt) of a spec."""
    ids = {node.key: i + 1 for i, node in enumerate(workflow.nodes)}
    links: list[list] = []
    out_links: dict[tuple[str, int], list[int]] = {}
    ui_nodes, api = [], {}
    for order, node in enumerate(workflow.nodes):
        info = object_info[node.type]
        unknown = set(node.values) - {name for name, _, _ in ordered_inputs(info)} - {"control_after_generate"}
        unknown |= set(node.links) - {name for name, _, _ in ordered_inputs(info)}
        if unknown:
            raise KeyError(f"{node.type} has no inputs {sorted(unknown)}")
        inputs, widgets, api_inputs, multiline = [], [], {}, 0
        for name, spec, _optional in ordered_inputs(info):
            kind, options = input_kind(spec), (spec[1] if len(spec) > 1 else {})
            is_widget = kind in WIDGET_TYPES and not options.get("forceInput")
            link_id = None
            if name in node.links:
                src, slot = node.links[name]
                link_id = len(links) + 1
                links.append([link_id, ids[src], slot, ids[node.key], None, kind])
                out_links.setdefault((src, slot), []).append(link_id)
                api_inputs[name] = [str(ids[src]), slot]
                entry = {"name": name, "type": kind, "link": link_id}
                if is_widget:
                    entry["widget"] = {"name": name}
                inputs.append(entry)
            elif not is_widget and not _optional and node.mode != MUTED:
                raise KeyError(f"{workflow.name}: {node.key} ({node.type}) needs a link to {name}")
            elif not is_widget:
                inputs.append({"name": name, "type": kind, "link": None})
            if is_widget:
                value = node.values.get(name, default_value(spec))
                if kind == "COMBO" and isinstance(spec[0], list) and value not in spec[0] and not name.endswith(("_name", "_name1", "_name2", "checkpoint", "image")):
                    raise ValueError(f"{node.type}.{name}: {value!r} is not one of {spec[0]}")
                widgets.append(value)
                multiline += bool(options.get("multiline"))
                if name not in node.links:
                    api_inputs[name] = value
                if options.get("control_after_generate") or (kind == "INT" and name in SEED_INPUTS):
                    widgets.append(node.values.get("control_after_generate", "fixed"))
                if options.get("image_upload") or options.get("video_upload"):
                    widgets.append("image")
        for i, entry in enumerate(inputs):
            if entry["link"] is not None:
                links[entry["link"] - 1][4] = i
        outputs = []
        for slot, (kind, name) in enumerate(zip(info["output"], info["output_name"])):
            outputs.append({"name": name, "type": kind if isinstance(kind, str) else "COMBO",
                            "links": out_links.get((node.key, slot), []), "slot_index": slot})
        height = node_height(max(len(inputs), len(outputs)), len(widgets), multiline)
        height += PREVIEW_HEIGHT if node.type in PREVIEW_NODES else 0
        if node.type in ("SaveImage", "PreviewImage", "LoadImage"):
            height = 380
        ui = {"id": ids[node.key], "type": node.type, "pos": list(node.pos), "size": [node.width, height], "flags": {},
              "order": order, "mode": node.mode, "inputs": inputs, "outputs": outputs,
              "properties": {**pack_identity(info), "Node name for S&R": node.type}, "widgets_values": widgets}
        if node.title:
            ui["title"] = node.title
        ui_nodes.append(ui)
        if node.mode == 0:
            api[str(ids[node.key])] = {"inputs": api_inputs, "class_type": node.type,
                                       "_meta": {"title": node.title or info["display_name"], **pack_identity(info)}}
    # links filled in after every node is known: outputs need the final link lists
    for ui in ui_nodes:
        key = workflow.nodes[ui["id"] - 1].key
        for out in ui["outputs"]:
            out["links"] = out_links.get((key, out["slot_index"]), [])
    by_key = {node.key: ui for node, ui in zip(workflow.nodes, ui_nodes)}
    groups = []
    for i, group in enumerate(workflow.groups):
        members = [by_key[k] for k in group.keys]
        x0 = min(m["pos"][0] for m in members) - 15
        y0 = min(m["pos"][1] for m in members) - 30 - 45  # node title bar (30 px) and the group's own title
        x1 = max(m["pos"][0] + m["size"][0] for m in members) + 15
        y1 = max(m["pos"][1] + m["size"][1] for m in members) + 15
        groups.append({"id": i + 1, "title": group.title, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": group.color,
                       "font_size": 22, "flags": {}})
    ui_workflow = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"luna-semantic-detailer/{workflow.name}")),
        "revision": 0, "last_node_id": len(ui_nodes), "last_link_id": len(links),
        "nodes": ui_nodes, "links": links, "groups": groups, "config": {},
        "extra": {"ds": {"scale": 0.55, "offset": [60, 120]}, "luna": {"description": workflow.note}},
        "version": 0.4,
    }
    return ui_workflow, api


def fetch_object_info(url: str) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=60) as resp:
        return json.loads(resp.read())


def missing_nodes(workflow: Workflow, object_info: dict) -> list[str]:
    """The node types of `workflow` this ComfyUI does not have (e.g. core SAM3 on 0.3.75)."""
    return sorted({node.type for node in workflow.nodes} - set(object_info))


def write_all(object_info: dict) -> list[str]:
    """Write every workflow whose nodes this ComfyUI has; the others are left as they are (said on stdout)."""
    (OUT / "api").mkdir(parents=True, exist_ok=True)
    names = []
    for make in WORKFLOWS:
        workflow = make()
        if missing_nodes(workflow, object_info):
            print(f"left {workflow.name} as it is: this ComfyUI lacks {', '.join(missing_nodes(workflow, object_info))}"
                  " (build it with --url of a ComfyUI that has them)")
            continue
        ui, api = build(workflow, object_info)
        (OUT / f"{workflow.name}.json").write_text(json.dumps(ui, indent=1, ensure_ascii=False) + "\n")
        (OUT / "api" / f"{workflow.name}.json").write_text(json.dumps(api, indent=1, ensure_ascii=False) + "\n")
        names.append(workflow.name)
    return names


def render_thumbnails(url: str, names: list[str], scale: float = 0.6, width: int = 1024) -> None:
    """Each workflow loaded in the UI (headless Chromium), its graph canvas drawn at `scale`, saved as <name>.jpg."""
    import base64
    import io
    import sys

    from PIL import Image

    sys.path.insert(0, str(ROOT / "tests"))
    from browser import open_ui  # tests/browser.py: the shared Playwright launcher

    with open_ui(url) as page:
        for name in names:
            data = json.loads((OUT / f"{name}.json").read_text())
            x0 = min(g["bounding"][0] for g in data["groups"]) - 20
            y0 = min(g["bounding"][1] for g in data["groups"]) - 20
            x1 = max(g["bounding"][0] + g["bounding"][2] for g in data["groups"]) + 20
            y1 = max(g["bounding"][1] + g["bounding"][3] for g in data["groups"]) + 20
            page.set_viewport_size({"width": int((x1 - x0) * scale), "height": int((y1 - y0) * scale)})
            page.evaluate("async (w) => { await app.loadGraphData(w); }", data)
            page.wait_for_timeout(500)
            png = page.evaluate(
                """([s, x, y]) => { const c = app.canvas; c.ds.scale = s; c.ds.offset = [-x, -y]; c.show_info = false;
                   c.setDirty(true, true); c.draw(true, true);
                   return c.canvas.toDataURL('image/png'); }""", [scale, x0, y0])
            image = Image.open(io.BytesIO(base64.b64decode(png.split(",", 1)[1]))).convert("RGB")
            image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
            image.save(OUT / f"{name}.jpg", quality=85)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8188", help="a running ComfyUI with this pack")
    parser.add_argument("--thumbnails", action="store_true", help="also render <name>.jpg in headless Chromium")
    args = parser.parse_args()
    names = write_all(fetch_object_info(args.url))
    if args.thumbnails:
        render_thumbnails(args.url, names)
    print("wrote", ", ".join(names))


if __name__ == "__main__":
    main()
