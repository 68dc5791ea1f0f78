"""Variance-preserving noise downscaling (issue 3, item 3): exact for integer and non-integer ratios."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from luna_semantic_detailer.kernels.resample import bridge_shape, downscale_noise, integral_downscale

FAST = settings(max_examples=50, deadline=None)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def white(shape, seed):
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


def stats(out: torch.Tensor) -> dict[str, float]:
    """Pooled mean, std and lag-1 correlations (horizontal, vertical, diagonal) over batch and channels, float64."""
    o = out.double()
    o = o - o.mean()
    var = (o * o).mean()
    return {
        "n": o.numel(),
        "mean": out.double().mean().item(),
        "std": out.double().std().item(),
        "rx": ((o[..., :, 1:] * o[..., :, :-1]).mean() / var).item(),
        "ry": ((o[..., 1:, :] * o[..., :-1, :]).mean() / var).item(),
        "rxy": ((o[..., 1:, 1:] * o[..., :-1, :-1]).mean() / var).item(),
    }


def white_enough(s: dict[str, float]) -> bool:
    """5-sigma bounds for n iid N(0, 1) samples: mean +- 5/sqrt(n), std +- 1% (~7 sigma here), |r| < 5/sqrt(n)."""
    bound = 5 / math.sqrt(s["n"])
    return (abs(s["mean"]) < bound and abs(s["std"] - 1) < 0.01
            and max(abs(s["rx"]), abs(s["ry"]), abs(s["rxy"])) < bound)


def overlap_matrix(n: int, m: int) -> torch.Tensor:
    """[m, n] float64: length of source cell p inside output cell j, in source cells (interval intersection, in 1/m units)."""
    j = torch.arange(m, dtype=torch.int64)[:, None]
    p = torch.arange(n, dtype=torch.int64)[None, :]
    inside = torch.minimum((j + 1) * n, (p + 1) * m) - torch.maximum(j * n, p * m)
    return inside.clamp(min=0).to(torch.float64) / m


@FAST
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 12), st.integers(1, 12), st.integers(1, 4), st.integers(1, 4),
       st.integers(0, 2**32))
def test_integer_ratio_is_area_times_sqrt_ratio(b, c, out_h, out_w, rh, rw, seed):
    noise = white((b, c, out_h * rh, out_w * rw), seed)
    out = downscale_noise(noise, (out_h, out_w), seed=seed + 1)
    expected = F.interpolate(noise.double(), (out_h, out_w), mode="area") * math.sqrt(rh * rw)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-6)


def test_square_4x_is_the_spec_formula():
    noise = white((1, 4, 512, 512), 0)
    out = downscale_noise(noise, (128, 128), seed=1)
    torch.testing.assert_close(out, F.interpolate(noise, scale_factor=0.25, mode="area") * 4, rtol=0, atol=2e-6)


@FAST
@given(st.integers(1, 14), st.integers(1, 14), st.data())
def test_mean_part_is_exact_area_average(in_h, in_w, data):
    out_h, out_w = data.draw(st.integers(1, in_h)), data.draw(st.integers(1, in_w))
    noise = white((1, 2, in_h, in_w), data.draw(st.integers(0, 2**32))).double()
    z = torch.zeros(bridge_shape(noise), dtype=torch.float64)
    out = integral_downscale(noise, z, (out_h, out_w))
    wy, wx = overlap_matrix(in_h, out_h), overlap_matrix(in_w, out_w)
    expected = wy @ noise @ wx.T / math.sqrt(in_h * in_w / (out_h * out_w))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def jacobian(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> torch.Tensor:
    """d out / d (noise, z) of the linear map, [out cells, in cells + bridge cells], float64."""
    noise = torch.zeros((1, 1, *in_hw), dtype=torch.float64)
    z = torch.zeros(bridge_shape(noise), dtype=torch.float64)
    jx, jz = torch.autograd.functional.jacobian(lambda a, b: integral_downscale(a, b, out_hw), (noise, z))
    n_out = out_hw[0] * out_hw[1]
    return torch.cat([jx.reshape(n_out, -1), jz.reshape(n_out, -1)], dim=1)


@pytest.mark.parametrize("in_hw, out_hw", [
    ((8, 8), (3, 3)), ((6, 6), (4, 4)), ((8, 6), (3, 4)), ((7, 5), (7, 2)), ((9, 10), (4, 5)), ((12, 12), (3, 3)),
])
def test_output_covariance_is_exactly_identity(in_hw, out_hw):
    j = jacobian(in_hw, out_hw)
    torch.testing.assert_close(j @ j.T, torch.eye(j.shape[0], dtype=torch.float64), rtol=0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.data())
def test_output_covariance_is_identity_for_any_ratio(in_h, in_w, data):
    out_hw = (data.draw(st.integers(1, in_h)), data.draw(st.integers(1, in_w)))
    j = jacobian((in_h, in_w), out_hw)
    torch.testing.assert_close(j @ j.T, torch.eye(j.shape[0], dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape, size", [
    ((2, 4, 512, 512), (192, 192)),   # 4096 -> 1536 canvas: ratio 8/3
    ((8, 4, 192, 192), (128, 128)),   # 1536 -> 1024: ratio 3/2
    ((4, 4, 512, 512), (128, 128)),   # 4096 -> 1024: ratio 4
    ((2, 4, 512, 384), (192, 256)),   # non-square: 8/3 by 3/2
])
def test_downscaled_noise_is_white(shape, size):
    s = stats(downscale_noise(white(shape, 11), size, seed=12))
    assert 5 / math.sqrt(s["n"]) <= 0.01
    assert white_enough(s), s


@pytest.mark.parametrize("shape, size", [((2, 4, 512, 512), (192, 192)), ((8, 4, 192, 192), (128, 128))])
def test_naive_area_resampling_fails_the_same_bounds(shape, size):
    noise = white(shape, 11)
    ratio = shape[-1] / size[-1]
    s = stats(F.interpolate(noise, size, mode="area") * ratio)
    assert not white_enough(s) and abs(s["rx"]) > 0.1 and abs(s["ry"]) > 0.1, s

    wy = overlap_matrix(shape[-1], size[-1])
    norm = torch.outer(wy.pow(2).sum(1), wy.pow(2).sum(1)).sqrt()
    s = stats(wy @ noise.double() @ wy.T / norm)
    assert abs(s["std"] - 1) < 0.01, s
    assert not white_enough(s) and abs(s["rx"]) > 0.05 and abs(s["ry"]) > 0.05, s


def test_deterministic_from_seed_and_preserves_dtype():
    noise = white((1, 4, 64, 64), 3)
    a, b = downscale_noise(noise, (24, 24), seed=9), downscale_noise(noise, (24, 24), seed=9)
    assert torch.equal(a, b)
    assert not torch.equal(a, downscale_noise(noise, (24, 24), seed=10))
    assert downscale_noise(noise.double(), (24, 24), seed=9).dtype == torch.float64
    assert downscale_noise(noise.half(), (24, 24), seed=9).dtype == torch.float16


def test_per_item_seeds_make_items_independent_of_their_batch():
    noise = white((3, 4, 40, 40), 6)
    batch = downscale_noise(noise, (15, 15), seed=[7, 8, 9])
    for i, s in enumerate([7, 8, 9]):
        assert torch.equal(batch[i:i + 1], downscale_noise(noise[i:i + 1], (15, 15), seed=[s]))
    assert torch.equal(downscale_noise(noise[:1], (15, 15), seed=[7]), downscale_noise(noise[:1], (15, 15), seed=7))
    assert not torch.equal(batch[1], downscale_noise(noise, (15, 15), seed=7)[1])
    with pytest.raises(ValueError, match="one seed per batch item"):
        downscale_noise(noise, (15, 15), seed=[1, 2])
    with pytest.raises(ValueError):
        downscale_noise(noise, (15, 15), seed=[1, 2, -3])


@pytest.mark.parametrize("device", DEVICES)
def test_devices_agree(device):
    noise = white((2, 4, 96, 80), 4)
    cpu = downscale_noise(noise, (36, 30), seed=5)
    out = downscale_noise(noise.to(device), (36, 30), seed=5)
    assert out.device.type == device
    torch.testing.assert_close(out.cpu(), cpu, rtol=0, atol=1e-5)


def test_equal_size_returns_input_unchanged():
    noise = white((1, 4, 16, 12), 0)
    assert downscale_noise(noise, (16, 12), seed=0) is noise


@pytest.mark.parametrize("size", [(17, 12), (16, 13), (32, 24)])
def test_upscaling_is_refused(size):
    with pytest.raises(ValueError, match="upscale"):
        downscale_noise(white((1, 4, 16, 12), 0), size, seed=0)


@pytest.mark.parametrize("size", [(0, 4), (4,), (4.0, 4), (True, 4)])
def test_bad_sizes_are_refused(size):
    with pytest.raises(ValueError):
        downscale_noise(white((1, 4, 16, 12), 0), size, seed=0)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        downscale_noise(white((4, 16, 12), 0), (8, 8), seed=0)
    with pytest.raises(ValueError):
        downscale_noise(white((1, 4, 16, 12), 0), (8, 8), seed=-1)
    with pytest.raises(ValueError):
        integral_downscale(white((1, 4, 16, 12), 0), torch.zeros(1, 4, 16, 12), (8, 8))
