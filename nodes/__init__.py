"""The node registry: every module listed in NODE_MODULES contributes its NODE_CLASS_MAPPINGS."""
from __future__ import annotations

import importlib
import logging

NODE_MODULES: tuple[str, ...] = ("scaffold", "refiner", "detailer", "shards", "detections", "interop", "sam3")

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
IMPORT_ERRORS: dict[str, str] = {}

for _name in NODE_MODULES:
    try:
        _module = importlib.import_module(f".{_name}", __name__)
    except ImportError as exc:
        if (exc.name or "").startswith(__name__.rpartition(".")[0]):
            raise
        IMPORT_ERRORS[_name] = str(exc)
        logging.error("[Luna] nodes.%s not loaded: %s (pip install -r requirements.txt in ComfyUI's Python)",
                      _name, exc)
        continue
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(getattr(_module, "NODE_DISPLAY_NAME_MAPPINGS", {}))
