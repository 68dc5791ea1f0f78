"""The pipeline at 4K with SDXL-size random-weight models on CUDA, against sequential stock-ComfyUI baselines.

Run from the repository root on a CUDA machine: `.venv/bin/python benchmarks/cuda.py [--out DIR] [--profile NAME…]`;
`--tiny` runs the same script on the CPU with the tests' tiny models on a small canvas. Reported per run: wall time,
UNet calls and their batch sizes, UNet FLOPs (FlopCounterMode on one forward per input shape × image-forwards), the
fraction of the bf16 dense peak that wall time achieves, peak memory, and the share of wall time outside the UNet.
Node calls run under torch.inference_mode(), as ComfyUI's executor runs them. `--flops` only counts the SDXL UNet's
FLOPs per forward, on the meta device (no GPU, no weights).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from harness import SDXL_UNET, grid_boxes, measure, setup, unet_forward_tflop

SD_VAE = {"params": {"embed_dim": 4, "ddconfig": {
    "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
    "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}}}
# Dense bf16 peaks: the H100's as issue 10 states it; the H200's as the device README states it (same Hopper SMs).
BF16_DENSE_TFLOPS = {"H100": 798.0, "H200": 790.0}
# Most wanted first: a run cut short by a time limit loses the tail.
RUN_ORDER = ("refiner", "refiner_sequential_ksampler", "detailer", "detailer_sequential_ksampler", "detector",
             "refiner_exact", "refiner+clip_vit", "detailer+clip_vit")
CONCEPTS = "face, hand, person, text"


@dataclass(frozen=True)
class Settings:
    canvas: int = 4096
    tile: int = 1024
    overlap: int = 128
    steps: int = 20
    cfg: float = 7.0
    sampler_name: str = "dpmpp_2m"
    scheduler: str = "karras"
    denoise: float = 0.35
    max_batch: int = 8
    crop: str = "1024"
    detections: int = 8
    vision_strength: float = 0.3
    detect_size: int = 1008

    def sampling(self) -> dict:
        return dict(steps=self.steps, cfg=self.cfg, sampler_name=self.sampler_name, scheduler=self.scheduler,
                    denoise=self.denoise)


TINY = Settings(canvas=1024, tile=256, overlap=32, steps=4, crop="512", detections=4, detect_size=112)


@dataclass
class Models:
    model: object
    vae: object
    clip_vision: object
    positive: list
    negative: list


@dataclass
class UnetMeter:
    """Every UNet call of a run, through ComfyUI's model_function_wrapper: input shape, context length, device time."""

    calls: list = field(default_factory=list)
    pending: list = field(default_factory=list)
    flops_per_image: dict = field(default_factory=dict)
    count_flops: bool = False

    def __call__(self, apply_model, args):
        import torch

        x, c = args["input"], args["c"]
        key = (tuple(x.shape[1:]), int(c["c_crossattn"].shape[1]))
        if self.count_flops and key not in self.flops_per_image:
            from torch.utils.flop_counter import FlopCounterMode

            one = {k: v[:1] if isinstance(v, torch.Tensor) and v.shape[:1] == x.shape[:1] else v for k, v in c.items()}
            with FlopCounterMode(display=False) as counter:
                apply_model(x[:1], args["timestep"][:1], **one)
            self.flops_per_image[key] = counter.get_total_flops()
        if x.is_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = apply_model(x, args["timestep"], **c)
            end.record()
            self.pending.append((start, end))
        else:
            t0 = time.perf_counter()
            out = apply_model(x, args["timestep"], **c)
            self.pending.append(time.perf_counter() - t0)
        self.calls.append((key, x.shape[0]))
        return out

    def reset(self) -> None:
        self.calls.clear()
        self.pending.clear()

    def seconds(self) -> float:
        import torch

        if self.pending and not isinstance(self.pending[0], float):
            torch.cuda.synchronize()
            return sum(s.elapsed_time(e) for s, e in self.pending) / 1000
        return sum(self.pending)

    def flops(self) -> float:
        unseen = {key for key, _ in self.calls} - set(self.flops_per_image)
        if unseen:
            raise RuntimeError(f"UNet input shapes {sorted(unseen)} were not seen (and counted) in the warm-up")
        return sum(self.flops_per_image[key] * batch for key, batch in self.calls)


