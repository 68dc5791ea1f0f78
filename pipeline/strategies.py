"""The strategies registry: every way a plan can be refined, by name. The refiner's tiling choice, its tooltip, GET
/luna/plan, the web preview and the shard refusal all read it, so a new strategy is one `register` call."""
from __future__ import annotations

from ..validation import one_of
from .chess import CHESS
from .clips import CLIPS
from .fused import FUSED
from .parallel import PARALLEL
from .strategy import Strategy

STRATEGIES: dict[str, Strategy] = {s.name: s for s in (FUSED, PARALLEL, CHESS, CLIPS)}


def register(strategy: Strategy) -> Strategy:
    """Offer `strategy` under its name (replacing one of that name)."""
    STRATEGIES[strategy.name] = strategy
    return strategy


def offered(source: str) -> dict[str, Strategy]:
    """The strategies that take the plans of region source `source`, by name, in registration order."""
    return {name: s for name, s in STRATEGIES.items() if source in s.sources}


def strategy_named(name: str, source: str = "refiner") -> Strategy:
    """The strategy `name` among those offered for `source`, or a ValueError naming the choices."""
    return STRATEGIES[one_of("tiling", name, tuple(offered(source)))]
