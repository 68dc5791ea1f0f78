"""LUNA_DETECTION_DATA: validation, JSON/safetensors round trips, and detections made without SAM3 (masks, typed boxes)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from luna_semantic_detailer.kernels.detections import connected_regions
from luna_semantic_detailer.kernels.interop.typed_boxes import parse_boxes
from luna_semantic_detailer.luna_types import Detection, DetectionData
from luna_semantic_detailer.nodes.detections import LunaDetectionsFromBoxes, LunaDetectionsFromMask


@pytest.mark.parametrize("box, why", [
    ((0.1, 0.1, float("nan"), 0.5), "NaN"),
    ((0.1, 0.1, 1.5, 0.5), "normalized"),
    ((-0.2, 0.1, 0.5, 0.5), "normalized"),
    ((0.5, 0.1, 0.5, 0.5), "empty"),
    ((0.1, 0.6, 0.5, 0.5), "empty"),
    ((0.1, 0.2, 0.3), "4 numbers"),
    (("a", 0, 1, 1), "4 numbers"),
])
def test_bad_boxes_are_rejected_with_the_reason(box, why):
    with pytest.raises(ValueError, match=why):
        Detection(box, None)


def test_boxes_within_float_tolerance_of_the_edges_are_clamped():
    assert Detection((-1e-9, 0.0, 1 + 1e-9, 1.0), None).box == (0.0, 0.0, 1.0, 1.0)


def test_a_mask_must_be_two_dimensional():
    with pytest.raises(ValueError, match="2-D"):
        Detection((0, 0, 1, 1), torch.zeros(1, 4, 4))


def _data() -> DetectionData:
    g = torch.Generator().manual_seed(0)
    return DetectionData((
        Detection((0.1, 0.2, 0.5, 0.6), (torch.rand(12, 9, generator=g) > 0.5).float(), 0.875, "face", 0),
        Detection((0.0, 0.0, 1.0, 1.0), None, 0.5, "all", 1),
        Detection((0.25, 0.25, 0.75, 0.5), torch.rand(5, 7, generator=g), 1.0, "soft", 0),
    ), (900, 1200), {"source": "test"})


def _same(a: DetectionData, b: DetectionData, exact_masks: bool) -> None:
    assert a.image_size == b.image_size and a.meta == b.meta and len(a) == len(b)
    for x, y in zip(a.detections, b.detections):
        assert (x.box, x.score, x.label, x.image_index) == (y.box, y.score, y.label, y.image_index)
        assert (x.mask is None) == (y.mask is None)
        if x.mask is not None:
            if exact_masks:
                assert torch.equal(x.mask, y.mask)
            else:
                torch.testing.assert_close(x.mask, y.mask, atol=5e-4, rtol=1e-3)


def test_safetensors_round_trip_is_exact(tmp_path):
    data = _data()
    data.save(tmp_path / "detections.safetensors")
    _same(data, DetectionData.load(tmp_path / "detections.safetensors"), exact_masks=True)


def test_loading_a_file_that_is_not_detection_data_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a Luna detection file"):
        DetectionData.load(tmp_path / "other.safetensors")


def _flood_fill_count(grid: list[list[bool]]) -> list[set]:
    """Naive 8-connected components by depth-first search."""
    h, w = len(grid), len(grid[0])
    seen, regions = set(), []
    for y in range(h):
        for x in range(w):
            if grid[y][x] and (y, x) not in seen:
                stack, region = [(y, x)], set()
                seen.add((y, x))
                while stack:
                    cy, cx = stack.pop()
                    region.add((cy, cx))
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            ny, nx = cy + dy, cx + dx
                            if 0 <= ny < h and 0 <= nx < w and grid[ny][nx] and (ny, nx) not in seen:
                                seen.add((ny, nx))
                                stack.append((ny, nx))
                regions.append(region)
    return regions


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 14), st.integers(3, 14), st.integers(0, 2**31 - 1), st.floats(0.2, 0.7), st.integers(1, 4),
       st.booleans())
def test_connected_regions_match_a_flood_fill(h, w, seed, density, min_pixels, soft):
    g = torch.Generator().manual_seed(seed)
    on = torch.rand(h, w, generator=g) < density
    mask = on * (0.51 + 0.49 * torch.rand(h, w, generator=g)) if soft else on.float()
    regions = connected_regions(mask, min_pixels=min_pixels)
    expected = [r for r in _flood_fill_count(on.tolist()) if len(r) >= min_pixels]  # found in raster order
    assert [sorted(map(tuple, r.mask.nonzero().tolist())) for r in regions] == [sorted(r) for r in expected]
    for region, pixels in zip(regions, expected):
        ys, xs = [y for y, _ in pixels], [x for _, x in pixels]
        assert region.box == (min(xs) / w, min(ys) / h, (max(xs) + 1) / w, (max(ys) + 1) / h)
        inside = torch.zeros(h, w, dtype=torch.bool)
        inside[tuple(zip(*pixels))] = True
        assert region.mask.dtype == (torch.float16 if soft else torch.bool)
        assert torch.equal(region.mask.float(), torch.where(inside, mask.half().float(), 0.0))


def test_detections_from_mask_split_blobs_and_skip_specks():
    mask = torch.zeros(100, 200)
    mask[10:30, 20:60] = 1
    mask[50:90, 150:190] = 1
    mask[95, 5] = 1
    (data,) = LunaDetectionsFromMask().convert(mask[None], "face", 0, "connected regions", 16)
    boxes = [v for d in sorted(data.detections, key=lambda d: d.box) for v in d.box]
    assert boxes == pytest.approx([20 / 200, 10 / 100, 60 / 200, 30 / 100, 150 / 200, 50 / 100, 190 / 200, 90 / 100])
    (whole,) = LunaDetectionsFromMask().convert(mask[None], "face", 0, "one per mask", 16)
    assert len(whole) == 1 and whole.detections[0].box == pytest.approx((5 / 200, 10 / 100, 190 / 200, 96 / 100))


def test_typed_boxes_normalized_and_pixels():
    text = "# faces\n0.1, 0.2, 0.3, 0.4\n 100, 50, 300, 150, hand \n"
    assert parse_boxes(text.replace("100, 50, 300, 150", "0.5, 0.5, 0.9, 0.9"), "normalized (0-1)", 0, 0, "face") == [
        ((0.1, 0.2, 0.3, 0.4), "face"), ((0.5, 0.5, 0.9, 0.9), "hand")]
    (data,) = LunaDetectionsFromBoxes().convert("100, 50, 300, 150, hand", "pixels", "x", 400, 200, 0)
    assert data.detections[0].box == pytest.approx((0.25, 0.25, 0.75, 0.75)) and data.detections[0].label == "hand"
    with pytest.raises(ValueError, match="line 2"):
        parse_boxes("0.1, 0.2, 0.3, 0.4\n0.1, 0.2", "normalized (0-1)", 0, 0, "x")
    with pytest.raises(ValueError, match="image size"):
        parse_boxes("1, 2, 3, 4", "pixels", 0, 0, "x")
    with pytest.raises(ValueError, match="normalized"):
        LunaDetectionsFromBoxes().convert("10, 10, 30, 30", "normalized (0-1)", "x", 0, 0, 0)
    assert not math.isnan(data.detections[0].score)


SPECKLED = """
import json, resource, sys, types
import numpy as np
import torch
from scipy import ndimage  # noqa: F401  (imported before the baseline is taken)

