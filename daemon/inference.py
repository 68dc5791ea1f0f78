"""Text-prompted SAM3 detection on a batch of images: normalized boxes, scores and full-image masks per concept."""
from __future__ import annotations

import math
import re
from typing import Callable

import torch
import torch.nn.functional as F

from ..luna_types import Detection, DetectionData
from .tokenizer import tokenize

IMAGE_MEAN = 0.5
IMAGE_STD = 0.5


class PromptError(ValueError):
    """A prompt string that names no concept."""


def parse_prompts(text: str) -> list[str]:
    """Concepts of a comma/newline separated prompt string, trimmed, in order, without repeats."""
    concepts: list[str] = []
    for part in re.split(r"[,\n;]", text or ""):
        concept = " ".join(part.split())
        if concept and concept.lower() not in (c.lower() for c in concepts):
            concepts.append(concept)
    if not concepts:
        raise PromptError("SAM3 needs at least one concept to look for: write e.g. `face, hand` in prompts.")
    return concepts


def fit_resolution(width: int, height: int, resolution: int) -> tuple[int, int]:
    """(width, height) scaled down so the longer side is at most `resolution` (0 keeps the size); never upscaled."""
    longest = max(width, height)
    if resolution <= 0 or longest <= resolution:
        return width, height
    scale = resolution / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_images(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, C] resized to [B, height, width, C] (bilinear, antialiased)."""
    if images.shape[1] == height and images.shape[2] == width:
        return images
    x = images.movedim(-1, 1).float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0, 1).movedim(1, -1)


def pixel_values(images: torch.Tensor, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """SAM3's input [B, 3, size, size]: RGB stretched to the square (bilinear, antialiased), normalized to -1..1."""
    x = images[..., :3].movedim(-1, 1).to(device=device, dtype=torch.float32)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return ((x - IMAGE_MEAN) / IMAGE_STD).to(dtype)


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def detect(model, images: torch.Tensor, concepts: list[str], threshold: float = 0.5, max_detections: int = 0,
           min_area: float = 0.0, mask_threshold: float = 0.5, chunk_size: int = 4,
           progress: Callable[[int, int], None] | None = None) -> DetectionData:
    """Detections of every concept in every image; image features are computed once per image for all concepts.

    `progress(done, total)` is called after each (image chunk, concept) step; it may raise to stop.
    """
    if images.ndim != 4 or images.shape[-1] < 3:
        raise ValueError(f"SAM3 detection needs an IMAGE batch [B, H, W, 3]; got shape {tuple(images.shape)}.")
    if not concepts:
        raise PromptError("SAM3 needs at least one concept to look for.")
    device, dtype = _model_device(model), _model_dtype(model)
    size = int(model.config.vision_config.image_size)
    batch, height, width = images.shape[0], images.shape[1], images.shape[2]

    from transformers.modeling_outputs import BaseModelOutputWithPooling

    ids, attention = tokenize(concepts)
    ids, attention = ids.to(device), attention.to(device)
    text = model.get_text_features(input_ids=ids, attention_mask=attention)
    prompt_features = text.pooler_output

    found: list[list[Detection]] = [[] for _ in range(batch)]
    step, steps = 0, math.ceil(batch / max(1, chunk_size)) * len(concepts)
    for start in range(0, batch, max(1, chunk_size)):
        chunk = images[start:start + max(1, chunk_size)]
        n = chunk.shape[0]
        vision = model.get_vision_features(pixel_values=pixel_values(chunk, size, device, dtype))
        for k, concept in enumerate(concepts):
            text_k = BaseModelOutputWithPooling(pooler_output=prompt_features[k:k + 1].expand(n, -1, -1))
            out = model(vision_embeds=vision, text_embeds=text_k, attention_mask=attention[k:k + 1].expand(n, -1))
            scores = out.pred_logits.float().sigmoid()
            if out.presence_logits is not None:
                scores = scores * out.presence_logits.float().sigmoid()
            hits = torch.nonzero(scores > threshold)
            if hits.shape[0]:
                hit_image, hit_query = hits.unbind(1)
                boxes = out.pred_boxes[hit_image, hit_query].float().clamp(0, 1).cpu()
                hit_scores = scores[hit_image, hit_query].cpu().tolist()
                owner = hit_image.cpu()
                for i in owner.unique().tolist():
                    rows = torch.nonzero(owner == i).flatten()
                    logits = out.pred_masks[i, hit_query[rows.to(hit_query.device)]].float()
                    masks = F.interpolate(logits.sigmoid()[None], size=(height, width), mode="bilinear",
                                          align_corners=False)[0]
                    masks = (masks > mask_threshold).cpu().float()
                    for r, mask in zip(rows.tolist(), masks):
                        found[start + i].append(_detection(boxes[r], mask, hit_scores[r], concept, start + i, min_area))
            step += 1
            if progress is not None:
                progress(step, steps)
    detections: list[Detection] = []
    for per_image in found:
        kept = sorted((d for d in per_image if d is not None), key=lambda d: -d.score)
        detections.extend(kept[:max_detections] if max_detections > 0 else kept)
    return DetectionData(detections=tuple(detections), image_size=(width, height),
                         meta={"source": "sam3", "prompts": list(concepts), "threshold": threshold,
                               "mask_threshold": mask_threshold, "min_area": min_area,
                               "max_detections": max_detections})


def _detection(box: torch.Tensor, mask: torch.Tensor, score: float, label: str, index: int,
               min_area: float) -> Detection | None:
    """One Detection, or None where its box is empty or not finite, or its mask covers less than min_area."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        return None
    if min_area > 0 and float(mask.mean()) < min_area:
        return None
    return Detection(box=(x0, y0, x1, y1), mask=mask, score=score, label=label, image_index=index)
