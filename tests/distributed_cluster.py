"""ComfyUI-Distributed on loopback: one master and N workers, each a real `main.py --cpu` (ComfyServer) with a private
workdir and its own unpacked copy of the extension (so its own gpu_config.json), prompts queued through the master's
POST /distributed/queue as the extension's web UI and API clients do.

    with DistributedCluster(COMFYUI, TARBALL, tmp_path, workers=2, custom_nodes=(FIXTURE_NODES,)) as cluster:
        run = cluster.run(prompt)                      # every worker; or cluster.run(prompt, ["2"])
        run.images["save"]                             # (B, H, W, C) float32: the master's batch, then each worker's
        prompt_id, dispatched = cluster.queue(prompt)  # or in two steps, to act while it runs:
        cluster.wait_until_running(1); cluster.kill_worker(1)
        run = cluster.wait(prompt_id, dispatched)
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import time
import urllib.error
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from comfy_server import ComfyServer, PromptFailed

ROOT = Path(__file__).resolve().parents[1]
TARBALL = Path(os.environ.get("LSD_DISTRIBUTED_TARBALL",
                              ROOT.parent / "shared" / "hosts" / "comfyui-distributed-1.4.4.tar.gz"))
EXTENSION = "ComfyUI-Distributed"
STOP_TIMEOUT = 15.0


@dataclass
class DistributedRun:
    """What the master gave back for one queued prompt."""

    prompt_id: str
    worker_count: int
    history: dict
    images: dict[str, np.ndarray] = field(default_factory=dict)
    """Node id → its saved images as one float32 (B, H, W, C) array: PNGs (SaveImage, PreviewImage) divided by 255,
    LSDTestImageDump's .npy files exactly."""


def unpack_extension(tarball: Path, custom_nodes: Path) -> Path:
    """Unpack the ComfyUI-Distributed release into `custom_nodes`; returns the extension folder."""
    custom_nodes.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as archive:
        archive.extractall(custom_nodes, filter="data")
    folder = custom_nodes / EXTENSION
    if not (folder / "__init__.py").is_file():
        raise RuntimeError(f"{tarball} did not unpack to {EXTENSION}/ with an __init__.py")
    return folder


def write_config(extension: Path, workers: list[dict], settings: dict) -> None:
    config = {"master": {"host": "127.0.0.1"}, "workers": workers, "settings": settings}
    (extension / "gpu_config.json").write_text(json.dumps(config, indent=2))


def load_outputs(server: ComfyServer, history: dict) -> dict[str, np.ndarray]:
    """Each output node's files, fetched from `server`'s /view, as float32 (B, H, W, C) arrays."""
    from PIL import Image

    def fetch(item: dict) -> bytes:
        query = urllib.parse.urlencode({k: item[k] for k in ("filename", "subfolder", "type")})
        return server.get(f"/view?{query}")

    arrays: dict[str, np.ndarray] = {}
    for node_id, output in history.get("outputs", {}).items():
        batch = []
        for item in output.get("images", []):
            with Image.open(io.BytesIO(fetch(item))) as image:
                batch.append(np.asarray(image, dtype=np.float32)[None] / 255.0)
        for item in output.get("arrays", []):
            batch.append(np.load(io.BytesIO(fetch(item))))
        if batch:
            arrays[node_id] = np.concatenate(batch)
    return arrays


