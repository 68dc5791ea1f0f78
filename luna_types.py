"""The data that travels between Luna nodes, and the ComfyUI type names that carry it."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from . import validation

NOISE_SCAFFOLD = "LUNA_NOISE_SCAFFOLD"
DETECTION_DATA = "LUNA_DETECTION_DATA"
SAM3_MODEL = "LUNA_SAM3"
SHARD_PLAN = "LUNA_SHARD_PLAN"

Conditioning = list[list[Any]]
"""ComfyUI's CONDITIONING: [[cond [B, tokens, width], {options}], ...]."""


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


BOX_TOLERANCE = 1e-6


def checked_box(box) -> tuple[float, float, float, float]:
    """A normalized box (x0, y0, x1, y1) with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, else ValueError saying what is wrong."""
    values = validation.finite_numbers("a detection box", box, 4, "4 numbers (x0, y0, x1, y1) in 0..1")
    if min(values) < -BOX_TOLERANCE or max(values) > 1 + BOX_TOLERANCE:
        raise ValueError(f"a detection box must be normalized to 0..1 of the image, got {box!r} (pixel boxes: divide by the image size)")
    x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in values)
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"a detection box is empty (needs x0 < x1 and y0 < y1): {box!r}")
    return x0, y0, x1, y1


@dataclass(frozen=True)
class Detection:
    """One object: `box` is (x0, y0, x1, y1) in 0..1 of the image; `mask` is [h, w] in 0..1 over the whole image.

    A mask is bool or floating point (importers store bool or float16 where they can: kernels.detections.compact_mask);
    read it with `.float()`. In a clip `image_index` is the frame, and `track_id` names the object across frames (None
    for detections made frame by frame)."""

    box: tuple[float, float, float, float]
    mask: torch.Tensor | None
    score: float = 1.0
    label: str = ""
    image_index: int = 0
    track_id: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "box", checked_box(self.box))
        if self.mask is not None and (not isinstance(self.mask, torch.Tensor) or self.mask.ndim != 2):
            raise ValueError(f"a detection mask must be a 2-D tensor [h, w] over the whole image, got {type(self.mask).__name__} "
                             f"{tuple(getattr(self.mask, 'shape', ()))}")
        if self.mask is not None and not (self.mask.dtype == torch.bool or self.mask.is_floating_point()):
            raise ValueError(f"a detection mask must be bool or floating point in 0..1, got {self.mask.dtype} "
                             f"(divide a 0..255 uint8 mask by 255)")
        validation.finite_number("a detection score", self.score)
        if int(self.image_index) < 0:
            raise ValueError(f"a detection's image_index must be >= 0, got {self.image_index}")
        if self.track_id is not None:
            validation.int_at_least("a detection's track_id", self.track_id, 0)


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

    def track_ids(self) -> list[int]:
        return sorted({d.track_id for d in self.detections if d.track_id is not None})

    def labels(self) -> list[str]:
        return sorted({d.label for d in self.detections})

    def with_detections(self, detections) -> "DetectionData":
        return replace(self, detections=tuple(detections))

    def save(self, path: str | Path) -> None:
        """Write a .safetensors file: masks as tensors, the rest as JSON metadata."""
        from safetensors.torch import save_file

        tensors = {f"mask_{i}": d.mask.detach().float().cpu().contiguous()
                   for i, d in enumerate(self.detections) if d.mask is not None}
        save_file(tensors, str(path), metadata={"luna_detection_data": json.dumps(self._header())})

    @classmethod
    def load(cls, path: str | Path) -> "DetectionData":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if "luna_detection_data" not in metadata:
                raise ValueError(f"{path} is not a Luna detection file (no luna_detection_data metadata)")
            header = json.loads(metadata["luna_detection_data"])
            keys = set(f.keys())
            masks = [f.get_tensor(f"mask_{i}") if f"mask_{i}" in keys else None for i in range(len(header["detections"]))]
        return cls._from_header(header, masks)

    def _header(self) -> dict:
        detections = []
        for d in self.detections:
            item = {"box": list(d.box), "score": float(d.score), "label": d.label, "image_index": int(d.image_index)}
            if d.track_id is not None:
                item["track_id"] = int(d.track_id)
            detections.append(item)
        return {"version": 1, "image_size": list(self.image_size), "meta": _json_safe(self.meta), "detections": detections}

    @classmethod
    def _from_header(cls, header: dict, masks: list) -> "DetectionData":
        detections = tuple(
            Detection(tuple(d["box"]), mask, d.get("score", 1.0), d.get("label", ""), d.get("image_index", 0),
                      d.get("track_id"))
            for d, mask in zip(header["detections"], masks)
        )
        return cls(detections, tuple(header.get("image_size", (0, 0))), dict(header.get("meta", {})))


def _json_safe(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool, list, tuple, type(None)))}
