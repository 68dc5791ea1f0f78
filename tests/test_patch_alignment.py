"""Every tile and crop a patch model receives is a whole number of its patches (issue 28).

Flux.1, SD3, Qwen-Image, Chroma and Z-Image cut their latent into 2 x 2 patches and pad an odd side circularly, so a
region with an odd number of latent cells would have its last row predicted from a band wrapped in from its first.
Each family's tiny model (tests/fixtures/lsd_test_models/families.py) runs the refiner (fit and exact) and the
detailer on 3840 x 2160 and on an odd 1000 x 744 canvas; the shapes the model receives are recorded and must be
multiples of the patch the model states, and the refiner's must be the sizes GET /luna/plan answers. The VAE is a
block-mean stand-in with the family's channels and factor (the model's input shapes do not depend on it, and the
family VAEs take ~10 s a 4K tile here). On 4K the model call is short-circuited after it is recorded (its input is all
the test reads); on the odd canvas the model runs.
"""
from __future__ import annotations

import pytest
import torch

from fixtures.fidelity import block_vae
from fixtures.lsd_test_models.families import FAMILY_INFO, tiny_family_conditioning, tiny_family_model
from fixtures.tiny_models import tiny_model
from pipeline_helpers import smooth_canvas
from luna_semantic_detailer.kernels.noise import make_scaffold
from luna_semantic_detailer.kernels.planning import plan_crop
from luna_semantic_detailer.luna_types import Detection, DetectionData, NoiseScaffold
from luna_semantic_detailer.nodes.detailer import LunaSAM3Detailer
from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner
from luna_semantic_detailer.pipeline.sampling import model_patch
from luna_semantic_detailer.pipeline.tiles import plan_summary

PATCH = {"flux": 2, "flux2": 1, "sd3": 2, "qwen-image": 2, "chroma": 2, "z-image": 2}
CANVASES = {"3840x2160": (3840, 2160, 1024, 128), "odd 1000x744": (1000, 744, 512, 64)}
BOXES = {"3840x2160": [(0.1, 0.1, 0.2, 0.25), (0.4, 0.2, 0.85, 0.95), (0.05, 0.6, 0.3, 0.9)],
         "odd 1000x744": [(0.1, 0.1, 0.5, 0.9), (0.6, 0.3, 0.7, 0.45)]}
SAMPLING = dict(steps=1, cfg=1.0, sampler_name="euler", scheduler="simple", vision_strength=0.0, max_batch=4)


def recorder(family: str, run: bool):
    """The family's tiny model and the list of (h, w) latent cells of every input it receives; `run` False answers
    zeros instead of running the network."""
    shapes: list[tuple[int, int]] = []
    model = tiny_family_model(family).clone()

    def wrapper(apply_model, args):
        x = args["input"]
        shapes.append(tuple(x.shape[-2:]))
        return apply_model(x, args["timestep"], **args["c"]) if run else torch.zeros_like(x)

    model.set_model_unet_function_wrapper(wrapper)
    return model, shapes


def setting(family: str, canvas: str):
    info = FAMILY_INFO[family]
    width, height, tile, overlap = CANVASES[canvas]
    scaffold = NoiseScaffold(make_scaffold(width, height, 5, info.latent_channels, info.factor), width, height,
                             info.factor, 5)
    return info, scaffold, smooth_canvas(1, height, width), block_vae("nearest", info.latent_channels, info.factor)


@pytest.mark.parametrize("family", list(PATCH))
def test_the_patch_is_read_from_the_model(family):
    assert model_patch(tiny_family_model(family)) == PATCH[family]
    assert model_patch(tiny_model()) == 1


@pytest.mark.parametrize("fit", ["fit", "exact"])
@pytest.mark.parametrize("canvas", list(CANVASES))
@pytest.mark.parametrize("family", list(PATCH))
def test_refiner_tiles_are_whole_patches_and_the_plan_route_names_them(family, canvas, fit):
    info, scaffold, image, vae = setting(family, canvas)
    width, height, tile, overlap = CANVASES[canvas]
    model, shapes = recorder(family, run=canvas.startswith("odd"))
    positive, negative = tiny_family_conditioning(family)
    out = LunaGlobalRefiner().refine(image, scaffold, model, positive, negative, vae, tile, overlap, denoise=0.3,
                                     tile_fit=fit, **SAMPLING)[0]
    assert out.shape == image.shape and torch.isfinite(out).all()
    patch = PATCH[family]
    assert shapes and all(h % patch == 0 and w % patch == 0 for h, w in shapes), sorted(set(shapes))
    plan = plan_summary(width, height, tile, overlap, info.factor, fit, "parallel", patch)
    assert set(shapes) == {(h // info.factor, w // info.factor) for w, h in plan["tile_sizes"]}


@pytest.mark.parametrize("canvas", list(CANVASES))
@pytest.mark.parametrize("family", list(PATCH))
def test_detailer_crops_are_whole_patches(family, canvas):
    info, scaffold, image, vae = setting(family, canvas)
    width, height = CANVASES[canvas][:2]
    model, shapes = recorder(family, run=canvas.startswith("odd"))
    positive, negative = tiny_family_conditioning(family)
    data = DetectionData(tuple(Detection(box, None, 0.9, "thing") for box in BOXES[canvas]), (width, height))
    out = LunaSAM3Detailer().detail(image, scaffold, data, model, positive, negative, vae, denoise=0.3,
                                    crop_size="auto (1024 / 1536)", context_padding=1.5, mask_dilation=0,
                                    mask_feather=16, labels="", **SAMPLING)[0]
    assert out.shape == image.shape and torch.isfinite(out).all()
    patch = PATCH[family]
    assert shapes and all(h % patch == 0 and w % patch == 0 for h, w in shapes), sorted(set(shapes))
    planned = {plan_crop(box, width, height, 1.5, (1024, 1536), info.factor, patch).sample_size // info.factor
               for box in BOXES[canvas]}
    assert set(shapes) == {(side, side) for side in planned}
