"""CUDA checks (issue 10, item 3): kernels on CUDA against float64 CPU references, the GlobalRefiner on CUDA against
the CPU, VRAM released after ComfyUI's unload, and no host syncs in the per-tile kernels. Skipped without CUDA.

Tolerances: kernels in float32 on CUDA vs float64 references, 1e-6 (masks, smoothstep, ramps, in 0..1), 1e-5 (noise
resampling, O(1) values through two matmuls), 1e-4 (bilinear mask cut-outs: float32 sampling coordinates); noise
slicing, box masks, boxes and connected regions exactly. The refiner: see cuda_reference.assert_same_refine.
"""
from __future__ import annotations

import gc
import math

import numpy as np
import pytest
import torch

from cuda_reference import assert_same_refine, run_in_subprocess, small_refine
from test_compositing import reference_composite
from test_masks import naive_feather, naive_signed_distance, smoothstep64
from luna_semantic_detailer.kernels.detections import connected_regions, mask_boxes
from luna_semantic_detailer.kernels.compositing import Layer, add_share_, lerp_, share, tile_layers
from luna_semantic_detailer.kernels.masks import detection_alpha, smoothstep
from luna_semantic_detailer.kernels.planning import plan_tiles
from luna_semantic_detailer.pipeline.anchoring import SDXL_SLOTS, append_tokens
from luna_semantic_detailer.kernels.noise import make_scaffold, slice_noise
from luna_semantic_detailer.kernels.rect_masks import box_mask, mask_regions
from luna_semantic_detailer.kernels.resample import bridge_shape, downscale_noise, integral_downscale

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is False"),
]

MiB = 1 << 20


