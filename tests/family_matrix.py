"""The family x node table: what tests/test_families.py asserts for each cell, rendered into README.md.

Every cell is either WORKS (the test runs it and checks the column's invariants) or a refusal (the test asserts the
exact message). `python scripts/build_family_table.py` writes `render()` between the README's markers and
tests/test_families.py checks that the README is current.
"""
from __future__ import annotations

from dataclasses import dataclass

from readme_tables import replaced, section

WORKS = "works"
README_START = "<!-- family-table:start (python scripts/build_family_table.py) -->"
README_END = "<!-- family-table:end -->"


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    checks: str  # what the test asserts when the cell works
    refused: str = ""  # why every family is refused, for a column that refuses


COLUMNS: tuple[Column, ...] = (
    Column("scaffold", "LunaNoiseScaffold",
           "the scaffold's channels and ÷factor are read from the family's VAE and MODEL, and `latent_format` names the family"),
    Column("draft", "draft: LunaScaffoldNoise + SamplerCustomAdvanced",
           "a batch of two from the family's empty latent: the model's first input is σ_max × the scaffold downscaled "
           "(variance-preserving) to the draft, for each image"),
    Column("detailer", "LunaSAM3Detailer",
           "each crop starts from its exact scaffold slice under the family's noise scaling (σ·n + (1−σ)·z at the model's "
           "first call); max_batch 1 and 2 give the same canvas; a whole-canvas mask at denoise 0 is the VAE round trip"),
    Column("refiner", "LunaGlobalRefiner (parallel)",
           "the same three invariants per tile (tile = canvas for the round trip)"),
    Column("fused", "LunaGlobalRefiner (fused)",
           "the canvas latent starts from the scaffold itself; each tile's first model input is its cut of "
           "σ·scaffold + (1−σ)·z; max_batch invariance; denoise 0 is the VAE round trip"),
    Column("style", "anchoring: style model",
           "each tile's own style tokens follow the prompt in its conditioning (a token mask, as Z-Image's, extended); "
           "max_batch 1 and 4 give the same canvas"),
    Column("revision", "anchoring: revision", "",
           refused="ReVision feeds the image embedding through the ADM input that only SDXL and SD2.1-unCLIP have"),
    Column("wrong_scaffold", "a scaffold of another family", "",
           refused="the scaffold's channels or ÷factor are not the MODEL's: connect the family's VAE to LunaNoiseScaffold"),
)


@dataclass(frozen=True)
class Row:
    family: str  # tests/fixtures/lsd_test_models/families.py key
    name: str
    comfy: str  # comfy.supported_models class


ROWS: tuple[Row, ...] = (
    Row("flux", "Flux.1 [dev] (guidance embedded, cfg 1)", "Flux"),
    Row("flux-schnell", "Flux.1 [schnell]", "FluxSchnell"),
    Row("flux2", "Flux.2 (128 ch ÷16)", "Flux2"),
    Row("z-image", "Z-Image (Turbo)", "ZImage"),
    Row("qwen-image", "Qwen-Image (video VAE, 5-D latents)", "QwenImage"),
    Row("sd3", "SD3 / SD3.5", "SD3"),
    Row("chroma", "Chroma", "Chroma"),
)


def outcome(column: str) -> str:
    """WORKS, or why the column's cells are refused (no family is refused alone: every family works where SD does)."""
    found = next(c for c in COLUMNS if c.key == column)
    return found.refused or WORKS


def render() -> str:
    """The README section: the table, then what each column asserts."""
    refused = [c for c in COLUMNS if c.refused]
    marks = {c.key: f"refused {'¹²³⁴⁵'[i]}" for i, c in enumerate(refused)}
    lines = ["| family | ComfyUI class | " + " | ".join(c.header for c in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for row in ROWS:
        cells = ["✓" if outcome(c.key) == WORKS else marks[c.key] for c in COLUMNS]
        lines.append(f"| {row.name} | `{row.comfy}` | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- **{c.header}** ✓: {c.checks}." for c in COLUMNS if not c.refused]
    lines += [f"- {marks[c.key]} **{c.header}**: {c.refused} (the test asserts the message)." for c in refused]
    return "\n".join(lines)


def readme_section(readme: str) -> str:
    """The text between the README's markers."""
    return section(readme, README_START, README_END)


def with_section(readme: str) -> str:
    """`readme` with the table between its markers replaced by render()."""
    return replaced(readme, README_START, README_END, render())
