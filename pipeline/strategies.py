"""The strategies registry: every way a plan can be refined, by name. The refiner's tiling choice, its tooltip, GET
/luna/plan, the web preview and the shard refusal all read it, so a new strategy is one `register` call."""
from __future__ import annotations

from ..validation import one_of
from .chess import CHESS
from .fused import FUSED
from .parallel import PARALLEL
from .strategy import Strategy

STRATEGIES: dict[str, Strategy] = {s.name: s for s in (FUSED, PARALLEL, CHESS)}


def register(strategy: Strategy) -> Strategy:
    """Offer `strategy` under its name (replacing one of that name)."""
    STRATEGIES[strategy.name] = strategy
    return strategy


def strategy_named(name: str) -> Strategy:
    """The registered strategy `name`, or a ValueError naming the choices."""
    return STRATEGIES[one_of("tiling", name, tuple(STRATEGIES))]
