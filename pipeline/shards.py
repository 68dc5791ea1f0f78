"""Shards of a region plan (issue 30): each of N machines samples its share of the tiles or crops, the master merges.

A shard samples exactly what the whole run samples for its regions (the same scaffold slices, per-step noise,
seeds, conditioning and anchoring: all of it follows a region's place on the canvas, none of it the batch), so the
result cannot depend on which machine sampled which region. Shards are balanced by sampled area: the largest region
first, each to the shard with the least area so far. What a shard sends is its refined regions, packed so an 8-bit
transfer loses at most one rounding of each pixel (kernels.shard_images); the merge reads which region each image is,
checks that every region of the plan arrived, samples the missing ones itself or stops naming their shards, and
composites them as the local run does (the strategy's own compositor). Any strategy that samples its regions
independently (pipeline.strategy.Independent) can be sharded; one that needs the whole canvas is refused by name.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..kernels.shard_images import NO_REGION, Label, UnreadableShard, pack, unpack
from ..validation import one_of
from .fingerprint import fingerprint
from .plan import RegionPlan
from .regions import Region
from .strategies import offered
from .strategy import Keep, Strategy

MISSING = {
    "sample them here": "the merge samples every region whose shard sent nothing (needs the models on this machine)",
    "stop with an error": "the merge stops, naming the shards that sent nothing",
}
WORKER_SETTINGS = ("check that the worker is enabled and running in ComfyUI-Distributed's worker list (its Distributed "
                   "panel), that it has the same models, and raise worker_timeout_seconds if it is slow")


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 of 1: the whole run)."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if not (isinstance(self.count, int) and self.count >= 1 and isinstance(self.index, int)
                and 0 <= self.index < self.count):
            raise ValueError(f"shard_index must be in 0..shard_count - 1 and shard_count >= 1, got shard "
                             f"{self.index} of {self.count}: with ComfyUI-Distributed, connect DistributedSeed (seed 0) "
                             "to shard_index and set shard_count to 1 + the number of workers")

    @property
    def whole(self) -> bool:
        """One shard: the whole run."""
        return self.count == 1


def owners(regions: Sequence[Region], count: int, units: Sequence[Sequence[int]] | None = None) -> list[int]:
    """The shard of each region: units of regions sampled together (default: each region alone) by sampled area,
    largest first, each to the shard with the least area so far (ties: the lower shard; equal areas: the earlier)."""
    units = [[i] for i in range(len(regions))] if units is None else [list(u) for u in units]
    area = [sum(regions[i].sampled_area for i in unit) for unit in units]
    load = [0] * count
    out = [0] * len(regions)
    for u in sorted(range(len(units)), key=lambda u: (-area[u], min(units[u]))):
        shard = min(range(count), key=lambda s: (load[s], s))
        for i in units[u]:
            out[i] = shard
        load[shard] += area[u]
    return out


def refuse_unless_shardable(strategy: Strategy, count: int, source: str) -> None:
    """Only strategies that sample every region from the input canvas can be split over machines."""
    if count > 1 and not strategy.shardable:
        able = " or ".join(name for name, s in offered(source).items() if s.shardable)
        raise ValueError(f"tiling {strategy.name!r} needs the whole canvas at every step (or phase), so it cannot be "
                         f"split over {count} shards: use tiling: {able} with shard_count > 1, or shard_count 1")


@dataclass(frozen=True)
class ShardPlan:
    """What the merge needs of a sharded run: the region plan, its strategy, each region's shard and the fingerprint
    every machine's plan must share."""

    plan: RegionPlan
    strategy: Strategy
    owners: tuple[int, ...]
    count: int
    fingerprint: int

    @property
    def regions(self) -> tuple[Region, ...]:
        return self.plan.regions

    @property
    def size(self) -> tuple[int, int]:
        """(w, h) of the largest region: every packed image's size but its header row."""
        return (max((r.rect[2] for r in self.regions), default=64), max((r.rect[3] for r in self.regions), default=64))

    def members(self, shard: int) -> list[int]:
        """The regions shard `shard` samples."""
        return [i for i, owner in enumerate(self.owners) if owner == shard]

    def sample(self, members: Sequence[int]) -> dict[int, torch.Tensor]:
        """{region: refined pixels [h, w, 3]} of `members`, sampled here."""
        results: dict[int, torch.Tensor] = {}
        self.strategy.independent.sample(self.plan, members, results.__setitem__)
        return results


def shard_plan(plan: RegionPlan, strategy: Strategy, count: int) -> ShardPlan:
    """The plan split into `count` shards; its fingerprint is every field of the plan (job and settings included) but
    what is each machine's own (pipeline.fingerprint)."""
    refuse_unless_shardable(strategy, count, plan.source)
    parts = strategy.independent
    units = parts.units(plan, range(len(plan.regions))) if parts.units else None
    return ShardPlan(plan, strategy, tuple(owners(plan.regions, count, units)), count,
                     fingerprint(plan, strategy.name, count))