package = types.ModuleType("luna_semantic_detailer")
package.__path__ = [sys.argv[1]]
sys.modules["luna_semantic_detailer"] = package
from luna_semantic_detailer.kernels.detections import connected_regions

torch.set_num_threads(1)
size, cell = 4096, 40
on = np.zeros((size, size), dtype=np.float32)
blobs = []
for index in range((size // cell) ** 2):
    y, x = divmod(index, size // cell)
    y, x = y * cell + 5, x * cell + 5
    if index % 1300 == 0:
        on[y:y + 6, x:x + 6] = 1.0
        blobs.append([x / size, y / size, (x + 6) / size, (y + 6) / size])
    else:
        on[y, x:x + 1 + index % 15] = 1.0
mask = torch.from_numpy(on)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
regions = connected_regions(mask, min_pixels=16)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"specks": (size // cell) ** 2 - len(blobs), "blobs": blobs, "boxes": [list(r.box) for r in regions],
                  "sums": [int(r.mask.sum()) for r in regions], "dtypes": sorted({str(r.mask.dtype) for r in regions}),
                  "mask_bytes": sum(r.mask.nbytes for r in regions), "peak_growth": (after - before) * 1024}))
"""


def test_connected_regions_of_a_speckled_4k_mask_stay_well_under_a_gigabyte():
    """10,000 specks below min_pixels and nine 6x6 blobs on a 4096² mask: only the blobs get masks (one byte a pixel),
    and the call's peak memory (resident growth, in a fresh process) stays small; one mask per speck would be 170 GB."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    out = subprocess.run([sys.executable, "-c", SPECKLED, str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["specks"] >= 10_000 and len(result["blobs"]) == 9
    assert result["boxes"] == result["blobs"] and result["sums"] == [36] * 9 and result["dtypes"] == ["torch.bool"]
    assert result["mask_bytes"] == 9 * 4096 * 4096
    assert result["peak_growth"] + result["mask_bytes"] < 2**30 / 2, result