def randomize_(module, seed: int) -> None:
    """Fan-in scaled normal weights, unit norm scales, zero biases, drawn on the module's own device."""
    import torch

    generator = None
    with torch.no_grad():
        for name, p in module.named_parameters():
            if generator is None or generator.device != p.device:
                generator = torch.Generator(p.device).manual_seed(seed)
            if p.ndim >= 2:
                p.normal_(0.0, 1.0 / math.sqrt(math.prod(p.shape[1:])), generator=generator)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()


def sdxl_model():
    """An SDXL-size UNet (ComfyUI's comfy.supported_models.SDXL), fp16 on CUDA, random weights, as a ComfyUI MODEL."""
    import torch

    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SDXL(dict(SDXL_UNET))
    config.set_inference_dtype(torch.float16 if torch.cuda.is_available() else torch.float32, None)
    model = config.get_model({}, "", device=mm.get_torch_device())
    randomize_(model.diffusion_model, 0)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def full_models() -> Models:
    """SDXL-size UNet, SD VAE and CLIP-ViT-L/14, all random; SDXL-shaped random prompts."""
    import torch

    import comfy.clip_vision
    import comfy.ldm.models.autoencoder
    import comfy.sd
    from fixtures.tiny_models import random_state_dict

    with torch.device("meta"):
        template = comfy.ldm.models.autoencoder.AutoencoderKL(**SD_VAE["params"]).state_dict()
    vae = comfy.sd.VAE(sd=random_state_dict(template, 1), config=SD_VAE)
    clip_vision = comfy.clip_vision.ClipVisionModel(str(Path(comfy.clip_vision.__file__).with_name("clip_vision_config_vitl.json")))
    clip_vision.load_sd(random_state_dict(clip_vision.get_sd(), 3))
    generator = torch.Generator().manual_seed(4)

    def prompt():
        return [[torch.randn(1, 77, 2048, generator=generator), {"pooled_output": torch.randn(1, 1280, generator=generator)}]]

    return Models(sdxl_model(), vae, clip_vision, prompt(), prompt())


def tiny_models() -> Models:
    from fixtures.tiny_models import tiny_clip, tiny_clip_vision, tiny_model, tiny_vae

    clip = tiny_clip()
    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a photo"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    return Models(tiny_model(), tiny_vae(), tiny_clip_vision(), positive, negative)


def write_sam3(folder: Path, full: bool) -> str:
    """A random SAM3 (full-size transformers Sam3Model as initialised, or the tests' tiny one, whose scores are spread
    so thresholds cut) as facebook/sam3's model.safetensors, registered with folder_paths."""
    import folder_paths
    from fixtures.tiny_sam3 import build_tiny_sam3, config_json, write_hf_checkpoint

    if full:
        import torch
        from transformers import Sam3Config, Sam3Model

        torch.manual_seed(0)
        model = Sam3Model(Sam3Config()).eval()
    else:
        model = build_tiny_sam3()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config_json(model)))
    write_hf_checkpoint(model, folder / "model.safetensors", with_tracker=False)
    folder_paths.add_model_folder_path("sam3", str(folder), is_default=True)
    return "model.safetensors"


def stock_refine(m: Models, pixels, s: Settings, seed: int, mask=None):
    """One stock ComfyUI pass at batch 1: VAEEncode (+ SetLatentNoiseMask), KSampler, VAEDecode."""
    import nodes

    latent = nodes.VAEEncode().encode(m.vae, pixels)[0]
    if mask is not None:
        latent = nodes.SetLatentNoiseMask().set_mask(latent, mask)[0]
    latent = nodes.KSampler().sample(m.model, seed, s.steps, s.cfg, s.sampler_name, s.scheduler, m.positive, m.negative,
                                     latent, denoise=s.denoise)[0]
    return nodes.VAEDecode().decode(m.vae, latent)[0]


