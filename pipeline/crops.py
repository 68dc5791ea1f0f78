"""The detailer's region source: a square crop per detection, its blend weight and noise mask, all sampled from the input canvas.

The blend weight of a crop (its coverage too) is the detection's mask grown by `dilation`, feathered over `feather`
pixels by Euclidean distance (kernels.masks), and faded to 0 over max(feather, 8) pixels inside every crop border
that is not the canvas border, so no crop edge can show. The sampler repaints exactly the latent cells where that
weight is above 0 (the noise mask is its support, binary) and keeps the rest of the crop as context; the pixels then
enter with the weight, so the visible profile of the refinement is the weight itself.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kernels.masks import detection_alpha, edge_fade
from ..kernels.noise import region_seed
from ..kernels.planning import Crop, plan_crop
from ..kernels.rect_masks import box_mask, mask_regions
from ..luna_types import Detection, NoiseScaffold
from .canvas import canvas_noise, pad_to_grid
from .job import RefineJob
from .plan import RegionPlan
from .region_sampling import resize
from .regions import Region

CROP_SIZES = {"auto (1024 / 1536)": (1024, 1536), "1024": (1024,), "1536": (1536,), "768": (768,), "512": (512,)}
ALPHA_CELLS = 512
MIN_FADE = 8
PREVIEW_SIZE = 512


@dataclass(frozen=True)
class MaskEdge:
    """How a detection's mask becomes its blend weight: grown by `dilation` px (negative: shrunk), feathered over `feather` px."""

    dilation: int
    feather: int


@dataclass(frozen=True)
class CropSettings:
    """The detailer's planner settings: crop sides to pick from (`sizes`), the context around the object, the mask edge."""

    sizes: tuple[int, ...]
    context: float
    edge: MaskEdge


def canonical(detections: Sequence[Detection]) -> list[Detection]:
    """Detections in an order that does not depend on how they arrived."""
    return sorted(detections, key=lambda d: (d.image_index, d.box, d.label, -d.score))


def crop_mask(detection: Detection, crop: Crop, canvas_w: int, canvas_h: int, cells: int) -> torch.Tensor:
    """The detection's mask (or its box) under the crop square, as [cells, cells] samples at the cells' centres."""
    size = crop.size
    if detection.mask is None:
        x0, y0, x1, y1 = detection.box
        box = [(x0 * canvas_w - crop.x) / size, (y0 * canvas_h - crop.y) / size,
               (x1 * canvas_w - crop.x) / size, (y1 * canvas_h - crop.y) / size]
        return box_mask(torch.tensor([box]), cells, cells)[0]
    region = torch.tensor([[crop.x / canvas_w, crop.y / canvas_h, (crop.x + size) / canvas_w, (crop.y + size) / canvas_h]])
    return mask_regions(detection.mask[None].float(), region, cells)[0]


def crop_weight(detection: Detection, crop: Crop, canvas_w: int, canvas_h: int, edge: MaskEdge) -> torch.Tensor:
    """The blend weight [size, size] of a detection's crop (module docstring); canvas_w/h: the unpadded canvas."""
    cell = -(-crop.size // ALPHA_CELLS)
    while crop.size % cell:
        cell += 1
    mask = crop_mask(detection, crop, canvas_w, canvas_h, crop.size // cell)
    alpha = detection_alpha(mask[None], cell, (crop.size, crop.size), edge.dilation, edge.feather)[0]
    sides = (crop.x > 0, crop.y > 0, crop.x + crop.size < canvas_w, crop.y + crop.size < canvas_h)
    if any(sides):
        alpha = alpha * edge_fade(crop.size, crop.size, max(edge.feather, MIN_FADE), sides)
    return alpha


def support_mask(weight: torch.Tensor, sample: tuple[int, int], factor: int) -> torch.Tensor:
    """1 on every latent cell of the sampled (w, h) px [h/f, w/f] where `weight` [H, W] is above 0, else 0."""
    return F.adaptive_max_pool2d((weight > 0).float()[None, None], (sample[1] // factor, sample[0] // factor))[0, 0]


def crop_regions(detections: Sequence[Detection], width: int, height: int, settings: CropSettings, factor: int,
                 seed: int, patch: int = 1) -> list[Region]:
    """A region per detection (canonical order) on a canvas of width x height px; crops over the largest size are
    resampled; every side a whole number of the model's patches of `patch` latent cells."""
    regions = []
    for d in canonical(detections):
        crop = plan_crop(d.box, width, height, settings.context, settings.sizes, factor, patch)
        weight = crop_weight(d, crop, width, height, settings.edge)
        rect = (crop.x, crop.y, crop.size, crop.size)
        sample = (crop.sample_size, crop.sample_size)
        regions.append(Region(d.image_index, rect, sample, weight, weight, support_mask(weight, sample, factor), d.label,
                              region_seed(seed, rect)))
    return regions


def crop_plan(job: RefineJob, image: torch.Tensor, scaffold: NoiseScaffold, detections: Sequence[Detection],
              settings: CropSettings) -> RegionPlan:
    """The detailer's plan for `image` [B, H, W, 3]: a crop per detection, all cut from the input."""
    height, width = image.shape[1:3]
    regions = crop_regions(detections, width, height, settings, scaffold.factor, scaffold.seed, job.patch)
    return RegionPlan(source="detailer", job=job, canvas=pad_to_grid(image, scaffold.factor), scaffold=scaffold,
                      noise=canvas_noise(scaffold, height, width), regions=tuple(regions), width=width, height=height,
                      settings=settings)


def first_of_each_track(regions: Sequence[Region]) -> set[int]:
    """The regions a preview shows: every crop of an image, and of a track only its first frame's."""
    seen: set[int] = set()
    out = set()
    for i, r in sorted(enumerate(regions), key=lambda item: item[1].image):
        if r.track is None or r.track not in seen:
            out.add(i)
        if r.track is not None:
            seen.add(r.track)
    return out


class Previews:
    """The refined crops `shown` at PREVIEW_SIZE, as the regions are done (`keep`), and all of them as one batch."""

    def __init__(self, shown: set[int]):
        self.kept: dict[int, torch.Tensor] = {}
        self.shown = shown

    def keep(self, index: int, pixels: torch.Tensor) -> None:
        if index in self.shown:
            self.kept[index] = resize(pixels[None], (PREVIEW_SIZE, PREVIEW_SIZE))

    def batch(self) -> torch.Tensor:
        return torch.cat([self.kept[i] for i in sorted(self.kept)] or [torch.zeros(1, PREVIEW_SIZE, PREVIEW_SIZE, 3)])
