"""CONDITIONING per region: every spatial part cut to the region as ComfyUI would have applied it to the whole canvas.

ComfyUI resizes a conditioning's spatial inputs to the latent it samples. Sampling a 1024 px tile of a 4K canvas, it
would squeeze the whole canvas's ControlNet hint, mask or inpaint latent into the tile. Here each spatial input is
brought to the canvas first exactly as ComfyUI brings it to a latent (same resize, same algorithm), then the region's
rectangle is cut out (and resized with the region when the region is sampled smaller), so every tile and crop sees
its own part:

- `area` (ConditioningSetArea, ...Percentage): intersected with the region, in its cells; dropped where it misses.
- `mask` (ConditioningSetMask): cut per region; `set_area_to_bounds` resolved to the bounds of the region's part.
- `control` (ControlNet, T2I-Adapter, Control-LoRA, chained): one copy of the chain per batch, whose hints (and
  extra concat inputs) are the stacked cuts of the batch's regions; strength and start/end percent are kept.
- `concat_latent_image`, `concat_mask` (InpaintModelConditioning): cut per region.
- `reference_latents` (ReferenceLatent: Flux Kontext, Flux.2, Qwen edit) of the canvas's aspect: cut per region.
Keys that do not depend on where a region is (pooled output, guidance, unCLIP, timestep ranges, hooks, ...) pass
as they are. Any other key is refused by name: a conditioning the pack cannot cut is never silently squeezed.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..luna_types import Conditioning

Box = tuple[int, int, int, int]

GLOBAL_KEYS = frozenset({
    "pooled_output", "guidance", "unclip_conditioning", "noise_augmentation", "clip_vision_output", "hooks",
    "start_percent", "end_percent", "timestep_start", "timestep_end", "strength", "mask_strength",
    "control_apply_to_uncond", "width", "height", "crop_w", "crop_h", "target_width", "target_height",
    "aesthetic_score", "attention_mask", "attention_mask_img_shape", "reference_latents_method", "prompt_type",
    "model_conds", "uuid", "lora_hook", "default",
})
SPATIAL_KEYS = frozenset({"area", "set_area_to_bounds", "mask", "control", "concat_latent_image", "concat_mask",
                          "reference_latents"})


@dataclass(frozen=True)
class Place:
    """Where a region sits: canvas image `image`, latent `box` (x, y, w, h) on a canvas latent of (h, w) `canvas`
    cells, sampled at (h, w) `sample_cells`."""

    image: int
    box: Box
    sample_cells: tuple[int, int]
    canvas: tuple[int, int]


@dataclass(frozen=True)
class ControlCut:
    """A region's share of a ControlNet chain: the chain (top first) and where the region sits."""

    chain: tuple
    place: Place


def _upscale(tensor: torch.Tensor, height: int, width: int, method: str, crop: str) -> torch.Tensor:
    import comfy.utils

    if tuple(tensor.shape[-2:]) == (height, width):
        return tensor
    return comfy.utils.common_upscale(tensor, width, height, method, crop)


def _cut(tensor: torch.Tensor, place: Place, scale: int, method: str, crop: str) -> torch.Tensor:
    """The region's part [1, C, h_s*scale, w_s*scale] of a canvas tensor [B, C, H, W] brought to the canvas latent x scale."""
    item = tensor[place.image:place.image + 1] if tensor.shape[0] > 1 else tensor[:1]
    canvas = _upscale(item.float(), place.canvas[0] * scale, place.canvas[1] * scale, method, crop)
    x, y, w, h = (v * scale for v in place.box)
    part = canvas[..., y:y + h, x:x + w]
    return _upscale(part, place.sample_cells[0] * scale, place.sample_cells[1] * scale, method, "disabled")


def _area(area: tuple, place: Place) -> tuple[int, int, int, int] | None | bool:
    """A ComfyUI area (h, w, y, x cells, or ("percentage", h, w, y, x)) in the region's sampled cells: None where the
    area misses the region, True where it covers the whole region (then it is no restriction)."""
    if area[0] == "percentage":
        fractions = area[1:]
        area = (max(1, round(fractions[0] * place.canvas[0])), max(1, round(fractions[1] * place.canvas[1])),
                round(fractions[2] * place.canvas[0]), round(fractions[3] * place.canvas[1]))
    if len(area) != 4:
        raise ValueError(f"a conditioning area {area!r} is not 2-D (h, w, y, x): the refiner and detailer cut image areas only")
    h, w, y, x = (int(v) for v in area)
    bx, by, bw, bh = place.box
    x0, y0, x1, y1 = max(x, bx), max(y, by), min(x + w, bx + bw), min(y + h, by + bh)
    if x1 <= x0 or y1 <= y0:
        return None
    if (x0, y0, x1, y1) == (bx, by, bx + bw, by + bh):
        return True
    sy, sx = place.sample_cells[0] / bh, place.sample_cells[1] / bw
    top, left = math.floor((y0 - by) * sy), math.floor((x0 - bx) * sx)
    return (max(1, math.ceil((y1 - by) * sy) - top), max(1, math.ceil((x1 - bx) * sx) - left), top, left)


