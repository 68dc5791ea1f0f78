"""The global refiner over ComfyUI-Distributed (issue 30): wall time local vs master + N workers, and the model of the
speed-up on N GPUs from the per-tile time, the transfer and the merge.

A master and workers of the local host on loopback (tests/distributed_cluster.py, ComfyUI-Distributed from
../shared/hosts/), the prompt of tests/shard_prompts.py (tiny SD1.5-type UNet, block-mean VAE, euler_ancestral):
the local run is the same prompt with shard_count 1 through POST /prompt on the master. On one machine every server
shares its cores, so the figures here show the overhead and the contention, not the speed-up; the model does.

Run from the repository root: `.venv/bin/python benchmarks/distributed.py [--canvas 3840x2160] [--workers 0,1,2]`
(a GPU box with several GPUs: CUDA_VISIBLE_DEVICES per server is ComfyUI-Distributed's own launcher's business; this
script measures what one box gives). Writes distributed.json and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

from harness import ROOT, setup

LINKS = {"loopback (PNG codec only)": None, "10 GbE": 1.25e9, "1 GbE": 1.25e8}


def merge_figures(width: int, height: int) -> dict:
    """In-process: the packed tiles of every shard of the plan (a cheap model), the time of LunaShardMerge on them,
    and each tile's PNG as the collector sends it (compress_level 0): bytes, encode + decode time."""
    import numpy as np
    import torch
    from PIL import Image

    from fixtures.fidelity import block_vae, exact_model
    from pipeline_helpers import scaffold_for, smooth_canvas
    from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner
    from luna_semantic_detailer.nodes.shards import LunaShardMerge

    image, empty = smooth_canvas(1, height, width), [[torch.zeros(1, 1, 64), {}]]
    packages, plan = [], None
    for index in range(3):
        package, shard_plan = LunaGlobalRefiner().refine(
            image, scaffold_for(width, height), exact_model("local"), empty, empty, block_vae(), 1024, 128, steps=1,
            cfg=1.0, sampler_name="euler", scheduler="normal", denoise=0.3, vision_strength=0.0, max_batch=4,
            shard_index=index, shard_count=3)
        packages.append(package)
        plan = plan or shard_plan
    collected = torch.cat(packages)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        LunaShardMerge().merge(collected, plan, "stop with an error")
        times.append(time.perf_counter() - start)
    sizes, codec = [], []
    for tile in collected.numpy():
        start = time.perf_counter()
        buffer = io.BytesIO()
        Image.fromarray((255.0 * tile).astype(np.uint8)).save(buffer, format="PNG", compress_level=0)
        np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
        codec.append(time.perf_counter() - start)
        sizes.append(buffer.tell())
    return {"tiles": len(plan.regions), "tile_px": list(plan.size), "merge_s": statistics.median(times),
            "png_bytes_per_tile": statistics.mean(sizes), "png_codec_s_per_tile": statistics.mean(codec)}


def cluster_runs(width: int, height: int, workers: list[int], steps: int) -> list[dict]:
    """Wall time of the prompt locally (0 workers) and over master + N workers, and the merge's error."""
    import numpy as np
    import torch

    from conftest import COMFYUI, FIXTURE_NODES
    from distributed_cluster import TARBALL, DistributedCluster, load_outputs
    from shard_prompts import refiner, sharded

    prompt = refiner(width, height, "sd15", steps=steps)
    rows = []
    with tempfile.TemporaryDirectory() as folder, \
            DistributedCluster(COMFYUI, TARBALL, Path(folder), workers=max(max(workers), 1),
                               custom_nodes=(FIXTURE_NODES,), worker_timeout_s=600,
                               cpu=not torch.cuda.is_available()) as cluster:
        reference = None
        for count in workers:
            start = time.perf_counter()
            if count == 0:
                history = cluster.master.run(sharded(prompt, 1), timeout=3600)
                result = load_outputs(cluster.master, history)["result"]
                reference = result
            else:
                run = cluster.run(sharded(prompt, 1 + count), cluster.worker_ids[:count], timeout=3600)
                result = run.images["result"]
            wall = time.perf_counter() - start
            row = {"machines": 1 + count, "workers": count, "wall_s": wall}
            if reference is not None and count:
                row["max_error_levels"] = float(np.abs(result - reference).max() * 255)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def model(per_tile_s: float, figures: dict, machines: int, link: float | None, loopback_s_per_tile: float) -> float:
    """Wall time of the refiner on `machines` GPUs: the largest shard's tiles, the workers' tiles over the link
    (PNG encode/decode included), the merge."""
    tiles = figures["tiles"]
    largest = math.ceil(tiles / machines)
    sent = tiles - math.ceil(tiles / machines) if machines > 1 else 0
    per_transfer = loopback_s_per_tile if link is None else figures["png_bytes_per_tile"] / link
    transfer = sent * (per_transfer + figures["png_codec_s_per_tile"]) if machines > 1 else 0.0
    return largest * per_tile_s + transfer + (figures["merge_s"] if machines > 1 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canvas", default="3840x2160")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts; 0 is the local run")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmark-results")
    args = parser.parse_args()
    setup()
    width, height = (int(v) for v in args.canvas.split("x"))
    workers = [int(v) for v in args.workers.split(",")]
    figures = merge_figures(width, height)
    rows = cluster_runs(width, height, workers, args.steps)
    local = next((r["wall_s"] for r in rows if r["workers"] == 0), None)
    per_tile = local / figures["tiles"] if local else None
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"canvas": args.canvas, "cpu_cores": os.cpu_count(), "steps": args.steps, "figures": figures, "runs": rows}
    (args.out / "distributed.json").write_text(json.dumps(report, indent=1))
    print(f"\n{args.canvas}, {figures['tiles']} tiles of {figures['tile_px'][0]}×{figures['tile_px'][1]} px, "
          f"{os.cpu_count()} CPU cores shared by every server\n")
    print("| machines | wall (s) | vs local | merged vs local (8-bit levels, max) |\n|---|---|---|---|")
    for row in rows:
        ratio = f"{row['wall_s'] / local:.2f}×" if local else "—"
        error = f"{row['max_error_levels']:.2f}" if "max_error_levels" in row else "—"
        print(f"| {row['machines']}{' (local)' if row['workers'] == 0 else ''} | {row['wall_s']:.1f} | {ratio} | {error} |")
    print(f"\nmerge {figures['merge_s'] * 1000:.0f} ms; a tile's PNG {figures['png_bytes_per_tile'] / 1e6:.2f} MB, "
          f"encode + decode {figures['png_codec_s_per_tile'] * 1000:.0f} ms")
    if per_tile:
        loopback = 0.0
        print(f"\nModel with the measured {per_tile:.2f} s per tile (speed-up over one machine):\n")
        print("| machines | " + " | ".join(LINKS) + " |\n|---|" + "---|" * len(LINKS))
        for machines in (1, 2, 3, 4, 6, figures["tiles"]):
            cells = [f"{local / model(per_tile, figures, machines, link, loopback):.2f}×" for link in LINKS.values()]
            print(f"| {machines} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
