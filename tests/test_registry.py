"""Ready for the Comfy Registry: `comfy node validate` passes, `comfy node pack` archives what ComfyUI loads and
nothing else, and what pyproject.toml tells the Registry (as comfy-cli reads it) is true of the hosts the suite runs on.

comfy-cli lives in .venv-tools (scripts/provision-registry-tools.sh, `make test` runs it); it packs the files git
tracks, so it runs on a fresh repository holding this working tree's tracked and untracked, not ignored, files."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / ".venv-tools" / "bin"
PACK = "luna_semantic_detailer"

pytestmark = pytest.mark.skipif(not (TOOLS / "comfy").exists(),
                                reason="no comfy-cli in .venv-tools (scripts/provision-registry-tools.sh)")


def comfy(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, DO_NOT_TRACK="1", NO_COLOR="1", COLUMNS="200")
    return subprocess.run([str(TOOLS / "comfy"), "--skip-prompt", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """This working tree as a repository of its own: what `git add -A; git commit` would publish."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    copy = tmp_path_factory.mktemp("checkout")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    subprocess.run(["git", "add", "-A"], cwd=copy, check=True)
    return copy


def test_comfy_node_validate_passes(checkout):
    done = comfy(["node", "validate"], checkout)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "All validation checks passed" in output, output
    assert "Warning" not in output and "Security warnings" not in output, output


def loaded_files() -> set[str]:
    """The pack's modules this process imported as ComfyUI does (conftest), as paths in the repository."""
    prefix = f"{PACK}."
    paths = {Path(m.__file__).resolve() for name, m in sys.modules.items()
             if (name == PACK or name.startswith(prefix)) and getattr(m, "__file__", None)}
    return {p.relative_to(ROOT).as_posix() for p in paths}


def test_the_archive_holds_what_comfyui_loads_and_nothing_else(checkout):
    import luna_semantic_detailer.nodes  # noqa: F401  (every node module, as ComfyUI's loader imports them)
    from luna_semantic_detailer import routes  # noqa: F401

    done = comfy(["node", "pack"], checkout)
    assert done.returncode == 0, done.stdout + done.stderr
    archived = set(zipfile.ZipFile(checkout / "node.zip").namelist())
    tracked = {p.relative_to(checkout).as_posix() for p in checkout.rglob("*") if p.is_file() and ".git" not in p.parts}
    served = {name for name in tracked if name.startswith(("web/", "example_workflows/"))}
    for_installers = {"requirements.txt", "pyproject.toml", "README.md", "LICENSE"}
    assert loaded_files() | served | for_installers <= archived
    assert archived <= tracked
    outside = {name for name in archived if "/" in name and name.split("/")[0] not in
               {"nodes", "pipeline", "kernels", "daemon", "web", "example_workflows"}}
    assert outside == set(), outside
    top_level = {name for name in archived if "/" not in name}
    assert top_level - for_installers == {p for p in top_level if p.endswith(".py")}, top_level
    assert not {name for name in archived if name.startswith(("tests/", ".ci/", "benchmarks/", "scripts/", "docs/"))}


def registry_view(checkout: Path) -> dict:
    """pyproject.toml as comfy-cli reads it for the Registry (its own parser, in its own venv)."""
    script = """if True:
        import dataclasses, json
        from comfy_cli.registry.config_parser import extract_node_configuration

        def plain(value):
            if dataclasses.is_dataclass(value):
                return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value if value is None or isinstance(value, (bool, int, float)) else str(value)

        print(json.dumps(plain(extract_node_configuration("pyproject.toml"))))
    """
    done = subprocess.run([str(TOOLS / "python"), "-c", script], cwd=checkout, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, DO_NOT_TRACK="1"))
    *said, answer = done.stdout.splitlines()
    assert done.returncode == 0 and not [line for line in said if "Warning" in line], done.stdout + done.stderr
    return json.loads(answer)


def test_what_pyproject_tells_the_registry_is_true_of_this_host(checkout):
    import importlib.metadata
    import platform

    from packaging.specifiers import SpecifierSet

    from conftest import COMFYUI

    view = registry_view(checkout)
    project, comfy_table = view["project"], view["tool_comfy"]
    host_version = (COMFYUI / "comfyui_version.py").read_text().split('__version__ = "')[1].split('"')[0]
    assert host_version in SpecifierSet(project["supported_comfyui_version"]), project["supported_comfyui_version"]
    frontend = importlib.metadata.version("comfyui-frontend-package")
    assert frontend in SpecifierSet(project["supported_comfyui_frontend_version"])
    assert "comfyui-frontend-package" not in " ".join(project["dependencies"])
    assert project["supported_os"] == ["POSIX :: Linux"] and platform.system() == "Linux"
    # No accelerator is claimed before a real GPU has run scripts/device-check.sh (README, pyproject's comment).
    assert project["supported_accelerators"] == []
    assert (checkout / "LICENSE").read_text().startswith("                    GNU GENERAL PUBLIC LICENSE\n")
    assert project["license"]["text"] == "GPL-3.0-or-later" and "Version 3" in (checkout / "LICENSE").read_text()[:200]
    assert comfy_table["publisher_id"] and comfy_table["display_name"] and project["version"]
