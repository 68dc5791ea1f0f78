"""The sampler table of README.md: every sampler ComfyUI offers, how the refiner and the detailer run it.

Each row is what tests/test_devices.py runs (every sampler through the refiner, parallel and fused, and the detailer,
on a simulated GPU, equal to the CPU run) and tests/test_step_noise.py checks (each region its own per-step noise,
batching changes nothing). `python scripts/build_sampler_table.py` writes render() between the README's markers;
tests/test_devices.py checks that every sampler of the host it runs on has its row there.
"""
from __future__ import annotations

from readme_tables import replaced, section

README_START = "<!-- sampler-table:start (python scripts/build_sampler_table.py) -->"
README_END = "<!-- sampler-table:end -->"


def row(name: str) -> str:
    """The README row of sampler `name` on this host."""
    from luna_semantic_detailer.pipeline.batching import BATCH_COUPLED_SAMPLERS
    from luna_semantic_detailer.pipeline.step_noise import noise_use

    use = noise_use(name)
    kinds = ["Brownian increments" if use.brownian else "a draw per step"] if use.per_step else []
    noise = ", ".join(kinds + (["masked re-noise"] if use.renoise else [])) or "none"
    fused = "✓ (the canvas's uncond, assembled from the tiles')" if name.endswith("_cfg_pp") else "✓"
    batch = "one region per call (its step size follows the whole batch)" if name in BATCH_COUPLED_SAMPLERS else "batched"
    return f"| `{name}` | {noise} | ✓ | {fused} | {batch} |"


def render(samplers: list[str]) -> str:
    """The README section for `samplers` (the host's KSampler.SAMPLERS)."""
    lines = ["| sampler | its extra noise (from the canvas's noise field) | refiner parallel / chess, detailer | "
             "refiner fused | batches |", "|---|---|---|---|---|"]
    return "\n".join(lines + [row(name) for name in samplers])


def readme_rows(readme: str) -> dict[str, str]:
    """{sampler: its row} of the README's table."""
    rows = section(readme, README_START, README_END).splitlines()[2:]
    return {line.split("`")[1]: line for line in rows if line.startswith("| `")}


def with_section(readme: str, samplers: list[str]) -> str:
    return replaced(readme, README_START, README_END, render(samplers))
