"""Every sampler through both nodes with the model on a GPU and the canvas on the intermediate device (issue 28).

No GPU here, so `fixtures.second_device` simulates one (its docstring says how): ComfyUI's sampler runs on "cuda:0",
the canvas, scaffold and masks stay on the CPU as ComfyUI keeps them, and any op that mixes the two raises as CUDA
would. The models are the exact-score denoiser and the block VAE (tests/fixtures/fidelity.py): cheap, and with real
values, so the run under the simulated GPU must also give the same image as the plain CPU run. A tiny Flux.1 with
weights in bf16 and fp16 runs a few samplers the same way (dtype mixing between its input and the pack's tensors).
On a real GPU these runs are scripts/device-check.sh's (benchmarks/samplers.py), so the simulation skips there.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fixtures.fidelity import block_vae, exact_model
from fixtures.lsd_test_models.families import tiny_family_conditioning, tiny_family_model
from fixtures.second_device import second_device
from pipeline_helpers import scaffold_for, smooth_canvas
from sampler_table import readme_rows, row
from luna_semantic_detailer.kernels.noise import make_scaffold
from luna_semantic_detailer.kernels.planning import plan_crop
from luna_semantic_detailer.luna_types import Detection, DetectionData, NoiseScaffold
from luna_semantic_detailer.nodes.common import sampler_inputs
from luna_semantic_detailer.nodes.detailer import LunaSAM3Detailer
from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="simulates a GPU; on a GPU run benchmarks/samplers.py")
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
    """A 1:1 crop and a resampled one (its square over crop_size: its own noise, downscaled) on a 704 x 576 canvas."""
    width, height = 704, 576
    image = smooth_canvas(1, height, width, seed=4)
    boxes = [(0.05, 0.1, 0.3, 0.4), (0.35, 0.05, 0.95, 0.95)]
    assert [plan_crop(b, width, height, 1.2, (512,)).size > 512 for b in boxes] == [False, True]
    data = DetectionData(tuple(Detection(box, None, 0.9, "thing") for box in boxes), (width, height))
    return LunaSAM3Detailer().detail(image, scaffold_for(width, height), data, exact_model("local"), EMPTY, EMPTY,
                                     block_vae(), sampler_name=sampler_name, denoise=0.5, crop_size="512",
                                     context_padding=1.2, mask_dilation=0, mask_feather=8, max_batch=4, labels="",
                                     **SETTINGS)[0]


RUNS = {"refiner parallel": lambda s: refiner(s, "parallel"), "refiner fused": lambda s: refiner(s, "fused"),
        "refiner chess": lambda s: refiner(s, "chess"), "detailer": detailer}


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


HALF_SAMPLERS = ["euler_ancestral", "dpmpp_2m_sde", "euler_cfg_pp", "uni_pc", "ddpm", "res_multistep"]


def flux_runs(dtype: torch.dtype) -> dict:
    """The three runs with a tiny Flux.1 (2 x 2 patches, flow, guidance) whose weights are in `dtype`."""
    model = tiny_family_model("flux", dtype=dtype)
    vae = block_vae("nearest", 16, 8)
    positive, negative = tiny_family_conditioning("flux")
    image = smooth_canvas(1, HEIGHT, WIDTH, seed=2)
    scaffold = NoiseScaffold(make_scaffold(WIDTH, HEIGHT, 1, 16), WIDTH, HEIGHT, 8, 1)
    flux = dict(SETTINGS, cfg=1.0, scheduler="simple")
    data = DetectionData((Detection((0.1, 0.1, 0.4, 0.5), None, 0.9, "thing"),), (WIDTH, HEIGHT))

    def refiner(sampler_name, tiling):
        return LunaGlobalRefiner().refine(image, scaffold, model, positive, negative, vae, 128, 32,
                                          sampler_name=sampler_name, denoise=0.5, max_batch=4, tiling=tiling, **flux)[0]

    def detailer(sampler_name):
        return LunaSAM3Detailer().detail(image, scaffold, data, model, positive, negative, vae, sampler_name=sampler_name,
                                         denoise=0.5, crop_size="512", context_padding=1.2, mask_dilation=0,
                                         mask_feather=8, max_batch=4, labels="", **flux)[0]

    return {"refiner parallel": lambda s: refiner(s, "parallel"), "refiner fused": lambda s: refiner(s, "fused"),
            "detailer": detailer}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("sampler_name", HALF_SAMPLERS)
def test_a_half_precision_flux_model_on_the_gpu(sampler_name, dtype):
    """Weights in bf16 / fp16 (ComfyUI computes in them or casts, as it decides for the device), on the simulated GPU."""
    for name, run in flux_runs(dtype).items():
        with second_device():
            out = run(sampler_name)
        assert out.dtype == torch.float32 and type(out) is torch.Tensor and torch.isfinite(out).all(), name
        torch.testing.assert_close(out, run(sampler_name), atol=1e-5, rtol=0, msg=name)


def test_the_readme_has_the_row_of_every_sampler_of_this_host():
    rows = readme_rows((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8"))
    assert {name: rows.get(name) for name in SAMPLERS} == {name: row(name) for name in SAMPLERS}, \
        "run scripts/build_sampler_table.py on the 0.33 host"
