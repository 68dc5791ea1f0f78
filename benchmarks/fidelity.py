"""Fidelity of the tiling strategies and of the detailer, measured with models whose right answer is known.

Run from the repository root: `.venv/bin/python benchmarks/fidelity.py [--width 2048 --height 1536] [--out DIR]
[--figure docs/fidelity.png]`. Every number compares a run with the same run untiled (one tile = the canvas, same
scaffold), with the exact-score Gaussian models and the block-mean VAE of tests/fixtures/fidelity.py:
error = mean |tiled - untiled| / mean |untiled - input|, energy = std(tiled - input) / std(untiled - input),
bands = the largest and smallest column/row mean of the squared residual / its median, relative to the untiled run's.
PNGs go to --out: a tile corner under each strategy, the tile-constant probe, the detailer's crop edges.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from harness import ROOT, setup

STRATEGIES = ("chess", "parallel", "fused", "independent")


def run_tiling(job, canvas, scaffold, tile: int, overlap: int, strategy: str, fit: str):
    """The refiner's result; "independent" is parallel with a noise of its own per tile instead of the scaffold slice."""
    import luna_semantic_detailer.pipeline.region_sampling as refine_module
    from pipeline_helpers import refine_tiles

    from luna_semantic_detailer.kernels.noise import own_noise, region_seed

    if strategy != "independent":
        return refine_tiles(job, canvas, scaffold, tile, overlap, strategy, fit)
    real = refine_module.start_noise

    def own(job_, noise, regions):
        import torch

        return torch.stack([own_noise(region_seed(scaffold.seed, r.rect), 0, noise.shape[1:2] + (r.rect[3] // 8, r.rect[2] // 8))
                            for r in regions])

    refine_module.start_noise = own
    try:
        return refine_tiles(job, canvas, scaffold, tile, overlap, "parallel", fit)
    finally:
        refine_module.start_noise = real


def refiner_table(args, out_dir: Path) -> list[dict]:
    from fixtures.fidelity import bands, block_vae, energy, error, exact_model, flat_canvas, job_for, structured_canvas
    from pipeline_helpers import scaffold_for

    rows, images = [], {}
    scaffold = scaffold_for(args.width, args.height, seed=3)
    for kind in ("local", "tile-global"):
        job = job_for(exact_model(kind), block_vae(), scaffold.seed, args.steps, args.denoise, args.sampler)
        for name, canvas in (("flat", flat_canvas(args.height, args.width)),
                             ("structured", structured_canvas(args.height, args.width))):
            untiled = run_tiling(job, canvas, scaffold, 1 << 14, args.overlap, "parallel", args.fit)
            for strategy in STRATEGIES:
                start = time.perf_counter()
                tiled = run_tiling(job, canvas, scaffold, args.tile, args.overlap, strategy, args.fit)
                wall = time.perf_counter() - start
                peak, dip = bands(tiled, untiled, canvas)
                rows.append({"model": kind, "canvas": name, "strategy": strategy, "error": error(tiled, untiled, canvas),
                             "energy": energy(tiled, untiled, canvas), "band_peak": peak, "band_dip": dip, "wall_s": wall})
                if kind == "tile-global" and name == "flat":
                    images[strategy] = tiled
            if kind == "tile-global" and name == "flat":
                images["untiled"], images["input"] = untiled, canvas
    corner_figure(images, args, out_dir)
    return rows


def residual_map(out, source, scale: float):
    """|out - source|^2 per pixel, box-blurred over 31 px, as grey in 0..1 (scale: twice the untiled run's mean)."""
    import torch.nn.functional as F

    energy = (out - source).pow(2).mean(dim=-1, keepdim=True).movedim(-1, 1)
    return (F.avg_pool2d(energy, 31, stride=1, padding=15, count_include_pad=False) / scale).clamp(0, 1)[0, 0]


def save_png(array, path: Path) -> None:
    import numpy as np
    from PIL import Image

    Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8)).save(path)


def labelled(panels, labels):
    """Panels [H, W] or [H, W, 3] in 0..1 side by side with a caption line above each, as one RGB numpy array."""
    import numpy as np
    from PIL import Image, ImageDraw

    tiles = []
    for panel, label in zip(panels, labels):
        rgb = panel if panel.ndim == 3 else np.repeat(panel[..., None], 3, axis=2)
        image = Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))
        framed = Image.new("RGB", (image.width + 8, image.height + 8 + 14 * len(label.splitlines())), (255, 255, 255))
        framed.paste(image, (4, 4 + 14 * len(label.splitlines())))
        ImageDraw.Draw(framed).multiline_text((4, 2), label, fill=(0, 0, 0), spacing=2)
        tiles.append(np.asarray(framed).astype(np.float32) / 255)
    height = max(t.shape[0] for t in tiles)
    return np.concatenate([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), constant_values=1) for t in tiles], axis=1)


