"""The refiner and the detailer spread over ComfyUI-Distributed workers equal the local run (issue 30).

One master and two workers of the local host on loopback (conftest `cluster`), the prompts of tests/shard_prompts.py
queued through POST /distributed/queue: each Luna node samples shard DistributedSeed(0) of 1 + workers,
DistributedCollector gathers the packed regions (a worker's as 8-bit PNGs), LunaShardMerge composites them, and the
float result must equal the same prompt's local run (shard_count 1, POST /prompt on the master) within 1/255.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

from comfy_server import PromptFailed
from distributed_cluster import load_outputs
from shard_prompts import detailer, refiner, sharded

pytestmark = pytest.mark.host

LEVEL = 1 / 255
WIDTH, HEIGHT = 2048, 1536
PROMPTS = {"refiner sd15": lambda: refiner(WIDTH, HEIGHT, "sd15", steps=1),
           "refiner flux": lambda: refiner(WIDTH, HEIGHT, "flux"),
           "detailer": lambda: detailer(WIDTH, HEIGHT)}


@functools.cache
def local(cluster, name: str) -> np.ndarray:
    """The prompt's local run on the master: the node with shard_count 1."""
    history = cluster.master.run(sharded(PROMPTS[name](), 1))
    return load_outputs(cluster.master, history)["result"]


@pytest.mark.parametrize("workers", [["1"], ["1", "2"]], ids=["master+1", "master+2"])
@pytest.mark.parametrize("name", list(PROMPTS))
def test_the_distributed_run_equals_the_local_run_within_one_level(all_up, name, workers):
    reference = local(all_up, name)
    run = all_up.run(sharded(PROMPTS[name](), 1 + len(workers)), workers, timeout=600)
    assert run.worker_count == len(workers)
    merged = run.images["result"]
    assert merged.shape == reference.shape == (1, HEIGHT, WIDTH, 3) and np.isfinite(merged).all()
    assert np.abs(merged - reference).max() <= LEVEL, np.abs(merged - reference).max() * 255


@pytest.mark.parametrize("missing", ["sample them here", "stop with an error"])
def test_a_worker_killed_mid_run_gives_the_image_or_names_its_shard(all_up, missing):
    """The second worker holds its canvas for a minute before sampling (shard_prompts.sharded's slow_worker) and is
    killed meanwhile: it never sends its shard, and the collector reports success without it."""
    prompt = sharded(PROMPTS["refiner flux"](), 3, missing, slow_worker=2)
    prompt_id, dispatched = all_up.queue(prompt)
    assert dispatched == 2
    all_up.wait_until_running(1)
    all_up.kill_worker(1)
    if missing == "stop with an error":
        with pytest.raises(PromptFailed, match=r"shard 2 \(worker 2 of the enabled workers\) sent nothing"):
            all_up.wait(prompt_id, dispatched, timeout=600)
        return
    merged = all_up.wait(prompt_id, dispatched, timeout=600).images["result"]
    assert np.abs(merged - local(all_up, "refiner flux")).max() <= LEVEL


def test_fused_tiling_with_shards_is_refused_by_name(all_up):
    with pytest.raises(PromptFailed, match="tiling 'fused' needs the whole canvas .* use tiling: parallel"):
        all_up.run(sharded(refiner(512, 512, "flux", tiling="fused"), 2), ["1"], timeout=300)
