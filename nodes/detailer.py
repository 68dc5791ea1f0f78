"""LunaSAM3Detailer: every detection repainted in a square crop, sampled from its exact scaffold slice, blended back."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kernels.masks import blend_, detection_alpha
from ..kernels.noise import region_seed, slice_noise
from ..kernels.planning import Crop, batches, plan_crop
from ..kernels.refine import RefineJob, refine_batch
from ..kernels.regions import box_mask, mask_regions, overlap_rounds
from ..kernels.resample import downscale_noise
from ..luna_types import DETECTION_DATA, NOISE_SCAFFOLD, Detection, DetectionData, NoiseScaffold
from .common import (CATEGORY, anchoring_inputs, check_scaffold_format, interrupt_point, max_batch_input,
                     progress_bar, sampler_inputs, vision_strength_input)
from .refiner import canvas_noise, pad_to_grid

CROP_SIZES = {"auto (1024 / 1536)": (1024, 1536), "1024": (1024,), "1536": (1536,), "768": (768,), "512": (512,)}
PREVIEW_SIZE = 512


@dataclass(frozen=True)
class CropJob:
    """One detection's crop on canvas `image`."""

    image: int
    crop: Crop
    detection: Detection

    @property
    def rect(self) -> tuple[int, int, int, int]:
        return self.crop.x, self.crop.y, self.crop.size, self.crop.size


def wanted(detection: Detection, labels: set[str]) -> bool:
    return not labels or detection.label.strip().lower() in labels


def canonical(detections: list[Detection]) -> list[Detection]:
    """Detections in an order that does not depend on how they arrived."""
    return sorted(detections, key=lambda d: (d.image_index, d.box, d.label, -d.score))


def schedule(jobs: list[CropJob], max_batch: int, canvas_h: int) -> list[list[CropJob]]:
    """Batches of equal-size crops; overlapping crops of one image go to later rounds, which see the earlier results."""
    stacked = [(j.crop.x, j.image * canvas_h + j.crop.y, j.crop.size, j.crop.size) for j in jobs]
    rounds = overlap_rounds(stacked)
    out: list[list[CropJob]] = []
    for members in rounds:
        by_size: dict[tuple[int, int], list[int]] = {}
        for i in members:
            by_size.setdefault((jobs[i].crop.size, jobs[i].crop.sample_size), []).append(i)
        for key in sorted(by_size):
            out.extend([jobs[i] for i in group] for group in batches(by_size[key], max_batch))
    return out


