"""Shared test set-up: the pack imported as ComfyUI imports it, and the local ComfyUI host on sys.path."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMFYUI = Path(os.environ.get("LSD_COMFYUI", ROOT / ".comfyui")).resolve()
PACK = "luna_semantic_detailer"


def _import_pack():
    """Import the repo as ComfyUI's loader does: a package named after its folder, here `luna_semantic_detailer`."""
    if PACK in sys.modules:
        return sys.modules[PACK]
    spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = module
    spec.loader.exec_module(module)
    return module


if str(COMFYUI) not in sys.path and (COMFYUI / "comfy").is_dir():
    sys.path.insert(0, str(COMFYUI))
    import comfy.cli_args  # noqa: E402  (ComfyUI must see --cpu before model_management loads)
    import torch  # noqa: E402

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True

_import_pack()


FIXTURE_NODES = ROOT / "tests" / "fixtures" / "lsd_test_models"


def start_server(workdir: Path, comfyui: Path = COMFYUI, python: Path | None = None, front_end_root: Path | None = None):
    """A real ComfyUI server of `comfyui` (run by `python`, serving `front_end_root` if given) with the pack, the
    test-only model nodes and the tiny SAM3 checkpoint."""
    from comfy_server import ComfyServer
    from fixtures.tiny_sam3 import build_tiny_sam3, write_models_dir

    write_models_dir(workdir / "models" / "sam3", build_tiny_sam3())
    return ComfyServer(comfyui, workdir, extra_custom_nodes=(FIXTURE_NODES,), models=workdir / "models",
                       python=python, front_end_root=front_end_root).start()


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """One real ComfyUI server for the session, with the pack and the test-only model node loaded."""
    if not (COMFYUI / "main.py").is_file():
        pytest.fail(f"no ComfyUI host at {COMFYUI}: run `make test` (it provisions one) or set LSD_COMFYUI")
    server = start_server(tmp_path_factory.mktemp("comfy"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def other_servers(tmp_path_factory):
    """Servers of other hosts than the session's (tests/frontends.py), each started on first use, stopped at the end."""
    started = {}

    def server_of(host):
        if host.name not in started:
            started[host.name] = start_server(tmp_path_factory.mktemp(f"comfy-{host.name}"), host.comfyui,
                                              host.python, host.front_end_root)
        return started[host.name]

    yield server_of
    for server in started.values():
        server.stop()


@pytest.fixture
def big_gpu():
    """ComfyUI's memory estimate sees a 24 GiB device with nothing loaded: batches as an artist's GPU allows them."""
    from fixtures.run_events import gpu_memory

    with gpu_memory(24):
        yield


WORKER_TIMEOUT_S = 3


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A ComfyUI-Distributed master and two workers of the local host on loopback (tests/distributed_cluster.py), with
    the pack and the test nodes; the master gives up on a silent worker after WORKER_TIMEOUT_S."""
    from distributed_cluster import TARBALL, DistributedCluster

    if not TARBALL.is_file():
        pytest.skip(f"no ComfyUI-Distributed tarball at {TARBALL} (set LSD_DISTRIBUTED_TARBALL=/path/to/"
                    "comfyui-distributed-1.4.4.tar.gz)")
    if not (COMFYUI / "main.py").is_file():
        pytest.fail(f"no ComfyUI host at {COMFYUI}: run `make test` (it provisions one) or set LSD_COMFYUI")
    with DistributedCluster(COMFYUI, TARBALL, tmp_path_factory.mktemp("distributed"), workers=2,
                            custom_nodes=(FIXTURE_NODES,), worker_timeout_s=WORKER_TIMEOUT_S) as running:
        yield running


@pytest.fixture
def all_up(cluster):
    """The cluster with every worker running (a test before may have killed one)."""
    for index in range(len(cluster.workers)):
        if not cluster.alive(index):
            cluster.restart_worker(index)
    return cluster