def corner_figure(images, args, out_dir: Path) -> None:
    """Residual energy over the whole flat canvas, tile-global model (grid bands show as lines; mid-grey is the untiled
    run's mean), and the pixels at one tile corner, per strategy."""
    import torch.nn.functional as F
    from fixtures.fidelity import bands, energy, error

    from luna_semantic_detailer.pipeline.tiles import canvas_tiles

    source, untiled = images["input"], images["untiled"]
    scale = 2 * float((untiled - source).pow(2).mean())
    order = ["untiled", "parallel", "chess", "fused", "independent"]
    names = {"untiled": "untiled (one tile)", "parallel": "parallel (default)", "chess": "chess (spec order)",
             "fused": "fused (MultiDiffusion)", "independent": "parallel, own noise per tile"}
    maps, labels = [], []
    for key in order:
        small = F.interpolate(residual_map(images[key], source, scale)[None, None], scale_factor=0.25, mode="area")[0, 0]
        maps.append(small.numpy())
        if key == "untiled":
            labels.append(f"{names[key]}\nresidual energy")
        else:
            peak, dip = bands(images[key], untiled, source)
            labels.append(f"{names[key]}\nerror {error(images[key], untiled, source):.3f} energy "
                          f"{energy(images[key], untiled, source):.2f}\nbands {peak:.2f} / {dip:.2f}")
    figure = labelled(maps, labels)
    save_png(figure, out_dir / "strategies_residual_energy.png")
    if args.figure:
        save_png(figure, Path(args.figure))
    tiles = canvas_tiles(args.width, args.height, args.tile, args.overlap, 8, args.fit)
    corner = next(t for t in tiles if t.x > 0 and t.y > 0)
    y0, x0 = max(0, corner.y - 96), max(0, corner.x - 96)
    crops = [images[key][0, y0:y0 + 192, x0:x0 + 192].numpy() for key in order]
    save_png(labelled(crops, [names[k] for k in order]), out_dir / "tile_corner_pixels.png")


