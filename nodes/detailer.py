"""LunaSAM3Detailer: every detection repainted in a square crop, sampled from its exact scaffold slice, blended back."""
from __future__ import annotations

import torch

from ..luna_types import DETECTION_DATA, NOISE_SCAFFOLD, SHARD_PLAN
from ..pipeline.anchoring import resolve
from ..pipeline.clips import CLIPS
from ..pipeline.crops import (CROP_SIZES, PREVIEW_SIZE, CropSettings, MaskEdge, Previews, crop_plan,
                              first_of_each_track)
from ..pipeline.job import RefineJob
from ..pipeline.latent_formats import check_scaffold_format
from ..pipeline.parallel import PARALLEL
from ..pipeline.prompts import PROMPT_MODES, label_positives
from ..pipeline.sampling import SamplerSettings, is_video_model
from ..pipeline.shards import Shard, run
from ..pipeline.strategy import Strategy
from ..pipeline.tracks import FRAME_BY_FRAME, MOTIONS, TrackSettings, track_plan, tracks
from ..validation import one_of
from .common import (CATEGORY, COLOR_MATCHES, anchoring_inputs, color_match_input, max_batch_input, sampler_inputs, shard_inputs,
                     vision_strength_input)


TRACK_CROPS = (*MOTIONS, FRAME_BY_FRAME)


AUTO, FRAMES, ONE_CLIP = "auto", "frames (image model)", "one clip per track (video model)"
CLIP_SAMPLING = (AUTO, FRAMES, ONE_CLIP)


def clip_strategy(mode: str, model, tracked: bool) -> Strategy:
    """How the crops are sampled: frame by frame (parallel), or each track as one clip (a video model's; auto: when
    the detections are tracks and the model is a video model)."""
    one_of("clip_sampling", mode, CLIP_SAMPLING)
    if mode == ONE_CLIP and not is_video_model(model):
        raise ValueError("clip_sampling 'one clip per track' needs a video model (5-D latents, e.g. Wan 2.1/2.2): "
                         "connect one, or set clip_sampling to frames")
    if mode == ONE_CLIP and not tracked:
        raise ValueError("clip_sampling 'one clip per track' needs tracks: detections with track ids (the Luna Detector "
                         "tracking over frames, or core SAM3's video track) and track_crops other than frame by frame")
    return CLIPS if tracked and (mode == ONE_CLIP or (mode == AUTO and is_video_model(model))) else PARALLEL


def wanted(labels: str):
    keep = {s.strip().lower() for s in labels.split(",") if s.strip()}
    return lambda detection: not keep or detection.label.strip().lower() in keep


