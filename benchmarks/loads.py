"""Model loads and builds per node run (issue 28): the runs of tests/test_loads.py, counted.

For each node run (6 detections or a 256 x 384 canvas in 128 px tiles, max_batch 2 on a 24 GiB device, style-model
anchoring, a Control-LoRA on both prompts): sampler calls, CLIP-vision encoder calls, style-model calls and
Control-LoRA network builds, and how many encoder calls come after the first sampler call (each of those reloads the
encoder on a GPU where sampling evicted it).

Run from the repository root: `.venv/bin/python benchmarks/loads.py` (prints a Markdown table).
"""
from __future__ import annotations

from harness import setup


def main() -> None:
    setup()
    import torch

    from fixtures.control_models import tiny_control_lora
    from fixtures.run_events import gpu_memory, recorded_events
    from pipeline_helpers import smooth_canvas
    from load_runs import RUNS, controlled

    tiny_control_lora()
    print("| run | sampler calls | encoder calls | after the first sampler call | style-model calls | Control-LoRA builds |")
    print("|---|---|---|---|---|---|")
    for name, run in RUNS.items():
        image = smooth_canvas(1, 256, 384, seed=3)
        positive, negative = controlled(torch.rand(1, 3, 256, 384, generator=torch.Generator().manual_seed(2)))
        with gpu_memory(24), recorded_events() as events:
            run(image, positive, negative)
        first = events.index("sample")
        print(f"| {name} | {events.count('sample')} | {events.count('encode')} | {events[first:].count('encode')} | "
              f"{events.count('style')} | {events.count('build')} |")


if __name__ == "__main__":
    main()
