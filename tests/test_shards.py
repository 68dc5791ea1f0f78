"""Shards of a refiner or detailer run and their merge, in-process (issue 30); over real ComfyUI-Distributed servers in
tests/test_distributed.py.

The transfer is what ComfyUI-Distributed does to a worker's images (tests/test_distributed.py measures it): each
channel truncated to 8 bits, `floor(255·x) / 255`, through a PNG; the master's own images stay float. The merged
canvas must equal the same node's run with shard_count 1 within 1/255 per channel.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures.fidelity import block_vae, exact_model
from pipeline_helpers import encode_prompt, models, scaffold_for, smooth_canvas
from luna_semantic_detailer.kernels.shard_images import (HEADER_PIXELS, NO_REGION, Label, UnreadableShard, dequantise,
                                                         pack, quantise, read_label, unpack)
from luna_semantic_detailer.luna_types import Detection, DetectionData
from luna_semantic_detailer.nodes.detailer import LunaSAM3Detailer
from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner
from luna_semantic_detailer.nodes.shards import LunaShardMerge
from luna_semantic_detailer.pipeline.regions import Region
from luna_semantic_detailer.pipeline.shards import Shard, owners

STEP = 1 / 255
SETTINGS = dict(steps=2, cfg=3.0, sampler_name="euler_ancestral", scheduler="normal", vision_strength=0.0)
BOXES = [(0.05, 0.05, 0.3, 0.35), (0.4, 0.1, 0.6, 0.4), (0.1, 0.5, 0.5, 0.95), (0.6, 0.55, 0.9, 0.9)]


def over_the_wire(images: torch.Tensor) -> torch.Tensor:
    """A worker's images as the master receives them: 8-bit (truncated), RGB, through a PNG."""
    out = []
    for image in images.numpy():
        buffer = io.BytesIO()
        Image.fromarray((255.0 * image).astype(np.uint8)).save(buffer, format="PNG", compress_level=0)
        out.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(out))


def collected(run, count: int, skip: tuple[int, ...] = ()) -> tuple[torch.Tensor, object]:
    """What DistributedCollector hands the master: shard 0's images as they are, then each worker's over the wire."""
    parts, plan = [], None
    for index in range(count):
        image, shard_plan = run(index, count)
        plan = shard_plan if index == 0 else plan
        if index not in skip:
            parts.append(image if index == 0 else over_the_wire(image))
    return torch.cat(parts), plan


def refiner(image, index: int, count: int, tiling: str = "parallel"):
    model, vae = models()
    h, w = image.shape[1:3]
    return LunaGlobalRefiner().refine(image, scaffold_for(w, h), model, encode_prompt("a photo"), encode_prompt(""), vae,
                                      128, 32, denoise=0.5, max_batch=2, tiling=tiling, shard_index=index,
                                      shard_count=count, **SETTINGS)


def detailer(image, index: int, count: int):
    h, w = image.shape[1:3]
    data = DetectionData(tuple(Detection(b, None, 0.9, "thing") for b in BOXES), (w, h))
    out = LunaSAM3Detailer().detail(image, scaffold_for(w, h), data, exact_model("local"), encode_prompt("a face"),
                                    encode_prompt(""), block_vae(), denoise=0.6, crop_size="512", context_padding=1.5,
                                    mask_dilation=8, mask_feather=24, max_batch=2, labels="", shard_index=index,
                                    shard_count=count, **SETTINGS)
    return out[0], out[2]


RUNS = {"refiner": refiner, "detailer": detailer}


def test_quantised_values_come_back_as_their_level_kept_truncated_or_through_a_png():
    x = torch.rand(5, 70, 90, 3, generator=torch.Generator().manual_seed(1)) * 1.2 - 0.1
    levels = torch.round(x.clamp(0, 1) * 255) / 255
    q = quantise(x)
    assert (q >= 0).all() and (q <= 1).all()
    for received in (q, torch.floor(q * 255) / 255, over_the_wire(q)):
        assert torch.equal(dequantise(received), levels)
    assert (dequantise(q) - x.clamp(0, 1)).abs().max() <= 0.5 * STEP + 1e-7


def test_a_packed_image_names_its_region_through_the_wire_and_damage_is_refused():
    pixels = [torch.rand(40, 50, 3), torch.rand(64, 64, 3)]
    labels = [Label(0xDEADBEEF, 2, 3, 7, 12, 50, 40), Label(0xDEADBEEF, 2, 3, 11, 12, 64, 64)]
    images = over_the_wire(pack(pixels, labels, (64, 64)))
    for image, label, original in zip(images, labels, pixels):
        got, region = unpack(image)
        assert got == label and torch.equal(region, torch.round(original * 255) / 255)
    damaged = images[0].clone()
    damaged[0, 3, 1] = 1 - damaged[0, 3, 1]
    with pytest.raises(UnreadableShard, match="valid Luna shard header"):
        read_label(damaged)
    with pytest.raises(UnreadableShard):
        read_label(torch.rand(32, 32, 3))
    narrow = over_the_wire(pack([torch.rand(5, 3, 3), None], [Label(7, 0, 2, 0, 1, 3, 5), Label(7, 1, 2, NO_REGION, 1, 0, 0)],
                                (3, 5)))
    assert narrow.shape == (2, 6, HEADER_PIXELS, 3)
    assert unpack(narrow[0])[0] == Label(7, 0, 2, 0, 1, 3, 5) and unpack(narrow[1]) == (Label(7, 1, 2, NO_REGION, 1, 0, 0), None)


