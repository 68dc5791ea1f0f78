"""`make run` as a user types it: the server lists every Luna node and serves the web UI, relative paths are read
from the folder make was typed in, Ctrl-C stops it cleanly; `COMFYUI_DIR` on the 0.33 host; a stale pack link.

The servers are real (`make run` on .comfyui, `make run COMFYUI_DIR=…` on .comfyui-0.33); the start-up checks of
scripts/run-host.sh (pack link, paths) run against a stand-in ComfyUI whose main.py prints how it was started.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from comfy_server import ComfyServer, final_exceptions, free_port
from conftest import ROOT
from luna_semantic_detailer import NODE_CLASS_MAPPINGS
from tested_hosts import NEWEST

pytestmark = pytest.mark.host

PROBE = "relative-args-probe.safetensors"
LINK = Path("custom_nodes") / "luna_semantic_detailer"


def shell_environment(folder: Path) -> dict[str, str]:
    """The environment of a fresh shell in `folder`: PWD set, no make variables of an enclosing `make test`."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return dict(env, PWD=str(folder))


class MakeRun(ComfyServer):
    """`make <arguments> PORT=<free port>` typed in `caller`, in a process group of its own as a terminal runs it."""

    def __init__(self, caller: Path, workdir: Path, arguments: list[str]):
        super().__init__(ROOT, workdir)
        self.cwd = caller
        self.arguments = arguments

    def command(self) -> list[str]:
        return ["make", *self.arguments, f"PORT={self.port}"]

    def environment(self) -> dict[str, str]:
        return dict(shell_environment(self.cwd), PYTHONUNBUFFERED="1")


def server_args(folder: Path, caller: Path) -> str:
    """ARGS for a server with folders of its own under `folder`, each path written relative to `caller`: a paths
    config whose `sam3` folder holds the (empty) checkpoint PROBE, and private input/output/temp/user folders."""
    sam3 = folder / "models" / "sam3"
    sam3.mkdir(parents=True)
    (sam3 / PROBE).write_bytes(b"")
    config = folder / "paths.yaml"
    config.write_text(f"make_run_probe:\n  sam3: {sam3}\n")
    args = ["--extra-model-paths-config", os.path.relpath(config, caller), "--database-url", "sqlite:///:memory:"]
    for name in ("input", "output", "temp", "user"):
        (folder / name).mkdir()
        args += [f"--{name}-directory", os.path.relpath(folder / name, caller)]
    return " ".join(args)


def check_serving(server: ComfyServer, folder: Path) -> None:
    """Every Luna node in /object_info, the web UI at /, and the paths of `server_args(folder, …)` in effect."""
    info = server.get("/object_info")
    assert sorted(set(NODE_CLASS_MAPPINGS) - set(info)) == []
    with urllib.request.urlopen(server.url + "/", timeout=30) as page:
        assert page.status == 200 and page.headers.get_content_type() == "text/html"
        assert b"<html" in page.read().lower()
    assert PROBE in info["LunaSAM3Loader"]["input"]["required"]["checkpoint"][0], "the relative paths config was not read"
    assert f"Setting output directory to: {folder / 'output'}" in server.log


def check_ctrl_c(server: ComfyServer) -> None:
    """Ctrl-C (SIGINT to the process group): make re-raises it, as it does for any interrupted recipe (a shell shows
    130); ComfyUI runs its own shutdown ("Stopped server"; it exits 0 on SIGINT, see test_host); the only tracebacks
    are of requests the interrupt cut short; nothing of the group is left and the port is free again."""
    started = len(server.log)
    code = server.stop(timeout=30)
    shutdown = server.log[started:]
    assert code == -signal.SIGINT, f"make exited with {code}\n{shutdown[-3000:]}"
    assert "Stopped server" in shutdown, shutdown[-3000:]
    assert set(final_exceptions(shutdown)) <= {"KeyboardInterrupt"}, shutdown[-3000:]
    assert [line for line in shutdown.splitlines() if line.startswith("make: ***") and "Interrupt" not in line] == []
    with pytest.raises(ProcessLookupError):
        os.killpg(server.process.pid, 0)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", server.port))


@pytest.fixture(scope="module")
def make_run(tmp_path_factory):
    """`make run` typed in the repository (its paths in ARGS relative to it): one server for the tests below."""
    if not (ROOT / ".venv" / ".lsd-stamp").is_file():
        pytest.skip("the local host is not provisioned (`make host`); `make run` would spend ~3 min provisioning it")
    folder = tmp_path_factory.mktemp("make_run")
    server = MakeRun(ROOT, folder, ["run", f"ARGS={server_args(folder, ROOT)}"]).start()
    server.folder = folder
    yield server
    server.stop(timeout=30)


def test_make_run_serves_every_luna_node_the_web_ui_and_reads_relative_args(make_run):
    check_serving(make_run, make_run.folder)


def test_ctrl_c_stops_make_run_cleanly(make_run):
    check_ctrl_c(make_run)


