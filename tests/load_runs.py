"""The node runs tests/test_loads.py counts and benchmarks/loads.py reports: 6 detections, or a 256 x 384 canvas in
128 px tiles, max_batch 2, style-model anchoring (tiny CLIP-vision, Redux-shaped style model), a tiny Control-LoRA on
both prompts."""
from __future__ import annotations

import torch

from fixtures.control_models import tiny_control_lora
from fixtures.lsd_test_models.builders import tiny_clip_vision, tiny_style_model
from pipeline_helpers import encode_prompt, models, scaffold_for
from luna_semantic_detailer.luna_types import Detection, DetectionData
from luna_semantic_detailer.nodes.detailer import LunaSAM3Detailer
from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner

SETTINGS = dict(steps=2, cfg=3.0, sampler_name="euler", scheduler="normal", vision_strength=0.5, max_batch=2)
BOXES = [(0.05, 0.05, 0.2, 0.25), (0.3, 0.5, 0.45, 0.75), (0.7, 0.1, 0.85, 0.35), (0.6, 0.6, 0.8, 0.9),
         (0.25, 0.1, 0.4, 0.3), (0.05, 0.6, 0.2, 0.9)]


def controlled(hint: torch.Tensor) -> tuple[list, list]:
    """(positive, negative) with one Control-LoRA on both, as ControlNetApplyAdvanced applies it."""
    control = tiny_control_lora().copy().set_cond_hint(hint, 0.8, (0.0, 1.0))
    positive, negative = encode_prompt("a photo"), encode_prompt("")
    return ([[positive[0][0], {**positive[0][1], "control": control}]],
            [[negative[0][0], {**negative[0][1], "control": control}]])


def anchoring() -> dict:
    return dict(anchoring="style model", clip_vision=tiny_clip_vision(), style_model=tiny_style_model())


def detail(image, positive, negative):
    height, width = image.shape[1:3]
    data = DetectionData(tuple(Detection(b, None, 0.9, "thing") for b in BOXES), (width, height))
    model, vae = models()
    return LunaSAM3Detailer().detail(image, scaffold_for(width, height), data, model, positive, negative, vae,
                                     denoise=0.4, crop_size="512", context_padding=1.2, mask_dilation=0, mask_feather=8,
                                     labels="", **SETTINGS, **anchoring())[0]


def refine(image, positive, negative, tiling):
    height, width = image.shape[1:3]
    model, vae = models()
    return LunaGlobalRefiner().refine(image, scaffold_for(width, height), model, positive, negative, vae, 128, 32,
                                      denoise=0.4, tiling=tiling, **SETTINGS, **anchoring())[0]


RUNS = {"detailer": lambda image, p, n: detail(image, p, n),
        "refiner parallel": lambda image, p, n: refine(image, p, n, "parallel"),
        "refiner chess": lambda image, p, n: refine(image, p, n, "chess"),
        "refiner fused": lambda image, p, n: refine(image, p, n, "fused")}
