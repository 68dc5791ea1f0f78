"""ComfyUI VAE calls for batches of regions and for whole canvases."""
from __future__ import annotations

from typing import Any

import torch


def check_pixels(vae: Any, pixels: torch.Tensor) -> None:
    """Refuse pixels [B, H, W, 3] that are not on the VAE's latent grid (ComfyUI would centre-crop them silently)."""
    factor = vae.spacial_compression_encode()
    if pixels.ndim != 4 or pixels.shape[-1] < 3:
        raise ValueError(f"pixels must be [B, H, W, 3], got {tuple(pixels.shape)}")
    if pixels.shape[1] % factor or pixels.shape[2] % factor:
        raise ValueError(
            f"pixels {pixels.shape[2]}x{pixels.shape[1]} are not multiples of the VAE's factor {factor}: "
            "ComfyUI would silently centre-crop them; snap the crop to the latent grid"
        )


def _image_latent(latent: torch.Tensor) -> torch.Tensor:
    """A video VAE's latent of still images, [B, C, 1, h, w], as the image latent [B, C, h, w] the pipeline works in."""
    if latent.ndim == 5:
        if latent.shape[2] != 1:
            raise ValueError(f"a still image encoded to {latent.shape[2]} latent frames; expected 1")
        return latent[:, :, 0]
    return latent


def _pixels(images: torch.Tensor) -> torch.Tensor:
    """Decoded frames [B, T, H, W, 3] of a video VAE as images [B*T, H, W, 3] (as ComfyUI's VAEDecode does)."""
    return images.reshape(-1, *images.shape[-3:]) if images.ndim == 5 else images


def _video_latents(vae: Any) -> bool:
    """The VAE's latents are [B, C, T, h, w] (Wan, Qwen-Image)."""
    return getattr(vae, "latent_dim", 2) == 3


def _vae_latent(vae: Any, latent: torch.Tensor) -> torch.Tensor:
    return latent.unsqueeze(2) if _video_latents(vae) else latent


def _frames_are_batch(vae: Any) -> bool:
    """A video VAE reads a 4-D pixel batch [B, H, W, 3] as the frames of one clip (ComfyUI's VAE.encode)."""
    return _video_latents(vae) and not getattr(vae, "not_video", False)


def _each_image(vae: Any, call, pixels: torch.Tensor) -> torch.Tensor:
    """`call` (an encode of `vae`) over the batch in one call, or per image where a video VAE would read it as frames."""
    if pixels.shape[0] > 1 and _frames_are_batch(vae):
        return torch.cat([_image_latent(call(image[None])) for image in pixels])
    return _image_latent(call(pixels))


def encode(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """ComfyUI VAE.encode of the batch: pixels [B, H, W, 3] in 0..1 -> raw latent [B, C, H/f, W/f] (a video VAE's
    single latent frame per image, one call per image)."""
    check_pixels(vae, pixels)
    with torch.no_grad():
        return _each_image(vae, vae.encode, pixels[..., :3])


def decode(vae: Any, latent: torch.Tensor) -> torch.Tensor:
    """One ComfyUI VAE.decode call for the batch: raw latent [B, C, h, w] -> pixels [B, h*f, w*f, 3] in 0..1."""
    if latent.ndim != 4:
        raise ValueError(f"latent must be [B, C, h, w], got {tuple(latent.shape)}")
    with torch.no_grad():
        return _pixels(vae.decode(_vae_latent(vae, latent)))


def _fits(vae: Any, memory: float) -> bool:
    import comfy.model_management as mm

    return memory <= mm.get_free_memory(vae.device)


def _tiled(call, *args) -> torch.Tensor:
    """A ComfyUI tiled VAE call, which needs inference mode (comfy.utils.tiled_scale returns inference tensors)."""
    if torch.is_inference_mode_enabled():
        return call(*args)
    with torch.inference_mode():
        out = call(*args)
    return out.clone()


def encode_canvas(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """A whole canvas [B, H, W, 3] to its latent: VAE.encode when it fits in memory, else ComfyUI's tiled encode."""
    check_pixels(vae, pixels)
    shape = pixels.movedim(-1, 1).shape
    if _video_latents(vae):
        shape = (shape[0], shape[1], 1, *shape[2:])
    if _fits(vae, vae.memory_used_encode(shape, vae.vae_dtype)):
        return encode(vae, pixels)
    return _tiled(lambda p: _each_image(vae, vae.encode_tiled, p), pixels[..., :3])


def decode_canvas(vae: Any, latent: torch.Tensor) -> torch.Tensor:
    """A whole canvas latent [B, C, h, w] to pixels: VAE.decode when it fits in memory, else ComfyUI's tiled decode."""
    if _fits(vae, vae.memory_used_decode(_vae_latent(vae, latent).shape, vae.vae_dtype)):
        return decode(vae, latent)
    return _pixels(_tiled(vae.decode_tiled, _vae_latent(vae, latent)))


def temporal_compression(vae: Any) -> int:
    """Frames per latent frame of a video VAE (after the first: 1 + k * c frames make 1 + k latent frames), 1 otherwise."""
    compression = vae.temporal_compression_decode() if hasattr(vae, "temporal_compression_decode") else None
    return int(compression) if compression else 1


def clip_length(vae: Any, frames: int) -> int:
    """The frame count the VAE takes whole for a clip of `frames`: 1 + k * compression, the least not below it."""
    c = temporal_compression(vae)
    return 1 + -(-(frames - 1) // c) * c


def encode_clip(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """One clip [T, H, W, 3] in 0..1 (T a length the VAE takes whole, clip_length) -> raw latent [1, C, T', H/f, W/f]."""
    check_pixels(vae, pixels)
    if not _frames_are_batch(vae):
        raise ValueError("the VAE is not a video VAE (its latents have no time axis): connect the video model's own VAE "
                         "(e.g. Wan's), or sample the clip frame by frame with an image model")
    if pixels.shape[0] != clip_length(vae, pixels.shape[0]):
        raise ValueError(f"a clip of {pixels.shape[0]} frames is not 1 + k * {temporal_compression(vae)}: pad it "
                         "(pipeline.vae.clip_length)")
    with torch.no_grad():
        return vae.encode(pixels[..., :3])


def decode_clip(vae: Any, latent: torch.Tensor) -> torch.Tensor:
    """A clip latent [1, C, T', h, w] -> its frames [T, h*f, w*f, 3] in 0..1."""
    if latent.ndim != 5 or latent.shape[0] != 1:
        raise ValueError(f"a clip latent must be [1, C, T, h, w], got {tuple(latent.shape)}")
    with torch.no_grad():
        return _pixels(vae.decode(latent))
