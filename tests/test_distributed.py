"""ComfyUI-Distributed 1.4.4 on loopback, with stock and test-only nodes: what its DistributedCollector hands the
master (order, batches, 8-bit truncation) and what a master gets when a worker fails or dies: the contract a
"shard i of N → collect → merge" graph is built on."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from conftest import WORKER_TIMEOUT_S
from distributed_cluster import TARBALL

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(not TARBALL.is_file(), reason=f"no ComfyUI-Distributed tarball at {TARBALL} "
                                                     "(set LSD_DISTRIBUTED_TARBALL=/path/to/comfyui-distributed-1.4.4.tar.gz)"),
]

RED, GREEN, BLUE = 0xFF0000, 0x00FF00, 0x0000FF
RGB = {RED: (1.0, 0.0, 0.0), GREEN: (0.0, 1.0, 0.0), BLUE: (0.0, 0.0, 1.0)}


def per_participant(default: str, by_position: dict[str, str], value_type: str = "INT") -> dict:
    """A DistributedValue node: `default` on the master, by_position["1"] on the first participating worker, …"""
    return {"class_type": "DistributedValue",
            "inputs": {"default_value": default, "worker_values": json.dumps({**by_position, "_type": value_type})}}


def collected(source: dict, node: str = "image") -> dict:
    """`source` (a prompt whose `node` outputs an IMAGE) → DistributedCollector → SaveImage `save`."""
    return {**source,
            "collect": {"class_type": "DistributedCollector", "inputs": {"images": [node, 0], "load_balance": False}},
            "save": {"class_type": "SaveImage", "inputs": {"images": ["collect", 0], "filename_prefix": "distributed"}}}


def colour_per_participant(width: int = 8, batch: dict | None = None) -> dict:
    prompt = {"colour": per_participant(str(RED), {"1": str(GREEN), "2": str(BLUE)}),
              "image": {"class_type": "EmptyImage",
                        "inputs": {"width": width, "height": 4, "batch_size": 1, "color": ["colour", 0]}}}
    if batch is not None:
        prompt["batch"] = batch
        prompt["image"]["inputs"]["batch_size"] = ["batch", 0]
    return collected(prompt)


def colours(images: np.ndarray) -> list[tuple[float, ...]]:
    """The colour of each image of a batch of flat-colour images."""
    assert np.all(images == images[:, :1, :1]), "an image is not one flat colour"
    return [tuple(float(c) for c in image[0, 0]) for image in images]


def test_every_server_loads_the_pack_the_test_nodes_and_the_extension(cluster):
    for server in cluster.servers:
        for node in ("LunaGlobalRefiner", "LunaSAM3Detailer", "LSDTestModels", "DistributedCollector"):
            assert node in server.get(f"/object_info/{node}"), (server.url, node)


@pytest.mark.parametrize(("worker_ids", "expected"), [
    ([], [RED]),
    (["1"], [RED, GREEN]),
    (["1", "2"], [RED, GREEN, BLUE]),
    (["2", "1"], [RED, GREEN, BLUE]),
    (["2"], [RED, GREEN]),
], ids=["no-worker", "worker-1", "workers-1-2", "request-order-ignored", "worker-2-alone-is-position-1"])
def test_master_image_comes_first_then_each_worker_in_config_order(all_up, worker_ids, expected):
    """DistributedValue's keys are 1-based positions among the workers that take part, in config order: worker "2"
    alone reads key "1"."""
    run = all_up.run(colour_per_participant(), worker_ids)
    assert run.history["status"]["status_str"] == "success"
    assert run.worker_count == len(worker_ids)
    assert colours(run.images["save"]) == [RGB[c] for c in expected]


def test_distributed_seed_is_seed_on_the_master_and_seed_plus_i_plus_1_on_worker_i(all_up):
    prompt = collected({
        "seed": {"class_type": "DistributedSeed", "inputs": {"seed": 100}},
        "image": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": ["seed", 0]}},
    })
    run = all_up.run(prompt)
    assert [round(c[2] * 255) for c in colours(run.images["save"])] == [100, 101, 102]


def test_a_worker_runs_only_what_feeds_the_collector_and_previews_it(all_up):
    prompt = colour_per_participant()
    prompt["side"] = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": 0}}
    prompt["side_preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["side", 0]}}
    run = all_up.run(prompt, ["1"])
    assert {"save", "side_preview"} <= set(run.history["outputs"])
    worker_prompt = all_up.worker_last_entry(0)["prompt"][2]
    downstream = {k: v for k, v in worker_prompt.items() if k not in ("colour", "image", "collect")}
    assert [(v["class_type"], v["inputs"]) for v in downstream.values()] == [("PreviewImage", {"images": ["collect", 0]})]
    assert worker_prompt["collect"]["inputs"]["is_worker"] is True


def test_batches_are_concatenated_with_no_boundaries(all_up):
    run = all_up.run(colour_per_participant(batch=per_participant("1", {"1": "2", "2": "3"})))
    assert colours(run.images["save"]) == [RGB[RED]] + [RGB[GREEN]] * 2 + [RGB[BLUE]] * 3


def test_a_worker_image_of_another_size_leaves_only_the_masters_images(all_up):
    """torch.cat fails on the master; the collector logs it and returns the master's own batch, status success."""
    prompt = colour_per_participant()
    prompt["width"] = per_participant("8", {"1": "8", "2": "6"})
    prompt["image"]["inputs"]["width"] = ["width", 0]
    run = all_up.run(prompt)
    assert run.history["status"]["status_str"] == "success"
    assert colours(run.images["save"]) == [RGB[RED]]
    assert run.worker_count == 2
    assert [all_up.worker_last_entry(i)["status"]["status_str"] for i in (0, 1)] == ["success", "success"]


