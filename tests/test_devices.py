"""Every sampler through both nodes with the model on a GPU and the canvas on the intermediate device (issue 28).

No GPU here, so `fixtures.second_device` simulates one (its docstring says how): ComfyUI's sampler runs on "cuda:0",
the canvas, scaffold and masks stay on the CPU as ComfyUI keeps them, and any op that mixes the two raises as CUDA
would. The models are the exact-score denoiser and the block VAE (tests/fixtures/fidelity.py): cheap, and with real
values, so the run under the simulated GPU must also give the same image as the plain CPU run.
"""
from __future__ import annotations

import pytest
import torch

from fixtures.fidelity import block_vae, exact_model
from fixtures.second_device import second_device
from pipeline_helpers import scaffold_for, smooth_canvas
from luna_semantic_detailer.luna_types import Detection, DetectionData
from luna_semantic_detailer.nodes.common import sampler_inputs
from luna_semantic_detailer.nodes.detailer import LunaSAM3Detailer
from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner

SAMPLERS = sampler_inputs(0.5)["sampler_name"][0]
EMPTY = [[torch.zeros(1, 1, 64), {}]]
WIDTH, HEIGHT = 192, 160
SETTINGS = dict(steps=2, cfg=2.0, scheduler="normal", vision_strength=0.0)


def refiner(sampler_name: str, tiling: str) -> torch.Tensor:
    image = smooth_canvas(1, HEIGHT, WIDTH, seed=2)
    return LunaGlobalRefiner().refine(image, scaffold_for(WIDTH, HEIGHT), exact_model("local"), EMPTY, EMPTY, block_vae(),
                                      128, 32, sampler_name=sampler_name, denoise=0.5, max_batch=4, tiling=tiling,
                                      **SETTINGS)[0]


def detailer(sampler_name: str) -> torch.Tensor:
    image = smooth_canvas(1, HEIGHT, WIDTH, seed=4)
    boxes = [(0.05, 0.1, 0.35, 0.45), (0.5, 0.4, 0.9, 0.95)]
    data = DetectionData(tuple(Detection(box, None, 0.9, "thing") for box in boxes), (WIDTH, HEIGHT))
    return LunaSAM3Detailer().detail(image, scaffold_for(WIDTH, HEIGHT), data, exact_model("local"), EMPTY, EMPTY,
                                     block_vae(), sampler_name=sampler_name, denoise=0.5, crop_size="512",
                                     context_padding=1.2, mask_dilation=0, mask_feather=8, max_batch=4, labels="",
                                     **SETTINGS)[0]


RUNS = {"refiner parallel": lambda s: refiner(s, "parallel"), "refiner fused": lambda s: refiner(s, "fused"),
        "detailer": detailer}


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("sampler_name", SAMPLERS)
def test_every_sampler_runs_on_the_gpu_with_the_canvas_on_the_cpu(sampler_name, run):
    with second_device() as device:
        on_gpu = RUNS[run](sampler_name)
    assert device.checked > 0, "nothing ran on the simulated GPU"
    assert on_gpu.device.type == "cpu" and type(on_gpu) is torch.Tensor, "the node's output must come back to the CPU"
    on_cpu = RUNS[run](sampler_name)
    assert torch.isfinite(on_gpu).all()
    torch.testing.assert_close(on_gpu, on_cpu, atol=1e-5, rtol=0)
