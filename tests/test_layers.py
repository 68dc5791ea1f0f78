"""The layers of the pack: nodes -> pipeline (the ComfyUI glue) -> kernels (pure tensor math); nothing imports back up."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMFY_MODULES = ("comfy", "comfy_extras", "folder_paths", "nodes", "server", "latent_preview", "node_helpers", "execution")


def imports(path: Path) -> set[str]:
    """Every module a file imports, relative ones resolved to the pack's top-level folders ("pipeline", "kernels", ...)."""
    out = set()
    package = path.relative_to(ROOT).parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                name = ".".join((*base, node.module)) if node.module else ".".join(base)
                out.add("." + (name or "__init__"))
            else:
                out.add(node.module)
    return out


def files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", files("kernels"), ids=lambda p: str(p.relative_to(ROOT)))
def test_kernels_import_neither_comfyui_nor_the_layers_above(path):
    found = imports(path)
    assert not [m for m in found if m.split(".")[0] in COMFY_MODULES], found
    assert not [m for m in found if m.startswith((".pipeline", ".nodes", ".daemon", ".routes"))], found


@pytest.mark.parametrize("path", files("pipeline"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_pipeline_imports_no_node(path):
    found = imports(path)
    assert not [m for m in found if m.startswith((".nodes", ".routes")) or m == "nodes"], found


@pytest.mark.parametrize("path", files("nodes"), ids=lambda p: str(p.relative_to(ROOT)))
def test_nodes_reach_kernels_math_only_through_plain_data_and_sampling_through_the_pipeline(path):
    """A node may read kernel constants and data helpers, but the ComfyUI calls (sampling, VAE) live in pipeline/."""
    found = imports(path)
    assert not [m for m in found if m in ("comfy.sample", "comfy.samplers") and path.name not in ("common.py",)], found
