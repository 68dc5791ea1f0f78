"""Every batching path at the batch a big GPU allows equals the batch-of-one run (issue 28, item 5).

This machine's free memory keeps ComfyUI's estimate (pipeline.batching.max_batch_for) at small batches; an artist's
24 GB GPU does not. `big_gpu` (conftest) makes the estimate see 24 GiB free, so each run below is batched up to max_batch, and a
spy on ComfyUI's sampler checks that it was. The model is the exact-score denoiser and the block VAE
(tests/fixtures/fidelity.py): each item's result depends only on its own pixels and noise, so batching may change
nothing but float summation order.
"""
from __future__ import annotations

import pytest
import torch

from fixtures.fidelity import block_vae, exact_model
from pipeline_helpers import sampler_spy, scaffold_for, smooth_canvas
from luna_semantic_detailer.kernels.planning import plan_crop
from luna_semantic_detailer.luna_types import Detection, DetectionData
from luna_semantic_detailer.nodes.detailer import LunaSAM3Detailer
from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner
from luna_semantic_detailer.pipeline.batching import max_batch_for
from luna_semantic_detailer.pipeline.tiles import canvas_tiles

EMPTY = [[torch.zeros(1, 1, 64), {}]]
SETTINGS = dict(steps=3, cfg=2.0, sampler_name="euler_ancestral", scheduler="normal", vision_strength=0.0)


def detail(image, boxes, crop_size: str, max_batch: int, masks: bool = False) -> torch.Tensor:
    height, width = image.shape[1:3]
    detections = []
    for x0, y0, x1, y1 in boxes:
        mask = None
        if masks:
            mask = torch.zeros(height, width)
            mask[int(y0 * height):int(y1 * height), int(x0 * width):int(x1 * width)] = 1
        detections.append(Detection((x0, y0, x1, y1), mask, 0.9, "thing"))
    return LunaSAM3Detailer().detail(image, scaffold_for(width, height), DetectionData(tuple(detections), (width, height)),
                                     exact_model("local"), EMPTY, EMPTY, block_vae(), denoise=0.5, crop_size=crop_size,
                                     context_padding=1.5, mask_dilation=4, mask_feather=16, max_batch=max_batch,
                                     labels="", **SETTINGS)[0]


def refine(image, tiling: str, max_batch: int, fit: str) -> torch.Tensor:
    height, width = image.shape[1:3]
    return LunaGlobalRefiner().refine(image, scaffold_for(width, height), exact_model("local"), EMPTY, EMPTY, block_vae(),
                                      256, 32, denoise=0.5, max_batch=max_batch, tile_fit=fit, tiling=tiling,
                                      **SETTINGS)[0]


def batched_vs_alone(run) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    with sampler_spy() as calls:
        together = run(8)
    alone = run(1)
    return together, alone, [c["noise"].shape[0] for c in calls]


def test_the_big_gpu_estimate_allows_the_requested_batch(big_gpu):
    assert max_batch_for(exact_model("local"), [1, 4, 64, 64], 8) == 8


# Crops on a 1536 x 1024 canvas at crop_size 512: (w, h) of each box's context square, as plan_crop gives it.
CROPS = {
    "one to one, masked": ("512", [(0.05, 0.05, 0.2, 0.25), (0.3, 0.5, 0.45, 0.75), (0.7, 0.1, 0.85, 0.35)], True),
    "resampled, two sizes in one batch": ("512", [(0.05, 0.1, 0.3, 0.5), (0.5, 0.2, 0.85, 0.72)], False),
    "one to one and resampled": ("512", [(0.05, 0.05, 0.2, 0.25), (0.05, 0.1, 0.3, 0.5), (0.5, 0.2, 0.85, 0.72),
                                          (0.7, 0.75, 0.8, 0.9)], True),
}


@pytest.mark.parametrize("case", list(CROPS))
def test_detailer_batches_equal_batches_of_one(case, big_gpu):
    crop_size, boxes, masks = CROPS[case]
    image = smooth_canvas(1, 1024, 1536, seed=5)
    together, alone, sizes = batched_vs_alone(lambda b: detail(image, boxes, crop_size, b, masks))
    squares = [plan_crop(box, 1536, 1024, 1.5, (512,), 8) for box in boxes]
    resampled = {c.size for c in squares if c.size > c.sample_size}
    if case.startswith("resampled"):
        assert len(resampled) == 2, "the case needs two resampled crops of different sizes"
    assert max(sizes) > 1, sizes
    assert torch.isfinite(together).all()
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("tiling", ["parallel", "chess", "fused"])
@pytest.mark.parametrize("fit", ["fit", "exact"])
def test_refiner_batches_equal_batches_of_one(tiling, fit, big_gpu):
    image = smooth_canvas(2, 520, 744, seed=6)
    assert len(canvas_tiles(744, 520, 256, 32, 8, fit)) >= 4
    together, alone, sizes = batched_vs_alone(lambda b: refine(image, tiling, b, fit))
    if tiling != "fused":
        assert max(sizes) > 1, sizes
    assert torch.isfinite(together).all()
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
