"""The detailer's region source for clips: a track's crops, one square size for the whole clip, following the object.

A track is the detections of one object (one `track_id`) over the frames of a clip (`image_index` the frame). Its
square has one side for every frame, from the track's largest extent (pipeline.crops' rule on that detection), so the
track's crops batch together; the square follows the object's centre (`follow`), smoothed by a local straight line
(`follow (smoothed)`: a steady motion comes out exact), or stays on the union of the track's boxes (`fixed square`).
Every crop of a track takes its noise (scaffold slice and per-step noise alike) from a square that moves with the
object, not with the crop: the first frame's square, moved by the crop's own shift and back by the object's motion
(its smoothed path), so the object sees the same noise in every frame whether its crop follows it exactly, lags by a
grid step or stays put. Each frame is blended with that frame's own mask, and a frame where the object is absent has
no region. Detections without a track id are cropped frame by frame.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..kernels.noise import region_seed
from ..kernels.planning import Crop, crop_at, plan_crop, smooth_path
from ..luna_types import Detection, NoiseScaffold
from ..validation import int_at_least, one_of
from .canvas import canvas_noise, pad_to_grid
from .crops import CropSettings, crop_regions, crop_weight, support_mask
from .job import RefineJob
from .plan import RegionPlan
from .regions import Region

MOTIONS = {
    "follow (smoothed)": "the square follows the object's centre, smoothed by a straight line through the frames "
                         "around each (a steady motion is followed exactly)",
    "follow": "the square follows the object's centre in every frame",
    "fixed square": "one square over the union of the track's boxes in every frame",
}
FRAME_BY_FRAME = "frame by frame"
SMOOTHING = 2
"""Frames on each side of a frame that its smoothed centre is fitted to."""
HOLD = 0.75
"""How far (latent cells) an object's estimated motion may stray from the noise's last whole-cell shift before the
noise moves with it."""


@dataclass(frozen=True)
class TrackSettings:
    """The detailer's settings for tracked detections: the crop settings, how a track's square moves (MOTIONS) and
    over how many frames each side its path is smoothed."""

    crops: CropSettings
    motion: str = "follow (smoothed)"
    smoothing: int = SMOOTHING

    def __post_init__(self):
        one_of("track crops", self.motion, tuple(MOTIONS))
        int_at_least("smoothing", self.smoothing, 0)


def tracks(detections: Sequence[Detection]) -> dict[int, list[Detection]]:
    """The tracked detections by track id (ascending), each track in frame order."""
    out: dict[int, list[Detection]] = {}
    for d in sorted((d for d in detections if d.track_id is not None), key=lambda d: (d.track_id, d.image_index, d.box)):
        out.setdefault(d.track_id, []).append(d)
    return out


def _pixels(box: tuple[float, float, float, float], width: int, height: int) -> tuple[float, float, float, float]:
    """(centre x, centre y, w, h) in px of a normalized box."""
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2 * width, (y0 + y1) / 2 * height, (x1 - x0) * width, (y1 - y0) * height


def track_path(track: Sequence[Detection], width: int, height: int, settings: TrackSettings) -> list[tuple[float, float]]:
    """The object's centre (px) in each frame of the track: smoothed by a local line unless the motion is `follow`."""
    boxes = [_pixels(d.box, width, height) for d in track]
    radius = 0 if settings.motion == "follow" else settings.smoothing
    frames = [d.image_index for d in track]
    return list(zip(smooth_path(frames, [b[0] for b in boxes], radius), smooth_path(frames, [b[1] for b in boxes], radius)))


def track_crops(track: Sequence[Detection], path: Sequence[tuple[float, float]], width: int, height: int,
                settings: TrackSettings, factor: int, patch: int = 1) -> list[Crop]:
    """The square of each detection of one track (in its order), all of one side, centred on its `path`
    (track_path)."""
    crops = settings.crops
    if settings.motion == "fixed square":
        union = (min(d.box[0] for d in track), min(d.box[1] for d in track),
                 max(d.box[2] for d in track), max(d.box[3] for d in track))
        return [plan_crop(union, width, height, crops.context, crops.sizes, factor, patch)] * len(track)
    largest = max(track, key=lambda d: max((d.box[2] - d.box[0]) * width, (d.box[3] - d.box[1]) * height))
    square = plan_crop(largest.box, width, height, crops.context, crops.sizes, factor, patch)
    return [crop_at(centre, _pixels(d.box, width, height)[2:], square, width, height, factor)
            for centre, d in zip(path, track)]


def noise_squares(crops: Sequence[Crop], path: Sequence[tuple[float, float]], width: int, height: int,
                  factor: int) -> list[tuple[int, int, int, int]]:
    """Where each frame's crop takes its noise so the object sees the same noise in every frame: the first frame's
    square, moved with the crop and back by the object's own motion since the first frame (on the grid, inside the
    canvas). A crop that follows the object exactly keeps the first square; a still object keeps the noise under it
    wherever its crop lands."""
    first, (x0, y0) = crops[0], path[0]
    last_x = -(-width // factor) * factor - first.size
    last_y = -(-height // factor) * factor - first.size
    shift_x = shift_y = 0
    out = []
    for crop, (x, y) in zip(crops, path):
        shift_x = held_step((x - x0) / factor, shift_x)
        shift_y = held_step((y - y0) / factor, shift_y)
        nx, ny = crop.x - shift_x * factor, crop.y - shift_y * factor
        out.append((min(max(nx, 0), last_x), min(max(ny, 0), last_y), first.size, first.size))
    return out


def held_step(target: float, held: int) -> int:
    """A whole number of latent cells following `target` (cells): kept while the target stays within HOLD of it, so
    a detector's jitter of a few pixels does not move the noise by a whole cell; rounded to the target beyond that."""
    return held if abs(target - held) <= HOLD else round(target)


def track_regions(detections: Sequence[Detection], width: int, height: int, settings: TrackSettings, factor: int,
                  seed: int, patch: int = 1) -> list[Region]:
    """A region per tracked detection (tracks by id, frames in order), each with its frame's weight and its track's
    home noise; then the untracked detections' crops (pipeline.crops)."""
    regions = []
    edge = settings.crops.edge
    for track in tracks(detections).values():
        path = track_path(track, width, height, settings)
        squares = track_crops(track, path, width, height, settings, factor, patch)
        noise = noise_squares(squares, path, width, height, factor)
        for d, crop, noise_rect in zip(track, squares, noise):
            weight = crop_weight(d, crop, width, height, edge)
            sample = (crop.sample_size, crop.sample_size)
            regions.append(Region(d.image_index, (crop.x, crop.y, crop.size, crop.size), sample, weight, weight,
                                  support_mask(weight, sample, factor), d.label, region_seed(seed, noise[0]),
                                  noise_rect=noise_rect, track=d.track_id))
    untracked = [d for d in detections if d.track_id is None]
    return regions + crop_regions(untracked, width, height, settings.crops, factor, seed, patch)


def track_plan(job: RefineJob, image: torch.Tensor, scaffold: NoiseScaffold, detections: Sequence[Detection],
               settings: TrackSettings) -> RegionPlan:
    """The detailer's plan for a clip `image` [frames, H, W, 3] whose detections carry track ids."""
    height, width = image.shape[1:3]
    regions = track_regions(detections, width, height, settings, scaffold.factor, scaffold.seed, job.patch)
    return RegionPlan(source="detailer", job=job, canvas=pad_to_grid(image, scaffold.factor), scaffold=scaffold,
                      noise=canvas_noise(scaffold, height, width), regions=tuple(regions), width=width, height=height,
                      settings=settings)
