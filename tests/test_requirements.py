"""One list of requirements: every third-party import of the pack is in requirements.txt, nothing is there that the pack
does not import, pyproject.toml's dependencies are the same lines, and the test hosts' pins lie within them. The ComfyUI
releases the pack declares (pyproject's `requires-comfyui`) start at the oldest tested host and hold every tested one,
the ones README names."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import COMFYUI, ROOT
from tested_hosts import TESTED

tomllib = pytest.importorskip("tomllib", reason="tomllib (Python 3.11+) reads pyproject.toml")

DEVELOPMENT = ("tests", "benchmarks", "scripts")  # run in the test hosts only; ComfyUI never imports them
COMES_WITH_COMFYUI = {
    "torch": "ComfyUI's tensor library, installed for the user's GPU; a pack must not pull another build",
    "aiohttp": "the web framework of ComfyUI's server; routes.py imports it only inside that server",
}


def product_files() -> list[Path]:
    """The pack's Python files, as ComfyUI loads them: the repository without dot folders and development folders."""
    files = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        if parts[0] not in DEVELOPMENT and not any(p.startswith(".") or p == "__pycache__" for p in parts):
            files.append(path)
    return sorted(files)


def absolute_imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in `path`, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def comfyui_modules() -> set[str]:
    """What a custom node can import from the ComfyUI tree itself: its top-level modules and (namespace) packages."""
    return {p.stem for p in COMFYUI.iterdir() if p.suffix == ".py" or (p.is_dir() and any(p.glob("*.py")))}


def third_party_imports() -> dict[str, list[str]]:
    """Each imported top-level module that is not stdlib, ComfyUI's own or one that comes with ComfyUI, and its files."""
    provided = set(sys.stdlib_module_names) | comfyui_modules() | set(COMES_WITH_COMFYUI) | {"__future__"}
    found: dict[str, list[str]] = {}
    for path in product_files():
        for name in absolute_imports(path) - provided:
            found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def read_requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


REQUIREMENTS = read_requirements(ROOT / "requirements.txt")
DECLARED = {canonicalize_name(r.name) for r in REQUIREMENTS}


def distributions(module: str) -> set[str]:
    """The installed distributions that provide top-level `module` (PIL -> pillow)."""
    return {canonicalize_name(d) for d in importlib.metadata.packages_distributions().get(module, [module])}


def test_the_product_files_are_the_pack():
    names = {str(p.relative_to(ROOT)) for p in product_files()}
    assert {"__init__.py", "luna_types.py", "nodes/sam3.py", "daemon/checkpoints.py", "kernels/noise.py"} <= names
    assert not any(name.startswith(DEVELOPMENT) for name in names)


def test_comfyui_modules_are_read_from_the_host():
    assert {"comfy", "comfy_extras", "folder_paths", "server", "nodes", "node_helpers"} <= comfyui_modules()
    assert not {"numpy", "scipy", "transformers"} & comfyui_modules()


def test_every_third_party_import_is_declared():
    imports = third_party_imports()
    assert imports, "no third-party import found: the scan is broken"
    undeclared = {m: files for m, files in imports.items() if not distributions(m) & DECLARED}
    assert undeclared == {}, f"imported but not in requirements.txt: {undeclared}"


def test_nothing_is_declared_that_is_not_imported():
    imported = set().union(*(distributions(m) for m in third_party_imports()))
    assert sorted(DECLARED - imported) == [], "in requirements.txt but imported nowhere in the pack"


def test_what_comes_with_comfyui_is_in_comfyuis_own_requirements():
    comfy = {canonicalize_name(r.name) for r in read_requirements(COMFYUI / "requirements.txt")}
    assert set(COMES_WITH_COMFYUI) <= comfy


def test_pyproject_dependencies_are_requirements_txt_and_the_supported_frontends():
    """comfy-cli publishes a comfyui-frontend-package line as the supported frontend versions, not as a dependency."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)["project"]
    declared = [Requirement(d) for d in project["dependencies"]]
    frontends = [r for r in declared if r.name == "comfyui-frontend-package"]
    assert [str(r) for r in declared if r not in frontends] == [str(r) for r in REQUIREMENTS]
    assert len(frontends) == 1 and frontends[0].specifier.contains(importlib.metadata.version(frontends[0].name)), \
        "this host's frontend is outside the supported frontend versions"
    assert "optional-dependencies" not in project, "extras are a second list of requirements"


def test_the_hosts_pins_satisfy_the_requirements():
    pins = {canonicalize_name(r.name): r.specifier for r in read_requirements(ROOT / "requirements-host.txt")}
    for requirement in REQUIREMENTS:
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} is not pinned in requirements-host.txt"
        (version,) = [s.version for s in pin if s.operator == "=="]
        assert requirement.specifier.contains(version), f"requirements-host.txt pins {requirement.name}=={version}"
        assert importlib.metadata.version(requirement.name) == version, f"this host has another {requirement.name}"


def requires_comfyui() -> SpecifierSet:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return SpecifierSet(tomllib.load(fh)["tool"]["comfy"]["requires-comfyui"])


def test_every_tested_host_is_in_pyprojects_comfyui_range_which_starts_at_the_oldest_and_is_open_above():
    """The versions the hosts' own trees state (comfyui_version.py), not the Makefile's names for them."""
    supported = requires_comfyui()
    versions = {}
    for host in TESTED:
        if host.version() is None:
            pytest.skip(f"no ComfyUI at {host.comfyui} to read its version from (`{host.make}` builds it)")
        versions[host.comfyui.name] = host.version()
    assert [versions[h.comfyui.name] for h in TESTED] == [h.release for h in TESTED], versions
    outside = {name: v for name, v in versions.items() if v not in supported}
    assert outside == {}, f"requires-comfyui {supported} leaves out the tested hosts {outside}"
    lower = [Version(s.version) for s in supported if s.operator == ">="]
    assert lower == [min(Version(v) for v in versions.values())], f"{supported}: its lower bound is not the oldest tested"
    assert [str(s) for s in supported if s.operator != ">="] == [], f"{supported} has an upper bound"
    assert Version("0.49.0") in supported


def test_the_readme_names_the_tested_releases():
    """Each "Tested on ComfyUI …" line of README names the tested hosts, oldest and newest, and says later releases
    are expected to work."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = re.findall(r"Tested on ComfyUI ([0-9][0-9.]*[0-9]) and ([0-9][0-9.]*[0-9])", readme)
    assert named and set(named) == {tuple(h.release for h in TESTED)}, named
    assert "0.4x, are expected to work" in readme
