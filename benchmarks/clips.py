"""The detailer on clips (issue 35), measured with models whose right answer is known.

Run from the repository root: `.venv/bin/python benchmarks/clips.py [--readme] [--json FILE] [--figure PNG]
[--memory-frames 2,4,8]`. With the exact-score Gaussian model (translation-equivariant, local) and the block-mean VAE
of tests/fixtures/fidelity.py, on the clips of tests/fixtures/clips.py:
- motion: a 192 px square moving 16 px a frame over a uniform grey 1280x768 canvas, crop 512: how far each frame's
  refined object is from the first frame's, shifted, as a fraction of the refinement's change (0: it moves with it);
- flicker: mean |Δ output − Δ input| between consecutive frames inside the masks, on that moving clip and on a still
  square whose detected boxes wander by up to 6 px a frame (as a detector's do);
- video: a track sampled as one clip by the exact-score video model (a Gaussian prior correlated in space and time,
  tests/fixtures/video.py) in its crop against the untiled run, one clip of the whole frames, error as in fidelity.py;
- memory: peak resident memory of the process for a 3840x2160 clip of N frames with two tracks (each run in a fresh
  process), against the clip's own size.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from harness import ROOT, setup

MODES = ("follow (smoothed)", "follow", "fixed square", "frame by frame")
SETTINGS = dict(steps=4, cfg=1.0, sampler_name="euler_ancestral", scheduler="normal", denoise=0.6, crop_size="512",
                context_padding=1.5, mask_dilation=8, mask_feather=16, vision_strength=0.0, max_batch=4, labels="")


def detail(clip, detections, mode: str, seed: int = 3, model=None, vae=None, channels: int = 4, **options):
    import torch

    from fixtures.fidelity import block_vae, exact_model
    from luna_semantic_detailer.kernels.noise import make_scaffold
    from luna_semantic_detailer.luna_types import NoiseScaffold
    from luna_semantic_detailer.nodes.detailer import LunaSAM3Detailer

    height, width = clip.shape[1:3]
    scaffold = NoiseScaffold(make_scaffold(width, height, seed, channels), width, height, 8, seed)
    empty = [[torch.zeros(1, 1, 64), {}]]
    return LunaSAM3Detailer().detail(clip, scaffold, detections, model or exact_model("local"), empty, empty,
                                     vae or block_vae(), **{**SETTINGS, **options}, track_crops=mode)[0]


def known_answers(frames: int) -> tuple[list[dict], dict]:
    from fixtures.clips import ORIGIN, SIDE, STEP, box_masks, flicker, jittered_still, motion_error, moving_square

    moving, moving_detections = moving_square(frames)
    still, still_detections = jittered_still(frames)
    height, width = moving.shape[1:3]
    square = (ORIGIN[0] + SIDE // 2 - 256, ORIGIN[1] + SIDE // 2 - 256, 512)
    rows, outputs = [], {}
    for mode in MODES:
        start = time.perf_counter()
        out = detail(moving, moving_detections, mode)
        still_out = detail(still, still_detections, mode)
        outputs[mode] = (out, still_out)
        rows.append({"mode": mode, "motion_error": motion_error(out, moving, square, STEP),
                     "flicker_moving": flicker(out, moving, box_masks(moving_detections, frames, width, height)),
                     "flicker_jittered_still": flicker(still_out, still, box_masks(still_detections, frames, width,
                                                                                   height)),
                     "seconds": time.perf_counter() - start})
    return rows, {"moving": (moving, moving_detections), "still": (still, still_detections), "outputs": outputs}


def video_known_answer() -> dict:
    """One clip through the crop against one clip of the whole frames, the exact video model (tests/test_clips.py)."""
    import torch

    from fixtures.clips import moving_square
    from fixtures.fidelity import error, job_for
    from fixtures.video import block_video_vae, exact_video_model
    from luna_semantic_detailer.kernels.noise import make_scaffold
    from luna_semantic_detailer.luna_types import NoiseScaffold
    from luna_semantic_detailer.pipeline.canvas import canvas_noise
    from luna_semantic_detailer.pipeline.clips import CLIPS
    from luna_semantic_detailer.pipeline.crops import CropSettings, MaskEdge, support_mask
    from luna_semantic_detailer.pipeline.plan import RegionPlan
    from luna_semantic_detailer.pipeline.regions import Region
    from luna_semantic_detailer.pipeline.tracks import TrackSettings, track_regions

    width, height = 768, 512
    clip, detections = moving_square(5, step=8, width=width, height=height, side=128, origin=(256, 192))
    model, vae = exact_video_model(), block_video_vae()
    out = detail(clip, detections, "fixed square", model=model, vae=vae, channels=16, sampler_name="euler",
                 clip_sampling="one clip per track (video model)")
    scaffold = NoiseScaffold(make_scaffold(width, height, 3, 16), width, height, 8, 3)
    regions = track_regions(detections.detections, width, height,
                            TrackSettings(CropSettings((512,), 1.5, MaskEdge(8, 16)), "fixed square"), 8, 3)
    whole = []
    for r in regions:
        x, y, w, h = r.rect
        weight = torch.zeros(height, width)
        weight[y:y + h, x:x + w] = r.weight
        whole.append(Region(r.image, (0, 0, width, height), (width, height), weight, weight,
                            support_mask(weight, (width, height), 8), track=0))
    plan = RegionPlan(source="detailer", job=job_for(model, vae, 3, steps=4, denoise=0.6), canvas=clip,
                      scaffold=scaffold, noise=canvas_noise(scaffold, height, width), regions=tuple(whole), width=width,
                      height=height, settings=None)
    reference = CLIPS.run(plan, None)
    return {"frames": 5, "error_vs_untiled_one_clip": error(out, reference, clip)}


def memory_row(frames: int) -> dict:
    """Peak RSS of a fresh process detailing a 3840x2160 clip of `frames` frames with two tracks."""
    code = f"""
