"""What a ComfyUI server's log says about the pack: its warnings, read as an artist reads the console.

0.33 tags each line with its level (`[WARNING]`, coloured); 0.3.75 prints the bare message. A line counts as a warning
where it says "warn" (0.33's tag included) or "deprecat" (ComfyUI's own deprecation messages, such as
0.33's "[DEPRECATION WARNING] Detected import of deprecated legacy API: …" or "The load_unet function has been
deprecated…", name the API, not the pack that called it: on a server that runs only this pack and its test nodes, any
deprecation warning is the pack's)."""
from __future__ import annotations

import re

ANSI = re.compile(r"\x1b\[[0-9;]*m")
WARNING = re.compile(r"warn|deprecat", re.IGNORECASE)
DEPRECATION = re.compile(r"deprecat", re.IGNORECASE)
PACK = re.compile(r"luna_semantic_detailer|luna-semantic-detailer|Luna")


def lines(log: str) -> list[str]:
    return [ANSI.sub("", line) for line in log.splitlines()]


def warnings_naming_the_pack(log: str) -> list[str]:
    """Warning lines that name the pack (its folder, its Registry id or a Luna node / extension)."""
    return [line for line in lines(log) if WARNING.search(line) and PACK.search(line)]


def deprecation_warnings(log: str) -> list[str]:
    """Every line that reports something deprecated."""
    return [line for line in lines(log) if DEPRECATION.search(line)]
