"""The family x node table (tests/family_matrix.py): each DiT family of tests/fixtures/lsd_test_models/families.py through every Luna
node, in-process on the real host, with the invariants the table states or the exact refusal."""
from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
import torch

from family_matrix import COLUMNS, ROWS, WORKS, outcome, readme_section, render
from fixtures.lsd_test_models.families import FAMILIES, FAMILY_INFO, family_latent_shape, tiny_family_conditioning, tiny_family_model, tiny_family_vae
from fixtures.lsd_test_models.builders import tiny_clip_vision, tiny_style_model
from pipeline_helpers import smooth_canvas
from luna_semantic_detailer.kernels.planning import plan_crop
from luna_semantic_detailer.luna_types import Detection, DetectionData
from luna_semantic_detailer.pipeline.latent_formats import LATENT_FORMATS
from luna_semantic_detailer.nodes.detailer import LunaSAM3Detailer
from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner
from luna_semantic_detailer.nodes.scaffold import LunaNoiseScaffold, LunaScaffoldNoise
from luna_semantic_detailer.pipeline.scaffold_noise import scaffold_at
from luna_semantic_detailer.pipeline.tiles import canvas_tiles

ROOT = Path(__file__).resolve().parents[1]
STEPS = 2
SAMPLER = dict(steps=STEPS, sampler_name="euler", scheduler="simple")
# float32 batched matmuls sum in another order than single ones; random weights amplify that to ~5e-4.
BATCH_ATOL = 1e-3
# The fused canvas passes each latent format's process_in/out once more than a plain round trip.
FUSED_ROUND_TRIP_ATOL = 5e-4
FORMAT_NAMES = {"flux": "Flux.1", "flux-schnell": "Flux.1", "flux2": "Flux.2", "z-image": "Z-Image", "qwen-image": "Qwen-Image",
                "sd3": "SD3.5", "chroma": "Chroma"}


# ------------------------------------------------------------------------------------------------------------ helpers

def run_node(cls, **inputs) -> tuple:
    """A ComfyUI node called as the executor calls it: a classic node's FUNCTION, or a v3 io.ComfyNode's execute."""
    if hasattr(cls, "FUNCTION"):
        return getattr(cls(), cls.FUNCTION)(**inputs)
    return cls.execute(**inputs).result


def recording(model):
    """A clone of `model` and the list it fills with (input x, sigma, cond_or_uncond) of every model call."""
    calls: list[tuple[torch.Tensor, float, list]] = []
    clone = model.clone()

    def wrapper(apply_model, args):
        calls.append((args["input"].clone(), float(args["timestep"][0]), list(args["cond_or_uncond"])))
        return apply_model(args["input"], args["timestep"], **args["c"])

    clone.set_model_unet_function_wrapper(wrapper)
    return clone, calls


@contextlib.contextmanager
def sampler_calls(model_calls: list):
    """Each comfy.sample.sample_custom call: its start noise, latent, positive, and the first model call it made."""
    import comfy.sample

    calls: list[dict] = []
    real = comfy.sample.sample_custom

    def spy(model, noise, cfg, sampler, sigmas, positive, negative, latent_image, **kwargs):
        first = len(model_calls)
        out = real(model, noise, cfg, sampler, sigmas, positive, negative, latent_image, **kwargs)
        calls.append({"noise": noise.clone(), "latent": latent_image.clone(), "positive": positive,
                      "first": model_calls[first] if first < len(model_calls) else None, "sigma": float(sigmas[0])})
        return out

    comfy.sample.sample_custom = spy
    try:
        yield calls
    finally:
        comfy.sample.sample_custom = real


def flow_start(model, noise: torch.Tensor, latent: torch.Tensor, sigma: float) -> torch.Tensor:
    """The first sampling input of a flow-matching model: σ·noise + (1 − σ)·z, z the latent in the model's space
    (ComfyUI leaves an all-zero latent, an empty one, as it is)."""
    z = model.model.process_latent_in(latent) if torch.count_nonzero(latent) else latent
    return sigma * noise + (1 - sigma) * z


def assert_model_input(x: torch.Tensor, expected: torch.Tensor) -> None:
    """Every cond/uncond chunk of one model call's input [n*B, ...] is `expected` [B, ...]."""
    chunks = x.reshape(-1, *expected.shape)
    for chunk in chunks:
        torch.testing.assert_close(chunk, expected.to(chunk), atol=1e-5, rtol=1e-5)


def image_latent(t: torch.Tensor) -> torch.Tensor:
    return t[:, :, 0] if t.ndim == 5 else t


