"""One progress bar over every sampler call of a node, with ComfyUI's latent previews."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Progress:
    """ComfyUI's ProgressBar over `total` region-steps (a step of a batch of n regions is n of them).

    Each sampler call takes a callback that moves the bar from where the finished calls left it; `advance` marks the
    call finished, so a call retried (a batch halved on out-of-memory) counts its steps once."""

    def __init__(self, total: int, model: Any = None):
        import comfy.utils
        import latent_preview

        self.total = max(1, total)
        self.done = 0
        self.bar = comfy.utils.ProgressBar(self.total)
        self.previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format) if model is not None else None

    def callback(self, regions: int = 1) -> Callable:
        """The sampler callback of the next call, on a batch of `regions`: advances the bar, previews the first item's x0."""
        offset = self.done

        def on_step(step: int, x0, x, total_steps: int) -> None:
            preview = self.previewer.decode_latent_to_preview_image("JPEG", x0[:1]) if self.previewer and x0 is not None else None
            self.bar.update_absolute(min(self.total, offset + (step + 1) * regions), self.total, preview)

        return on_step

    def advance(self, steps: int, regions: int = 1) -> None:
        """A call of `steps` steps on `regions` finished."""
        self.done += steps * regions
        self.bar.update_absolute(min(self.total, self.done), self.total)
