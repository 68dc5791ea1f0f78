"""Checks of what other packs hand over (SEGS, core BOUNDING_BOX, typed boxes): numbers in any array type, boxes,
confidences, masks, and pixel boxes that must fit their image."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ... import validation

FIT_TOLERANCE = 0.5
"""Pixels a box may overhang its image (rounding of the pixel coordinates); more is an error, less is clipped."""

Box = tuple[float, float, float, float]


def numbers(value: Any, count: int, what: str, expected: str) -> tuple[float, ...]:
    """`count` finite numbers from a number, tuple, list, numpy array or tensor of any shape."""
    try:
        flat = (value.detach().cpu().double().numpy() if torch.is_tensor(value) else np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValueError(f"{what} is {value!r}; expected {expected}") from None
    return validation.finite_numbers(what, flat.reshape(-1).tolist(), count, expected)


def box(value: Any, what: str) -> Box:
    """(x1, y1, x2, y2) with x2 >= x1 and y2 >= y1."""
    x1, y1, x2, y2 = numbers(value, 4, what, "4 finite numbers (x1, y1, x2, y2)")
    if x2 < x1 or y2 < y1:
        raise ValueError(f"{what} {value!r} has a negative size ({x2 - x1} x {y2 - y1}); expected x2 >= x1 and y2 >= y1")
    return x1, y1, x2, y2


def confidence(value: Any, what: str) -> float:
    """A score: one finite number, 1.0 when there is none."""
    if value is None:
        return 1.0
    return numbers(value, 1, what, "one finite number (numpy scalar, float or 1-element tensor)")[0]


def fitted_box(pixels: Sequence[float], width: int, height: int, what: str, fix: str) -> Box:
    """A pixel box (x1, y1, x2, y2) of a width x height image as fractions of it (clipped to 0..1), or a ValueError
    with the image size and the box when it leaves the image by more than FIT_TOLERANCE; `fix` says what to do."""
    x1, y1, x2, y2 = pixels
    over = max(-x1, -y1, x2 - width, y2 - height)
    if over > FIT_TOLERANCE:
        raise ValueError(
            f"{what} spans x {x1:g}..{x2:g}, y {y1:g}..{y2:g} px: it does not fit the {width}x{height} (width x height) "
            f"image, it leaves it by {over:g} px. {fix}"
        )
    clip = lambda v: min(max(v, 0.0), 1.0)  # noqa: E731
    return clip(x1 / width), clip(y1 / height), clip(x2 / width), clip(y2 / height)


def mask_2d(mask: Any, what: str) -> torch.Tensor | None:
    """A [h, w] float32 CPU tensor in 0..1 from a numpy array or tensor ([h, w], [1, h, w], [h, w, 1], bool/uint8/float)."""
    if mask is None:
        return None
    try:
        t = mask.detach().cpu() if torch.is_tensor(mask) else torch.from_numpy(np.ascontiguousarray(np.asarray(mask)))
    except (TypeError, ValueError):
        raise ValueError(f"{what} is a {type(mask).__name__}; expected a 2-D mask (numpy array or tensor)") from None
    if t.dtype == torch.bool:
        t = t.float()
    elif t.dtype == torch.uint8:
        t = t.float() / 255.0 if t.numel() and int(t.max()) > 1 else t.float()
    elif t.is_complex():
        raise ValueError(f"{what} has dtype {t.dtype}; expected a real-valued mask")
    else:
        t = t.float()
    while t.ndim > 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 3 and t.shape[-1] == 1:
        t = t[..., 0]
    if t.ndim != 2:
        raise ValueError(f"{what} has shape {tuple(t.shape)}; expected a 2-D mask [height, width]")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or infinity; expected values in 0..1")
    return t.clamp(0.0, 1.0)


def mask_batch(masks: torch.Tensor, what: str = "mask") -> torch.Tensor:
    """A MASK batch [N, H, W] (a single [H, W] mask becomes [1, H, W]) as float32 on the CPU, clamped to 0..1.

    A batch already in 0..1 is returned as it is (no copy), so per-object masks can be views of it."""
    masks = masks.detach().float().cpu()
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"{what} has shape {tuple(masks.shape)}; expected a MASK batch [N, H, W]")
    if not torch.isfinite(masks).all():
        raise ValueError(f"{what} contains NaN or infinity; expected values in 0..1")
    if masks.numel() and (masks.min() < 0 or masks.max() > 1):
        masks = masks.clamp(0.0, 1.0)
    return masks
