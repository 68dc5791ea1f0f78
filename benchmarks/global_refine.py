"""LunaGlobalRefiner (chess phases, batched) versus a sequential tile loop (batch 1, own VAE encode/decode per tile).

Run from the repository root: `.venv/bin/python benchmarks/global_refine.py [--canvas 1024] [--tile 256] [--steps 4]`.
Each variant runs in its own process so the peak-memory figures do not mix; CPU peak is the process's max RSS.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from harness import count_sampler_calls, measure, setup


def run(variant: str, canvas: int, tile: int, overlap: int, steps: int, max_batch: int) -> dict:
    setup()
    import torch

    from fixtures.tiny_models import tiny_clip, tiny_model, tiny_vae
    from luna_semantic_detailer.kernels.masks import blend_, tile_alpha
    from luna_semantic_detailer.kernels.noise import make_scaffold, slice_noise
    from luna_semantic_detailer.kernels.planning import plan_tiles
    from luna_semantic_detailer.kernels.refine import RefineJob, refine_batch
    from luna_semantic_detailer.luna_types import NoiseScaffold
    from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner

    model, vae, clip = tiny_model(), tiny_vae(), tiny_clip()
    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a photo"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    image = torch.rand(1, canvas, canvas, 3, generator=torch.Generator().manual_seed(0))
    scaffold = NoiseScaffold(make_scaffold(canvas, canvas, 5), canvas, canvas, 8, 5)
    settings = dict(steps=steps, cfg=5.0, sampler_name="euler", scheduler="normal", denoise=0.35)
    tiles = plan_tiles(canvas, canvas, tile, overlap)

    def batched():
        LunaGlobalRefiner().refine(image, scaffold, model, positive, negative, vae, tile, overlap,
                                   vision_strength=0.0, max_batch=max_batch, **settings)

    def sequential():
        job = RefineJob(model, vae, positive, negative, seed=5, **settings)
        out = image.clone()
        for t in tiles:
            pixels = out[:, t.y:t.y + t.height, t.x:t.x + t.width]
            noise = slice_noise(scaffold.noise, [(t.x, t.y, t.width, t.height)], 8)
            refined = refine_batch(job, pixels, noise)
            edges = (t.x > 0, t.y > 0, False, False)
            blend_(out, refined, tile_alpha(t.height, t.width, overlap, *edges), t.x, t.y)

    fn = batched if variant == "batched" else sequential
    calls = count_sampler_calls()
    fn()
    calls.clear()
    wall, peak = measure(fn)
    return {"variant": variant, "tiles": len(tiles), "sampler_calls": len(calls), "wall_s": round(wall, 2),
            "peak_mib": round(peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--canvas", type=int, default=1024)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--variant", choices=["batched", "sequential"])
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run(args.variant, args.canvas, args.tile, args.overlap, args.steps, args.max_batch)))
        return
    rows = []
    for variant in ("sequential", "batched"):
        cmd = [sys.executable, __file__, "--variant", variant] + [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "variant"]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]))
    print(f"canvas {args.canvas}², tiles {args.tile} (overlap {args.overlap}), {args.steps} steps, max_batch {args.max_batch}, tiny SD1.5-style UNet")
    print(f"{'variant':<12}{'tiles':>7}{'sampler calls':>15}{'wall s':>9}{'peak MiB':>10}")
    for r in rows:
        print(f"{r['variant']:<12}{r['tiles']:>7}{r['sampler_calls']:>15}{r['wall_s']:>9}{r['peak_mib']:>10}")
    print(f"sequential / batched wall time: {rows[0]['wall_s'] / rows[1]['wall_s']:.2f}×")


if __name__ == "__main__":
    main()