class LunaSAM3Detailer:
    DESCRIPTION = (
        "Repaints every detection in a square crop of 1024 px (1536 px for larger objects) with context around it, "
        "sampled from its exact slice of the master scaffold, anchored by the crop's own image when a CLIP-ViT is "
        "connected, and blended back by the dilated, feathered mask. Crops are sampled from the input and averaged by "
        "their weights where they overlap; pixels outside every mask stay bit-identical."
    )
    CATEGORY = f"{CATEGORY}/Refine"
    RETURN_TYPES = ("IMAGE", "IMAGE", SHARD_PLAN)
    RETURN_NAMES = ("image", "crops", "shard_plan")
    OUTPUT_TOOLTIPS = ("The patched canvas (with shard_count > 1: this shard's refined crops, packed for "
                       "DistributedCollector).",
                       f"What was sampled: each refined crop at {PREVIEW_SIZE}×{PREVIEW_SIZE} (a track's first frame).",
                       "With shard_count > 1: the plan for Luna Shard Merge (connect the master's).")
    FUNCTION = "detail"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The canvas (e.g. 4K) to repair."}),
                "master_scaffold": (NOISE_SCAFFOLD, {"tooltip": "From LunaNoiseScaffold, made for this canvas size."}),
                "detection_data": (DETECTION_DATA, {"tooltip": (
                    "Normalized detections (e.g. of the 1K draft): they apply to any canvas size.")}),
                "model": ("MODEL", {"tooltip": ("The diffusion model (e.g. from CheckpointLoaderSimple), the one whose "
                                                "VAE made the scaffold's latent format.")}),
                "positive": ("CONDITIONING",
                             {"tooltip": "The positive prompt (CLIPTextEncode); applied to every crop/tile."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt (CLIPTextEncode)."}),
                "vae": ("VAE", {"tooltip": ("The VAE that encodes the crops/tiles and decodes the result (the "
                                            "checkpoint's own).")}),
                **sampler_inputs(denoise=0.45),
                "crop_size": (list(CROP_SIZES), {"tooltip": (
                    "auto: 1024 px crops, 1536 px when the padded object is larger; fixed: always that size.")}),
                "context_padding": ("FLOAT", {"default": 1.5, "min": 1.0, "max": 4.0, "step": 0.05, "tooltip": (
                    "Crop side = the object's larger side × this, for context around it.")}),
                "mask_dilation": ("INT", {"default": 16, "min": -256, "max": 256, "tooltip": (
                    "Grow (or shrink, negative) the mask by this many canvas pixels.")}),
                "mask_feather": ("INT", {"default": 32, "min": 0, "max": 512, "tooltip": (
                    "Soft edge of the blend outside the dilated mask, in canvas pixels: 1 at the dilated mask, 0 this "
                    "far beyond it (smoothstep). The visible profile.")}),
                **vision_strength_input(),
                **max_batch_input(),
                "labels": ("STRING", {"default": "", "tooltip": (
                    "Refine only these labels, comma-separated (e.g. 'face'); empty refines all.")}),
            },
            "optional": {
                "clip": ("CLIP", {"tooltip": ("The checkpoint's CLIP: encodes label_prompts (as CLIPTextEncode does: "
                                              "embeddings and (word:1.2) weights work).")}),
                "label_prompts": ("STRING", {"default": "", "multiline": True, "tooltip": (
                    "A prompt per detection label, one line each: `face: detailed face`, `*: ...` for the rest; other "
                    "labels keep the positive prompt. Needs clip.")}),
                "label_prompt_mode": (list(PROMPT_MODES), {"default": "append", "tooltip": (
                    "append: the label's prompt after the positive prompt (ConditioningConcat); replace: the label's "
                    "prompt instead of it.")}),
                **color_match_input(),
                **anchoring_inputs(),
                **shard_inputs("crops"),
                "track_crops": (list(TRACK_CROPS), {"default": next(iter(TRACK_CROPS)), "tooltip": (
                    "For detections with track ids (a clip): one square size per object, following it; frame by frame: "
                    "each frame's crops on their own.")}),
                "clip_sampling": (list(CLIP_SAMPLING), {"default": "auto", "tooltip": (
                    "auto: a video model (Wan) samples each track as one clip, an image model each frame with the "
                    "track's own noise.")}),
            },
        }

    def detail(self, image, master_scaffold, detection_data, model, positive, negative, vae, steps, cfg, sampler_name,
               scheduler, denoise, crop_size, context_padding, mask_dilation, mask_feather, vision_strength, max_batch,
               labels, clip=None, label_prompts="", label_prompt_mode="append", color_match="off", anchoring="auto",
               clip_vision=None, style_model=None, shard_index=0, shard_count=1, track_crops="follow (smoothed)",
               clip_sampling="auto"):
        shard = Shard(shard_index, shard_count)
        detections = [d for d in detection_data.detections if wanted(labels)(d)]
        if not detections and shard.whole:
            return image, torch.zeros(1, 64, 64, image.shape[-1], dtype=image.dtype, device=image.device), None
        last = max((d.image_index for d in detections), default=0)
        if last >= image.shape[0]:
            raise ValueError(
                f"The detections refer to image {last} but the canvas batch has {image.shape[0]} image(s): "
                "detect on the same batch you detail."
            )
        check_scaffold_format(master_scaffold, model, vae)
        sampler = SamplerSettings(model, steps, cfg, sampler_name, scheduler, denoise, master_scaffold.seed)
        job = RefineJob(sampler=sampler, vae=vae, positive=positive, negative=negative, factor=master_scaffold.factor,
                        max_batch=max_batch,
                        anchor=resolve(anchoring, model, clip_vision, style_model, vision_strength),
                        label_positive=label_positives(clip, label_prompts, positive, label_prompt_mode),
                        color_match=one_of("color_match", color_match, COLOR_MATCHES) == "low-frequency")
        settings = CropSettings(CROP_SIZES[one_of("crop_size", crop_size, tuple(CROP_SIZES))], context_padding,
                                MaskEdge(mask_dilation, mask_feather))
        tracked = one_of("track_crops", track_crops, tuple(TRACK_CROPS)) != FRAME_BY_FRAME and bool(tracks(detections))
        if tracked:
            plan = track_plan(job, image, master_scaffold, detections, TrackSettings(settings, track_crops))
        else:
            plan = crop_plan(job, image, master_scaffold, detections, settings)
        previews = Previews(first_of_each_track(plan.regions))
        out, split = run(plan, clip_strategy(clip_sampling, model, tracked), shard, previews.keep)
        return out, previews.batch(), split


NODE_CLASS_MAPPINGS = {"LunaSAM3Detailer": LunaSAM3Detailer}
NODE_DISPLAY_NAME_MAPPINGS = {"LunaSAM3Detailer": "Luna SAM3 Detailer (4K-native crops)"}