def test_make_run_with_comfyui_dir_from_another_folder_on_the_033_host(tmp_path):
    """`make -C <repo> run COMFYUI_DIR=… COMFYUI_PYTHON=… ARGS=…` typed elsewhere, every path relative to there."""
    if NEWEST.missing():
        pytest.skip(NEWEST.missing())
    caller = tmp_path / "elsewhere"
    caller.mkdir()
    arguments = ["-C", str(ROOT), "run", f"COMFYUI_DIR={os.path.relpath(NEWEST.comfyui, caller)}",
                 f"COMFYUI_PYTHON={os.path.relpath(NEWEST.python, caller)}", f"ARGS={server_args(tmp_path, caller)}"]
    server = MakeRun(caller, tmp_path, arguments).start()
    try:
        assert server.get("/system_stats")["system"]["comfyui_version"] == NEWEST.release
        check_serving(server, tmp_path)
        check_ctrl_c(server)
    finally:
        server.stop(timeout=30)


# ------------------------------------------------------------------------- scripts/run-host.sh, stand-in ComfyUI

STAND_IN = """import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd()}))
"""


def stand_in(folder: Path) -> Path:
    """A folder run-host.sh takes for ComfyUI: its main.py prints its arguments and working folder, then exits."""
    host = folder / "ComfyUI"
    (host / "custom_nodes").mkdir(parents=True)
    (host / "main.py").write_text(STAND_IN)
    return host


def make_run_on(host: Path, caller: Path, *variables: str, python: str = sys.executable,
                env: dict[str, str] | None = None):
    """`make -C <repo> run COMFYUI_DIR=<host> …` typed in `caller`; (what main.py printed or None, make's stderr)."""
    result = subprocess.run(
        ["make", "-C", str(ROOT), "--no-print-directory", "run", f"COMFYUI_DIR={host}", f"COMFYUI_PYTHON={python}",
         f"PORT={free_port()}", *variables],
        cwd=caller, env=dict(shell_environment(caller), **(env or {})), capture_output=True, text=True, timeout=120)
    printed = json.loads(result.stdout.splitlines()[-1]) if result.returncode == 0 else None
    return printed, result.stderr


def normalized(arg: str) -> str:
    """An argument with its absolute path (also after `--option=`) normalized, to compare paths, not spellings."""
    head, eq, tail = arg.rpartition("=")
    if eq and tail.startswith("/"):
        return f"{head}={os.path.normpath(tail)}"
    return os.path.normpath(arg) if arg.startswith("/") else arg


def test_relative_paths_are_read_from_the_folder_make_was_typed_in(tmp_path):
    host = stand_in(tmp_path)
    caller = tmp_path / "work" / "here"
    caller.mkdir(parents=True)
    (caller / "models").mkdir()
    args = ("--extra-model-paths-config a.yaml ../b.yaml /abs/c.yaml --output-directory=out --input-directory /abs/in "
            "--preview-method auto --front-end-version Comfy-Org/ComfyUI_frontend@latest --user-directory u")
    printed, stderr = make_run_on(Path("../../ComfyUI"), caller, f"ARGS={args}",
                                  python=os.path.relpath(sys.executable, caller), env={"LSD_MODELS": "models"})
    assert printed is not None, stderr
    here = str(caller)
    config = host / ".lsd-extra-model-paths.yaml"
    expected = [
        "--extra-model-paths-config", str(config),
        "--extra-model-paths-config", os.path.join(here, "a.yaml"), str(tmp_path / "work" / "b.yaml"), "/abs/c.yaml",
        "--output-directory=" + os.path.join(here, "out"), "--input-directory", "/abs/in",
        "--preview-method", "auto", "--front-end-version", "Comfy-Org/ComfyUI_frontend@latest",
        "--user-directory", os.path.join(here, "u"),
    ]
    argv = [normalized(a) for a in printed["argv"]]
    assert argv[:3] == ["--listen", "127.0.0.1", "--port"] and argv[4:-len(expected)] in ([], ["--cpu"])
    assert argv[-len(expected):] == expected
    assert os.path.realpath(printed["cwd"]) == os.path.realpath(host)
    assert f"base_path: {caller / 'models'}" in config.read_text()


@pytest.mark.parametrize("target, exists, message", [
    ("moved-away", False, "pointed to {target}, which is gone"),  # the checkout was moved: a dangling link
    ("other-checkout", True, "pointed to another checkout ({target})"),
])
def test_a_stale_pack_link_is_replaced_with_a_message(tmp_path, target, exists, message):
    host = stand_in(tmp_path)
    if exists:
        (tmp_path / target).mkdir()
    (host / LINK).symlink_to(tmp_path / target)
    printed, stderr = make_run_on(host, tmp_path)
    assert printed is not None, stderr
    assert os.path.realpath(host / LINK) == os.path.realpath(ROOT)
    assert message.format(target=tmp_path / target) in stderr


def test_a_link_to_this_checkout_is_kept_without_a_word(tmp_path):
    host = stand_in(tmp_path)
    (host / LINK).symlink_to(ROOT)
    printed, stderr = make_run_on(host, tmp_path)
    assert printed is not None, stderr
    assert "run-host:" not in stderr and os.readlink(host / LINK) == str(ROOT)


def test_a_copy_of_the_pack_in_custom_nodes_is_left_alone_and_start_up_stops_with_the_fix(tmp_path):
    host = stand_in(tmp_path)
    (host / LINK).mkdir()
    (host / LINK / "__init__.py").write_text("# someone's clone\n")
    printed, stderr = make_run_on(host, tmp_path)
    assert printed is None
    assert "is a folder, not a link to this checkout" in stderr and f"mv {host / LINK}" in stderr
    assert (host / LINK / "__init__.py").read_text() == "# someone's clone\n"
