"""What the region pipeline refines: a crop or tile of the canvas, where it is sampled from and how it enters the canvas."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..kernels.compositing import Layer, Rect


@dataclass(frozen=True)
class Region:
    """A square crop or a tile of canvas image `image`.

    rect: (x, y, w, h) canvas pixels on the latent grid of the padded canvas; sample_size: (w, h) pixels the sampler
    sees (the rect's own size: 1:1 with the scaffold; smaller: the crop is resized and its noise slice downscaled).
    weight, coverage: [h, w] over the rect for the compositor (coverage None: the whole rect);
    noise_mask: [h_s / f, w_s / f] over the sampled latent, 1 where the sampler repaints (None: everywhere);
    tile: the region's index in its plan's tile grid (None for a crop); noise_rect: where on the canvas its noise
    comes from (the scaffold slice, the per-step noise field), when not its own rect: a track's crops in every frame
    take the noise of the track's home square; track: the track id it belongs to, for strategies that sample a track
    as one clip.
    """

    image: int
    rect: Rect
    sample_size: tuple[int, int]
    weight: torch.Tensor
    coverage: torch.Tensor | None = None
    noise_mask: torch.Tensor | None = None
    label: str = ""
    own_seed: int = 0
    tile: int | None = None
    noise_rect: Rect | None = None
    track: int | None = None

    @property
    def one_to_one(self) -> bool:
        return self.sample_size == (self.rect[2], self.rect[3])

    @property
    def sampled_area(self) -> int:
        return self.sample_size[0] * self.sample_size[1]

    @property
    def layer(self) -> Layer:
        return Layer(self.rect, self.weight, self.coverage)

    @property
    def noise_home(self) -> Rect:
        """The canvas rect (x, y, w, h px) its noise is cut from."""
        return self.rect if self.noise_rect is None else self.noise_rect

    def cells(self, factor: int) -> tuple[Rect, tuple[int, int]]:
        """(the rect in latent cells (x, y, w, h), the sampled size in cells (h, w)) at `factor` px a cell."""
        return tuple(v // factor for v in self.rect), (self.sample_size[1] // factor, self.sample_size[0] // factor)


class ImageLayers:
    """The regions of each canvas image as compositor layers: `members[b]` the regions of image b in plan order,
    `layers[b]` their layers, `place[i]` region i's place among them."""

    def __init__(self, regions: Sequence[Region]):
        self.members: dict[int, list[int]] = {}
        for i, r in enumerate(regions):
            self.members.setdefault(r.image, []).append(i)
        self.layers = {b: [regions[i].layer for i in members] for b, members in self.members.items()}
        self.place = {i: n for members in self.members.values() for n, i in enumerate(members)}