def gen(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


# --- noise ------------------------------------------------------------------------------------------------------


def test_scaffold_is_drawn_on_the_cpu_bit_identically_even_under_a_cuda_default_device():
    expected = torch.randn((1, 4, 33, 41), generator=gen(123), dtype=torch.float32)
    with torch.device("cuda"):
        scaffold = make_scaffold(321, 263, 123)
    assert scaffold.device.type == "cpu" and scaffold.dtype == torch.float32
    assert torch.equal(scaffold, expected)
    assert torch.equal(scaffold.cuda().cpu(), scaffold)


def test_slicing_a_cuda_scaffold_equals_slicing_it_on_the_cpu_exactly():
    cpu = make_scaffold(512, 384, 7, channels=16)
    boxes = [(0, 0, 128, 96), (384, 288, 128, 96), (200, 40, 128, 96)]
    out = slice_noise(cpu.cuda(), boxes, 8)
    assert out.device.type == "cuda" and out.shape == (3, 16, 12, 16)
    assert torch.equal(out.cpu(), slice_noise(cpu, boxes, 8))
    reference = cpu.double()
    for got, (x, y, w, h) in zip(out, boxes):
        assert torch.equal(got.cpu().double(), reference[0, :, y // 8:(y + h) // 8, x // 8:(x + w) // 8])


# --- resample ---------------------------------------------------------------------------------------------------


def naive_integral_downscale(noise: np.ndarray, z: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Loop over source cells: each sends w_k * x + sqrt(w_k) * z_k - w_k * sum_j sqrt(w_j) z_j to its (up to) four
    overlapped output cells k; the sum is divided by sqrt(in/out area). float64 throughout."""
    _, _, h, w = noise.shape

    def parts(n: int, m: int, p: int) -> list[tuple[int, float]]:
        a = p * m // n
        f = (min((p + 1) * m, (a + 1) * n) - p * m) / m
        return [(a, f), (a + 1, 1.0 - f)]

    out = np.zeros(noise.shape[:2] + (out_h, out_w))
    for py in range(h):
        for px in range(w):
            pieces = [(ty, tx, wy * wx, z[:, :, dy * h + py, dx * w + px])
                      for dy, (ty, wy) in enumerate(parts(h, out_h, py))
                      for dx, (tx, wx) in enumerate(parts(w, out_w, px))]
            total = sum(math.sqrt(wk) * zk for _, _, wk, zk in pieces)
            for ty, tx, wk, zk in pieces:
                if wk > 0:
                    out[:, :, ty, tx] += wk * noise[:, :, py, px] + math.sqrt(wk) * zk - wk * total
    return out / math.sqrt(h * w / (out_h * out_w))


@pytest.mark.parametrize("in_hw,out_hw", [((13, 11), (5, 4)), ((12, 18), (4, 6)), ((9, 16), (7, 3))])
def test_integral_downscale_on_cuda_matches_a_float64_loop(in_hw, out_hw):
    noise = torch.randn((2, 3, *in_hw), generator=gen(1))
    z = torch.randn(bridge_shape(noise), generator=gen(2))
    out = integral_downscale(noise.cuda(), z.cuda(), out_hw)
    assert out.device.type == "cuda" and out.dtype == torch.float32
    expected = naive_integral_downscale(noise.double().numpy(), z.double().numpy(), *out_hw)
    np.testing.assert_allclose(out.cpu().double().numpy(), expected, rtol=0, atol=1e-5)
    assert torch.equal(integral_downscale(noise.cuda(), z.cuda(), out_hw), out), "not deterministic on CUDA"


def test_integer_ratio_on_cuda_is_area_times_sqrt_ratio():
    noise = torch.randn((1, 4, 96, 64), generator=gen(3))
    out = downscale_noise(noise.cuda(), (24, 32), seed=4)
    expected = torch.nn.functional.avg_pool2d(noise.double(), (4, 2)) * math.sqrt(8)
    torch.testing.assert_close(out.cpu().double(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", [5, [11, 12]])
def test_downscale_noise_on_cuda_matches_float64_cpu(seed):
    noise = torch.randn((2, 4, 96, 80), generator=gen(6))
    out = downscale_noise(noise.cuda(), (36, 30), seed=seed)
    assert out.device.type == "cuda" and out.dtype == torch.float32
    reference = downscale_noise(noise.double(), (36, 30), seed=seed)
    assert reference.dtype == torch.float64
    torch.testing.assert_close(out.cpu().double(), reference, rtol=0, atol=1e-5)


# --- masks ------------------------------------------------------------------------------------------------------


def test_smoothstep_on_cuda_matches_the_closed_form():
    m = torch.linspace(-0.5, 1.5, 4001)
    out = smoothstep(m.cuda())
    np.testing.assert_allclose(out.cpu().double().numpy(), smoothstep64(m.double().numpy()), rtol=0, atol=1e-6)
    assert smoothstep(torch.tensor([-1.0, 0.0, 1.0, 2.0], device="cuda")).tolist() == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("moved", [False, True], ids=["all-cuda", "values-and-weights-on-cpu"])
def test_composite_on_cuda_matches_the_float64_reference_and_leaves_uncovered_pixels_bit_identical(moved):
    g = gen(8)
    original = torch.rand((1, 40, 56, 3), generator=g)
    alpha = torch.rand(30, 20, generator=g)
    layers = [Layer((17, 9, 32, 24), torch.rand(24, 32, generator=g)), Layer((30, 4, 20, 30), alpha, alpha)]
    values = [torch.rand(1, 24, 32, 3, generator=g), torch.rand(1, 30, 20, 3, generator=g)]
    out = original.clone().cuda()
    base = original.cuda()
    for i, (layer, value) in enumerate(zip(layers, values)):
        weight = share(layers, i)
        add_share_(out, layer.rect, value if moved else value.cuda(), weight if moved else weight.cuda(), base=base)
    assert out.device.type == "cuda"
    expected = reference_composite(40, 56, layers, [v[0].numpy() for v in values], original[0].numpy())
    np.testing.assert_allclose(out[0].cpu().double().numpy(), expected, rtol=0, atol=1e-5)
    covered = torch.zeros(40, 56, dtype=torch.bool)
    for layer in layers:
        x, y, w, h = layer.rect
        covered[y:y + h, x:x + w] = True
    assert torch.equal(out[0].cpu()[~covered], original[0][~covered])


def test_tile_shares_on_a_cuda_latent_canvas_sum_to_one():
    tiles = plan_tiles(296, 200, 128, 48, 8)
    layers = tile_layers(tiles, 8)
    canvas = torch.zeros(1, 4, 25, 37, device="cuda")
    for i, layer in enumerate(layers):
        add_share_(canvas, layer.rect, torch.ones(1, 4, layer.rect[3], layer.rect[2], device="cuda"), share(layers, i),
                   channels_last=False)
    torch.testing.assert_close(canvas, torch.ones_like(canvas), rtol=0, atol=1e-6)
    lerp_(canvas, (0, 0, 5, 5), torch.zeros(1, 4, 5, 5), torch.ones(5, 5), channels_last=False)
    assert canvas[..., :5, :5].eq(0).all() and canvas.device.type == "cuda"


@pytest.mark.parametrize("dilation,width", [(0, 0), (3, 5), (-2, 4), (6, 0)])
def test_detection_alpha_of_cuda_masks_stays_on_cuda_and_matches_the_brute_force_distance(dilation, width):
    g = gen(9)
    mask = torch.rand((2, 28, 28), generator=g) * (torch.rand((2, 28, 28), generator=g) < 0.08)
    mask[1, 8:18, 10:24] = 0.9
    out = detection_alpha(mask.cuda(), 1, (28, 28), dilation, width)
    assert out.device.type == "cuda" and out.shape == mask.shape
    for i in range(2):
        expected = naive_feather(naive_signed_distance(mask[i].numpy() >= 0.5), dilation, width)
        np.testing.assert_allclose(out[i].cpu().double().numpy(), expected, rtol=0, atol=1e-6)


# --- regions ----------------------------------------------------------------------------------------------------


def naive_bilinear_cut(mask: np.ndarray, region: tuple[float, ...], size: int) -> np.ndarray:
    """Sample mask [h, w] at the centres of a size x size grid over region (x0, y0, x1, y1) in 0..1, bilinear, the edge
    values continued outside."""
    h, w = mask.shape
    x0, y0, x1, y1 = region

    def at(i: int, j: int) -> float:
        return mask[min(max(i, 0), h - 1), min(max(j, 0), w - 1)]

    out = np.zeros((size, size))
    for r in range(size):
        py = (y0 + (r + 0.5) / size * (y1 - y0)) * h - 0.5
        for c in range(size):
            px = (x0 + (c + 0.5) / size * (x1 - x0)) * w - 0.5
            i, j = math.floor(py), math.floor(px)
            fy, fx = py - i, px - j
            out[r, c] = ((1 - fy) * ((1 - fx) * at(i, j) + fx * at(i, j + 1))
                         + fy * ((1 - fx) * at(i + 1, j) + fx * at(i + 1, j + 1)))
    return out


def test_mask_regions_on_cuda_matches_a_naive_bilinear_loop():
    mask = torch.rand((3, 20, 24), generator=gen(10))
    regions = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.1, 0.3, 0.5, 0.7], [-0.2, 0.6, 0.4, 1.3]])
    out = mask_regions(mask.cuda(), regions.cuda(), 16)
    assert out.device.type == "cuda" and out.shape == (3, 16, 16)
    for n in range(3):
        expected = naive_bilinear_cut(mask[n].double().numpy(), tuple(regions[n].tolist()), 16)
        np.testing.assert_allclose(out[n].cpu().double().numpy(), expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(mask_regions(mask.cuda(), regions, 16), out, rtol=0, atol=0)


def test_box_mask_on_cuda_matches_a_pixel_centre_loop():
    r = torch.rand((3, 4), generator=gen(11))
    xs, ys = r[:, :2].sort(dim=1).values, r[:, 2:].sort(dim=1).values
    boxes = torch.cat([torch.tensor([[0.1, 0.2, 0.56, 0.91], [0.0, 0.0, 1.0, 0.06]]),
                       torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], dim=1)])
    got = box_mask(boxes.cuda(), 20, 30)
    assert got.device.type == "cuda"
    got = got.cpu()
    for n, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        expected = torch.tensor([[float(x0 <= (x + 0.5) / 30 < x1 and y0 <= (y + 0.5) / 20 < y1) for x in range(30)]
                                 for y in range(20)])
        assert torch.equal(got[n], expected), n


# --- detections -------------------------------------------------------------------------------------------------


def test_mask_boxes_on_cuda_match_the_pixel_extents():
    masks = torch.zeros(4, 21, 33)
    masks[0, 2:5, 3:9] = 1
    masks[1, 20, 32] = 0.7
    masks[3] = (torch.rand(21, 33, generator=gen(12)) > 0.97).float()
    boxes, present = mask_boxes(masks.cuda())
    assert boxes.device.type == present.device.type == "cuda"
    assert present.tolist() == [bool(m.gt(0.5).any()) for m in masks]
    for n, m in enumerate(masks):
        ys, xs = np.nonzero(m.numpy() > 0.5)
        expected = [0.0] * 4 if len(ys) == 0 else [xs.min() / 33, ys.min() / 21, (xs.max() + 1) / 33, (ys.max() + 1) / 21]
        np.testing.assert_allclose(boxes[n].cpu().double().numpy(), expected, rtol=0, atol=1e-7)


def naive_components(on: np.ndarray) -> list[np.ndarray]:
    """8-connected components by flood fill, in raster order of their first pixel."""
    seen = np.zeros_like(on)
    out = []
    for i, j in zip(*np.nonzero(on)):
        if seen[i, j]:
            continue
        comp = np.zeros_like(on)
        stack = [(i, j)]
        seen[i, j] = True
        while stack:
            a, b = stack.pop()
            comp[a, b] = True
            for da in (-1, 0, 1):
                for db in (-1, 0, 1):
                    u, v = a + da, b + db
                    if 0 <= u < on.shape[0] and 0 <= v < on.shape[1] and on[u, v] and not seen[u, v]:
                        seen[u, v] = True
                        stack.append((u, v))
        out.append(comp)
    return out


def test_connected_regions_on_cuda_match_a_flood_fill():
    mask = torch.zeros(24, 30)
    mask[2:6, 3:8] = 0.8
    mask[6, 8] = 0.9  # touches the first blob diagonally: same region
    mask[15:20, 20:27] = 0.6
    mask[1, 25] = 1.0  # one pixel: dropped by min_pixels=2
    mask[10:13, 1:3] = 0.4  # under the threshold
    regions = connected_regions(mask.cuda(), min_pixels=2)
    comps = [c for c in naive_components(mask.numpy() > 0.5) if c.sum() >= 2]
    assert len(regions) == len(comps) == 2
    for region, comp in zip(regions, comps):
        assert region.mask.device.type == "cuda" and region.mask.dtype == torch.float16  # soft values: compact_mask
        assert torch.equal(region.mask.cpu().float(), (mask * torch.from_numpy(comp)).half().float())


def test_connected_regions_of_an_empty_cuda_mask_are_none():
    assert connected_regions(torch.zeros(8, 8, device="cuda")) == []


# --- anchoring -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token_width,before,after", [(64, 0, 0), (768, 0, 1280), (1280, 768, 0)])
def test_appended_cuda_tokens_match_the_closed_form_on_the_conditionings_device(token_width, before, after):
    g = gen(14)
    width = token_width + before + after
    text = torch.randn((1, 77, width), generator=g)
    pooled = torch.randn((1, 1280), generator=g)
    tokens = torch.randn((3, 5, token_width), generator=g)
    (fused, options), = append_tokens([[text, {"pooled_output": pooled}]], tokens.cuda() * 0.7, SDXL_SLOTS)
    assert fused.device.type == "cpu" and fused.dtype == text.dtype
    vision = torch.cat([torch.zeros(3, 5, before, dtype=torch.float64), 0.7 * tokens.double(),
                        torch.zeros(3, 5, after, dtype=torch.float64)], dim=-1)
    expected = torch.cat([text.double().expand(3, -1, -1), vision], dim=1)
    torch.testing.assert_close(fused.double(), expected, rtol=0, atol=1e-6)
    assert torch.equal(options["pooled_output"], pooled.expand(3, -1))
    (on_cuda, _), = append_tokens([[text.cuda(), {}]], tokens * 0.7, SDXL_SLOTS)
    assert on_cuda.device.type == "cuda"
    torch.testing.assert_close(on_cuda.cpu().double(), expected, rtol=0, atol=1e-6)


# --- no host syncs in the per-tile / per-crop kernels -----------------------------------------------------------


def test_per_tile_kernels_do_not_synchronize_with_the_host():
    """Sync debug mode "error" around the work the refiner/detailer loops do per batch on device tensors: slicing the
    scaffold, mask cut-outs and compositing. (ComfyUI's sampler syncs on its own, and the detection weight's distance
    transform runs on the CPU by design; not here.)"""
    g = gen(13)
    scaffold = make_scaffold(256, 256, 3).cuda()
    canvas = torch.rand((1, 256, 256, 3), generator=g).cuda()
    refined = torch.rand((2, 128, 128, 3), generator=g).cuda()
    mask = (torch.rand((2, 64, 64), generator=g) > 0.9).float().cuda()
    regions = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], device="cuda")
    boxes = torch.tensor([[0.1, 0.1, 0.4, 0.6], [0.3, 0.2, 0.9, 0.8]], device="cuda")

    weights = [w.cuda() for w in (torch.rand(128, 128, generator=g), torch.rand(128, 128, generator=g))]
    base = canvas.clone()

    def work():
        noise = slice_noise(scaffold, [(0, 0, 128, 128), (128, 128, 128, 128)], 8)
        cut = torch.maximum(mask_regions(mask, regions, 128), box_mask(boxes, 128, 128))
        for i, (x, y) in enumerate([(0, 0), (128, 128)]):
            add_share_(canvas, (x, y, 128, 128), refined[i:i + 1], weights[i] * cut[i], base=base)
            lerp_(canvas, (x, y, 128, 128), refined[i:i + 1], weights[i])
        return noise, smoothstep(cut)

    work()  # first calls (allocator, kernel loading) outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        work()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


# --- GlobalRefiner: CUDA vs CPU ---------------------------------------------------------------------------------


def test_global_refiner_on_cuda_matches_the_cpu_reference(tmp_path):
    cpu = run_in_subprocess("cpu", tmp_path / "cpu.pt")
    cuda = small_refine()
    assert cuda["device"].startswith("cuda"), cuda["device"]
    assert_same_refine(cuda, cpu)


# --- VRAM -------------------------------------------------------------------------------------------------------


def _release() -> None:
    """What ComfyUI does to free VRAM ("Unload models" / end of a prompt), then Python's garbage."""
    import comfy.model_management as mm

    mm.unload_all_models()
    reset = getattr(mm, "reset_cast_buffers", None)  # ComfyUI 0.28 keeps per-stream cast buffers until this
    if reset is not None:
        reset()
    gc.collect()
    mm.soft_empty_cache()
    torch.cuda.synchronize()


def _warm_cuda_libraries() -> None:
    """cuBLAS / cuBLASLt keep their workspaces (allocated through torch, so counted by memory_allocated) for the life of
    the process after their first matmul on a thread and stream: make them exist before the baseline so they are not
    counted as a leak of the pack (the run below uses this thread and the current stream)."""
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        a = torch.ones(64, 64, device="cuda", dtype=dtype)
        torch.addmm(a, a, a)
        a @ a
        torch.bmm(a[None], a[None])
        torch.nn.functional.conv2d(a[None, None], a[None, None, :3, :3], a[:1, 0], padding=1)
    torch.cuda.synchronize()


def _detail_small() -> torch.Tensor:
    from luna_semantic_detailer.luna_types import Detection, DetectionData
    from luna_semantic_detailer.nodes.detailer import LunaSAM3Detailer
    from pipeline_helpers import encode_prompt, models, scaffold_for, smooth_canvas

    model, vae = models()
    image = smooth_canvas(1, 512, 512, seed=4)
    data = DetectionData((Detection((0.3, 0.3, 0.6, 0.6), None, 0.9, "face", 0),), (512, 512))
    return LunaSAM3Detailer().detail(
        image, scaffold_for(512, 512), data, model, encode_prompt("a face"), encode_prompt(""), vae, steps=2, cfg=3.0,
        sampler_name="euler", scheduler="normal", denoise=0.5, crop_size="512", context_padding=1.5, mask_dilation=4,
        mask_feather=8, vision_strength=0.0, max_batch=2, labels="",
    )[0]


def test_vram_returns_to_its_level_before_the_run_after_comfyui_unloads():
    _release()
    _warm_cuda_libraries()
    _release()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    refined = small_refine()["image"]
    detailed = _detail_small()
    assert detailed.device.type == "cpu", "the detailer must hand back a canvas off the GPU"
    peak = torch.cuda.max_memory_allocated()
    del refined, detailed
    _release()
    after = torch.cuda.memory_allocated()
    assert peak > before + MiB, f"the run never used the GPU (peak {peak}, before {before}): the check proves nothing"
    assert after <= before + MiB, (
        f"{(after - before) / MiB:.2f} MiB still allocated after unload_all_models (before {before}, after {after}, "
        f"peak {peak})\n{torch.cuda.memory_summary(abbreviated=True)}"
    )