def test_shards_are_balanced_by_sampled_area_largest_first():
    sides = [1024, 1536, 512, 512, 1024, 768, 1536, 512, 1024]
    regions = [Region(0, (0, 0, s, s), (s, s), torch.ones(1, 1)) for s in sides]
    # largest first, each to the least-loaded shard (ties: the lower shard, the earlier region), loads in Mpx:
    # #1 1536 -> 0 (2.36), #6 1536 -> 1 (2.36), #0 1024 -> 2 (1.05), #4 -> 2 (2.10), #8 -> 2 (3.15), #5 768 -> 0 (2.95),
    # #2 512 -> 1 (2.62), #3 -> 1 (2.88), #7 -> 1 (3.15)
    assert owners(regions, 3) == [2, 0, 1, 1, 2, 0, 1, 1, 2]
    for count in (1, 2, 3, 4):
        owner = owners(regions, count)
        assert owner == owners(regions, count) and set(owner) == set(range(count))
        loads = [sum(s * s for s, o in zip(sides, owner) if o == k) for k in range(count)]
        assert max(loads) - min(loads) <= max(s * s for s in sides), loads


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize("run", list(RUNS))
def test_the_merge_of_every_shard_is_the_local_run_within_one_level(run, count):
    image = smooth_canvas(1, 320, 384, seed=7)
    local = RUNS[run](image, 0, 1)[0]
    shards, plan = collected(lambda i, n: RUNS[run](image, i, n), count)
    assert shards.shape[0] == len(plan.regions) and len({int(o) for o in plan.owners}) == count
    merged = LunaShardMerge().merge(shards, plan, "stop with an error")[0]
    assert merged.shape == local.shape and torch.isfinite(merged).all()
    assert (local - image).abs().max() > 20 * STEP, "the run must change the canvas for the check to mean anything"
    assert (merged - local).abs().max() <= STEP, float((merged - local).abs().max())
    reordered = shards.flip(0)
    assert torch.equal(LunaShardMerge().merge(reordered, plan, "stop with an error")[0], merged)


@pytest.mark.parametrize("run", list(RUNS))
def test_a_shard_that_sent_nothing_is_sampled_by_the_merge_or_named(run):
    image = smooth_canvas(1, 320, 384, seed=8)
    local = RUNS[run](image, 0, 1)[0]
    shards, plan = collected(lambda i, n: RUNS[run](image, i, n), 3, skip=(2,))
    with pytest.raises(RuntimeError, match=r"shard 2 \(worker 2 of the enabled workers\) sent nothing"):
        LunaShardMerge().merge(shards, plan, "stop with an error")
    merged = LunaShardMerge().merge(shards, plan, "sample them here")[0]
    assert (merged - local).abs().max() <= STEP


def test_a_shard_of_another_plan_or_twice_is_refused_or_sampled_here_and_a_foreign_image_refused():
    """A worker whose settings differ (here its denoise) made another plan: the strict merge names it; the other
    leaves its images out and samples their regions here, so the canvas is still the local run's."""
    image = smooth_canvas(1, 320, 384, seed=9)
    local = refiner(image, 0, 1)[0]
    shards, plan = collected(lambda i, n: refiner(image, i, n), 2)
    worker = [i for i, owner in enumerate(plan.owners) if owner == 1]
    model, vae = models()
    other = LunaGlobalRefiner().refine(image, scaffold_for(384, 320), model, encode_prompt("a photo"), encode_prompt(""),
                                       vae, 128, 32, denoise=0.4, max_batch=2, shard_index=1, shard_count=2,
                                       **SETTINGS)[0]
    mixed = torch.cat([shards[:len(plan.regions) - len(worker)], over_the_wire(other)])
    with pytest.raises(ValueError, match="another plan"):
        LunaShardMerge().merge(mixed, plan, "stop with an error")
    merged = LunaShardMerge().merge(mixed, plan, "sample them here")[0]
    assert (merged - local).abs().max() <= STEP
    with pytest.raises(ValueError, match="a second time: two machines ran shard"):
        LunaShardMerge().merge(torch.cat([shards, shards[-1:]]), plan, "stop with an error")
    with pytest.raises(ValueError, match="not a Luna shard's output"):
        LunaShardMerge().merge(torch.cat([shards[:1], torch.rand_like(shards[:1])]), plan, "stop with an error")
    with pytest.raises(ValueError, match="shard_count 1"):
        LunaShardMerge().merge(shards, None, "stop with an error")


@pytest.mark.parametrize("tiling", ["fused", "chess"])
def test_tilings_that_need_the_whole_canvas_refuse_shards_by_name(tiling):
    with pytest.raises(ValueError, match=f"tiling '{tiling}' .* cannot be split over 2 shards: use tiling: parallel"):
        refiner(smooth_canvas(1, 256, 256), 0, 2, tiling)


def test_a_shard_index_outside_the_count_names_the_fix():
    with pytest.raises(ValueError, match="connect DistributedSeed"):
        Shard(2, 2)
