"""One small LunaGlobalRefiner run, and a runner that does it in a fresh process on a chosen device.

ComfyUI picks one device per process (comfy.model_management), so tests/test_cuda.py compares its in-process CUDA
run with this run done in a subprocess: `run_in_subprocess("cpu", path)` starts
`python tests/cuda_reference.py PATH` with CUDA_VISIBLE_DEVICES="" (tests/conftest.py then sets ComfyUI's --cpu),
`run_in_subprocess("cuda", path)` with the GPU visible. The child saves `small_refine()`'s result with torch.save.

Optional ComfyUI precision flags go to the child as `flags`, e.g. {"bf16_vae": True, "fp16_unet": True}: set on
comfy.cli_args.args before any model is built (for estimating the CUDA tolerance on a CPU machine).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# The canvas, tiles and sampler of the comparison: deterministic (euler), 2x2.. tiles with overlap, 3 steps.
SMALL = dict(height=256, width=256, tile=128, overlap=32, steps=3, cfg=3.0, sampler_name="euler",
             scheduler="normal", denoise=0.5, max_batch=4, scaffold_seed=1, image_seed=3)


def small_refine(**overrides) -> dict:
    """LunaGlobalRefiner on tiny models in this process's ComfyUI device: the output [1, H, W, 3] float32 on the CPU,
    the input, and which device and dtypes ran it."""
    import comfy.model_management as mm

    from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner
    from pipeline_helpers import encode_prompt, models, scaffold_for, smooth_canvas

    s = {**SMALL, **overrides}
    image = smooth_canvas(1, s["height"], s["width"], seed=s["image_seed"])
    model, vae = models()
    out = LunaGlobalRefiner().refine(
        image, scaffold_for(s["width"], s["height"], seed=s["scaffold_seed"]), model, encode_prompt("a photo"),
        encode_prompt(""), vae, s["tile"], s["overlap"], steps=s["steps"], cfg=s["cfg"],
        sampler_name=s["sampler_name"], scheduler=s["scheduler"], denoise=s["denoise"], vision_strength=0.0,
        max_batch=s["max_batch"],
    )[0]
    return {
        "image": out.detach().to("cpu", torch.float32).contiguous(),
        "input": image,
        "device": str(mm.get_torch_device()),
        "unet_dtype": str(model.model.get_dtype()),
        "vae_dtype": str(vae.vae_dtype),
    }


# CUDA vs CPU tolerance on pixels in 0..1. On CUDA (sm >= 8) ComfyUI runs the UNet in fp16 and the VAE in bf16, the
# CPU both in float32. Emulated on the CPU (ComfyUI's --fp16-unet --bf16-vae against float32, this run): max |diff|
# 0.019, mean 0.0019, 99th percentile 0.0079, almost all from the bf16 VAE (--fp16-unet alone: max 0.001). The bounds
# leave ~2.5x room for fp16 arithmetic in the UNet; the refine itself changes the canvas by ~0.28 on average.
MAX_ABS = 5e-2
MEAN_ABS = 5e-3


def assert_same_refine(got: dict, reference: dict) -> None:
    """got["image"] equals reference["image"] within MAX_ABS everywhere and MEAN_ABS on average, and the refine
    changed the canvas by far more than that (else equal outputs would prove nothing)."""
    a, b = got["image"], reference["image"]
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert torch.equal(got["input"], reference["input"]), "the two runs refined different inputs"
    change = (b - reference["input"]).abs().mean().item()
    assert change > 10 * MEAN_ABS, f"the refine barely changed the canvas (mean {change:.4f}): the comparison is too weak"
    diff = (a - b).abs()
    where = (f"{got['device']} (UNet {got['unet_dtype']}, VAE {got['vae_dtype']}) vs {reference['device']} "
             f"(UNet {reference['unet_dtype']}, VAE {reference['vae_dtype']})")
    print(f"{where}: max |diff| {diff.max().item():.4g}, mean {diff.mean().item():.4g}, "
          f"99th percentile {diff.flatten().quantile(0.99).item():.4g}; refine's mean change {change:.4g}")
    assert diff.max().item() <= MAX_ABS and diff.mean().item() <= MEAN_ABS, (
        f"{where}: max |diff| {diff.max().item():.4g} (bound {MAX_ABS}), mean {diff.mean().item():.4g} "
        f"(bound {MEAN_ABS}), 99th percentile {diff.flatten().quantile(0.99).item():.4g}; refine's mean change {change:.4g}"
    )


def run_in_subprocess(device: str, out_path: Path, flags: dict | None = None, timeout: float = 600, **overrides) -> dict:
    """small_refine(**overrides) in a fresh Python on `device` ("cpu": CUDA hidden; "cuda": the GPU visible)."""
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif device != "cuda":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    request = {"device": device, "flags": flags or {}, "overrides": overrides}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(out_path), json.dumps(request)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"reference run on {device} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}")
    result = torch.load(out_path, weights_only=True)
    if (result["device"] == "cpu") != (device == "cpu"):
        raise RuntimeError(f"asked for a {device} run, ComfyUI used {result['device']}")
    return result


def _main(out_path: str, request: str) -> None:
    request = json.loads(request)
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    import conftest  # noqa: F401  (ComfyUI on sys.path, --cpu without CUDA, the pack imported as ComfyUI does)
    import comfy.cli_args

    if request["device"] == "cuda" and not torch.cuda.is_available():
        raise SystemExit("asked for a CUDA run but torch.cuda.is_available() is False")
    for name, value in request["flags"].items():
        if not hasattr(comfy.cli_args.args, name):
            raise SystemExit(f"unknown ComfyUI flag {name!r}")
        setattr(comfy.cli_args.args, name, value)
    torch.save(small_refine(**request["overrides"]), out_path)


if __name__ == "__main__":
    _main(*sys.argv[1:3])
