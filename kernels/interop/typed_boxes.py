"""Boxes typed into a node, one per line `x0, y0, x1, y1[, label]`, in fractions of the image or in its pixels."""
from __future__ import annotations

from ... import validation
from .validation import Box, fitted_box

UNITS = ("normalized (0-1)", "pixels")
TYPED_FIX = ("Set image_width and image_height to the size of the image the boxes were measured on (or connect that "
             "image), or type them in normalized units.")


def parse_boxes(text: str, units: str, width: int, height: int, default_label: str) -> list[tuple[Box, str]]:
    """Typed boxes as (box, label) pairs, boxes in fractions of the image; a ValueError names the bad line, and a pixel
    box that does not fit the width x height image (to within half a pixel) is one."""
    validation.one_of("units", units, UNITS)
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) not in (4, 5):
            raise ValueError(f"box line {number} ({line!r}) must be `x0, y0, x1, y1` or `x0, y0, x1, y1, label`")
        try:
            values = tuple(float(p) for p in parts[:4])
        except ValueError as exc:
            raise ValueError(f"box line {number} ({line!r}) holds a value that is not a number") from exc
        if units == "pixels":
            if width <= 0 or height <= 0:
                raise ValueError("pixel boxes need the image size: set image_width and image_height or connect the image")
            values = fitted_box(values, width, height, f"box line {number} ({line!r})", TYPED_FIX)
        out.append((values, parts[4] if len(parts) == 5 else default_label))
    return out
