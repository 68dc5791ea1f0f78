"""A prompt per detection label (issue 20): each crop its label's CLIPTextEncode conditioning, per batch item."""
from __future__ import annotations

import pytest
import torch

from fixtures.tiny_models import tiny_clip, tiny_model
from pipeline_helpers import encode_prompt, models, scaffold_for, smooth_canvas
from luna_semantic_detailer.kernels.planning import plan_crop
from luna_semantic_detailer.luna_types import Detection, DetectionData
from luna_semantic_detailer.nodes.detailer import LunaSAM3Detailer
from luna_semantic_detailer.pipeline.prompts import parse_label_prompts

SETTINGS = dict(steps=2, cfg=3.0, sampler_name="euler", scheduler="normal", denoise=0.5, crop_size="512",
                context_padding=1.5, mask_dilation=4, mask_feather=8, vision_strength=0.0)
BOXES = {"face": (0.05, 0.05, 0.15, 0.15), "hand": (0.8, 0.05, 0.9, 0.15), "cat": (0.05, 0.8, 0.15, 0.9),
         "face2": (0.8, 0.8, 0.9, 0.9)}
LINES = "face: detailed face, sharp eyes\nhand: a hand with five fingers\n# a comment\n*: a photo of a thing"


def clip_text(text: str) -> torch.Tensor:
    """What the stock CLIPTextEncode node gives for `text` on the same CLIP."""
    import nodes

    return nodes.CLIPTextEncode().encode(tiny_clip(), text)[0][0][0]


def detections() -> DetectionData:
    labels = {"face": "face", "hand": "Hand", "cat": "cat", "face2": "face"}
    return DetectionData(tuple(Detection(box, None, 1.0, labels[k]) for k, box in BOXES.items()), (1024, 1024))


def spied_detail(max_batch, text=LINES, mode="append", clip=True):
    calls = []
    model = tiny_model().clone()

    def record(apply, args):
        calls.append({"parts": list(args["cond_or_uncond"]), "context": args["c"]["c_crossattn"].detach().clone()})
        return apply(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(record)
    image = smooth_canvas(1, 1024, 1024, seed=2)
    out, _, _ = LunaSAM3Detailer().detail(image, scaffold_for(1024, 1024), detections(), model, encode_prompt("a photo"),
                                       encode_prompt(""), models()[1], max_batch=max_batch, labels="",
                                       clip=tiny_clip() if clip else None, label_prompts=text, label_prompt_mode=mode,
                                       **SETTINGS)
    return out, calls


def crop_order() -> list[str]:
    """The detections' keys in the detailer's canonical order (sorted by box)."""
    return sorted(BOXES, key=lambda k: BOXES[k])


def test_each_crop_gets_its_labels_prompt_others_the_star_line_in_one_unet_call_per_step():
    out, calls = spied_detail(max_batch=4)
    assert [sorted(c["parts"]) for c in calls] == [[0, 1]] * SETTINGS["steps"], "cond and uncond in one call"
    first = calls[0]
    n = len(BOXES)
    cond = first["context"][:n] if first["parts"][0] == 0 else first["context"][n:]
    base = encode_prompt("a photo")[0][0]
    lines = {"face": "detailed face, sharp eyes", "face2": "detailed face, sharp eyes", "hand": "a hand with five fingers",
             "cat": "a photo of a thing"}
    for row, key in zip(cond, crop_order()):
        expected = torch.cat([base, clip_text(lines[key])], dim=1)[0]
        torch.testing.assert_close(row, expected, rtol=0, atol=1e-6)


def test_mixed_labels_in_one_batch_give_the_same_image_as_one_crop_per_call():
    batched, _ = spied_detail(max_batch=4)
    one, calls = spied_detail(max_batch=1)
    assert len(calls) == len(BOXES) * SETTINGS["steps"]
    torch.testing.assert_close(one, batched, atol=5e-4, rtol=0)


def test_replace_mode_and_labels_without_a_line_keep_the_positive():
    _, calls = spied_detail(max_batch=4, text="face: detailed face", mode="replace")
    first = calls[0]
    n = len(BOXES)
    cond = first["context"][:n] if first["parts"][0] == 0 else first["context"][n:]
    for row, key in zip(cond, crop_order()):
        expected = clip_text("detailed face") if key.startswith("face") else encode_prompt("a photo")[0][0]
        torch.testing.assert_close(row, expected[0], rtol=0, atol=1e-6)


def test_label_prompts_need_a_clip_and_well_formed_lines():
    with pytest.raises(ValueError, match="connect the checkpoint's CLIP"):
        spied_detail(max_batch=4, clip=False)
    with pytest.raises(ValueError, match="line 2 .*is not `label: prompt`"):
        parse_label_prompts("face: ok\njust words")
    with pytest.raises(ValueError, match="second prompt"):
        parse_label_prompts("face: a\nFace: b")
    assert parse_label_prompts("  Face : a: b  \n\n# x\n*: rest") == {"face": "a: b", "*": "rest"}
