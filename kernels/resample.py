"""Variance-preserving downscaling of white noise by any ratio: exact integral (Brownian-bridge) noise."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .. import validation


def _axis_plan(n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First output cell a_p (int64 [n]) of each source cell and the exact fraction f_p (float64 [n]) it keeps there."""
    p = torch.arange(n, dtype=torch.int64)
    a = p * m // n
    f = (torch.minimum((p + 1) * m, (a + 1) * n) - p * m).to(torch.float64) / m
    return a, f


def _assignment(a: torch.Tensor, m: int) -> torch.Tensor:
    """0/1 matrix [m, 2n]: column p sends to a_p, column n + p to a_p + 1 (clamped; its weight is 0 there)."""
    n = a.numel()
    cols = torch.arange(n)
    matrix = torch.zeros(m, 2 * n, dtype=torch.float64)
    matrix[a, cols] = 1.0
    matrix[torch.clamp(a + 1, max=m - 1), n + cols] = 1.0
    return matrix


def _check_size(noise: torch.Tensor, size: tuple[int, int]) -> tuple[int, int]:
    if noise.dim() != 4 or not noise.is_floating_point():
        raise ValueError(f"noise must be a floating [B, C, h, w] tensor, got {noise.dtype} {tuple(noise.shape)}")
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(f"size must be (out_h, out_w) of positive ints, got {size!r}")
    out_h, out_w = size
    in_h, in_w = noise.shape[-2:]
    if out_h > in_h or out_w > in_w:
        raise ValueError(
            f"cannot upscale noise from {in_h}x{in_w} to {out_h}x{out_w}: upscaled noise is no longer white "
            "(neighbouring cells would be correlated); draw fresh noise at the larger size instead"
        )
    return out_h, out_w


def bridge_shape(noise: torch.Tensor) -> tuple[int, int, int, int]:
    """Shape of the bridge noise z that `integral_downscale` takes for `noise`: [B, C, 2h, 2w]."""
    b, c, h, w = noise.shape
    return b, c, 2 * h, 2 * w


def integral_downscale(noise: torch.Tensor, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Downscale `noise` [B, C, h, w] to `size` with explicit standard-normal bridge noise z [B, C, 2h, 2w].

    z[..., dy*h + py, dx*w + px] is the bridge draw of source cell (py, px) towards output (a_py + dy, a_px + dx).
    The result is linear in (noise, z); with z ~ N(0, I) independent of white noise it is exactly white.

    Per axis, N input cells shrink to M <= N output cells; in integer units source cell p covers [p*M, (p+1)*M)
    and output cell j covers [j*N, (j+1)*N), so a source cell overlaps at most two output cells, a_p = p*M // N
    and a_p + 1, with exact fractions f_p and 1 - f_p. In 2-D a source cell x_p with overlap weights w_k
    (the four (dy, dx) neighbours, sum 1) sends w_k * x_p + b_pk to output cell k, where
    b_p = sqrt(w) * z - w * sum_k(sqrt(w_k) * z_k): the continuum limit of splitting the cell into k x k
    sub-pixels conditioned on their mean (Chang et al., ICLR 2024, "How I Warped Your Noise"), Cov(b_p) =
    diag(w) - w w^T. Cov(w x_p + b_p) = diag(w), so every output sums rh*rw independent unit-area pieces and
    dividing by sqrt(rh*rw) makes the outputs exactly iid N(0, 1). For integer ratios w is 0/1 and b = 0:
    `F.interpolate(noise, size, mode="area") * sqrt(rh*rw)`. The scatter is two matmuls with 0/1 assignment
    matrices (no scatter_add), so it is deterministic on CUDA too.
    """
    out_h, out_w = _check_size(noise, size)
    in_h, in_w = noise.shape[-2:]
    if tuple(z.shape) != bridge_shape(noise):
        raise ValueError(f"z must have shape {bridge_shape(noise)}, got {tuple(z.shape)}")
    dtype = torch.float64 if noise.dtype == torch.float64 else torch.float32
    device = noise.device
    a_y, f_y = _axis_plan(in_h, out_h)
    a_x, f_x = _axis_plan(in_w, out_w)
    w_y = torch.cat([f_y, 1.0 - f_y])
    w_x = torch.cat([f_x, 1.0 - f_x])
    weights = torch.outer(w_y.to(device, dtype), w_x.to(device, dtype)).view(2, in_h, 2, in_w)
    roots = torch.outer(w_y.sqrt().to(device, dtype), w_x.sqrt().to(device, dtype)).view(2, in_h, 2, in_w)
    assign_y = _assignment(a_y, out_h).to(device, dtype)
    assign_x = _assignment(a_x, out_w).to(device, dtype)

    b, c = noise.shape[:2]
    x = noise.to(dtype)[:, :, None, :, None, :]
    rz = roots * z.to(device, dtype).view(b, c, 2, in_h, 2, in_w)
    total = (rz[:, :, 0, :, 0] + rz[:, :, 0, :, 1] + rz[:, :, 1, :, 0] + rz[:, :, 1, :, 1])[:, :, None, :, None, :]
    pieces = torch.addcmul(rz, weights, total, value=-1.0).addcmul_(weights, x)
    out = assign_y @ (pieces.view(b, c, 2 * in_h, 2 * in_w) @ assign_x.T)
    scale = math.sqrt((in_h * in_w) / (out_h * out_w))
    return (out / scale).to(noise.dtype)


def downscale_noise(noise: torch.Tensor, size: tuple[int, int], seed: int | Sequence[int]) -> torch.Tensor:
    """Downscale white noise [B, C, h, w] to (out_h, out_w) keeping it exactly iid N(0, 1); deterministic from `seed`.

    Equal size returns `noise` itself; a larger size is a ValueError. The bridge noise is drawn on the CPU
    from torch.Generator("cpu").manual_seed(seed), so results match across devices: one int draws it for
    the whole batch at once; a sequence of B ints seeds each item on its own, so an item's result does not
    depend on which batch it is in.
    """
    out_h, out_w = _check_size(noise, size)
    per_item = not isinstance(seed, int)
    seeds = [validation.seed(s) for s in seed] if per_item else [validation.seed(seed)]
    if per_item and len(seeds) != noise.shape[0]:
        raise ValueError(f"need one seed per batch item: {noise.shape[0]} items, {len(seeds)} seeds")
    if (out_h, out_w) == tuple(noise.shape[-2:]):
        return noise
    shape = bridge_shape(noise[:1]) if per_item else bridge_shape(noise)
    z = torch.cat([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(s), dtype=torch.float32)
                   for s in seeds])
    return integral_downscale(noise, z, (out_h, out_w))
