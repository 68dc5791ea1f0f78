"""One progress bar over every sampler call of a node, with ComfyUI's latent previews."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Progress:
    """ComfyUI's ProgressBar over `total` sampler steps; each sampler call takes a callback for its own steps."""

    def __init__(self, total: int, model: Any = None):
        import comfy.utils
        import latent_preview

        self.total = max(1, total)
        self.done = 0
        self.bar = comfy.utils.ProgressBar(self.total)
        self.previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format) if model is not None else None

    def callback(self, steps: int) -> Callable:
        """The sampler callback of the next call of `steps` steps: advances the bar, previews the first item's x0."""
        offset = self.done
        self.done += steps

        def on_step(step: int, x0, x, total_steps: int) -> None:
            preview = self.previewer.decode_latent_to_preview_image("JPEG", x0[:1]) if self.previewer and x0 is not None else None
            self.bar.update_absolute(min(self.total, offset + step + 1), self.total, preview)

        return on_step
