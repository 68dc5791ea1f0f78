"""The shard fingerprint is read off the run's dataclasses (issue 34): a field added to the job, the sampler
settings, the plan's settings or a region changes it without being listed anywhere; what is each machine's own
(models, VAE, conditioning, the canvas tensors) does not."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from fixtures.fidelity import block_vae, exact_model, job_for
from pipeline_helpers import scaffold_for, smooth_canvas
from luna_semantic_detailer.pipeline.fingerprint import describe, fingerprint
from luna_semantic_detailer.pipeline.parallel import PARALLEL
from luna_semantic_detailer.pipeline.shards import shard_plan
from luna_semantic_detailer.pipeline.tiles import TileSettings, tile_plan


@pytest.fixture(scope="module")
def plan():
    scaffold = scaffold_for(320, 256, seed=2)
    job = job_for(exact_model("local"), block_vae(), scaffold.seed)
    return tile_plan(job, smooth_canvas(1, 256, 320), scaffold, TileSettings(128, 32))


def extended(instance, **extra):
    """`instance` as a subclass of its dataclass with the fields `extra` added (name: value)."""
    cls = type(instance)
    wider = dataclasses.make_dataclass(cls.__name__, [(k, type(v), dataclasses.field(default=v)) for k, v in extra.items()],
                                       bases=(cls,), frozen=True, kw_only=True)
    return wider(**{f.name: getattr(instance, f.name) for f in dataclasses.fields(instance) if f.init}, **extra)


def digest(plan) -> int:
    return shard_plan(plan, PARALLEL, 2).fingerprint


def test_the_fingerprint_is_the_same_for_the_same_run_and_changes_with_any_setting(plan):
    assert digest(plan) == digest(dataclasses.replace(plan))
    assert digest(plan) != digest(dataclasses.replace(plan, settings=TileSettings(128, 40)))
    denoise = dataclasses.replace(plan.job, sampler=dataclasses.replace(plan.job.sampler, denoise=0.6))
    assert digest(plan) != digest(dataclasses.replace(plan, job=denoise))
    assert digest(plan) != shard_plan(plan, PARALLEL, 3).fingerprint


@pytest.mark.parametrize("where", ["settings", "job", "sampler", "region", "plan"])
def test_a_field_added_anywhere_changes_the_fingerprint(plan, where):
    def with_extra(value):
        if where == "settings":
            return dataclasses.replace(plan, settings=extended(plan.settings, extra=value))
        if where == "job":
            return dataclasses.replace(plan, job=extended(plan.job, extra=value))
        if where == "sampler":
            return dataclasses.replace(plan, job=dataclasses.replace(plan.job, sampler=extended(plan.job.sampler,
                                                                                                 extra=value)))
        if where == "region":
            return dataclasses.replace(plan, regions=(extended(plan.regions[0], extra=value), *plan.regions[1:]))
        return extended(plan, extra=value)

    one, two = digest(with_extra(1)), digest(with_extra(2))
    assert len({digest(plan), one, two}) == 3


def test_what_each_machine_holds_for_itself_is_not_in_the_fingerprint(plan):
    other_model = dataclasses.replace(plan.job.sampler, model=exact_model("tile-global"))
    local = dataclasses.replace(plan.job, sampler=other_model, vae=block_vae("bilinear"),
                                positive=[[torch.ones(1, 3, 64), {}]])
    assert digest(plan) == digest(dataclasses.replace(plan, job=local, canvas=plan.canvas + 0.1))


def test_a_field_that_cannot_be_described_names_the_fix():
    @dataclasses.dataclass
    class Holder:
        model: object

    with pytest.raises(TypeError, match="mark its dataclass field LOCAL"):
        describe(Holder(object()))
    assert fingerprint(1, "a") == fingerprint(1, "a") != fingerprint(1, "b")
