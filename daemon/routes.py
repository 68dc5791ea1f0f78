"""GET /luna/sam3: what LunaSAM3Daemon holds (checkpoint, device, dtype, bytes, loaded), for the UI and for scripts."""
from __future__ import annotations

import logging
import sys


def register() -> None:
    """Add the route to ComfyUI's server when one is running (not when the pack is imported by tests or scripts)."""
    server = sys.modules.get("server")
    PromptServer = getattr(server, "PromptServer", None)
    if getattr(PromptServer, "instance", None) is None:
        return
    from aiohttp import web

    from .host import daemon

    @PromptServer.instance.routes.get("/luna/sam3")
    async def sam3_status(request):
        return web.json_response({"models": daemon().report()})

    logging.debug("[Luna] GET /luna/sam3 registered")
