"""benchmarks/cuda.py without a GPU: its FLOP count on the meta device and its --tiny mode end to end."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str, script: str = "benchmarks/cuda.py") -> str:
    """A benchmark script with `args` in a fresh Python; its stdout, or a failure that shows the end of its stderr."""
    done = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_sdxl_unet_flops_match_the_figure_measured_on_the_h100():
    out = run_script("--flops")
    flops = json.loads(out.strip().splitlines()[-1])["sdxl_unet_forward_tflop"]
    assert abs(flops["1024px_context77"] - 6.76) < 0.01
    assert flops["1024px_context77"] < flops["1024px_context334"] < 1.1 * flops["1024px_context77"]
    assert 2.25 < flops["1536px_context77"] / flops["1024px_context77"] < 3.0


@pytest.mark.slow
def test_tiny_benchmark_meters_unet_calls_and_one_image_encoding_for_all_concepts(tmp_path):
    """The GPU benchmark's --tiny mode end to end: its rows exist and its meters count what the pipeline does."""
    steps = 2
    run_script("--tiny", "--out", str(tmp_path), "--only", "detailer", "detector", "--detections", "2",
               "--steps", str(steps), "--repeats", "1")
    rows = {r["run"]: r for r in json.loads((tmp_path / "cuda_benchmark.json").read_text())["runs"]}
    assert set(rows) == {"detailer", "detailer_sequential_ksampler", "detailer+clip_vit", "detector_first_call_b1",
                         "detector_warm_b1", "detector_warm_b4"}
    # Two 512 px crops that overlap on the 1024² canvas, both sampled from the input: one batch of 2, cond and uncond
    # in one call per step.
    assert rows["detailer"]["unet_batches"] == {"4": steps}
    assert rows["detailer_sequential_ksampler"]["unet_batches"] == {"2": 2 * steps}
    # Anchored (raw tokens on this SD1.5-shaped model): 77 + 17 tokens, the negative padded with 17 zero tokens, so
    # cond and uncond still share one call per step.
    assert rows["detailer+clip_vit"]["unet_batches"] == {"4": steps}
    assert rows["detailer+clip_vit"]["context_lengths"] == [94]
    assert rows["detailer"]["unet_tflop"] > 0
    for name in ("detector_first_call_b1", "detector_warm_b1", "detector_warm_b4"):
        assert rows[name]["vision_calls"] == 1


@pytest.mark.slow
def test_global_refine_benchmark_meters_the_planned_area_and_one_sampler_call_per_tile():
    """benchmarks/global_refine.py on a small odd canvas: its sampled area is the planner's, one sampling call a tile."""
    from luna_semantic_detailer.pipeline.tiles import canvas_tiles

    width, height, tile, overlap, steps = 600, 520, 256, 64, 2
    done = subprocess.run([sys.executable, "benchmarks/global_refine.py", f"--canvas={width}x{height}", f"--tile={tile}",
                           f"--overlap={overlap}", f"--steps={steps}", "--max-batch", "1", "--warmup", "tile"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {cells[1]: cells for cells in (line.strip("|").split(" | ") for line in done.stdout.splitlines()[2:])}
    assert set(rows) == {"luna-fit", "luna-exact", "usdu-style"}
    for fit in ("fit", "exact"):
        tiles = canvas_tiles(width, height, tile, overlap, 8, fit)
        _, _, _, sampled_mp, calls, wall, _ = rows[f"luna-{fit}"]
        assert float(sampled_mp) == round(sum(t.width * t.height for t in tiles) / 1e6, 2)
        assert int(calls) == len(tiles)
        assert float(wall) > 0
    assert float(rows["luna-fit"][3]) <= float(rows["luna-exact"][3])
    assert int(rows["usdu-style"][4]) == 3 * 3


def test_fit_plans_cost_less_full_size_unet_work_than_exact_and_usdu_at_issue_21s_canvases():
    """benchmarks/global_refine.py --flops: SD1.5 and SDXL TFLOP of one forward a tile, fit below exact and USDU-style."""
    done = subprocess.run([sys.executable, "benchmarks/global_refine.py", "--flops"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {(cells[0], cells[1]): [float(v) for v in cells[2:]]
            for cells in (line.strip("| ").split(" | ") for line in done.stdout.splitlines()[2:])}
    for canvas in ("2048x1536", "3840x2160", "4096x4096"):
        fit, exact, usdu = (rows[canvas, v] for v in ("luna-fit", "luna-exact", "usdu-style"))
        for column in (2, 3):
            assert 0 < fit[column] < min(exact[column], usdu[column]), (canvas, fit, exact, usdu)


def test_the_sampler_benchmark_runs_each_sampler_through_both_nodes_and_reports_what_the_model_received(tmp_path):
    """benchmarks/samplers.py (scripts/device-check.sh samplers on a GPU), small on the CPU: every row a run."""
    run_script("--size", "128", "--samplers", "euler_ancestral,dpmpp_2m_sde", "--dtypes", "fp16", "--out", str(tmp_path),
               script="benchmarks/samplers.py")
    report = json.loads((tmp_path / "samplers.json").read_text())
    rows = report["rows"]
    assert [(r["sampler"], r["run"]) for r in rows] == [(s, run) for s in ("euler_ancestral", "dpmpp_2m_sde")
                                                      for run in ("refiner parallel", "refiner fused", "detailer")]
    for row in rows:
        assert "error" not in row and row["finite"] and row["output"] == "cpu float32 [1, 128, 128, 3]", row
        assert row["wall_s"] > 0 and row["peak_mib"] > 0 and row["model_inputs"], row
        assert all(int(side) % 2 == 0 for shape in row["model_inputs"] for side in shape.split("x")), row
