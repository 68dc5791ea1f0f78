"""A real ComfyUI server in a subprocess, for tests that go through its HTTP API."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PromptFailed(RuntimeError):
    """A queued prompt ended in an error; the message is ComfyUI's own."""


class ComfyServer:
    """`python main.py --cpu` on a free loopback port, with private input/output/user folders under `workdir`.

    `python` runs it (default: this interpreter, for the host whose venv runs the tests); `front_end_root` serves
    another frontend build than the host's own (ComfyUI's --front-end-root); `env` adds environment variables; `cpu`
    False lets it use the GPU (benchmarks on a GPU box)."""

    def __init__(self, comfyui: Path, workdir: Path, extra_custom_nodes: tuple[Path, ...] = (), models: Path | None = None,
                 python: Path | None = None, front_end_root: Path | None = None, env: dict[str, str] | None = None,
                 cpu: bool = True):
        self.comfyui = Path(comfyui)
        self.python = str(python or sys.executable)
        self.front_end_root = front_end_root
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "server.log"
        self.process: subprocess.Popen | None = None
        self.cwd = self.comfyui
        self._extra_custom_nodes = extra_custom_nodes
        self._models = models
        self._env = dict(env or {})
        self.cpu = cpu

    def _paths_config(self) -> Path:
        custom = self.workdir / "custom_nodes"
        custom.mkdir(parents=True, exist_ok=True)
        for node_dir in self._extra_custom_nodes:
            link = custom / node_dir.name
            if not link.exists():
                link.symlink_to(node_dir.resolve(), target_is_directory=True)
        lines = ["lsd_tests:", f"  custom_nodes: {custom}"]
        if self._models is not None:
            for kind in ("checkpoints", "vae", "clip", "clip_vision", "upscale_models", "sam3"):
                lines.append(f"  {kind}: {self._models / kind}")
        config = self.workdir / "extra_model_paths.yaml"
        config.write_text("\n".join(lines) + "\n")
        return config

    def command(self) -> list[str]:
        """`python main.py` with private folders, a loopback port and the paths config."""
        dirs = {name: self.workdir / name for name in ("input", "output", "temp", "user")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        frontend = ["--front-end-root", str(self.front_end_root)] if self.front_end_root else []
        return [
            self.python, "main.py", *(["--cpu"] if self.cpu else []), "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-auto-launch", "--database-url", "sqlite:///:memory:",
            "--extra-model-paths-config", str(self._paths_config()),
            "--input-directory", str(dirs["input"]), "--output-directory", str(dirs["output"]),
            "--temp-directory", str(dirs["temp"]), "--user-directory", str(dirs["user"]), *frontend,
        ]

    def start(self, timeout: float = 300.0) -> "ComfyServer":
        """Launch `command()` in `cwd` as the leader of its own process group (as a terminal runs it)."""
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process and return at once; `wait_ready` waits for the HTTP API. A relaunch appends to the log."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._cmd = self.command()
        self._log = open(self.log_path, "a")
        self.process = subprocess.Popen(self._cmd, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=self.environment(), start_new_session=True)

    def wait_ready(self, timeout: float = 300.0) -> "ComfyServer":
        """Poll /system_stats until the launched server answers; stop it and raise with the log tail if it does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self._cmd[0]} exited with {self.process.returncode} while starting:\n{self.log[-4000:]}")
            try:
                self.get("/system_stats", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log[-4000:]}")

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1", **self._env}

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 30.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            ctype = resp.headers.get("Content-Type", "")
        return json.loads(raw) if "json" in ctype else raw

    def get(self, path: str, timeout: float = 30.0):
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, body: dict, timeout: float = 30.0):
        return self.request("POST", path, body, timeout=timeout)

    def queue(self, prompt: dict) -> str:
        """POST /prompt; a validation error raises PromptFailed with ComfyUI's node errors."""
        try:
            return self.post("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})["prompt_id"]
        except urllib.error.HTTPError as exc:
            raise PromptFailed(exc.read().decode(errors="replace")) from exc

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """Poll /history until the prompt ends; return its entry, or raise PromptFailed with the execution error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                status = entry["status"]
                if status.get("status_str") == "error":
                    errors = [m for m in status.get("messages", []) if m[0] == "execution_error"]
                    raise PromptFailed(json.dumps(errors[0][1] if errors else status, indent=1))
                return entry
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log[-4000:]}")
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        return self.wait(self.queue(prompt), timeout)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGINT to the process group, as Ctrl-C would, then SIGTERM, then SIGKILL, `timeout` seconds apart.

        Returns the exit code of the process this server started."""
        if self.process is None:
            return None
        if self.process.poll() is not None:
            self._log.close()
            return self.process.returncode
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    return self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    continue
            return self.process.wait()
        finally:
            self._log.close()

    def kill(self) -> int:
        """SIGKILL the whole process group at once, as a crash or the OOM killer would; returns the exit code."""
        if self.process.poll() is not None:
            self._log.close()
            return self.process.returncode
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            return self.process.wait(30)
        finally:
            self._log.close()


def final_exceptions(log: str) -> list[str]:
    """The exception line that ends each traceback in `log`; a chain ("During handling of the above exception...")
    counts once, by its last exception."""
    finals: list[str] = []
    inside = False
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            inside = True
        elif line.startswith(("During handling of the above exception", "The above exception was the direct cause")):
            if finals:
                finals.pop()
        elif inside and line.strip() and not line[0].isspace():
            finals.append(line.strip())
            inside = False
    return finals
