"""What the Luna nodes share: their category and the inputs several of them declare."""
from __future__ import annotations

CATEGORY = "Luna"


def sampler_inputs(denoise: float) -> dict:
    """The KSampler-style inputs shared by the detailer and the global refiner."""
    import comfy.samplers

    return {
        "steps": ("INT", {"default": 20, "min": 1, "max": 10000,
                          "tooltip": "Sampling steps (of the full schedule; denoise keeps the last part)."}),
        "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                          "tooltip": "Classifier-free guidance scale."}),
        "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"tooltip": (
            "Any of ComfyUI's samplers; ancestral and SDE ones take their per-step noise from the canvas's noise "
            "field (see the node's help).")}),
        "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "karras", "tooltip": "The sigma schedule."}),
        "denoise": ("FLOAT", {"default": denoise, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
            "How much to repaint: 0 keeps the input (VAE round trip only), 1 repaints from the noise alone.")}),
    }


def anchoring_inputs() -> dict:
    """The optional anchoring inputs: the mode, the CLIP-ViT and the style model."""
    from ..pipeline.anchoring import ANCHORINGS

    return {
        "anchoring": (list(ANCHORINGS), {"default": "auto", "tooltip": (
            "How each crop/tile's own image (through clip_vision) anchors it. auto: the style model if connected, "
            "else ReVision, else raw tokens; see the node's help.")}),
        "clip_vision": ("CLIP_VISION", {"tooltip": (
            "CLIP-ViT (CLIPVisionLoader) that encodes each crop/tile for anchoring: ViT-bigG (clip_vision_g) for SDXL "
            "ReVision, SigLIP for Flux Redux.")}),
        "style_model": ("STYLE_MODEL", {"tooltip": (
            "Optional style model (StyleModelLoader: Flux Redux, SD1 T2I style adapter): each crop's style tokens are "
            "appended to the prompt.")}),
    }


def vision_strength_input() -> dict:
    return {"vision_strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 2.0, "step": 0.05, "tooltip": (
        "Strength of the anchoring (ReVision: scale of the image embedding; style model and raw tokens: scale of the "
        "appended tokens); 0 turns it off.")})}


def image_index_input(what: str) -> dict:
    """The `image_index` input: which image of the canvas batch `what` refers to."""
    return {"image_index": ("INT", {"default": 0, "min": 0, "max": 4095,
                                    "tooltip": f"Which image of the canvas batch {what}."})}


def max_batch_input() -> dict:
    return {"max_batch": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": (
        "Most crops/tiles sampled in one call; also bounded by free memory, and halved on out-of-memory. Batching "
        "pays on a GPU; on a CPU 1–2 is as fast.")})}


def shard_inputs(what: str, needs: str = "") -> dict:
    """The optional shard inputs (issue 30): which share of the `what` this run samples, for ComfyUI-Distributed;
    `needs` (tooltip text): what else sharding asks of the node's inputs."""
    return {
        "shard_index": ("INT", {"default": 0, "min": 0, "max": 63, "tooltip": (
            f"Which share of the {what} this machine samples (0 = all of them when shard_count is 1). "
            "ComfyUI-Distributed: connect DistributedSeed, seed 0."), }),
        "shard_count": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": (
            f"Shares to split the {what} into: 1 + the number of workers. Above 1 the image output is this shard's "
            f"{what}, for Luna Shard Merge{needs}.")}),
    }


COLOR_MATCHES = ("off", "low-frequency")


def color_match_input() -> dict:
    """The optional colour match of each refined crop/tile to the input's low frequencies."""
    return {"color_match": (list(COLOR_MATCHES), {"default": "off", "tooltip": (
        "low-frequency: each refined crop/tile keeps its detail but takes the input's local colour and tone, so none "
        "can shift colour. off: the sampler's colours.")})}
