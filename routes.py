"""The pack's HTTP routes on ComfyUI's server, for the web extension and for scripts.

GET /luna/sam3: what LunaSAM3Daemon holds, models named as in the models folder. GET /luna/plan: the refiner's tiles
for a canvas, as the node will sample them (pipeline.tiles.plan_summary), for queries within the nodes' own limits
(plan_query). GET /luna/crop_sizes: the detailer's crop-size choices.
"""
from __future__ import annotations

import asyncio
import logging
import sys


def register() -> None:
    """Add the routes to ComfyUI's server when one is running (not when the pack is imported by tests or scripts)."""
    server = sys.modules.get("server")
    PromptServer = getattr(server, "PromptServer", None)
    if getattr(PromptServer, "instance", None) is None:
        return
    from aiohttp import web

    from . import plan_query
    from .daemon.host import daemon
    from .pipeline.crops import CROP_SIZES
    from .pipeline.tiles import plan_summary

    routes = PromptServer.instance.routes

    @routes.get("/luna/sam3")
    async def sam3_status(request):
        return web.json_response({"models": daemon().report()})

    @routes.get("/luna/plan")
    async def tile_plan(request):
        try:
            query = plan_query.read(request.rel_url.query.items())
        except plan_query.QueryError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        summary = await asyncio.get_running_loop().run_in_executor(None, plan_summary, *query.planner_args())
        return web.json_response(summary)

    @routes.get("/luna/crop_sizes")
    async def crop_sizes(request):
        return web.json_response({name: list(sizes) for name, sizes in CROP_SIZES.items()})

    logging.debug("[Luna] GET /luna/sam3, /luna/plan, /luna/crop_sizes registered")
