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
