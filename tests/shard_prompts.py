"""API prompts of the pack's nodes split over ComfyUI-Distributed (tests/test_distributed_shards.py, benchmarks/distributed.py).

`sharded(node_prompt, count)`: a refiner or detailer prompt whose Luna node samples shard DistributedSeed(0) of
`count`, its image collected by DistributedCollector and merged by LunaShardMerge into LSDTestImageDump `result`;
with count 1 the same prompt without any of that (the local run). The models are the test nodes' tiny ones, with a
block-mean VAE (fast at 2048 px; tests/fixtures/lsd_test_models/block_vae.py).
"""
from __future__ import annotations

import copy
import json

SAMPLING = {"steps": 2, "cfg": 3.0, "sampler_name": "euler_ancestral", "scheduler": "normal", "vision_strength": 0.0,
            "max_batch": 2}
FAMILY = {"sd15": (4, 8, 3.0), "flux": (16, 8, 1.0)}  # latent channels, factor, cfg
DETECTION_BOXES = [[0.05, 0.05, 0.3, 0.35], [0.4, 0.1, 0.6, 0.4], [0.1, 0.5, 0.5, 0.95], [0.62, 0.55, 0.9, 0.9]]


def models(family: str) -> dict:
    channels, factor, _ = FAMILY[family]
    loader = ({"class_type": "LSDTestModels", "inputs": {"seed": 0, "latent_channels": 4}} if family == "sd15" else
              {"class_type": "LSDTestFamilyModels", "inputs": {"family": family, "seed": 0}})
    return {
        "models": loader,
        "vae": {"class_type": "LSDTestBlockVAE", "inputs": {"channels": channels, "factor": factor}},
        "positive": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo", "clip": ["models", 1]}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["models", 1]}},
    }


def canvas(width: int, height: int) -> dict:
    return {"canvas": {"class_type": "LSDTestCanvas", "inputs": {"width": width, "height": height, "seed": 3}},
            "scaffold": {"class_type": "LunaNoiseScaffold",
                         "inputs": {"width": width, "height": height, "seed": 5, "latent_format": "SD1.5 / SDXL (4 ch, ÷8)",
                                    "vae": ["vae", 0]}}}


def refiner(width: int, height: int, family: str = "sd15", tiling: str = "parallel", tile: int = 1024,
            steps: int = SAMPLING["steps"]) -> dict:
    """A prompt whose node `luna` refines a width x height canvas in tiles."""
    inputs = {"image": ["canvas", 0], "master_scaffold": ["scaffold", 0], "model": ["models", 0],
              "positive": ["positive", 0], "negative": ["negative", 0], "vae": ["vae", 0], "tile_size": tile,
              "overlap": 128, "denoise": 0.5, "tiling": tiling, **SAMPLING, "cfg": FAMILY[family][2], "steps": steps}
    return {**models(family), **canvas(width, height), "luna": {"class_type": "LunaGlobalRefiner", "inputs": inputs}}


def detailer(width: int, height: int, family: str = "sd15") -> dict:
    """A prompt whose node `luna` details four boxes of a width x height canvas."""
    inputs = {"image": ["canvas", 0], "master_scaffold": ["scaffold", 0], "detection_data": ["detections", 0],
              "model": ["models", 0], "positive": ["positive", 0], "negative": ["negative", 0], "vae": ["vae", 0],
              "denoise": 0.5, "crop_size": "512", "context_padding": 1.5, "mask_dilation": 8, "mask_feather": 32,
              "labels": "", **SAMPLING, "cfg": FAMILY[family][2]}
    return {**models(family), **canvas(width, height),
            "detections": {"class_type": "LunaDetectionsFromBoxes",
                           "inputs": {"boxes": "\n".join(", ".join(map(str, box)) for box in DETECTION_BOXES),
                                      "units": "normalized (0-1)", "label": "thing", "image_width": width,
                                      "image_height": height, "image_index": 0}},
            "luna": {"class_type": "LunaSAM3Detailer", "inputs": inputs}}


def sharded(prompt: dict, count: int, missing: str = "stop with an error", slow_worker: int | None = None) -> dict:
    """`prompt` (its node `luna`) as shard DistributedSeed(0) of `count`, collected and merged into `result`; the
    local run (into `result`) when count is 1. `slow_worker` k: the k-th participating worker holds its canvas for a
    minute before its Luna node runs (LSDTestDelay), so it can be stopped mid-run."""
    out = copy.deepcopy(prompt)
    if slow_worker is not None:
        out["hold"] = {"class_type": "DistributedValue",
                       "inputs": {"default_value": "0", "worker_values": json.dumps({str(slow_worker): "60", "_type": "FLOAT"})}}
        out["delay"] = {"class_type": "LSDTestDelay", "inputs": {"images": out["luna"]["inputs"]["image"],
                                                                 "seconds": ["hold", 0]}}
        out["luna"]["inputs"]["image"] = ["delay", 0]
    if count == 1:
        out["result"] = {"class_type": "LSDTestImageDump", "inputs": {"images": ["luna", 0], "filename_prefix": "local"}}
        return out
    out["shard"] = {"class_type": "DistributedSeed", "inputs": {"seed": 0}}
    out["luna"]["inputs"].update(shard_index=["shard", 0], shard_count=count)
    plan_output = 2 if out["luna"]["class_type"] == "LunaSAM3Detailer" else 1
    out["collect"] = {"class_type": "DistributedCollector", "inputs": {"images": ["luna", 0], "load_balance": False}}
    out["merge"] = {"class_type": "LunaShardMerge",
                    "inputs": {"shards": ["collect", 0], "shard_plan": ["luna", plan_output], "missing": missing}}
    out["result"] = {"class_type": "LSDTestImageDump", "inputs": {"images": ["merge", 0], "filename_prefix": "merged"}}
    return out
