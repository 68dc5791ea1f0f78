"""Spatial conditioning per tile and per crop (issue 17): each region gets its own part, as ComfyUI would have applied
it to the whole canvas; every batch item its own; nothing squeezed; unknown keys refused by name."""
from __future__ import annotations

import pytest
import torch

import comfy.controlnet
import comfy.utils
from fixtures.control_models import tiny_controlnet, tiny_t2i_adapter
from fixtures.tiny_models import tiny_model
from pipeline_helpers import encode_prompt, models, sampler_spy, scaffold_for, smooth_canvas
from luna_semantic_detailer.luna_types import Detection, DetectionData
from luna_semantic_detailer.nodes.detailer import LunaSAM3Detailer
from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner
from luna_semantic_detailer.pipeline.conditioning import Place, for_region, signature, stack
from luna_semantic_detailer.pipeline.tiles import canvas_tiles

SETTINGS = dict(steps=2, cfg=3.0, sampler_name="euler", scheduler="normal", denoise=0.5, vision_strength=0.0)
CANVAS = (32, 48)  # canvas latent (h, w): 256 x 384 px


def text(**options) -> list:
    cond = encode_prompt("a photo")
    return [[cond[0][0], {**cond[0][1], **options}]]


def place(x, y, w, h, sample=None) -> Place:
    return Place(0, (x, y, w, h), sample or (h, w), CANVAS)


# --- the cut, entry by entry ------------------------------------------------------------------------------------


@pytest.mark.parametrize("area,box,expected", [
    ((16, 16, 8, 8), (0, 0, 24, 24), (16, 16, 8, 8)),       # inside the region: moved into its cells
    ((16, 16, 8, 8), (16, 16, 16, 16), (8, 8, 0, 0)),       # overlapping its corner
    ((16, 16, 8, 8), (30, 0, 16, 16), None),                 # missing it: the entry is dropped
    ((64, 64, 0, 0), (8, 8, 16, 16), "whole"),               # covering it: no restriction left
    (("percentage", 0.5, 0.5, 0.0, 0.5), (24, 0, 24, 32), (16, 24, 0, 0)),
])
def test_areas_are_intersected_with_the_region_in_its_own_cells(area, box, expected):
    out = for_region(text(area=area, strength=0.7), place(*box), "positive")
    if expected is None:
        assert out == []
    elif expected == "whole":
        assert "area" not in out[0][1] and out[0][1]["strength"] == 0.7
    else:
        assert out[0][1]["area"] == expected


def test_an_area_of_a_resampled_region_is_scaled_with_it():
    (entry,) = for_region(text(area=(16, 16, 8, 8)), Place(0, (0, 0, 32, 32), (16, 16), (64, 64)), "positive")
    assert entry[1]["area"] == (8, 8, 4, 4)


def test_masks_are_cut_from_the_canvas_sized_mask_and_bounds_are_the_regions_own():
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, 256, 384)
    mask[0, 40:120, 200:300] = torch.rand(80, 100, generator=g)
    canvas_mask = comfy.utils.common_upscale(mask[:, None], 48, 32, "bilinear", "none")[:, 0]
    (entry,) = for_region(text(mask=mask, set_area_to_bounds=True, mask_strength=0.5), place(16, 0, 16, 16), "positive")
    torch.testing.assert_close(entry[1]["mask"], canvas_mask[:, 0:16, 16:32], rtol=0, atol=1e-6)
    part = canvas_mask[0, 0:16, 16:32] != 0
    rows, cols = part.any(1).nonzero(), part.any(0).nonzero()
    assert entry[1]["area"] == (max(8, int(rows[-1] - rows[0]) + 1), max(8, int(cols[-1] - cols[0]) + 1), int(rows[0]), int(cols[0]))
    assert "set_area_to_bounds" not in entry[1] and entry[1]["mask_strength"] == 0.5
    assert for_region(text(mask=mask), place(0, 20, 8, 8), "positive") == []


