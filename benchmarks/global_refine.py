"""LunaGlobalRefiner (parallel tiling; tile_fit fit and exact) against an UltimateSDUpscale-style tile loop, tiny models.

Run from the repository root: `.venv/bin/python benchmarks/global_refine.py [--canvas 2048x1536 3840x2160 4096x4096]
[--tile 1024] [--overlap 128] [--steps 4] [--warmup canvas|tile]`. Each (canvas, variant) runs in its own process, one
warm-up call (on the same canvas, or with `--warmup tile` on a tile-sized canvas: same code path, a fraction of the
time at 4K), then one timed call; CPU peak is the process's max RSS. `--flops` instead counts, on the meta device, the
UNet work of each plan for the full-size SD1.5 and SDXL architectures: one forward per sampled tile at batch 1.

The UltimateSDUpscale-style loop follows that pack's plan at tile 1024 / padding 128 (not its code): a grid of
ceil(W / 1024) x ceil(H / 1024) tiles, each sampled as a uniform (1024 + 128)² crop kept inside the canvas, one stock
VAEEncode -> KSampler -> VAEDecode per tile (it samples one tile per call), tiles pasted in order over the canvas as it
stands with an 8 px feather. Sampled area = the pixels the UNet sees per step, summed over tiles.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from harness import count_sampler_calls, measure, setup, unet_forward_tflop

VARIANTS = ("luna-fit", "luna-exact", "usdu-style")


def usdu_plan(width: int, height: int, tile: int, padding: int) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """(tile rect, sampled rect) per tile: the tile grid, each sampled as a (tile + padding)² crop kept inside the canvas."""
    size = tile + padding
    out = []
    for row in range(-(-height // tile)):
        for col in range(-(-width // tile)):
            x, y = col * tile, row * tile
            w, h = min(tile, width - x), min(tile, height - y)
            sx = min(max(0, x - padding // 2), max(0, width - size))
            sy = min(max(0, y - padding // 2), max(0, height - size))
            out.append(((x, y, w, h), (sx, sy, min(size, width), min(size, height))))
    return out


def plan_sizes(variant: str, width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(width, height) of every tile the variant samples."""
    if variant.startswith("luna"):
        from luna_semantic_detailer.pipeline.tiles import canvas_tiles

        return [(t.width, t.height) for t in canvas_tiles(width, height, tile, overlap, 8, variant.split("-")[1])]
    return [(s[2], s[3]) for _, s in usdu_plan(width, height, tile, overlap)]


def print_flops(canvases: list[str], variants: list[str], tile: int, overlap: int) -> None:
    """Per canvas and variant: tiles, sampled MP, and TFLOP of one forward per tile for SD1.5 and SDXL."""
    setup()
    print("| canvas | variant | tiles | sampled MP | SD1.5 UNet TFLOP | SDXL UNet TFLOP |")
    print("|---|---|---:|---:|---:|---:|")
    for size in canvases:
        width, height = (int(v) for v in size.split("x"))
        for variant in variants:
            sizes = plan_sizes(variant, width, height, tile, overlap)
            work = {family: sum(unet_forward_tflop(family, w, h) for w, h in sizes) for family in ("sd15", "sdxl")}
            print(f"| {size} | {variant} | {len(sizes)} | {sum(w * h for w, h in sizes) / 1e6:.2f} | "
                  f"{work['sd15']:.1f} | {work['sdxl']:.1f} |", flush=True)


def run(variant: str, width: int, height: int, tile: int, overlap: int, steps: int, max_batch: int,
        warmup: str = "canvas") -> dict:
    setup()
    import torch

    import nodes
    from fixtures.tiny_models import tiny_clip, tiny_model, tiny_vae
    from luna_semantic_detailer.kernels.masks import edge_fade
    from luna_semantic_detailer.kernels.noise import make_scaffold
    from luna_semantic_detailer.luna_types import NoiseScaffold
    from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner

    model, vae, clip = tiny_model(), tiny_vae(), tiny_clip()
    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a photo"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    settings = dict(steps=steps, cfg=5.0, sampler_name="euler", scheduler="normal", denoise=0.35)

    def make_call(width: int, height: int):
        image = torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(0))
        if variant.startswith("luna"):
            fit = variant.split("-")[1]
            scaffold = NoiseScaffold(make_scaffold(width, height, 5), width, height, 8, 5)

            def call():
                LunaGlobalRefiner().refine(image, scaffold, model, positive, negative, vae, tile, overlap,
                                           vision_strength=0.0, max_batch=max_batch, tile_fit=fit, tiling="parallel",
                                           **settings)
            return call
        plan = usdu_plan(width, height, tile, overlap)

        def call():
            out = image.clone()
            for (x, y, w, h), (sx, sy, sw, sh) in plan:
                latent = nodes.VAEEncode().encode(vae, out[:, sy:sy + sh, sx:sx + sw])[0]
                latent = nodes.KSampler().sample(model, 5, steps, settings["cfg"], "euler", "normal", positive, negative,
                                                 latent, denoise=settings["denoise"])[0]
                refined = nodes.VAEDecode().decode(vae, latent)[0][:, y - sy:y - sy + h, x - sx:x - sx + w]
                fade = edge_fade(h, w, 8, (x > 0, y > 0, x + w < width, y + h < height))[..., None]
                out[:, y:y + h, x:x + w].lerp_(refined, fade)
        return call

    call = make_call(width, height)
    warm_up = call if warmup == "canvas" else make_call(tile, tile)
    sampled = sum(w * h for w, h in plan_sizes(variant, width, height, tile, overlap))
    calls = count_sampler_calls()
    with torch.inference_mode():
        warm_up()
        calls.clear()
        wall, peak = measure(call)
    return {"canvas": f"{width}x{height}", "variant": variant, "max_batch": max_batch if variant.startswith("luna") else 1,
            "sampled_mp": round(sampled / 1e6, 2), "sampler_calls": len(calls), "wall_s": round(wall, 2),
            "peak_mib": round(peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--canvas", nargs="+", default=["2048x1536", "3840x2160", "4096x4096"])
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--warmup", choices=("canvas", "tile"), default="canvas")
    parser.add_argument("--flops", action="store_true", help="only count each plan's UNet work on the meta device")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        variant, size, max_batch = args.one.split(",")
        width, height = (int(v) for v in size.split("x"))
        print(json.dumps(run(variant, width, height, args.tile, args.overlap, args.steps, int(max_batch), args.warmup)))
        return
    if args.flops:
        print_flops(args.canvas, args.variants, args.tile, args.overlap)
        return
    print("| canvas | variant | max_batch | sampled MP | sampler calls | wall s | peak RSS MiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for size in args.canvas:
        for variant in args.variants:
            for max_batch in (args.max_batch if variant.startswith("luna") else [1]):
                cmd = [sys.executable, __file__, f"--one={variant},{size},{max_batch}", f"--tile={args.tile}",
                       f"--overlap={args.overlap}", f"--steps={args.steps}", f"--warmup={args.warmup}"]
                done = subprocess.run(cmd, check=True, capture_output=True, text=True)
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"| {r['canvas']} | {r['variant']} | {r['max_batch']} | {r['sampled_mp']} | {r['sampler_calls']} | "
                      f"{r['wall_s']} | {r['peak_mib']} |", flush=True)


if __name__ == "__main__":
    main()
