"""LunaGlobalRefiner (parallel tiling, batched) versus stock nodes tile by tile (VAEEncode -> KSampler -> VAEDecode, batch 1).

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
    import nodes

    from luna_semantic_detailer.kernels.compositing import add_share_, share, tile_layers
    from luna_semantic_detailer.kernels.noise import make_scaffold
    from luna_semantic_detailer.kernels.planning import plan_tiles
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
        out = image.clone()
        layers = tile_layers(tiles)
        for i, layer in enumerate(layers):
            x, y, w, h = layer.rect
            latent = nodes.VAEEncode().encode(vae, image[:, y:y + h, x:x + w])[0]
            latent = nodes.KSampler().sample(model, 5, settings["steps"], settings["cfg"], settings["sampler_name"],
                                             settings["scheduler"], positive, negative, latent,
                                             denoise=settings["denoise"])[0]
            add_share_(out, layer.rect, nodes.VAEDecode().decode(vae, latent)[0], share(layers, i), base=image)

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