def test_inpaint_latents_and_masks_are_cut_per_region():
    g = torch.Generator().manual_seed(1)
    latent = torch.randn(1, 4, 32, 48, generator=g)
    mask = (torch.rand(1, 1, 256, 384, generator=g) > 0.5).float()
    (entry,) = for_region(text(concat_latent_image=latent, concat_mask=mask), place(8, 8, 16, 24), "positive")
    assert torch.equal(entry[1]["concat_latent_image"], latent[..., 8:32, 8:24])
    expected = comfy.utils.common_upscale(mask, 48, 32, "bilinear", "center")[..., 8:32, 8:24]
    torch.testing.assert_close(entry[1]["concat_mask"], expected, rtol=0, atol=1e-6)


def test_reference_latents_of_the_canvas_are_cut_and_other_ones_refused():
    reference = torch.randn(1, 4, 64, 96, generator=torch.Generator().manual_seed(2))
    (entry,) = for_region(text(reference_latents=[reference]), place(0, 16, 16, 16), "positive")
    expected = comfy.utils.common_upscale(reference, 48, 32, "bilinear", "center")[..., 16:32, 0:16]
    torch.testing.assert_close(entry[1]["reference_latents"][0], expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="reference latent of 64x64 cells, another aspect"):
        for_region(text(reference_latents=[torch.zeros(1, 4, 64, 64)]), place(0, 0, 8, 8), "positive")


@pytest.mark.parametrize("key", ["gligen", "vace_frames", "my_custom_key"])
def test_a_key_the_pack_cannot_cut_is_refused_by_name(key):
    with pytest.raises(ValueError, match=f"positive conditioning carries '{key}'.*refuses rather than squeeze"):
        for_region(text(**{key: ("position", None, [])}), place(0, 0, 8, 8), "positive")


def test_stack_keeps_shared_tensors_and_stacks_per_region_ones_in_order():
    latent = torch.randn(1, 4, 32, 48, generator=torch.Generator().manual_seed(3))
    cond = text(concat_latent_image=latent)
    parts = [for_region(cond, place(x, 0, 16, 16), "positive") for x in (0, 16, 32)]
    assert len({signature(p) for p in parts}) == 1
    (entry,) = stack(parts)
    assert entry[0] is cond[0][0] and entry[1]["pooled_output"] is cond[0][1]["pooled_output"]
    assert torch.equal(entry[1]["concat_latent_image"], torch.cat([latent[..., 0:16, x:x + 16] for x in (0, 16, 32)]))
    other = for_region(text(area=(8, 8, 0, 0)), place(0, 0, 16, 16), "positive")
    assert signature(other) != signature(parts[0])
    with pytest.raises(ValueError, match="differ in structure"):
        stack([parts[0], other])


# --- ControlNets and T2I-Adapters through the nodes -------------------------------------------------------------


@pytest.fixture
def hint_spy(monkeypatch):
    """The hint every ControlNet/T2I-Adapter call used: (batch rows of cond_hint, x_noisy batch) per call."""
    seen = []
    for cls in (comfy.controlnet.ControlNet, comfy.controlnet.T2IAdapter):
        real = cls.get_control

        def spy(self, x_noisy, t, cond, batched_number, transformer_options, _real=real):
            out = _real(self, x_noisy, t, cond, batched_number, transformer_options)
            if self.cond_hint is None:  # outside its start/end percent
                return out
            seen.append({"hint": self.cond_hint.detach().float().cpu().clone(), "batch": x_noisy.shape[0],
                         "chunks": batched_number, "strength": self.strength, "range": self.timestep_percent_range})
            return out

        monkeypatch.setattr(cls, "get_control", spy)
    return seen


def controlled(control, hint, strength=0.8, percent=(0.0, 1.0), previous=None):
    """(positive, negative) with the control on both, as ControlNetApplyAdvanced applies it."""
    c = control.copy().set_cond_hint(hint, strength, percent)
    if previous is not None:
        c.set_previous_controlnet(previous)
    negative = encode_prompt("")
    return text(control=c), [[negative[0][0], {**negative[0][1], "control": c}]]


