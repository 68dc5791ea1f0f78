"""What must be equal on every machine of a sharded run, read off the run's own dataclasses field by field.

Every field of a dataclass is described, recursively, unless its metadata is LOCAL: a field that holds this machine's
own object (a model, a VAE, conditioning, a tensor on its device). So a field added to the job, the sampler settings,
the plan or a region is in the fingerprint without being listed anywhere.
"""
from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping
from typing import Any

import torch

LOCAL: Mapping[str, bool] = {"fingerprint": False}
"""Field metadata of a value that is this machine's own, left out of the fingerprint."""


def describe(value: Any) -> Any:
    """A value's description from primitives only: dataclasses field by field (LOCAL ones left out), tensors by shape
    and dtype, containers item by item; anything else is an error naming its type (mark the field LOCAL)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, tuple((f.name, describe(getattr(value, f.name)))
                                            for f in dataclasses.fields(value) if f.metadata.get("fingerprint", True)))
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), str(value.dtype))
    if isinstance(value, (list, tuple)):
        return tuple(describe(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), describe(v)) for k, v in value.items()))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a {type(value).__name__} cannot be fingerprinted: mark its dataclass field LOCAL (pipeline.fingerprint)")


def fingerprint(*values: Any) -> int:
    """A 32-bit digest of the values' descriptions."""
    return zlib.crc32(repr(describe(values)).encode("utf-8"))
