"""The strategies registry (issue 34): a strategy registered in one place is offered by the refiner's tiling input and
its tooltip, planned by /luna/plan's planner, run by the node, and accepted or refused for shards by what it declares."""
from __future__ import annotations

import pytest
import torch

from pipeline_helpers import encode_prompt, models, scaffold_for, smooth_canvas
from test_shards import collected
from luna_semantic_detailer import plan_query
from luna_semantic_detailer.nodes.refiner import LunaGlobalRefiner
from luna_semantic_detailer.nodes.shards import LunaShardMerge
from luna_semantic_detailer.pipeline.job import RefineJob
from luna_semantic_detailer.pipeline.parallel import PARALLEL, sample_regions
from luna_semantic_detailer.pipeline.sampling import SamplerSettings
from luna_semantic_detailer.pipeline.strategies import STRATEGIES, register
from luna_semantic_detailer.pipeline.strategy import Independent, Strategy, independent_run
from luna_semantic_detailer.pipeline.tiles import TileSettings, plan_summary, tile_plan

SETTINGS = dict(steps=2, cfg=3.0, sampler_name="euler", scheduler="normal", vision_strength=0.0)
STEP = 1 / 255


class Average:
    """Each pixel the plain mean of every region's result that covers it (the input where none does)."""

    def __init__(self, plan):
        self.plan = plan
        self.total = torch.zeros_like(plan.canvas)
        self.count = torch.zeros(plan.canvas.shape[:3] + (1,))

    def add(self, index, pixels):
        r = self.plan.regions[index]
        x, y, w, h = r.rect
        self.total[r.image, y:y + h, x:x + w] += pixels
        self.count[r.image, y:y + h, x:x + w] += 1

    @property
    def out(self):
        return torch.where(self.count > 0, self.total / self.count.clamp(min=1), self.plan.canvas)


AVERAGE_PARTS = Independent(sample=sample_regions, compositor=Average)
AVERAGE = Strategy("average", "each tile from the input, overlaps averaged flat", independent_run(AVERAGE_PARTS),
                   independent=AVERAGE_PARTS)
KEEP = Strategy("keep", "the canvas as it is, every step", lambda plan, keep: plan.canvas.clone(),
                tile_phases=lambda tiles: [list(range(0, len(tiles), 2)), list(range(1, len(tiles), 2))])


@pytest.fixture
def throwaways():
    saved = dict(STRATEGIES)
    register(AVERAGE)
    register(KEEP)
    yield
    STRATEGIES.clear()
    STRATEGIES.update(saved)


def refine(image, tiling, index=0, count=1):
    model, vae = models()
    h, w = image.shape[1:3]
    return LunaGlobalRefiner().refine(image, scaffold_for(w, h), model, encode_prompt("a photo"), encode_prompt(""), vae,
                                      128, 32, denoise=0.5, max_batch=2, tiling=tiling, shard_index=index,
                                      shard_count=count, **SETTINGS)


def test_a_registered_strategy_is_offered_by_the_tiling_input_and_its_tooltip(throwaways):
    tiling = LunaGlobalRefiner.INPUT_TYPES()["optional"]["tiling"]
    assert {"average", "keep"} <= set(tiling[0]) and tiling[0][:3] == ["fused", "parallel", "chess"]
    assert "average: each tile from the input, overlaps averaged flat." in tiling[1]["tooltip"]


def test_a_registered_strategy_is_planned_with_its_phases(throwaways):
    query = plan_query.read({"width": "640", "height": "512", "tile": "256", "overlap": "64",
                             "tiling": "keep"}.items())
    summary = plan_summary(*query.planner_args())
    assert summary["tiling"] == "keep" and summary["phases"] == 2
    assert [t["phase"] for t in summary["tiles"]] == [i % 2 for i in range(summary["count"])]
    assert plan_summary(*plan_query.read({"width": "640", "height": "512", "tile": "256", "overlap": "64",
                                          "tiling": "average"}.items()).planner_args())["phases"] == 1


def test_a_registered_strategy_runs_through_the_node(throwaways):
    """The node with tiling AVERAGE gives the mean of the tiles' own results (each tile's pixels as PARALLEL samples
    them, seen through keep), computed by a loop in float64."""
    image = smooth_canvas(1, 256, 320, seed=4)
    out = refine(image, "average")[0]
    assert torch.equal(refine(image, "keep")[0], image)

    model, vae = models()
    scaffold = scaffold_for(320, 256)
    sampler = SamplerSettings(model, SETTINGS["steps"], SETTINGS["cfg"], SETTINGS["sampler_name"],
                              SETTINGS["scheduler"], 0.5, scaffold.seed)
    job = RefineJob(sampler=sampler, vae=vae, positive=encode_prompt("a photo"), negative=encode_prompt(""),
                    factor=scaffold.factor, max_batch=2)
    plan = tile_plan(job, image, scaffold, TileSettings(128, 32))
    kept = {}
    PARALLEL.run(plan, lambda i, pixels: kept.setdefault(i, pixels.double()))
    total = torch.zeros_like(image, dtype=torch.float64)
    count = torch.zeros(image.shape[:3] + (1,), dtype=torch.float64)
    for i, pixels in kept.items():
        x, y, w, h = plan.regions[i].rect
        total[0, y:y + h, x:x + w] += pixels
        count[0, y:y + h, x:x + w] += 1
    expected = torch.where(count > 0, total / count.clamp(min=1), image.double())
    assert len(kept) == len(plan.regions) > 1 and torch.isfinite(out).all()
    assert (out.double() - expected).abs().max() < 1e-5
    assert (out - image).abs().max() > 0.01, "the refinement must change the canvas"


def test_shards_follow_what_a_registered_strategy_declares(throwaways):
    image = smooth_canvas(1, 256, 320, seed=5)
    local = refine(image, "average")[0]
    shards, plan = collected(lambda i, n: refine(image, "average", i, n), 2)
    merged = LunaShardMerge().merge(shards, plan, "stop with an error")[0]
    assert (merged - local).abs().max() <= STEP
    with pytest.raises(ValueError, match="tiling 'keep' .* cannot be split over 2 shards: use tiling: parallel or "
                                         "average"):
        refine(image, "keep", 0, 2)
