"""GET /luna/plan's query, read and bounded before any planning: each value within the limits the nodes themselves
declare (the scaffold's canvas size, the refiner's tile_size, overlap, tile_fit and tiling, the latent formats'
factors), and the plan no larger than the preview draws, counted in O(1) (kernels.planning.least_tile_counts).

Any page the artist opens can send this GET to the local server, so nothing in a query may cost more than a small
plan does: a value that is not a short whole number, a name the route does not know or a plan over MAX_TILES is
refused with a message that says what to send instead.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_TILES = 1024
MAX_TILES_PER_SIDE = 128
_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")
_SHOWN = 40


class QueryError(ValueError):
    """A query the route refuses; the message names what to send instead."""


@dataclass(frozen=True)
class PlanQuery:
    width: int
    height: int
    tile: int
    overlap: int
    factor: int
    fit: str
    tiling: str
    patch: int = 1

    def planner_args(self) -> tuple:
        """The arguments of pipeline.tiles.plan_summary, in its order."""
        return self.width, self.height, self.tile, self.overlap, self.factor, self.fit, self.tiling, self.patch


@dataclass(frozen=True)
class Limits:
    """What the nodes accept: (min, max) of the numbers, the choices of the rest, the defaults of the optional ones."""

    numbers: dict[str, tuple[int, int]]
    choices: dict[str, tuple]
    defaults: dict[str, object]


def limits() -> Limits:
    """The limits, read from LunaNoiseScaffold's and LunaGlobalRefiner's INPUT_TYPES (so the tilings are the strategies
    registered now) and the latent formats."""
    from .pipeline.latent_formats import LATENT_FORMATS
    from .nodes.refiner import LunaGlobalRefiner
    from .nodes.scaffold import LunaNoiseScaffold

    scaffold = LunaNoiseScaffold.INPUT_TYPES()["required"]
    refiner = LunaGlobalRefiner.INPUT_TYPES()
    required, optional = refiner["required"], refiner["optional"]

    def span(spec) -> tuple[int, int]:
        return spec[1]["min"], spec[1]["max"]

    factors = tuple(sorted({spec.factor for spec in LATENT_FORMATS.values()}))
    patches = tuple(sorted({spec.patch for spec in LATENT_FORMATS.values()}))
    first = next(iter(LATENT_FORMATS.values()))
    return Limits(
        numbers={"width": span(scaffold["width"]), "height": span(scaffold["height"]),
                 "tile": span(required["tile_size"]), "overlap": span(required["overlap"])},
        choices={"factor": factors, "patch": patches, "latent_format": tuple(LATENT_FORMATS),
                 "fit": tuple(optional["tile_fit"][0]), "tiling": tuple(optional["tiling"][0])},
        defaults={"factor": first.factor, "patch": first.patch, "latent_format": None,
                  "fit": optional["tile_fit"][1]["default"], "tiling": optional["tiling"][1]["default"]},
    )


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def _number(name: str, text: str, lowest: int, highest: int) -> int:
    if not _WHOLE_NUMBER.fullmatch(text) or not lowest <= int(text) <= highest:
        raise QueryError(f"{name} must be a whole number in [{lowest}, {highest}], got {_shown(text)}")
    return int(text)


def read(pairs: Iterable[tuple[str, str]]) -> PlanQuery:
    """The query's (name, value) pairs as a PlanQuery, or QueryError."""
    bounds = limits()
    names = (*bounds.numbers, *bounds.choices)
    given: dict[str, str] = {}
    for name, text in pairs:
        if name not in names:
            raise QueryError(f"unknown query parameter {_shown(name)}: send only {', '.join(names)}")
        if name in given:
            raise QueryError(f"{name} is given twice: send it once")
        given[name] = text
    missing = [name for name in bounds.numbers if name not in given]
    if missing:
        raise QueryError(f"missing query parameter {', '.join(missing)}: send width, height, tile and overlap "
                         f"(and optionally {', '.join(bounds.choices)})")
    numbers = {name: _number(name, given[name], *span) for name, span in bounds.numbers.items()}
    choices = {}
    for name, options in bounds.choices.items():
        text = given.get(name)
        value = bounds.defaults[name] if text is None else next((o for o in options if str(o) == text), None)
        if value is None and text is not None:
            raise QueryError(f"{name} must be one of {', '.join(map(str, options))}, got {_shown(text)}")
        choices[name] = value
    latent_format = choices.pop("latent_format")
    if latent_format is not None:
        from .pipeline.latent_formats import LATENT_FORMATS

        if "factor" in given or "patch" in given:
            raise QueryError("give latent_format, or factor and patch, not both")
        choices.update(factor=LATENT_FORMATS[latent_format].factor, patch=LATENT_FORMATS[latent_format].patch)
    query = PlanQuery(**numbers, **choices)
    _refuse_large(query)
    return query


def _refuse_large(query: PlanQuery) -> None:
    from .kernels.planning import least_tile_counts

    try:
        columns, rows = least_tile_counts(query.width, query.height, query.tile, query.overlap, query.factor, query.fit,
                                          query.patch)
    except ValueError as exc:
        raise QueryError(str(exc)) from None
    if columns > MAX_TILES_PER_SIDE or rows > MAX_TILES_PER_SIDE or columns * rows > MAX_TILES:
        raise QueryError(
            f"the plan has at least {columns}×{rows} = {columns * rows} tiles; the preview shows plans of up to "
            f"{MAX_TILES} tiles, {MAX_TILES_PER_SIDE} a side: raise tile or lower overlap to see it")