def refine(image, prompts, *, max_batch, model=None, tile=128, overlap=32, fit="fit", **extra):
    default, vae = models()
    h, w = image.shape[1:3]
    positive, negative = prompts if isinstance(prompts, tuple) else (prompts, encode_prompt(""))
    return LunaGlobalRefiner().refine(image, scaffold_for(w, h), model or default, positive, negative, vae,
                                      tile, overlap, max_batch=max_batch, tile_fit=fit, tiling="parallel",
                                      **{**SETTINGS, **extra})[0]


def canvas_hint(hint, height, width, algorithm="nearest-exact"):
    return comfy.utils.common_upscale(hint, width, height, algorithm, "center")


def test_each_tile_gets_its_own_controlnet_hint_crop_and_batching_changes_nothing(hint_spy):
    image = smooth_canvas(1, 256, 384, seed=1)
    hint = torch.rand(1, 3, 300, 420, generator=torch.Generator().manual_seed(4))
    positive = controlled(tiny_controlnet(0), hint)
    batched = refine(image, positive, max_batch=4)
    tiles = canvas_tiles(384, 256, 128, 32, 8, "fit")
    full = canvas_hint(hint, 256, 384)
    crops = torch.cat([full[..., t.y:t.y + t.height, t.x:t.x + t.width] for t in tiles])
    call = hint_spy[0]
    n = call["batch"] // call["chunks"]
    assert n > 1 and call["chunks"] == 2 and torch.equal(call["hint"][:n], crops[:n])
    assert {c["strength"] for c in hint_spy} == {0.8}
    hint_spy.clear()
    one = refine(image, positive, max_batch=1)
    assert [c["batch"] // c["chunks"] for c in hint_spy] == [1] * len(hint_spy)
    firsts = torch.cat([c["hint"][:1] for c in hint_spy[::SETTINGS["steps"]]])
    assert torch.equal(firsts, crops)
    torch.testing.assert_close(one, batched, atol=2e-4, rtol=0)
    plain = refine(image, text(), max_batch=4)
    assert (batched - plain).abs().mean() > 1e-3, "the ControlNet had no effect: the test would prove nothing"


def test_chained_controlnets_keep_their_strengths_ranges_and_own_crops(hint_spy):
    image = smooth_canvas(1, 256, 384, seed=2)
    g = torch.Generator().manual_seed(5)
    first, second = torch.rand(1, 3, 256, 384, generator=g), torch.rand(1, 3, 128, 192, generator=g)
    lower = tiny_controlnet(1).copy().set_cond_hint(first, 0.6, (0.1, 0.9))
    refine(image, controlled(tiny_controlnet(0), second, strength=0.9, previous=lower), max_batch=8)
    tiles = canvas_tiles(384, 256, 128, 32, 8, "fit")
    first_call = {}
    for call in hint_spy:
        first_call.setdefault(call["strength"], call)
    assert set(first_call) == {0.6, 0.9} and first_call[0.6]["range"] == (0.1, 0.9)
    for strength, source in ((0.6, first), (0.9, second)):
        full = canvas_hint(source, 256, 384)
        crops = torch.cat([full[..., t.y:t.y + t.height, t.x:t.x + t.width] for t in tiles])
        call = first_call[strength]
        n = call["batch"] // call["chunks"]
        assert n > 1 and torch.equal(call["hint"][:n], crops[:n]) and torch.equal(call["hint"][n:], crops[:n])


def test_a_t2i_adapter_gets_each_tile_its_own_crop_and_batching_changes_nothing(hint_spy):
    image = smooth_canvas(1, 256, 384, seed=3)
    hint = torch.rand(1, 3, 256, 384, generator=torch.Generator().manual_seed(6))
    positive = controlled(tiny_t2i_adapter(0), hint)
    model = tiny_model(0, 4, 2)
    batched = refine(image, positive, max_batch=4, tile=128, overlap=0, fit="exact", model=model)
    tiles = canvas_tiles(384, 256, 128, 0, 8, "exact")
    full = canvas_hint(hint, 256, 384)
    crops = torch.cat([full[..., t.y:t.y + t.height, t.x:t.x + t.width] for t in tiles])
    n = hint_spy[0]["batch"] // hint_spy[0]["chunks"]
    assert torch.equal(hint_spy[0]["hint"][:n], crops[:n])
    one = refine(image, positive, max_batch=1, tile=128, overlap=0, fit="exact", model=model)
    torch.testing.assert_close(one, batched, atol=2e-4, rtol=0)


def test_with_a_controlnet_cond_and_uncond_still_share_one_unet_call_per_step(monkeypatch):
    calls = []
    model = tiny_model().clone()
    model.set_model_unet_function_wrapper(lambda apply, args: calls.append(args["input"].shape[0]) or apply(args["input"], args["timestep"], **args["c"]))
    image = smooth_canvas(1, 256, 256, seed=4)
    positive = controlled(tiny_controlnet(0), torch.rand(1, 3, 256, 256))
    refine(image, positive, max_batch=4, model=model, tile=256, overlap=0)
    assert calls == [2] * SETTINGS["steps"]


def test_detailer_crops_get_their_hint_crop_even_when_resampled(hint_spy):
    image = smooth_canvas(1, 768, 768, seed=5)
    hint = torch.rand(1, 3, 768, 768, generator=torch.Generator().manual_seed(7))
    box = (0.2, 0.2, 0.7, 0.7)
    data = DetectionData((Detection(box, None, 1.0, "face"),), (768, 768))
    model, vae = models()
    positive, negative = controlled(tiny_controlnet(0), hint)
    LunaSAM3Detailer().detail(image, scaffold_for(768, 768), data, model, positive, negative, vae, crop_size="512", context_padding=1.6, mask_dilation=4,
                              mask_feather=8, max_batch=2, labels="", **SETTINGS)
    from luna_semantic_detailer.kernels.planning import plan_crop

    crop = plan_crop(box, 768, 768, 1.6, (512,), 8)
    assert crop.size > crop.sample_size == 512
    part = hint[..., crop.y:crop.y + crop.size, crop.x:crop.x + crop.size]
    expected = comfy.utils.common_upscale(part, 512, 512, "nearest-exact", "disabled")
    assert torch.equal(hint_spy[0]["hint"][:1], expected)


def test_masked_prompts_reach_exactly_the_tiles_they_cover():
    image = smooth_canvas(1, 256, 384, seed=6)
    mask = torch.zeros(1, 256, 384)
    mask[:, :, :96] = 1.0
    positive = text() + [[encode_prompt("a red wall")[0][0], {"mask": mask, "strength": 1.0}]]
    with sampler_spy() as calls:
        refine(image, positive, max_batch=4)
    tiles = canvas_tiles(384, 256, 128, 32, 8, "fit")
    reached = sum(1 for t in tiles if t.x < 96)
    assert 0 < reached < len(tiles)
    assert sum(call["noise"].shape[0] for call in calls if len(call["positive"]) == 2) == reached
    assert sum(call["noise"].shape[0] for call in calls if len(call["positive"]) == 1) == len(tiles) - reached
    for call in calls:
        if len(call["positive"]) == 2:
            assert call["positive"][1][1]["mask"].shape[0] == call["noise"].shape[0]


def test_an_area_prompt_from_conditioning_set_area_reaches_exactly_the_tiles_it_covers():
    import nodes

    image = smooth_canvas(1, 256, 384, seed=8)
    (area,) = nodes.ConditioningSetArea().append(encode_prompt("a red wall"), 128, 256, 0, 0, 1.0)
    positive = nodes.ConditioningCombine().combine(text(), area)[0]
    with sampler_spy() as calls:
        refine(image, positive, max_batch=8)
    tiles = canvas_tiles(384, 256, 128, 32, 8, "fit")
    seen = []
    for call in calls:
        for entry in call["positive"][1:]:
            seen.extend([entry[1].get("area")] * call["noise"].shape[0])
    expected = []
    for t in tiles:
        if t.x >= 128:
            continue
        x0, x1 = t.x // 8, min(t.x + t.width, 128) // 8
        whole = x0 == t.x // 8 and x1 == (t.x + t.width) // 8
        expected.append(None if whole else (t.height // 8, x1 - x0, 0, 0))
    assert sorted(map(str, seen)) == sorted(map(str, expected))
    assert sum(call["noise"].shape[0] for call in calls) == len(tiles)