def _mask_bounds(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """ComfyUI's set_area_to_bounds on one region's mask [1, h, w]: (h, w, y, x) of its nonzero box, at least 8 x 8."""
    rows, cols = mask[0].abs().amax(dim=1) > 0, mask[0].abs().amax(dim=0) > 0
    y0, y1 = int(rows.nonzero()[0]), int(rows.nonzero()[-1])
    x0, x1 = int(cols.nonzero()[0]), int(cols.nonzero()[-1])
    return max(8, y1 - y0 + 1), max(8, x1 - x0 + 1), y0, x0


def _chain(control) -> tuple:
    links = []
    while control is not None:
        links.append(control)
        control = control.previous_controlnet
    return tuple(links)


def _entry(cond: torch.Tensor, options: dict, place: Place, name: str) -> list | None:
    unknown = sorted(k for k in options if k not in GLOBAL_KEYS and k not in SPATIAL_KEYS)
    if unknown:
        raise ValueError(
            f"{name} conditioning carries {', '.join(map(repr, unknown))}, which the Luna refiner/detailer cannot cut "
            "per tile or crop, so it refuses rather than squeeze it into every region. Supported per region: area, "
            "mask, ControlNet / T2I-Adapter hints, inpaint concat latents and masks, reference latents; remove the "
            "node that adds it, or refine without tiles."
        )
    out = dict(options)
    if "area" in out:
        area = _area(tuple(out["area"]), place)
        if area is None:
            return None
        if area is True:
            del out["area"]
        else:
            out["area"] = area
    if "mask" in out:
        mask = out["mask"]
        mask = mask[:, None] if mask.ndim == 3 else mask[None, None] if mask.ndim == 2 else mask
        cut = _cut(mask, place, 1, "bilinear", "none")[:, 0]
        if not torch.any(cut != 0):
            return None
        out["mask"] = cut
        if out.get("set_area_to_bounds", False):
            out["area"] = _mask_bounds(cut)
    out.pop("set_area_to_bounds", None)
    if "control" in out:
        out["control"] = ControlCut(_chain(out["control"]), place)
    if "concat_latent_image" in out:
        out["concat_latent_image"] = _cut(out["concat_latent_image"], place, 1, "bilinear", "center")
    if "concat_mask" in out:
        mask = out["concat_mask"]
        mask = mask.reshape((-1, 1) + tuple(mask.shape[-2:]))
        out["concat_mask"] = _cut(mask, place, 1, "bilinear", "center")
    if "reference_latents" in out:
        out["reference_latents"] = [_reference(latent, place, name) for latent in out["reference_latents"]]
    return [cond, out]


def _reference(latent: torch.Tensor, place: Place, name: str) -> torch.Tensor:
    h, w = latent.shape[-2:]
    ch, cw = place.canvas
    if abs(h * cw - w * ch) > max(ch, cw):
        raise ValueError(
            f"{name} conditioning has a reference latent of {w}x{h} cells, another aspect than the canvas "
            f"({cw}x{ch}): only a reference of the canvas itself can be cut per tile or crop (ReferenceLatent of the "
            "canvas image); refine this one without tiles"
        )
    return _cut(latent, place, 1, "bilinear", "center")


def for_region(conditioning: Conditioning, place: Place, name: str) -> Conditioning:
    """The entries of `conditioning` as they apply to the region at `place`: spatial parts cut, entries missing it dropped."""
    out = []
    for cond, options in conditioning:
        entry = _entry(cond, options, place, name)
        if entry is not None:
            out.append(entry)
    return out


def signature(conditioning: Conditioning) -> tuple:
    """What must be equal for regions' conditionings to share one sampler call (stack): structure, shapes, settings."""
    parts = []
    for cond, options in conditioning:
        items = []
        for key in sorted(options):
            value = options[key]
            if isinstance(value, torch.Tensor):
                items.append((key, tuple(value.shape[1:])))
            elif isinstance(value, ControlCut):
                items.append((key, tuple(map(id, value.chain)), value.place.sample_cells))
            elif key == "reference_latents":
                items.append((key, tuple(tuple(v.shape[1:]) for v in value)))
            else:
                items.append((key, id(value) if not isinstance(value, (int, float, str, bool, tuple, type(None))) else value))
        parts.append((tuple(cond.shape[1:]), tuple(items)))
    return tuple(parts)


def _stack_tensors(values: Sequence[torch.Tensor]) -> torch.Tensor:
    return values[0] if all(v is values[0] for v in values) else torch.cat(list(values))


class ControlCopies:
    """The ControlNet copies of one node run: per batch one copy of each chain, its hints the stacked cuts of the
    batch's regions (positive and negative share it where they share the chain, as ControlNetApplyAdvanced makes them,
    so cond and uncond still run in one UNet call). ComfyUI builds a Control-LoRA's network in every copy's pre_run;
    here it is built once per run and shared by the copies, and `release` frees it at the end of the run."""

    def __init__(self):
        self._batch: dict[tuple, Any] = {}
        self._networks: dict[tuple, Any] = {}
        self._shared: list = []

    def new_batch(self) -> None:
        """Start the conditioning of another batch: its chains get copies of their own."""
        self._batch = {}

    def copy_for(self, cuts: Sequence[ControlCut]) -> Any:
        """The batch's copy of the cuts' chain (top first)."""
        key = tuple(map(id, cuts[0].chain))
        if key not in self._batch:
            self._batch[key] = self._stack(cuts)
        return self._batch[key]

    def _stack(self, cuts: Sequence[ControlCut]):
        top = None
        for depth in reversed(range(len(cuts[0].chain))):
            link = cuts[0].chain[depth]
            scale = link.compression_ratio * (link.vae.spacial_compression_encode() if link.vae is not None else 1)
            copy = link.copy()
            copy.cond_hint_original = torch.cat([_cut(link.cond_hint_original, c.place, scale, link.upscale_algorithm,
                                                      "center") for c in cuts])
            copy.extra_concat_orig = [
                extra if tuple(extra.shape[-2:]) == (1, 1) else
                torch.cat([_cut(extra, c.place, scale, link.upscale_algorithm, "center") for c in cuts])
                for extra in link.extra_concat_orig
            ]
            copy.set_previous_controlnet(top)
            self._share_network(copy, link)
            top = copy
        return top

    def _share_network(self, copy, original) -> None:
        import comfy.controlnet

        if not isinstance(copy, comfy.controlnet.ControlLora):
            return
        parent = super(comfy.controlnet.ControlLora, copy)

        def pre_run(model, percent_to_timestep_function):
            # The network holds the diffusion model's own weights: rebuilt when ComfyUI has moved them.
            weight = next(model.diffusion_model.parameters())
            key = (id(original), weight.device, weight.data_ptr())
            if key in self._networks:
                parent.pre_run(model, percent_to_timestep_function)
                copy.control_model, copy.manual_cast_dtype = self._networks[key]
            else:
                self._networks = {k: v for k, v in self._networks.items() if k[0] != key[0]}
                comfy.controlnet.ControlLora.pre_run(copy, model, percent_to_timestep_function)
                self._networks[key] = copy.control_model, copy.manual_cast_dtype

        copy.pre_run, copy.cleanup = pre_run, parent.cleanup
        self._shared.append(copy)

    def release(self) -> None:
        """Free the networks built for the run."""
        for copy in self._shared:
            copy.control_model = None
        self._shared.clear()
        self._networks.clear()
        self._batch = {}


def stack(regions: Sequence[Conditioning], controls: ControlCopies | None = None) -> Conditioning:
    """The batch conditioning of regions with one `signature`: per-region tensors stacked in order, shared ones kept;
    ControlNet chains copied by `controls` (the run's; a new one when None)."""
    controls = ControlCopies() if controls is None else controls
    if len({signature(c) for c in regions}) != 1:
        raise ValueError("regions whose conditionings differ in structure cannot share a sampler call")
    out = []
    for entries in zip(*regions):
        conds = [cond for cond, _ in entries]
        options = {}
        for key, value in entries[0][1].items():
            values = [e[1][key] for e in entries]
            if isinstance(value, torch.Tensor):
                options[key] = _stack_tensors(values)
            elif isinstance(value, ControlCut):
                options[key] = controls.copy_for(values)
            elif key == "reference_latents":
                options[key] = [_stack_tensors(list(parts)) for parts in zip(*values)]
            else:
                options[key] = value
        out.append([_stack_tensors(conds), options])
    return out


def with_tokens(cond: torch.Tensor, options: dict, tokens: torch.Tensor, tokens_mask: torch.Tensor | None = None) -> list:
    """A conditioning entry [cond [B, L, D], options] with `tokens` [B, T, D] after its text (as ConditioningConcat),
    a text encoder's token mask [B, L] (Z-Image, Qwen-Image) extended by `tokens_mask` [B, T] (default: attend all)."""
    options = dict(options)
    mask = options.get("attention_mask")
    if isinstance(mask, torch.Tensor):
        if mask.ndim != 2 or mask.shape != cond.shape[:2]:
            raise ValueError(
                f"the conditioning carries an attention mask of shape {list(mask.shape)} for {cond.shape[1]} text tokens "
                "(StyleModelApply with strength_type attn_bias makes one): no tokens can be added after it; use "
                "StyleModelApply's strength_type multiply, or set anchoring to off and leave label_prompt_mode at replace")
        added = torch.ones(mask.shape[0], tokens.shape[1], dtype=mask.dtype, device=mask.device) if tokens_mask is None \
            else tokens_mask.to(mask).expand(mask.shape[0], -1)
        options["attention_mask"] = torch.cat([mask, added], dim=1)
    return [torch.cat([cond, tokens.to(cond)], dim=1), options]