def runs(m: Models, s: Settings, image, scaffold) -> dict:
    """name -> zero-argument call: the variants measured."""
    from luna_semantic_detailer.kernels.compositing import add_share_, lerp_, share, tile_layers
    from luna_semantic_detailer.kernels.planning import plan_crop, plan_tiles
    from luna_semantic_detailer.luna_types import Detection, DetectionData
    from luna_semantic_detailer.nodes.detailer import CROP_SIZES, LunaSAM3Detailer
    from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner
    from luna_semantic_detailer.pipeline.crops import MaskEdge, crop_weight

    detections = DetectionData(tuple(Detection(b, None, 1.0, "face") for b in grid_boxes(s.detections)),
                               (s.canvas, s.canvas))
    anchoring = dict(clip_vision=m.clip_vision)

    def refiner(vision: float, fit: str = "fit"):
        return lambda: LunaGlobalRefiner().refine(image, scaffold, m.model, m.positive, m.negative, m.vae, s.tile,
                                                  s.overlap, vision_strength=vision, max_batch=s.max_batch,
                                                  tile_fit=fit, **s.sampling(), **anchoring)

    def refiner_sequential():
        out = image.clone()
        layers = tile_layers(plan_tiles(s.canvas, s.canvas, s.tile, s.overlap, fit="fit"))
        for i, layer in enumerate(layers):
            x, y, w, h = layer.rect
            refined = stock_refine(m, image[:, y:y + h, x:x + w], s, scaffold.seed)
            add_share_(out, layer.rect, refined, share(layers, i), base=image)
        return out

    def detailer(vision: float):
        return lambda: LunaSAM3Detailer().detail(image, scaffold, detections, m.model, m.positive, m.negative, m.vae,
                                                 crop_size=s.crop, context_padding=1.5, mask_dilation=16,
                                                 mask_feather=32, vision_strength=vision, max_batch=s.max_batch,
                                                 labels="", **s.sampling(), **anchoring)

    def detailer_sequential():
        out = image.clone()
        for d in detections.detections:
            c = plan_crop(d.box, s.canvas, s.canvas, 1.5, CROP_SIZES[s.crop], 8)
            alpha = crop_weight(d, c, s.canvas, s.canvas, MaskEdge(16, 32))
            refined = stock_refine(m, out[:, c.y:c.y + c.size, c.x:c.x + c.size], s, scaffold.seed, mask=alpha[None])
            lerp_(out, (c.x, c.y, c.size, c.size), refined, alpha)
        return out

    return {
        "refiner": refiner(0.0),
        "refiner_exact": refiner(0.0, "exact"),
        "refiner+clip_vit": refiner(s.vision_strength),
        "refiner_sequential_ksampler": refiner_sequential,
        "detailer": detailer(0.0),
        "detailer+clip_vit": detailer(s.vision_strength),
        "detailer_sequential_ksampler": detailer_sequential,
    }


def peak_tflops(args) -> float | None:
    import torch

    if args.peak_tflops:
        return args.peak_tflops
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in BF16_DENSE_TFLOPS.items() if k in name), None)


class Report(dict):
    """The benchmark's JSON, rewritten to `path` after every row so that a run cut short keeps what it measured."""

    def __init__(self, path: Path, **header):
        super().__init__(header, runs=[])
        self.path = path
        print(json.dumps(header), flush=True)
        self.save()

    def add(self, row: dict) -> None:
        self["runs"].append(row)
        print(json.dumps(row), flush=True)
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self, indent=1))


