"""What a node run refines with: the sampler settings, the VAE, the prompts, the anchoring and the batch bound."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..luna_types import Conditioning
from .anchoring import Anchor
from .fingerprint import LOCAL
from .sampling import SamplerSettings, model_patch


@dataclass(frozen=True, kw_only=True)
class RefineJob:
    """Everything a batch of regions needs besides its pixels; `label_positive`: the positive of each label that has
    its own prompt. `max_batch` is each machine's own (no result depends on it)."""

    sampler: SamplerSettings
    vae: Any = field(metadata=LOCAL)
    positive: Conditioning = field(metadata=LOCAL)
    negative: Conditioning = field(metadata=LOCAL)
    factor: int
    max_batch: int = field(metadata=LOCAL)
    anchor: Anchor | None = None
    label_positive: Mapping[str, Conditioning] = field(default_factory=dict, metadata=LOCAL)
    color_match: bool = False

    @property
    def patch(self) -> int:
        """The model's patch side in latent cells: every region it samples is a whole number of patches."""
        return model_patch(self.sampler.model)
