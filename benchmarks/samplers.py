"""Every sampler through both nodes on this machine's device (issue 28, item 7): a tiny Flux.1 (2 x 2 patches, flow,
guidance) with weights in bf16 and fp16, the refiner (parallel and fused) and the detailer on a square canvas;
per run the wall time, the peak memory (CUDA: max allocated; CPU: the process's peak RSS), the tile/crop shapes the
model received, and the error by name where a run fails. JSON rewritten after every run.

On a GPU (scripts/device-check.sh samplers): `python3 benchmarks/samplers.py --out $OUT` (2048 x 2048, every sampler).
On a CPU, small: `.venv/bin/python benchmarks/samplers.py --size 256 --samplers euler,euler_ancestral --out /tmp/s`.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from harness import measure, setup

DTYPES = ("bf16", "fp16")
RUNS = ("refiner parallel", "refiner fused", "detailer")


def runs(size: int, dtype_name: str, steps: int, shapes: list) -> dict:
    """The three node runs with the tiny Flux.1 in `dtype_name`, recording every model input's latent (h, w)."""
    import torch

    from fixtures.lsd_test_models.families import tiny_family_conditioning, tiny_family_model, tiny_family_vae
    from luna_semantic_detailer.kernels.noise import make_scaffold
    from luna_semantic_detailer.luna_types import Detection, DetectionData, NoiseScaffold
    from luna_semantic_detailer.nodes.detailer import LunaSAM3Detailer
    from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    model = tiny_family_model("flux", dtype=dtype).clone()

    def record(apply_model, args):
        shapes.append(tuple(args["input"].shape[-2:]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(record)
    vae = tiny_family_vae("flux")
    positive, negative = tiny_family_conditioning("flux")
    image = torch.rand(1, size // 32, size // 32, 3, generator=torch.Generator().manual_seed(0))
    image = torch.nn.functional.interpolate(image.movedim(-1, 1), size=(size, size), mode="bicubic").movedim(1, -1).clamp(0, 1)
    scaffold = NoiseScaffold(make_scaffold(size, size, 7, 16), size, size, 8, 7)
    boxes = [(0.1, 0.1, 0.3, 0.3), (0.55, 0.2, 0.8, 0.5), (0.2, 0.6, 0.45, 0.9), (0.05, 0.05, 0.95, 0.95)]
    data = DetectionData(tuple(Detection(b, None, 0.9, "thing") for b in boxes), (size, size))
    sampling = dict(steps=steps, cfg=1.0, scheduler="simple", vision_strength=0.0, max_batch=4)
    tile = max(64, size // 2)

    def refiner(sampler_name: str, tiling: str):
        return LunaGlobalRefiner().refine(image, scaffold, model, positive, negative, vae, tile, tile // 8,
                                          sampler_name=sampler_name, denoise=0.5, tiling=tiling, **sampling)[0]

    def detailer(sampler_name: str):
        return LunaSAM3Detailer().detail(image, scaffold, data, model, positive, negative, vae, sampler_name=sampler_name,
                                         denoise=0.5, crop_size="auto (1024 / 1536)", context_padding=1.5,
                                         mask_dilation=8, mask_feather=32, labels="", **sampling)[0]

    return {"refiner parallel": lambda s: refiner(s, "parallel"), "refiner fused": lambda s: refiner(s, "fused"),
            "detailer": detailer}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--samplers", default="", help="comma-separated; default: every sampler ComfyUI offers")
    parser.add_argument("--out", type=Path, default=Path("benchmark-results"))
    args = parser.parse_args()
    setup()
    import torch

    import comfy.samplers

    names = [s for s in args.samplers.split(",") if s] or list(comfy.samplers.KSampler.SAMPLERS)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "size": args.size,
              "steps": args.steps, "rows": []}
    for dtype_name in args.dtypes.split(","):
        shapes: list = []
        nodes = runs(args.size, dtype_name, args.steps, shapes)
        for name in names:
            for run in RUNS:
                shapes.clear()
                row = {"sampler": name, "run": run, "dtype": dtype_name}
                try:
                    box = {}
                    row["wall_s"], row["peak_mib"] = measure(lambda: box.setdefault("out", nodes[run](name)))
                    out = box["out"]
                    row["output"] = f"{out.device.type} {str(out.dtype).removeprefix('torch.')} {list(out.shape)}"
                    row["finite"] = bool(torch.isfinite(out).all())
                    row["model_inputs"] = sorted({f"{h}x{w}" for h, w in shapes})
                except Exception as exc:  # a failing run is a row of the report, not the end of it
                    row["error"] = f"{type(exc).__name__}: {exc}"
                    row["where"] = traceback.format_exc(limit=-3)
                report["rows"].append(row)
                (args.out / "samplers.json").write_text(json.dumps(report, indent=1))
                status = row.get("error") or f"{row['wall_s']:.2f} s, {row['peak_mib']:.0f} MiB"
                print(f"{dtype_name} {name:28s} {run:17s} {status}", flush=True)
    failed = [r for r in report["rows"] if "error" in r or not r.get("finite")]
    print(f"samplers: {len(report['rows']) - len(failed)} of {len(report['rows'])} runs fine")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
