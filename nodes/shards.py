"""LunaShardMerge: the master's merge of what every shard of a refiner or detailer run sent (ComfyUI-Distributed)."""
from __future__ import annotations

from ..luna_types import SHARD_PLAN
from ..pipeline.shards import MISSING, merge
from .common import CATEGORY


class LunaShardMerge:
    DESCRIPTION = (
        "Composites the tiles or crops that every shard of a Luna Global Refiner or SAM3 Detailer run sampled "
        "(shard_count > 1, gathered by ComfyUI-Distributed's DistributedCollector) exactly as the local run blends "
        "them, in any arrival order. A shard that sent nothing is never a silent gap: the merge samples its regions "
        "here, or stops naming it."
    )
    CATEGORY = f"{CATEGORY}/Refine"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The refined canvas, as the same node with shard_count 1 would give it.",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "shards": ("IMAGE", {"tooltip": "DistributedCollector's output, fed by the Luna node's image output."}),
                "shard_plan": (SHARD_PLAN, {"tooltip": "The Luna node's shard_plan output (on the master)."}),
                "missing": (list(MISSING), {"default": next(iter(MISSING)), "tooltip": " ".join(
                    f"{k}: {v}." for k, v in MISSING.items())}),
            },
        }

    def merge(self, shards, shard_plan, missing):
        if shard_plan is None:
            raise ValueError("the Luna node ran with shard_count 1, so it made the whole image and no plan to merge: "
                             "set its shard_count to 1 + the number of workers, or connect its image directly")
        return (merge(shard_plan, shards, missing),)


NODE_CLASS_MAPPINGS = {"LunaShardMerge": LunaShardMerge}
NODE_DISPLAY_NAME_MAPPINGS = {"LunaShardMerge": "Luna Shard Merge (distributed tiles and crops)"}
