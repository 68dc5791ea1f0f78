"""LunaSAM3Detailer with 8 detections: batched (max_batch 8) versus one crop at a time (max_batch 1), same model and canvas.

Run from the repository root: `cd benchmarks && ../.venv/bin/python detailer.py [--canvas 2048] [--crop 512] [--steps 4]`.
Each variant runs in its own process so the peak-memory figures do not mix; CPU peak is the process's max RSS.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from harness import count_sampler_calls, grid_boxes, measure, setup


def run(max_batch: int, canvas: int, crop: str, steps: int, count: int) -> dict:
    setup()
    import torch

    from fixtures.tiny_models import tiny_clip, tiny_model, tiny_vae
    from luna_semantic_detailer.kernels.noise import make_scaffold
    from luna_semantic_detailer.luna_types import Detection, DetectionData, NoiseScaffold
    from luna_semantic_detailer.nodes.detailer import LunaSAM3Detailer

    model, vae, clip = tiny_model(), tiny_vae(), tiny_clip()
    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a face"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    image = torch.rand(1, canvas, canvas, 3, generator=torch.Generator().manual_seed(0))
    scaffold = NoiseScaffold(make_scaffold(canvas, canvas, 5), canvas, canvas, 8, 5)
    data = DetectionData(tuple(Detection(b, None, 1.0, "face") for b in grid_boxes(count)), (canvas, canvas))
    calls = count_sampler_calls()

    def detail():
        LunaSAM3Detailer().detail(image, scaffold, data, model, positive, negative, vae, steps=steps, cfg=5.0,
                                  sampler_name="euler", scheduler="normal", denoise=0.45, crop_size=crop,
                                  context_padding=1.5, mask_dilation=8, mask_feather=16, vision_strength=0.0,
                                  max_batch=max_batch, labels="")

    detail()
    calls.clear()
    wall, peak = measure(detail)
    return {"max_batch": max_batch, "crops": count, "sampler_calls": len(calls), "wall_s": round(wall, 2), "peak_mib": round(peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--canvas", type=int, default=2048)
    parser.add_argument("--crop", default="512")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--max-batch", type=int)
    args = parser.parse_args()
    if args.max_batch:
        print(json.dumps(run(args.max_batch, args.canvas, args.crop, args.steps, args.count)))
        return
    rows = []
    for max_batch in (1, args.count):
        cmd = [sys.executable, __file__, f"--max-batch={max_batch}", f"--canvas={args.canvas}", f"--crop={args.crop}",
               f"--steps={args.steps}", f"--count={args.count}"]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]))
    print(f"canvas {args.canvas}², {args.count} detections, {args.crop} px crops, {args.steps} steps, tiny SD1.5-style UNet")
    print(f"{'max_batch':<11}{'sampler calls':>14}{'wall s':>9}{'peak MiB':>10}")
    for r in rows:
        print(f"{r['max_batch']:<11}{r['sampler_calls']:>14}{r['wall_s']:>9}{r['peak_mib']:>10}")
    print(f"one-at-a-time / batched wall time: {rows[0]['wall_s'] / rows[1]['wall_s']:.2f}×")


if __name__ == "__main__":
    main()