import resource, sys, time
sys.path.insert(0, {str(ROOT / 'benchmarks')!r})
from harness import setup
setup()
sys.path.append({str(ROOT / 'benchmarks')!r})
import torch
from clips import detail
from fixtures.clips import moving_square
from luna_semantic_detailer.luna_types import Detection
clip, det = moving_square({frames}, width=3840, height=2160, side=384, origin=(600, 800))
second = [Detection((0.6, 0.2, 0.75, 0.45), None, 1.0, "object", t, 1) for t in range({frames})]
det = det.with_detections([*det.detections, *second])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
out = detail(clip, det, "follow (smoothed)", crop_size="1024", steps=2)
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - start)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    before, peak, seconds = result.stdout.split()[-3:]
    clip_mb = frames * 3840 * 2160 * 3 * 4 / 2**20
    return {"frames": frames, "clip_mb": clip_mb, "peak_mb": int(peak) / 1024, "before_run_mb": int(before) / 1024,
            "run_mb": (int(peak) - int(before)) / 1024, "seconds": float(seconds)}


def figure(data: dict, path: Path) -> None:
    """Frames 0, 2 and 4 of the moving clip: the input, followed (smoothed) and frame by frame, with |difference
    from frame 0 shifted| x 10 under each."""
    import numpy as np
    import torch

    from fixtures.clips import ORIGIN, SIDE, STEP
    from fidelity import labelled, save_png

    clip = data["moving"][0]
    x0, y0, size = ORIGIN[0] + SIDE // 2 - 256, ORIGIN[1] + SIDE // 2 - 256, 512
    rows = []
    for name, frames in (("input", clip), ("follow (smoothed)", data["outputs"]["follow (smoothed)"][0]),
                         ("frame by frame", data["outputs"]["frame by frame"][0])):
        panels, labels = [], []
        first = frames[0, y0:y0 + size, x0:x0 + size]
        for t in (0, 2, 4):
            window = frames[t, y0:y0 + size, x0 + STEP * t:x0 + STEP * t + size]
            panels.append(window.numpy())
            labels.append(f"{name}, frame {t}")
            if t:
                shifted = ((window - first).abs().mean(-1, keepdim=True) * 10).clamp(0, 1).expand(-1, -1, 3)
                panels.append(shifted.numpy())
                labels.append(f"|frame {t} - frame 0| x 10")
        rows.append(labelled([torch.nn.functional.interpolate(torch.from_numpy(p).movedim(-1, 0)[None], size=(256, 256),
                                                              mode="area")[0].movedim(0, -1).numpy() for p in panels],
                             labels))
    save_png(np.concatenate(rows, axis=0), path)


def table(rows: list[dict]) -> str:
    lines = ["| track crops | motion error (0 = moves with the object) | flicker, moving square | flicker, still square "
             "with wandering boxes |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['motion_error']:.4f} | {r['flicker_moving']:.4f} | "
                     f"{r['flicker_jittered_still']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None, help="write the before/after frames PNG here")
    parser.add_argument("--memory-frames", default="", help="comma-separated frame counts for the 4K memory rows")
    parser.add_argument("--skip-video", action="store_true")
    parser.add_argument("--readme", action="store_true",
                        help="write the table into README.md (between its clips-table markers) and docs/clip_frames.png")
    args = parser.parse_args()
    setup()
    sys.path.append(str(ROOT / "benchmarks"))
    rows, data = known_answers(args.frames)
    print(table(rows))
    report = {"known_answers": rows}
    if args.figure or args.readme:
        figure(data, args.figure or ROOT / "docs" / "clip_frames.png")
    if args.readme:
        readme = ROOT / "README.md"
        text = readme.read_text(encoding="utf-8")
        start = text.index("<!-- clips-table:start (benchmarks/clips.py) -->")
        end = text.index("<!-- clips-table:end -->")
        head = text[:start] + "<!-- clips-table:start (benchmarks/clips.py) -->\n"
        readme.write_text(head + table(rows) + "\n" + text[end:], encoding="utf-8")
    if not args.skip_video:
        report["video"] = video_known_answer()
        print("video, one clip through the crop vs the untiled one-clip run:", report["video"])
    memory = [memory_row(int(n)) for n in args.memory_frames.split(",") if n]
    for row in memory:
        print("memory:", row)
    report["memory"] = memory
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