class DistributedCluster:
    """A master and `workers` workers of the `comfyui` host, under `workdir/master` and `workdir/worker<i>`.

    Worker i (0-based here) is `"<i + 1>"` in the master's gpu_config.json, in that order; `worker_timeout_s` is the
    master's `settings.worker_timeout_seconds`, how long its collector waits without news before it probes the
    missing workers and gives up on those that are down or idle."""

    def __init__(self, comfyui: Path, tarball: Path, workdir: Path, workers: int, custom_nodes: tuple[Path, ...] = (),
                 models: Path | None = None, worker_timeout_s: int = 5, cpu: bool = True):
        if workers < 1:
            raise ValueError("a cluster needs at least one worker")
        self.tarball = Path(tarball)
        self.workdir = Path(workdir)
        self.worker_timeout_s = worker_timeout_s
        self.workers = [ComfyServer(comfyui, self.workdir / f"worker{i + 1}", custom_nodes, models,
                                    env={"COMFYUI_IS_WORKER": "1"}, cpu=cpu) for i in range(workers)]
        self.master = ComfyServer(comfyui, self.workdir / "master", custom_nodes, models, cpu=cpu)
        self.worker_ids = [str(i + 1) for i in range(workers)]

    @property
    def servers(self) -> list[ComfyServer]:
        return [self.master, *self.workers]

    def start(self, timeout: float = 300.0) -> "DistributedCluster":
        """Unpack the extension for each server, write the configs, launch all servers at once and wait for each."""
        settings = {"debug": True, "auto_launch_workers": False}
        listed = [{"id": wid, "name": f"w{wid}", "host": "127.0.0.1", "port": w.port, "enabled": True, "type": "local"}
                  for wid, w in zip(self.worker_ids, self.workers)]
        for server in self.servers:
            extension = unpack_extension(self.tarball, server.workdir / "custom_nodes")
            if server is self.master:
                write_config(extension, listed, {**settings, "worker_timeout_seconds": self.worker_timeout_s})
            else:
                write_config(extension, [], settings)
        try:
            for server in self.servers:
                server.launch()
            deadline = time.monotonic() + timeout
            for server in self.servers:
                server.wait_ready(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every server's process group (SIGINT, then SIGTERM, then SIGKILL); the first error is raised last."""
        errors = []
        for server in self.servers:
            try:
                server.stop(STOP_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - every server must get its stop before anything is raised
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> "DistributedCluster":
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def log_tails(self, chars: int = 3000) -> str:
        return "\n".join(f"----- {name} log -----\n{server.log[-chars:]}"
                         for name, server in zip(["master", *(f"worker {w}" for w in self.worker_ids)], self.servers))

    def worker_last_entry(self, index: int) -> dict:
        """The history entry of the prompt worker `index` was given last."""
        history = self.workers[index].get("/history")
        if not history:
            raise RuntimeError(f"worker {self.worker_ids[index]} has run nothing\n{self.log_tails()}")
        return max(history.values(), key=lambda entry: entry["prompt"][0])

    def queue(self, prompt: dict, worker_ids: list[str] | None = None) -> tuple[str, int]:
        """POST /distributed/queue to the master for `worker_ids` (all by default); returns (prompt_id, the number of
        workers the master dispatched to: those that answered its probe)."""
        body = {"prompt": prompt, "client_id": uuid.uuid4().hex,
                "enabled_worker_ids": self.worker_ids if worker_ids is None else worker_ids}
        try:
            reply = self.master.post("/distributed/queue", body, timeout=120)
        except urllib.error.HTTPError as exc:
            raise PromptFailed(f"{exc.read().decode(errors='replace')}\n{self.log_tails()}") from exc
        return reply["prompt_id"], int(reply["worker_count"])

    def wait(self, prompt_id: str, worker_count: int, timeout: float = 120.0) -> DistributedRun:
        """The master's history entry and saved images once the prompt ends; errors carry every server's log tail."""
        try:
            history = self.master.wait(prompt_id, timeout)
        except (PromptFailed, TimeoutError, RuntimeError) as exc:
            raise type(exc)(f"{exc}\n{self.log_tails()}") from exc
        return DistributedRun(prompt_id, worker_count, history, load_outputs(self.master, history))

    def run(self, prompt: dict, worker_ids: list[str] | None = None, timeout: float = 120.0) -> DistributedRun:
        return self.wait(*self.queue(prompt, worker_ids), timeout)

    def kill_worker(self, index: int) -> int:
        """SIGKILL worker `index`'s process group; returns its exit code."""
        return self.workers[index].kill()

    def restart_worker(self, index: int, timeout: float = 300.0) -> None:
        """Start a stopped or killed worker again on its port (the one in the master's config)."""
        worker = self.workers[index]
        if worker.process is not None and worker.process.poll() is None:
            raise RuntimeError(f"worker {self.worker_ids[index]} is still running")
        worker.launch()
        worker.wait_ready(timeout)

    def alive(self, index: int) -> bool:
        process = self.workers[index].process
        return process is not None and process.poll() is None

    def wait_until_running(self, index: int, timeout: float = 60.0) -> None:
        """Return once worker `index` is executing a prompt (its /queue shows one running)."""
        worker = self.workers[index]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if worker.get("/queue", timeout=5)["queue_running"]:
                return
            time.sleep(0.05)
        raise TimeoutError(f"worker {self.worker_ids[index]} ran nothing within {timeout:.0f} s\n{self.log_tails()}")