class Sampling:
    """The refiner/detailer runs on one canvas and scaffold, their UNet metered."""

    def __init__(self, m: Models, s: Settings, peak: float | None):
        import torch

        from luna_semantic_detailer.kernels.noise import make_scaffold
        from luna_semantic_detailer.luna_types import NoiseScaffold

        self.meter = UnetMeter()
        m.model = m.model.clone()
        m.model.set_model_unet_function_wrapper(self.meter)
        self.m, self.s, self.peak = m, s, peak
        self.image = torch.rand(1, s.canvas, s.canvas, 3, generator=torch.Generator().manual_seed(0))
        self.scaffold = NoiseScaffold(make_scaffold(s.canvas, s.canvas, 5), s.canvas, s.canvas, 8, 5)

    def calls(self, steps: int | None = None) -> dict:
        return runs(self.m, replace(self.s, steps=steps or self.s.steps), self.image, self.scaffold)

    def run(self, name: str) -> dict:
        """A 2-step warm-up (FLOPs counted per input shape), then the measured call."""
        import torch

        meter = self.meter
        meter.count_flops = True
        self.calls(min(self.s.steps, 2))[name]()
        meter.count_flops = False
        meter.reset()
        start = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
        wall, peak_mib = measure(self.calls()[name])
        unet_s, flops = meter.seconds(), meter.flops()
        return {
            "run": name, "wall_s": round(wall, 3), "unet_calls": len(meter.calls),
            "unet_batches": dict(Counter(batch for _, batch in meter.calls)),
            "context_lengths": sorted({key[1] for key, _ in meter.calls}),
            "tflop_per_image_forward": {f"{key[0][-1] * 8}px_context{key[1]}": round(meter.flops_per_image[key] / 1e12, 4)
                                        for key in sorted({key for key, _ in meter.calls})},
            "unet_tflop": round(flops / 1e12, 3), "achieved_tflops": round(flops / wall / 1e12, 3),
            "peak_fraction": round(flops / wall / 1e12 / self.peak, 3) if self.peak else None,
            "outside_unet": round(1 - unet_s / wall, 3), "peak_mib": round(peak_mib),
            "peak_above_start_mib": round(peak_mib - start / 2**20) if start else None,
        }


def detector_runs(s: Settings, args, folder: Path) -> list[dict]:
    """Detector rows, with SAM3's image encoder calls counted."""
    from transformers import Sam3Model

    vision_calls = []
    real = Sam3Model.get_vision_features

    def counting(self, *a, **k):
        vision_calls.append(1)
        return real(self, *a, **k)

    Sam3Model.get_vision_features = counting
    try:
        return _detector_rows(s, args, folder, vision_calls)
    finally:
        Sam3Model.get_vision_features = real


def _detector_rows(s: Settings, args, folder: Path, vision_calls: list) -> list[dict]:
    import torch

    from luna_semantic_detailer.daemon.host import daemon
    from luna_semantic_detailer.nodes.sam3 import LunaSAM3Detector, LunaSAM3Loader

    images = torch.rand(4, s.detect_size, s.detect_size, 3, generator=torch.Generator().manual_seed(1))
    handle = LunaSAM3Loader().load(write_sam3(folder, full=not args.tiny), "auto", "auto")[0]

    found = []

    def detect(batch: int):
        found.append(len(LunaSAM3Detector().detect(handle, images[:batch], CONCEPTS, 0.5, 20, 0.0, s.detect_size)[0].detections))

    rows = []
    daemon().release_all()
    wall, peak_mib = measure(lambda: detect(1))
    rows.append({"run": "detector_first_call_b1", "wall_s": round(wall, 3), "peak_mib": round(peak_mib),
                 "vision_calls": len(vision_calls), "detections": found[-1]})
    for batch in (1, 4):
        walls = []
        for _ in range(args.repeats):
            vision_calls.clear()
            wall, peak_mib = measure(lambda: detect(batch))
            walls.append(wall)
        median = statistics.median(walls)
        rows.append({"run": f"detector_warm_b{batch}", "wall_s": round(median, 4),
                     "ms_per_image": round(1000 * median / batch, 1), "peak_mib": round(peak_mib),
                     "concepts": len(CONCEPTS.split(",")), "vision_calls": len(vision_calls), "detections": found[-1]})
    return rows