class LunaSAM3Detailer:
    DESCRIPTION = (
        "Repaints every detection: a square crop of 1024 px (1536 px for larger objects; bigger ones are sampled at "
        "1536) with context around it, sampled from the exactly corresponding slice of the master scaffold, anchored "
        "by the crop's CLIP-ViT tokens, and blended back through the smoothstep of the dilated, feathered mask. "
        "Pixels outside every mask are left bit-identical."
    )
    CATEGORY = f"{CATEGORY}/Refine"
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("image", "crops")
    OUTPUT_TOOLTIPS = ("The patched canvas.", f"What was sampled: each refined crop at {PREVIEW_SIZE}×{PREVIEW_SIZE}.")
    FUNCTION = "detail"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The canvas (e.g. 4K) to repair."}),
                "master_scaffold": (NOISE_SCAFFOLD, {"tooltip": "From LunaNoiseScaffold, made for this canvas size."}),
                "detection_data": (DETECTION_DATA, {"tooltip": "Normalized detections (e.g. of the 1K draft): they apply to any canvas size."}),
                "model": ("MODEL", {"tooltip": "The diffusion model (e.g. from CheckpointLoaderSimple), the one whose VAE made the scaffold's latent format."}),
                "positive": ("CONDITIONING", {"tooltip": "The positive prompt (CLIPTextEncode); applied to every crop/tile."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt (CLIPTextEncode)."}),
                "vae": ("VAE", {"tooltip": "The VAE that encodes the crops/tiles and decodes the result (the checkpoint's own)."}),
                **sampler_inputs(denoise=0.45),
                "crop_size": (list(CROP_SIZES), {"tooltip": "auto: 1024 px crops, 1536 px when the padded object is larger; fixed: always that size."}),
                "context_padding": ("FLOAT", {"default": 1.5, "min": 1.0, "max": 4.0, "step": 0.05, "tooltip": "Crop side = the object's larger side × this, for context around it."}),
                "mask_dilation": ("INT", {"default": 16, "min": -256, "max": 256, "tooltip": "Grow (or shrink, negative) the mask by this many canvas pixels."}),
                "mask_feather": ("INT", {"default": 32, "min": 0, "max": 512, "tooltip": "Soft edge of the blend, in canvas pixels, outside the dilated mask."}),
                **vision_strength_input(),
                **max_batch_input(),
                "labels": ("STRING", {"default": "", "tooltip": "Refine only these labels, comma-separated (e.g. 'face'); empty refines all."}),
            },
            "optional": anchoring_inputs(),
        }

    def detail(self, image, master_scaffold, detection_data, model, positive, negative, vae, steps, cfg, sampler_name,
               scheduler, denoise, crop_size, context_padding, mask_dilation, mask_feather, vision_strength, max_batch,
               labels, clip_vision=None):
        keep = {s.strip().lower() for s in labels.split(",") if s.strip()}
        detections = canonical([d for d in detection_data.detections if wanted(d, keep)])
        if not detections:
            return image, empty_preview(image)
        if detections[-1].image_index >= image.shape[0]:
            raise ValueError(
                f"The detections refer to image {detections[-1].image_index} but the canvas batch has {image.shape[0]} "
                "image(s): detect on the same batch you detail."
            )
        check_scaffold_format(master_scaffold, model, vae)
        f = master_scaffold.factor
        height, width = image.shape[1:3]
        noise = canvas_noise(master_scaffold, height, width)
        canvas = pad_to_grid(image, f)
        sizes = CROP_SIZES[crop_size]
        jobs = [CropJob(d.image_index, plan_crop(d.box, width, height, context_padding, sizes, f), d) for d in detections]
        groups = schedule(jobs, max_batch, canvas.shape[1])
        job = RefineJob(model, vae, positive, negative, steps, cfg, sampler_name, scheduler, denoise,
                        master_scaffold.seed, clip_vision, vision_strength)
        pbar = progress_bar(len(groups) * steps)
        previews = []
        for n, group in enumerate(groups):
            interrupt_point()
            refined, alpha = self.refine_group(job, canvas, (width, height), noise, group, f, mask_dilation, mask_feather,
                                               lambda step, *_a, o=n * steps: pbar.update_absolute(o + step + 1))
            for item, pixels, a in zip(group, refined, alpha):
                blend_(canvas[item.image:item.image + 1], pixels[None], a, item.crop.x, item.crop.y)
            previews.append(resize(refined, PREVIEW_SIZE))
        return canvas[:, :height, :width].contiguous(), torch.cat(previews)

    @staticmethod
    def refine_group(job, canvas, canvas_size, noise, group, f, dilation, feather, callback):
        size, sample_size = group[0].crop.size, group[0].crop.sample_size
        pixels = torch.stack([canvas[g.image, g.crop.y:g.crop.y + size, g.crop.x:g.crop.x + size] for g in group])
        slices = slice_noise(noise, [g.rect for g in group], f)
        alpha = detection_alpha(crop_masks(group, *canvas_size), dilation, feather).to(canvas)
        if sample_size != size:
            pixels = resize(pixels, sample_size)
            slices = downscale_noise(slices, (sample_size // f, sample_size // f),
                                     seed=[region_seed(job.seed, g.rect) for g in group])
        noise_mask = resize(alpha[..., None], sample_size)[..., 0][:, None]
        refined = refine_batch(job, pixels, slices, noise_mask=noise_mask, callback=callback).to(canvas)
        if sample_size != size:
            refined = resize(refined, size).clamp_(0, 1)
        return refined, alpha


def crop_masks(group: list[CropJob], canvas_w: int, canvas_h: int) -> torch.Tensor:
    """Each detection's whole-image mask cut to its crop square, at canvas resolution: [N, size, size]."""
    size = group[0].crop.size
    masks = []
    for g in group:
        x0, y0, x1, y1 = g.detection.box
        if g.detection.mask is None:
            in_crop = [(x0 * canvas_w - g.crop.x) / size, (y0 * canvas_h - g.crop.y) / size,
                       (x1 * canvas_w - g.crop.x) / size, (y1 * canvas_h - g.crop.y) / size]
            masks.append(box_mask(torch.tensor([in_crop]), size, size)[0])
        else:
            region = torch.tensor([[g.crop.x / canvas_w, g.crop.y / canvas_h,
                                    (g.crop.x + size) / canvas_w, (g.crop.y + size) / canvas_h]])
            masks.append(mask_regions(g.detection.mask[None].float(), region, size)[0])
    return torch.stack(masks)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Square-resize [N, H, W, C] images (area when shrinking, bicubic when enlarging)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    mode = "area" if images.shape[1] > size else "bicubic"
    return F.interpolate(images.movedim(-1, 1), size=(size, size), mode=mode).movedim(1, -1)


def empty_preview(image: torch.Tensor) -> torch.Tensor:
    return torch.zeros(1, 64, 64, image.shape[-1], dtype=image.dtype, device=image.device)


NODE_CLASS_MAPPINGS = {"LunaSAM3Detailer": LunaSAM3Detailer}
NODE_DISPLAY_NAME_MAPPINGS = {"LunaSAM3Detailer": "Luna SAM3 Detailer (4K-native crops)"}