def run(plan: RegionPlan, strategy: Strategy, shard: Shard = Shard(),
        keep: Keep | None = None) -> tuple[torch.Tensor, ShardPlan | None]:
    """The plan refined by `strategy`: (the canvas, None) for the whole run; (the packed images of shard `shard`'s
    regions, the shard plan) for one shard of several. keep(i, pixels) sees each region sampled here."""
    if shard.whole:
        return plan.trimmed(strategy.run(plan, keep)), None
    split = shard_plan(plan, strategy, shard.count)
    return sampled_shard(split, shard, keep), split


def sampled_shard(plan: ShardPlan, shard: Shard, keep: Keep | None = None) -> torch.Tensor:
    """The packed images of shard `shard`'s regions, sampled here; keep(i, pixels) sees each."""
    results = plan.sample(plan.members(shard.index))
    if keep is not None:
        for i in sorted(results):
            keep(i, results[i])
    return packed(plan, shard, results)


def packed(plan: ShardPlan, shard: Shard, results: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """The images shard `shard` sends: its regions' refined pixels, labelled (a marker image when it has none)."""
    def label(region: int, pixels: torch.Tensor | None) -> Label:
        w, h = (pixels.shape[1], pixels.shape[0]) if pixels is not None else (0, 0)
        return Label(plan.fingerprint, shard.index, shard.count, region, len(plan.regions), w, h)

    items = sorted(results.items()) or [(NO_REGION, None)]
    return pack([pixels for _, pixels in items], [label(i, pixels) for i, pixels in items], plan.size)


def received(plan: ShardPlan, images: torch.Tensor, strict: bool) -> dict[int, torch.Tensor]:
    """{region: pixels} of the collected images [N, H, W, 3] that fit the plan. An image that does not (another
    plan's, a region twice, a region its shard does not sample) is an error when `strict`, else left out with a
    warning (its region then counts as missing)."""
    results: dict[int, torch.Tensor] = {}
    for n, image in enumerate(images):
        try:
            label, pixels = unpack(image)
        except UnreadableShard as exc:
            raise ValueError(f"image {n} of the collected shards: {exc}. Connect DistributedCollector's output "
                             "(fed by the Luna node's image output) to the merge's shards input") from None
        problem = _misfit(plan, label, results)
        if problem is not None:
            if strict:
                raise ValueError(f"image {n} {problem}")
            logging.warning("[Luna] shard merge: image %d %s; its region is sampled here instead", n, problem)
            continue
        if label.region != NO_REGION:
            results[label.region] = pixels
    return results


def _misfit(plan: ShardPlan, label: Label, results: Mapping[int, torch.Tensor]) -> str | None:
    """Why an image with `label` does not fit the plan (given the regions already received), or None."""
    if label.plan != plan.fingerprint or label.shards != plan.count:
        return (f"comes from shard {label.shard} of {label.shards} of another plan (fingerprint {label.plan:08x}, this "
                f"one {plan.fingerprint:08x} of {plan.count} shards): every machine must run the same workflow, "
                "models and settings, with the same shard_count")
    if label.region == NO_REGION:
        return None
    if label.region >= len(plan.regions) or plan.owners[label.region] != label.shard:
        return (f"holds region {label.region}, which shard {label.shard} does not sample: connect DistributedSeed with "
                "seed 0 to shard_index")
    if label.region in results:
        return (f"holds region {label.region} a second time: two machines ran shard {label.shard}; connect "
                "DistributedSeed with seed 0 to shard_index")
    region = plan.regions[label.region]
    if (label.width, label.height) != (region.rect[2], region.rect[3]):
        return (f"holds region {label.region} at {label.width}x{label.height} px; the plan has "
                f"{region.rect[2]}x{region.rect[3]}")
    return None


def whole_units(plan: ShardPlan, regions: Sequence[int]) -> list[int]:
    """`regions` grown to the whole units their strategy samples together (a clip is sampled whole or not at all)."""
    parts = plan.strategy.independent
    if parts.units is None:
        return list(regions)
    wanted = set(regions)
    return sorted(i for unit in parts.units(plan.plan, range(len(plan.regions))) if wanted & set(unit) for i in unit)


def merge(plan: ShardPlan, images: torch.Tensor, missing: str) -> torch.Tensor:
    """The canvas [B, height, width, 3] of every shard's regions composited; missing regions per `missing` (MISSING)."""
    strict = one_of("missing", missing, tuple(MISSING)) == "stop with an error"
    results = received(plan, images, strict)
    absent = whole_units(plan, [i for i in range(len(plan.regions)) if i not in results])
    for i in absent:
        results.pop(i, None)
    if absent:
        shards = sorted({plan.owners[i] for i in absent})
        if strict:
            names = ", ".join(f"shard {s} ({'the master' if s == 0 else f'worker {s} of the enabled workers'})"
                              for s in shards)
            raise RuntimeError(f"{len(absent)} of {len(plan.regions)} regions never arrived: {names} sent nothing. "
                               f"{WORKER_SETTINGS}; or set the merge's missing to 'sample them here'.")
        logging.warning("[Luna] shard merge: shards %s sent nothing; sampling their %d regions here", shards, len(absent))
        results.update(plan.sample(absent))
    return plan.plan.trimmed(plan.strategy.independent.composite(plan.plan, results))