def profile(fn, path: Path) -> None:
    """One more call of fn under torch.profiler (CPU and CUDA activity); its op table, by device time, to `path`."""
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    sort = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    path.write_text(profiler.key_averages().table(sort_by=sort, row_limit=50))


def meta_forward_tflop(s: Settings) -> dict:
    """TFLOP of one SDXL UNet forward at batch 1, counted on the meta device (no weights, no GPU), with ComfyUI's SDPA attention."""
    vision_tokens = 257
    return {f"{side}px_context{context}": round(unet_forward_tflop("sdxl", side, side, context), 3)
            for side in sorted({s.tile, 1024, 1536}) for context in (77, 77 + vision_tokens)}


def meta_vae_tflop(side: int) -> dict:
    """TFLOP of one SD VAE encode and decode of a side² image at batch 1, counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import comfy.ldm.models.autoencoder
    import comfy.ldm.modules.diffusionmodules.model as vae_blocks

    vae_blocks.vae_attention = lambda: vae_blocks.pytorch_attention
    with torch.device("meta"):
        vae = comfy.ldm.models.autoencoder.AutoencoderKL(**SD_VAE["params"])
    out = {}
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            vae.encode(torch.zeros(1, 3, side, side, device="meta"))
        out["encode"] = round(counter.get_total_flops() / 1e12, 3)
        with FlopCounterMode(display=False) as counter:
            vae.decode(torch.zeros(1, 4, side // 8, side // 8, device="meta"))
        out["decode"] = round(counter.get_total_flops() / 1e12, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU-sized check: the tests' tiny models, a 1024² canvas")
    parser.add_argument("--out", type=Path, default=Path("benchmark-results"))
    parser.add_argument("--only", nargs="*", help="run names to keep (prefixes: refiner, detailer, detector)")
    parser.add_argument("--profile", nargs="*", default=[], choices=[n for n in RUN_ORDER if n != "detector"],
                        help="runs to profile at the end with torch.profiler (one 4-step call each)")
    parser.add_argument("--repeats", type=int, default=3, help="warm detector calls per batch size (median)")
    for name, kind in (("canvas", int), ("tile", int), ("overlap", int), ("steps", int), ("max_batch", int),
                       ("crop", str), ("detections", int), ("vision_strength", float)):
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"override the {name} setting")
    parser.add_argument("--flops", action="store_true", help="only count SDXL UNet FLOPs per forward on the meta device")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the GPU (default: by name, H100 798)")
    args = parser.parse_args()
    setup()
    import torch

    s = replace(TINY if args.tiny else Settings(),
                **{k: v for k, v in vars(args).items() if k in Settings.__dataclass_fields__ and v is not None})
    if args.flops:
        print(json.dumps({"sdxl_unet_forward_tflop": meta_forward_tflop(s),
                          f"sd_vae_{s.tile}px_tflop": meta_vae_tflop(s.tile)}))
        return
    if not args.tiny and not torch.cuda.is_available():
        print("no CUDA: full-size models on the CPU (a check of the script, not a benchmark); --tiny is the CPU mode",
              file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    peak = peak_tflops(args)
    started = time.perf_counter()
    wanted = [n for n in RUN_ORDER if not args.only or any(n.startswith(o) for o in args.only)]
    with tempfile.TemporaryDirectory() as folder:
        m = tiny_models() if args.tiny else full_models()
        report = Report(
            args.out / "cuda_benchmark.json",
            device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", torch=torch.__version__,
            settings=asdict(s), peak_bf16_tflops=peak, models_built_s=round(time.perf_counter() - started, 1),
        )
        with torch.inference_mode():
            sampling = Sampling(m, s, peak)
            for name in wanted:
                if name == "detector":
                    for row in detector_runs(s, args, Path(folder)):
                        report.add(row)
                else:
                    report.add(sampling.run(name))
            for name in args.profile:
                profile(sampling.calls(min(s.steps, 4))[name], args.out / f"profile_{name.replace('+', '_')}.txt")
    print(f"wrote {report.path}")

if __name__ == "__main__":
    main()
