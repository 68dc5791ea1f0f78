"""In-process ComfyUI for benchmarks: the local host on sys.path (CPU unless CUDA), this pack as `luna_semantic_detailer`."""
from __future__ import annotations

import functools
import importlib.util
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMFYUI = Path(os.environ.get("LSD_COMFYUI", ROOT / ".comfyui")).resolve()

SDXL_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
    "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "use_temporal_attention": False,
    "use_temporal_resblock": False,
}
SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "use_temporal_attention": False,
    "use_temporal_resblock": False,
}


# This folder leaves sys.path once a script has imported harness: its cuda.py and kernels.py would otherwise stand in
# for the `cuda` (cuda-python) and `kernels` packages that torch and transformers probe for.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def setup() -> None:
    """Import ComfyUI (--cpu when no CUDA), the pack, and the test fixtures' tiny-model builders."""
    import torch

    sys.path[:0] = [str(COMFYUI), str(ROOT / "tests")]
    import comfy.cli_args

    comfy.cli_args.args.cpu = not torch.cuda.is_available()
    spec = importlib.util.spec_from_file_location("luna_semantic_detailer", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["luna_semantic_detailer"] = module
    spec.loader.exec_module(module)


@functools.cache
def unet_forward_tflop(family: str, width: int, height: int, context: int = 77) -> float:
    """TFLOP of one full-size UNet forward ("sd15" or "sdxl") at batch 1 on a width x height image, on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import comfy.ldm.modules.attention as attention
    import comfy.supported_models

    attention.optimized_attention = attention.attention_pytorch
    config_class, unet_config, context_dim, adm = {
        "sd15": (comfy.supported_models.SD15, SD15_UNET, 768, None),
        "sdxl": (comfy.supported_models.SDXL, SDXL_UNET, 2048, 2816)}[family]
    config = config_class(dict(unet_config))
    config.set_inference_dtype(torch.float16, None)
    unet = config.get_model({}, "", device=torch.device("meta")).diffusion_model
    x = torch.zeros(1, 4, height // 8, width // 8, device="meta", dtype=torch.float16)
    c = torch.zeros(1, context, context_dim, device="meta", dtype=torch.float16)
    y = None if adm is None else torch.zeros(1, adm, device="meta", dtype=torch.float16)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(x, torch.ones(1, device="meta"), context=c, y=y)
    return counter.get_total_flops() / 1e12


def measure(fn) -> tuple[float, float]:
    """(wall seconds, peak memory in MiB: CUDA max allocated, else the process's peak RSS) of one call."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return wall, peak


def grid_boxes(count: int) -> list[tuple[float, float, float, float]]:
    """`count` (≤ 16) normalized boxes, each 1/10 of the canvas, centred in the cells of a 4×4 grid.

    Their crops at 1.5× context do not overlap where a crop is at most a quarter of the canvas side (512 px crops of
    2048², 1024 of 4096²).
    """
    if not 1 <= count <= 16:
        raise ValueError(f"count must be 1..16, got {count}")
    centers = [((i % 4 + 0.5) / 4, (i // 4 + 0.5) / 4) for i in range(count)]
    return [(x - 0.05, y - 0.05, x + 0.05, y + 0.05) for x, y in centers]


def count_sampler_calls() -> list:
    """A list that gets one entry per comfy.sample.sample / sample_custom call from now on (wrapped in place)."""
    import comfy.sample

    calls: list = []
    for name in ("sample", "sample_custom"):
        real = getattr(comfy.sample, name)

        def counting(*args, _real=real, **kwargs):
            calls.append(1)
            return _real(*args, **kwargs)

        setattr(comfy.sample, name, counting)
    return calls