def probe(args, out_dir: Path) -> list[dict]:
    """The tile-constant model on the real 4096² plan: every step, as a fraction of 1.5 / overlap x the tiles' difference."""
    import torch
    import torch.nn.functional as F
    from fixtures.fidelity import block_vae, exact_model, job_for, max_step_ratio
    from pipeline_helpers import scaffold_for

    from luna_semantic_detailer.kernels.compositing import intersection
    from luna_semantic_detailer.pipeline.tiles import canvas_tiles

    size, tile, overlap = args.probe_size, args.tile, args.overlap
    g = torch.Generator().manual_seed(1)
    canvas = F.interpolate(torch.rand(1, 3, size // 64, size // 64, generator=g), size=(size, size), mode="nearest")
    canvas = canvas.movedim(1, -1).contiguous()
    scaffold = scaffold_for(size, size, seed=3)
    job = job_for(exact_model("tile-constant"), block_vae("bilinear"), scaffold.seed, 2, 0.5, "euler")
    tiles = canvas_tiles(size, size, tile, overlap, 8, args.fit)
    rows = []
    for strategy in ("chess", "parallel", "fused"):
        out = run_tiling(job, canvas, scaffold, tile, overlap, strategy, args.fit)
        centres = [out[0, t.y + t.height // 2, t.x + t.width // 2] for t in tiles]
        rects = [(t.x, t.y, t.width, t.height) for t in tiles]
        difference = max(float((centres[i] - centres[j]).abs().max()) for i in range(len(tiles)) for j in range(i)
                         if intersection(rects[i], rects[j]))
        rows.append({"strategy": strategy, "canvas": size, "tiles": len(tiles), "largest_tile_difference": difference,
                     "step_ratio": max_step_ratio(out, overlap, difference)})
        save_png(F.interpolate(out.movedim(-1, 1), size=(1024, 1024), mode="area").movedim(1, -1)[0].numpy(),
                 out_dir / f"probe_{strategy}.png")
    return rows


def detailer_table(args, out_dir: Path) -> list[dict]:
    """Three detections, two overlapping, against one whole-canvas region with their crops' combined weight (the max of
    their weights): all crops from the input (parallel) or overlapping crops in later rounds that see the earlier ones."""
    import torch
    import torch.nn.functional as F
    from fixtures.fidelity import (block_vae, ellipse, energy, error, exact_model, job_for, structured_canvas,
                                   whole_canvas_region)
    from pipeline_helpers import refine_regions, scaffold_for

    from luna_semantic_detailer.luna_types import Detection
    from luna_semantic_detailer.pipeline.canvas import canvas_noise
    from luna_semantic_detailer.pipeline.crops import CropSettings, MaskEdge, canonical, crop_regions

    width, height = args.width, args.height
    boxes = [(0.1, 0.15, 0.3, 0.45), (0.22, 0.3, 0.42, 0.6), (0.6, 0.55, 0.75, 0.8)]
    detections = canonical([Detection(b, ellipse(b, height // 2, width // 2), 1.0, "face") for b in boxes])
    edge = MaskEdge(16, 32)
    scaffold = scaffold_for(width, height, seed=3)
    canvas = structured_canvas(height, width)
    noise = canvas_noise(scaffold, height, width)
    regions = crop_regions(detections, width, height, CropSettings((1024, 1536), 1.5, edge), 8, scaffold.seed)
    whole = whole_canvas_region(regions, width, height)
    union = whole.weight
    border = torch.zeros(height, width, dtype=torch.bool)
    for r in regions:
        x, y, w, h = r.rect
        border[max(0, y - 8):y + h + 8, max(0, x - 8):x + w + 8] = True
        border[y + 8:y + h - 8, x + 8:x + w - 8] = False
    rows = []
    for kind in ("local", "tile-global"):
        job = job_for(exact_model(kind), block_vae(), scaffold.seed, args.steps, 0.6, args.sampler)
        reference = refine_regions(job, canvas, noise, [whole])
        for name, tiling in (("parallel", "parallel"), ("rounds", "chess")):
            out = refine_regions(job, canvas, noise, regions, tiling)
            inside = union > 0
            rows.append({"model": kind, "overlaps": name, "error": error(out, reference, canvas),
                         "energy_in_masks": float((out - canvas)[0][inside].std() / (reference - canvas)[0][inside].std()),
                         "crop_edge_error": float((out - reference).abs()[0][border].mean() / (reference - canvas).abs().mean()),
                         "changed_outside_weights": int((out != canvas).any(-1)[0][~inside].sum())})
            if kind == "local" and name == "parallel":
                half = lambda t: F.interpolate(t.movedim(-1, 1), scale_factor=0.5, mode="area").movedim(1, -1)[0].numpy()  # noqa: E731
                difference = ((out - reference).abs().mean(-1, keepdim=True) * 20).clamp(0, 1).expand(-1, -1, -1, 3)
                save_png(labelled([half(out), half(reference), half(difference)],
                                  ["detailer (crops, parallel)", "one region: the whole canvas", "|difference| x 20"]),
                         out_dir / "detailer_vs_whole_canvas.png")
    return rows


def alpha_timing() -> list[dict]:
    """Median ms of the blend weight of one 1536² crop (mask cut, distance transform, feather, edge fade) per feather."""
    import torch

    from fixtures.fidelity import ellipse

    from luna_semantic_detailer.kernels.planning import Crop
    from luna_semantic_detailer.luna_types import Detection
    from luna_semantic_detailer.pipeline.crops import MaskEdge, crop_weight

    detection = Detection((0.35, 0.3, 0.65, 0.7), ellipse((0.35, 0.3, 0.65, 0.7), 1008, 1008), 1.0, "face")
    crop = Crop(1280, 1152, 1536, 1536)
    rows = []
    for width in (0, 8, 32, 128, 256, 512):
        crop_weight(detection, crop, 4096, 4096, MaskEdge(16, width))
        times = []
        for _ in range(15):
            start = time.perf_counter()
            crop_weight(detection, crop, 4096, 4096, MaskEdge(16, width))
            times.append(time.perf_counter() - start)
        times.sort()
        rows.append({"feather": width, "median_ms": 1000 * times[7], "min_ms": 1000 * times[0],
                     "threads": torch.get_num_threads()})
    return rows


def markdown(rows: list[dict]) -> str:
    keys = list(rows[0])
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
                     + ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--height", type=int, default=1536)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--denoise", type=float, default=0.5)
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--fit", default="fit", choices=["fit", "exact"], help="the refiner's tile_fit")
    parser.add_argument("--probe-size", type=int, default=4096)
    parser.add_argument("--only", nargs="*", default=["refiner", "probe", "detailer", "alpha"])
    parser.add_argument("--out", default=str(ROOT / "benchmark-results" / "fidelity"))
    parser.add_argument("--figure", default="", help="also write the strategies figure here (README: docs/fidelity.png)")
    args = parser.parse_args()
    setup()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = {"refiner": refiner_table, "probe": probe, "detailer": detailer_table, "alpha": lambda a, o: alpha_timing()}
    results = {}
    for name in args.only:
        results[name] = sections[name](args, out_dir)
        print(f"\n## {name}\n\n{markdown(results[name])}", flush=True)
        (out_dir / "fidelity.json").write_text(json.dumps({"args": vars(args), **results}, indent=1))


if __name__ == "__main__":
    main()
