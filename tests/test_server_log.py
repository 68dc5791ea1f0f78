"""ComfyUI has nothing to warn about the pack: not when it loads it (a V1 pack: NODE_CLASS_MAPPINGS, WEB_DIRECTORY,
pyproject.toml read for the Registry; ComfyUI 0.33 prints nothing about that form), not when the frontend fetches its
files. On `make test-compat` this is the 0.33 host; tests/test_workflows.py checks each bundled workflow's run, and
tests/test_browser.py the servers the browser opens, the same way (tests/server_log.py)."""
from __future__ import annotations

import re

import pytest

from server_log import deprecation_warnings, lines, warnings_naming_the_pack

pytestmark = pytest.mark.host

READY = "To see the GUI go to"


def test_comfyui_warns_about_nothing_of_the_pack_when_it_loads_it_and_serves_its_files(comfy_server):
    log = comfy_server.log
    assert READY in log, log[-3000:]
    start_up = log[:log.index(READY)]
    assert [line for line in lines(start_up) if re.search(r"seconds: .*luna_semantic_detailer", line)], \
        "the pack is not in ComfyUI's import times: this is not the log of a server that loaded it"
    before = len(comfy_server.log)
    ours = [path for path in comfy_server.get("/extensions") if "luna_semantic_detailer" in path]
    assert ours
    for path in ours:  # what the frontend imports, as it imports it
        assert comfy_server.get(path)
    assert comfy_server.get("/workflow_templates")["luna_semantic_detailer"]
    said = start_up + comfy_server.log[before:]
    assert warnings_naming_the_pack(said) == []
    assert deprecation_warnings(said) == []


def test_the_log_reader_counts_what_comfyui_prints_as_warnings_and_nothing_else():
    """Lines as the hosts print them (0.33 through its coloured level tags, 0.3.75 bare): 0.33's legacy-API warning
    for a file an extension imported (captured from a 0.33 server asked for /extensions/core/<a luna file>), a
    deprecation 0.3.75 prints without naming the caller, and the pack's import-time line, which is no warning."""
    legacy = ("\x1b[1m\x1b[33m[WARNING]\x1b[0m [DEPRECATION WARNING] Detected import of deprecated legacy API: "
              "/extensions/core/luna_semantic_detailer_probe.js. This is likely caused by a custom node extension "
              "using outdated APIs.")
    bare = "WARNING: The comfy.samplers.calc_cond_uncond_batch function is deprecated please use the calc_cond_batch one instead."
    loaded = "\x1b[32m[INFO]\x1b[0m    0.1 seconds: /work/main/.comfyui-0.33/custom_nodes/luna_semantic_detailer"
    own = "[Luna] SAM3 tiny loaded (cpu, torch.float32) in 0.1 s"
    log = "\n".join((loaded, legacy, own, bare))
    assert warnings_naming_the_pack(log) == [lines(legacy)[0]]
    assert deprecation_warnings(log) == [lines(legacy)[0], bare]
    assert warnings_naming_the_pack("\n".join((loaded, own))) == deprecation_warnings("\n".join((loaded, own))) == []