def test_worker_images_come_back_truncated_to_8_bits(all_up):
    """The master's own image is passed as it is; a worker's goes through (255 * x).astype(uint8), a PNG and / 255:
    floor, not rounding, and no clamp (1.02 * 255 = 260.1 wraps to 4)."""
    levels = [k / 255 for k in range(256)]
    levels += [(k + f) / 255 for f in (0.3, 0.5, 0.7, 0.999) for k in range(255)]
    sent = np.array(levels + [1.02], dtype=np.float32)
    prompt = {
        "image": {"class_type": "LSDTestValuesImage", "inputs": {"values": " ".join(map(repr, levels + [1.02])), "height": 1}},
        "collect": {"class_type": "DistributedCollector", "inputs": {"images": ["image", 0], "load_balance": False}},
        "dump": {"class_type": "LSDTestImageDump", "inputs": {"images": ["collect", 0], "filename_prefix": "levels"}},
    }
    master, worker = all_up.run(prompt, ["1"]).images["dump"][:, 0, :, 0]
    np.testing.assert_array_equal(master, sent)
    codes = np.round(worker * 255).astype(int)
    np.testing.assert_array_equal(codes[:-1], np.floor(sent[:-1] * np.float32(255)).astype(int))
    assert np.all((sent[:-1] - worker[:-1] >= -1e-7) & (sent[:-1] - worker[:-1] < 1 / 255))
    assert codes[-1] == 4


def test_a_worker_that_fails_leaves_success_with_fewer_images_after_the_worker_timeout(all_up):
    prompt = collected({"values": per_participant("0", {"1": "1", "2": "not a number"}, "STRING"),
                        "image": {"class_type": "LSDTestValuesImage", "inputs": {"values": ["values", 0], "height": 2}}})
    started = time.monotonic()
    run = all_up.run(prompt)
    assert run.history["status"]["status_str"] == "success"
    assert colours(run.images["save"]) == [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)]
    assert time.monotonic() - started >= WORKER_TIMEOUT_S
    assert all_up.worker_last_entry(1)["status"]["status_str"] == "error"


def test_a_worker_killed_mid_run_leaves_success_with_fewer_images(all_up):
    prompt = colour_per_participant()
    prompt["seconds"] = per_participant("0", {"1": "0", "2": "120"}, "FLOAT")
    prompt["delay"] = {"class_type": "LSDTestDelay", "inputs": {"images": ["image", 0], "seconds": ["seconds", 0]}}
    prompt["collect"]["inputs"]["images"] = ["delay", 0]
    started = time.monotonic()
    prompt_id, dispatched = all_up.queue(prompt)
    all_up.wait_until_running(1)
    all_up.kill_worker(1)
    run = all_up.wait(prompt_id, dispatched, timeout=60)
    assert dispatched == 2
    assert run.history["status"]["status_str"] == "success"
    assert colours(run.images["save"]) == [RGB[RED], RGB[GREEN]]
    assert WORKER_TIMEOUT_S <= time.monotonic() - started < 30


def test_a_worker_down_before_the_run_is_skipped_at_once(cluster):
    cluster.kill_worker(1)
    started = time.monotonic()
    run = cluster.run(colour_per_participant())
    assert run.worker_count == 1
    assert run.history["status"]["status_str"] == "success"
    assert colours(run.images["save"]) == [RGB[RED], RGB[GREEN]]
    assert time.monotonic() - started < WORKER_TIMEOUT_S
