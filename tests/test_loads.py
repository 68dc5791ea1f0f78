"""One load per node run, and each step counted once (issue 28, item 6).

On a GPU under ~16 GB, sampling a batch loads the diffusion model and may unload the CLIP-vision encoder, so an
encoder call between two batches moves it back in, every batch. Here every call the anchoring makes (CLIP-vision,
the style model) must come before the first sampler call, and a Control-LoRA's network (which ComfyUI builds in each
copy's pre_run) must be built once per run. The runs (tests/load_runs.py) are batched as a 24 GiB GPU allows
(`big_gpu`), with max_batch 2, so there are several sampler calls to sit between.
"""
from __future__ import annotations

import pytest
import torch

from fixtures.control_models import tiny_control_lora
from fixtures.run_events import recorded_events
from load_runs import RUNS, controlled
from pipeline_helpers import encode_prompt, models, scaffold_for, smooth_canvas
from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner


@pytest.fixture
def events():
    """The order of encoder calls, style-model calls, ControlNet network builds and sampler calls."""
    tiny_control_lora()  # its state dict is drawn from a network built on the meta device: not a build of a run
    with recorded_events() as seen:
        yield seen


@pytest.mark.parametrize("run", list(RUNS))
def test_anchoring_and_control_lora_load_once_per_run(run, events, big_gpu):
    image = smooth_canvas(1, 256, 384, seed=3)
    positive, negative = controlled(torch.rand(1, 3, 256, 384, generator=torch.Generator().manual_seed(2)))
    out = RUNS[run](image, positive, negative)
    assert torch.isfinite(out).all()
    first_sample = events.index("sample")
    assert events.count("sample") >= (1 if run.endswith("fused") else 2), events
    assert events.count("encode") == 1 and events.count("style") == 1, events
    assert "encode" not in events[first_sample:] and "style" not in events[first_sample:], events
    assert events.count("build") == 1, events


def test_progress_counts_each_step_once_when_a_batch_is_halved(monkeypatch, big_gpu):
    """An out-of-memory error halves the batch (pipeline.batching.run_halving): the retried regions' steps are counted
    once, so the bar stands at half after the first half of the tiles, and ends full. (The values the pack sets on
    ComfyUI's ProgressBar: 0.28 throttles what it forwards to the server.)"""
    import comfy.model_management as mm
    import comfy.sample
    import comfy.utils

    real = comfy.sample.sample_custom
    state = {"raised": False}
    values: list[tuple[int, int]] = []

    def out_of_memory_once(model, noise, *args, **kwargs):
        if noise.shape[0] > 1 and not state["raised"]:
            state["raised"] = True
            raise mm.OOM_EXCEPTION("simulated: CUDA out of memory")
        out = real(model, noise, *args, **kwargs)
        values.append(("call", noise.shape[0]))
        return out

    real_update = comfy.utils.ProgressBar.update_absolute

    def update(bar, value, total=None, preview=None):
        values.append((min(value, total or bar.total), total or bar.total))
        return real_update(bar, value, total, preview)

    monkeypatch.setattr(comfy.sample, "sample_custom", out_of_memory_once)
    monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute", update)
    image = smooth_canvas(1, 224, 224, seed=1)
    model, vae = models()
    LunaGlobalRefiner().refine(image, scaffold_for(224, 224), model, encode_prompt("a photo"), encode_prompt(""), vae,
                               128, 32, steps=3, cfg=3.0, sampler_name="euler", scheduler="normal", denoise=0.4,
                               vision_strength=0.0, max_batch=4)
    calls = [i for i, v in enumerate(values) if v[0] == "call"]
    assert state["raised"] and [values[i][1] for i in calls] == [2, 2]
    bars = [v for v in values if v[0] != "call"]
    total = bars[0][1]
    assert total == 4 * 3 and all(t == total for _, t in bars)
    assert [v for v, _ in bars] == sorted(v for v, _ in bars), "the bar must never go back"
    assert values[calls[0] - 1] == (6, 12), "after the first two of four tiles, half the steps"
    assert bars[-1] == (12, 12)
