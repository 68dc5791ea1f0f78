"""The data that travels between Luna nodes, and the ComfyUI type names that carry it."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

NOISE_SCAFFOLD = "LUNA_NOISE_SCAFFOLD"
DETECTION_DATA = "LUNA_DETECTION_DATA"
SAM3_MODEL = "LUNA_SAM3"


@dataclass(frozen=True)
class NoiseScaffold:
    """The master noise map of one canvas: `noise` is [1, C, ceil(H/f), ceil(W/f)] float32 on the CPU."""

    noise: torch.Tensor
    width: int
    height: int
    factor: int
    seed: int

    @property
    def channels(self) -> int:
        return self.noise.shape[1]

    @property
    def latent_size(self) -> tuple[int, int]:
        """(height, width) of the noise map in latent cells."""
        return self.noise.shape[2], self.noise.shape[3]


@dataclass(frozen=True)
class Detection:
    """One object: `box` is (x0, y0, x1, y1) in 0..1 of the image; `mask` is [h, w] in 0..1 over the whole image."""

    box: tuple[float, float, float, float]
    mask: torch.Tensor | None
    score: float = 1.0
    label: str = ""
    image_index: int = 0


@dataclass(frozen=True)
class DetectionData:
    """Detections of a batch of images, resolution-free; `image_size` is (width, height) of the detected copy."""

    detections: tuple[Detection, ...] = ()
    image_size: tuple[int, int] = (0, 0)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.detections)

    def for_image(self, index: int) -> list[Detection]:
        return [d for d in self.detections if d.image_index == index]

    def labels(self) -> list[str]:
        return sorted({d.label for d in self.detections})

    def with_detections(self, detections) -> "DetectionData":
        return replace(self, detections=tuple(detections))