def assert_starts_are_slices(calls: list[dict], scaffold, boxes: list[tuple[int, int, int, int]]) -> None:
    """Each sampled region's start noise is the exact scaffold slice of one planned pixel box (x, y, w, h), all used."""
    f = scaffold.factor
    expected = [scaffold.noise[0, :, y // f:(y + h) // f, x // f:(x + w) // f] for x, y, w, h in boxes]
    seen = [n for call in calls for n in image_latent(call["noise"])]
    assert len(seen) == len(expected)
    unmatched = list(range(len(expected)))
    for n in seen:
        match = next((i for i in unmatched if expected[i].shape == n.shape and torch.equal(expected[i], n)), None)
        assert match is not None, "a region's start noise is not its scaffold slice"
        unmatched.remove(match)


def assert_flow_starts(model, calls: list[dict]) -> None:
    """At the first model call of every sampler call the input is σ·(its start noise) + (1 − σ)·z."""
    import comfy.model_sampling

    assert isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.CONST)
    for call in calls:
        x, sigma, _ = call["first"]
        assert sigma == pytest.approx(call["sigma"], rel=1e-6)
        assert_model_input(x, flow_start(model, call["noise"], call["latent"], sigma))


def round_trip(vae, image: torch.Tensor) -> torch.Tensor:
    """VAEEncode then VAEDecode of a contiguous image (a channels-last view convolves to other roundings)."""
    latent = vae.encode(image.contiguous())
    return vae.decode(latent).reshape(image.shape)


def family(name: str):
    info = FAMILY_INFO[name]
    model, vae = tiny_family_model(name), tiny_family_vae(name)
    positive, negative = tiny_family_conditioning(name)
    return info, model, vae, positive, negative


def scaffold_of(vae, width: int, height: int, seed: int = 11):
    return LunaNoiseScaffold().build(width, height, seed, next(iter(LATENT_FORMATS)), vae=vae)[0]


def refine(name: str, image, scaffold, model=None, *, tile=128, overlap=32, denoise=0.5, max_batch=4, tiling="parallel", **extra):
    info, base, vae, positive, negative = family(name)
    return LunaGlobalRefiner().refine(image, scaffold, model or base, positive, negative, vae, tile, overlap, cfg=info.cfg,
                                      denoise=denoise, vision_strength=extra.pop("vision_strength", 0.0),
                                      max_batch=max_batch, tiling=tiling, **SAMPLER, **extra)[0]


def detail(name: str, image, scaffold, data, model=None, *, denoise=0.5, max_batch=2, dilation=8, feather=16, context=1.5):
    info, base, vae, positive, negative = family(name)
    return LunaSAM3Detailer().detail(image, scaffold, data, model or base, positive, negative, vae, cfg=info.cfg,
                                     denoise=denoise, crop_size="512", context_padding=context, mask_dilation=dilation,
                                     mask_feather=feather, vision_strength=0.0, max_batch=max_batch, labels="",
                                     **SAMPLER)[0]


def box_detection(x0, y0, x1, y1, size=96) -> Detection:
    mask = torch.zeros(size, size)
    mask[round(y0 * size):round(y1 * size), round(x0 * size):round(x1 * size)] = 1
    return Detection((x0, y0, x1, y1), mask, 0.9, "object")


# ---------------------------------------------------------------------------------------------------------- the cells

def cell_scaffold(name: str) -> None:
    from luna_semantic_detailer.pipeline.latent_formats import model_latent_spec, vae_latent_spec

    info, model, vae, _, _ = family(name)
    scaffold = scaffold_of(vae, 256, 192)
    assert (scaffold.channels, scaffold.factor) == (info.latent_channels, info.factor)
    assert tuple(scaffold.noise.shape) == (1, info.latent_channels, 192 // info.factor, 256 // info.factor)
    assert model_latent_spec(model) == vae_latent_spec(vae)
    named = [k for k in LATENT_FORMATS if FORMAT_NAMES[name] in k]
    assert named and all((LATENT_FORMATS[k].channels, LATENT_FORMATS[k].factor) == (info.latent_channels, info.factor)
                         for k in named)


def cell_draft(name: str) -> None:
    from comfy_extras.nodes_custom_sampler import BasicScheduler, CFGGuider, KSamplerSelect, SamplerCustomAdvanced

    info, base, vae, positive, negative = family(name)
    model, calls = recording(base)
    scaffold = scaffold_of(vae, 512, 512)
    if name == "flux2":
        from comfy_extras.nodes_flux import EmptyFlux2LatentImage as Empty
    else:
        from comfy_extras.nodes_sd3 import EmptySD3LatentImage as Empty
    latent = run_node(Empty, width=256, height=256, batch_size=2)[0]
    (noise,) = run_node(LunaScaffoldNoise, master_scaffold=scaffold)
    (guider,) = run_node(CFGGuider, model=model, positive=positive, negative=negative, cfg=info.cfg)
    (sampler,) = run_node(KSamplerSelect, sampler_name="euler")
    (sigmas,) = run_node(BasicScheduler, model=model, scheduler="simple", steps=STEPS, denoise=1.0)
    out = run_node(SamplerCustomAdvanced, noise=noise, guider=guider, sampler=sampler, sigmas=sigmas, latent_image=latent)[0]

    samples = out["samples"]
    assert tuple(samples.shape) == family_latent_shape(name, 256, 256, batch=2)
    assert torch.isfinite(samples).all()
    x, sigma, _ = calls[0]
    assert sigma == pytest.approx(float(sigmas[0]), rel=1e-6)
    draft_noise = scaffold_at(scaffold, 256 // info.factor, 256 // info.factor).expand(2, -1, -1, -1)
    assert abs(float(draft_noise.std()) - 1.0) < 0.1  # variance-preserving downscale
    assert_model_input(image_latent(x), sigma * draft_noise)


def cell_detailer(name: str) -> None:
    info, base, vae, _, _ = family(name)
    model, model_calls = recording(base)
    image = smooth_canvas(1, 768, 768, seed=2)
    scaffold = scaffold_of(vae, 768, 768)
    data = DetectionData((box_detection(0.08, 0.1, 0.3, 0.3), box_detection(0.7, 0.68, 0.9, 0.92)), (96, 96))
    with sampler_calls(model_calls) as calls:
        one = detail(name, image, scaffold, data, model, max_batch=1)
    crops = [plan_crop(d.box, 768, 768, 1.5, (512,), info.factor) for d in data.detections]
    assert_starts_are_slices(calls, scaffold, [(c.x, c.y, c.size, c.size) for c in crops])
    assert_flow_starts(model, calls)
    both = detail(name, image, scaffold, data, max_batch=2)
    torch.testing.assert_close(one, both, atol=BATCH_ATOL, rtol=0)
    assert (one - image).abs().amax() > 1e-2

    whole = smooth_canvas(1, 512, 512, seed=4)
    everything = DetectionData((Detection((0.0, 0.0, 1.0, 1.0), torch.ones(96, 96), 1.0, "all"),), (96, 96))
    kept = detail(name, whole, scaffold_of(vae, 512, 512), everything, denoise=0.0, dilation=0, feather=0,
                  context=1.0)
    torch.testing.assert_close(kept, round_trip(vae, whole), atol=1e-5, rtol=0)


def refiner_case(name: str):
    """(info, vae, recording model, its calls, a 256 x 192 canvas, its scaffold): what the refiner cells sample."""
    info, base, vae, _, _ = family(name)
    model, model_calls = recording(base)
    return info, vae, model, model_calls, smooth_canvas(1, 256, 192, seed=3), scaffold_of(vae, 192, 256)


def cell_refiner(name: str) -> None:
    info, vae, model, model_calls, image, scaffold = refiner_case(name)
    with sampler_calls(model_calls) as calls:
        one = refine(name, image, scaffold, model, max_batch=1)
    tiles = canvas_tiles(192, 256, 128, 32, info.factor, "fit")
    assert len(tiles) > 1
    assert_starts_are_slices(calls, scaffold, [(t.x, t.y, t.width, t.height) for t in tiles])
    assert_flow_starts(model, calls)
    many = refine(name, image, scaffold, max_batch=4)
    torch.testing.assert_close(one, many, atol=BATCH_ATOL, rtol=0)

    square = smooth_canvas(1, 256, 256, seed=5)
    kept = refine(name, square, scaffold_of(vae, 256, 256), tile=256, denoise=0.0)
    torch.testing.assert_close(kept, round_trip(vae, square), atol=1e-5, rtol=0)


def cell_fused(name: str) -> None:
    from luna_semantic_detailer.pipeline.fused import FusedGuider

    info, vae, model, model_calls, image, scaffold = refiner_case(name)
    starts = []
    real = FusedGuider.sample

    def sample(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
        starts.append((noise.clone(), latent_image.clone(), float(sigmas[0]), len(model_calls)))
        return real(self, noise, latent_image, sampler, sigmas, *args, **kwargs)

    FusedGuider.sample = sample
    try:
        one = refine(name, image, scaffold, model, max_batch=1, tiling="fused")
    finally:
        FusedGuider.sample = real
    (noise, latent, sigma, first), = starts
    assert torch.equal(image_latent(noise), scaffold.noise)
    canvas = flow_start(model, noise, latent, sigma)
    f = info.factor
    cuts = {(t.x // f, t.y // f, t.width // f, t.height // f) for t in canvas_tiles(192, 256, 128, 32, f, "fit")}
    seen = set()
    for x, call_sigma, _ in model_calls[first:first + len(cuts)]:
        assert call_sigma == pytest.approx(sigma, rel=1e-6)
        item = x[:1]
        rect = next(r for r in cuts if canvas[..., r[1]:r[1] + r[3], r[0]:r[0] + r[2]].shape == item.shape
                    and torch.allclose(canvas[..., r[1]:r[1] + r[3], r[0]:r[0] + r[2]], item, atol=1e-5))
        seen.add(rect)
    assert seen == cuts
    many = refine(name, image, scaffold, max_batch=4, tiling="fused")
    torch.testing.assert_close(one, many, atol=BATCH_ATOL, rtol=0)

    square = smooth_canvas(1, 256, 256, seed=5)
    kept = refine(name, square, scaffold_of(vae, 256, 256), denoise=0.0, tiling="fused")
    torch.testing.assert_close(kept, round_trip(vae, square), atol=FUSED_ROUND_TRIP_ATOL, rtol=0)


def cell_style(name: str) -> None:
    _, vae, model, model_calls, image, scaffold = refiner_case(name)
    positive = tiny_family_conditioning(name)[0]
    anchored = dict(anchoring="style model", clip_vision=tiny_clip_vision(0), style_model=tiny_style_model(0),
                    vision_strength=0.8)
    with sampler_calls(model_calls) as calls:
        one = refine(name, image, scaffold, model, max_batch=1, **anchored)
    text = positive[0][0].shape[1]
    tokens = []
    for call in calls:
        cond, options = call["positive"][0]
        assert cond.shape[1] > text and torch.equal(cond[:, :text], positive[0][0].expand(cond.shape[0], -1, -1))
        if "attention_mask" in positive[0][1]:
            assert tuple(options["attention_mask"].shape) == tuple(cond.shape[:2])
        tokens.append(cond[:, text:])
    assert not torch.allclose(tokens[0], tokens[1])  # each tile its own
    many = refine(name, image, scaffold, max_batch=4, **anchored)
    torch.testing.assert_close(one, many, atol=BATCH_ATOL, rtol=0)


def cell_revision(name: str) -> None:
    refine(name, smooth_canvas(1, 128, 128), scaffold_of(tiny_family_vae(name), 128, 128), anchoring="revision",
           clip_vision=tiny_clip_vision(0), vision_strength=0.5)


def cell_wrong_scaffold(name: str) -> None:
    other = "flux" if name == "flux2" else "flux2"
    refine(name, smooth_canvas(1, 128, 128), scaffold_of(tiny_family_vae(other), 128, 128))


CELLS = {"scaffold": cell_scaffold, "draft": cell_draft, "detailer": cell_detailer, "refiner": cell_refiner,
         "fused": cell_fused, "style": cell_style, "revision": cell_revision, "wrong_scaffold": cell_wrong_scaffold}


def refusal(column: str, name: str) -> str:
    """The exact message a refused cell raises."""
    model = tiny_family_model(name)
    if column == "revision":
        return (f"ReVision feeds the crop's image embedding through the model's ADM input, which SDXL and SD2.1-unCLIP "
                f"models have; this model is {type(model.model).__name__}: use anchoring 'style model' with a style "
                "model for it, or 'raw tokens (experimental)', or off")
    if column == "wrong_scaffold":
        other = FAMILY_INFO["flux" if name == "flux2" else "flux2"]
        info = FAMILY_INFO[name]
        return (f"The noise scaffold has {other.latent_channels} latent channels at ÷{other.factor}, but the MODEL uses "
                f"{info.latent_channels} channels at ÷{info.factor}: connect the same VAE or MODEL to LunaNoiseScaffold "
                "(or pick its latent_format to match).")
    raise KeyError(column)


# ---------------------------------------------------------------------------------------------------------- the tests

@pytest.mark.parametrize("column", [c.key for c in COLUMNS])
@pytest.mark.parametrize("name", FAMILIES)
def test_family_through_node(name, column):
    if outcome(column) == WORKS:
        CELLS[column](name)
    else:
        with pytest.raises(ValueError, match=f"^{re.escape(refusal(column, name))}$"):
            CELLS[column](name)


def test_the_table_covers_every_family_and_column():
    assert [r.family for r in ROWS] == list(FAMILIES)
    assert set(CELLS) == {c.key for c in COLUMNS}


def test_the_readme_table_is_the_one_the_tests_assert():
    readme = (ROOT / "README.md").read_text()
    assert readme_section(readme) == render(), "the README's family table is stale: run `python scripts/build_family_table.py`"
