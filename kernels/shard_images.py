"""Refined regions as images that survive an 8-bit transfer: quantised pixels and a header row naming each region.

ComfyUI-Distributed sends a worker's images to the master as 8-bit PNGs, truncating 255·x to an integer; the
master's own images stay float. A channel value q in 0..255 is written as min(1, (q + 0.25) / 255): truncated it is
q / 255, kept it is (q + 0.25) / 255, and `read_levels` (floor(255·y + 0.25)) gives q back from either. Pixels are
written as q = round(255·clamp(x, 0, 1)), so the only loss of a region's pixels is that one rounding (at most
0.5 / 255); the header row carries the region's identity as bytes, three to a pixel.

A packed image is [H + 1, W, 3]: row 0 the header (Label), rows 1..h and columns 0..w the region's pixels, the rest
zero. Every image of a plan has the plan's largest region size (at least HEADER_PIXELS wide), so the images of all
shards stack into one batch.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

MAGIC = b"LSD"
VERSION = 1
_LAYOUT = ">3sBIHHIIHH"  # magic, version, plan, shard, shards, region, regions, width, height
NO_REGION = 0xFFFFFFFF
HEADER_BYTES = struct.calcsize(_LAYOUT) + 4  # + crc32
HEADER_PIXELS = -(-HEADER_BYTES // 3)


@dataclass(frozen=True)
class Label:
    """Which region an image holds: `region` of `regions` of the plan with fingerprint `plan`, sampled by shard `shard`
    of `shards`, its pixels `width` x `height`; region NO_REGION marks a shard that sampled nothing."""

    plan: int
    shard: int
    shards: int
    region: int
    regions: int
    width: int
    height: int


def write_levels(values: torch.Tensor) -> torch.Tensor:
    """Integer levels 0..255 (any shape) as channel values that truncation and rounding to 8 bits both keep."""
    return ((values.to(torch.float32) + 0.25) / 255).clamp_(max=1.0)


def read_levels(values: torch.Tensor) -> torch.Tensor:
    """The levels 0..255 of channel values written by write_levels, kept as floats or truncated to 8 bits."""
    return torch.floor(values.to(torch.float32) * 255 + 0.25).clamp_(0, 255)


def quantise(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in 0..1 as channel values of their nearest 8-bit level (write_levels)."""
    return write_levels(torch.round(pixels.to(torch.float32).clamp(0, 1) * 255))


def dequantise(values: torch.Tensor) -> torch.Tensor:
    """The 8-bit levels of quantised pixels, in 0..1."""
    return read_levels(values) / 255


def _header(label: Label) -> bytes:
    body = struct.pack(_LAYOUT, MAGIC, VERSION, label.plan, label.shard, label.shards, label.region, label.regions,
                       label.width, label.height)
    return body + struct.pack(">I", zlib.crc32(body))


def pack(pixels: Sequence[torch.Tensor | None], labels: Sequence[Label], size: tuple[int, int]) -> torch.Tensor:
    """Regions' pixels [h, w, 3] (each at most `size` (w, h); None for a marker) and their labels as packed images
    [N, h + 1, max(w, HEADER_PIXELS), 3]."""
    width, height = max(size[0], HEADER_PIXELS), size[1]
    out = torch.zeros(len(labels), height + 1, width, 3)
    for i, (label, image) in enumerate(zip(labels, pixels)):
        header = torch.tensor(list(_header(label).ljust(HEADER_PIXELS * 3, b"\0")), dtype=torch.float32)
        out[i, 0, :HEADER_PIXELS] = write_levels(header.view(HEADER_PIXELS, 3))
        if image is not None:
            h, w = image.shape[:2]
            if (w, h) != (label.width, label.height) or w > width or h > height:
                raise ValueError(f"region {label.region}: pixels {w}x{h}, label {label.width}x{label.height}, "
                                 f"image {width}x{height}")
            out[i, 1:h + 1, :w] = quantise(image[..., :3].float().cpu())
    return out


class UnreadableShard(ValueError):
    """An image that is not a packed region (another node's image, or one damaged on the way)."""


def read_label(image: torch.Tensor) -> Label:
    """The label in the header row of a packed image [H + 1, W, 3]."""
    if image.ndim != 3 or image.shape[1] < HEADER_PIXELS or image.shape[2] < 3:
        raise UnreadableShard(f"an image of shape {list(image.shape)} has no shard header")
    raw = bytes(read_levels(image[0, :HEADER_PIXELS, :3]).to(torch.uint8).flatten().tolist())[:HEADER_BYTES]
    body, crc = raw[:-4], struct.unpack(">I", raw[-4:])[0]
    if not body.startswith(MAGIC) or zlib.crc32(body) != crc:
        raise UnreadableShard("an image without a valid Luna shard header (not a Luna shard's output, or damaged)")
    magic, version, *fields = struct.unpack(_LAYOUT, body)
    if version != VERSION:
        raise UnreadableShard(f"a shard image of format version {version}; this pack reads version {VERSION}")
    return Label(*fields)


def unpack(image: torch.Tensor) -> tuple[Label, torch.Tensor | None]:
    """(label, the region's pixels [h, w, 3] in 0..1, or None for a shard that sampled nothing) of a packed image."""
    label = read_label(image)
    if label.region == NO_REGION:
        return label, None
    if label.height + 1 > image.shape[0] or label.width > image.shape[1]:
        raise UnreadableShard(f"region {label.region} is {label.width}x{label.height} px but its image is "
                              f"{image.shape[1]}x{image.shape[0] - 1}")
    return label, dequantise(image[1:label.height + 1, :label.width, :3])
