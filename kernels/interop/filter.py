"""Keep and order detections the way Impact-Pack's SEGS filters do: by label, score, box area, top-k, then order.

Pure Python over anything shaped like `luna_types.Detection` (box in 0..1, score, label, image_index); no ComfyUI.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ... import validation

TOP_BY = ("score", "area")
ORDERS = ("score desc", "area desc", "left-to-right", "top-to-bottom", "input order")


def box_area(box: Sequence[float]) -> float:
    """Area of a normalized (x0, y0, x1, y1) box, as a fraction of the image (0 for a degenerate box)."""
    x0, y0, x1, y1 = box
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def parse_labels(labels: str | Iterable[str] | None) -> set[str]:
    """The wanted labels, lower-cased: a comma-separated string or an iterable; empty means every label."""
    if labels is None:
        return set()
    items = labels.split(",") if isinstance(labels, str) else labels
    return {str(item).strip().lower() for item in items if str(item).strip()}


_SORT_KEYS = {
    "score desc": lambda d: -d.score,
    "area desc": lambda d: -box_area(d.box),
    "left-to-right": lambda d: (d.box[0], d.box[1]),
    "top-to-bottom": lambda d: (d.box[1], d.box[0]),
}


def _top(detections: Sequence[Any], passed: list[int], top_k: int, top_by: str) -> list[int]:
    """The `top_k` best of `passed` per image; tracked detections (a track_id) compete as whole tracks, each by its
    best frame, so a track is kept or dropped in every frame and never alternates with another."""
    measure = (lambda d: d.score) if top_by == "score" else (lambda d: box_area(d.box))
    groups: dict[tuple, list[int]] = {}
    for i in passed:
        track = getattr(detections[i], "track_id", None)
        groups.setdefault(("track", track) if track is not None else ("image", detections[i].image_index, i),
                          []).append(i)
    per_image: dict[object, list[tuple]] = {}
    for key, members in groups.items():
        per_image.setdefault("tracks" if key[0] == "track" else key[1], []).append(key)
    chosen: set[int] = set()
    for keys in per_image.values():
        best = sorted(keys, key=lambda k: -max(measure(detections[i]) for i in groups[k]))[:top_k]
        chosen.update(i for k in best for i in groups[k])
    return [i for i in passed if i in chosen]


def filter_detections(
    detections: Sequence[Any],
    labels: str | Iterable[str] | None = "",
    score_range: tuple[float, float] = (0.0, 1.0),
    area_range: tuple[float, float] = (0.0, 1.0),
    top_k: int = 0,
    top_by: str = "score",
    order: str = "score desc",
) -> tuple[list, list]:
    """(kept, rejected) detections.

    A detection is kept when its label is one of `labels` (case-insensitive; empty keeps all), its score is in
    `score_range` and its normalized box area in `area_range` (both inclusive); then, per image, only the `top_k`
    (0 keeps all) with the highest score or area (`top_by`; ties keep the input order); tracks (detections with a
    track id) compete as wholes, the `top_k` best tracks of the clip kept in all their frames. The kept ones are sorted by
    `order` (stable: "score desc", "area desc", "left-to-right" by box left then top, "top-to-bottom" by box top
    then left, or "input order"); the rejected ones keep the input order.
    """
    validation.number_range("score", *score_range)
    validation.number_range("area", *area_range)
    validation.int_at_least("top_k", top_k, 0)
    validation.one_of("top_by", top_by, TOP_BY)
    validation.one_of("order", order, ORDERS)
    for i, d in enumerate(detections):
        validation.finite_numbers(f"detection {i} score and box", (d.score, *d.box), 5, "finite numbers")

    wanted = parse_labels(labels)
    (s_min, s_max), (a_min, a_max) = score_range, area_range
    passed = [
        i
        for i, d in enumerate(detections)
        if (not wanted or d.label.strip().lower() in wanted)
        and s_min <= d.score <= s_max
        and a_min <= box_area(d.box) <= a_max
    ]
    if top_k:
        passed = _top(detections, passed, top_k, top_by)
    kept = [detections[i] for i in passed]
    if order != "input order":
        kept.sort(key=_SORT_KEYS[order])
    keep = set(passed)
    rejected = [d for i, d in enumerate(detections) if i not in keep]
    return kept, rejected
