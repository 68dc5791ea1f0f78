"""LunaSAM3Daemon: one SAM3 per (checkpoint, device, dtype), loaded on first use and managed by ComfyUI's memory manager."""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass

import torch

import comfy.model_management as mm
import comfy.model_patcher

from .. import validation
from . import checkpoints, models_folder
from .inference import detect

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_LOCK = threading.RLock()


class Sam3Module(torch.nn.Module):
    """The container ComfyUI's ModelPatcher moves between devices: the transformers Sam3Model plus a settable `device`."""

    def __init__(self, detector: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.detector = detector
        self.dtype_ = dtype
        self.device = torch.device("cpu")

    def get_dtype(self) -> torch.dtype:
        """The weights' dtype (ModelPatcher.model_dtype reads it)."""
        return self.dtype_


class Sam3Patcher(comfy.model_patcher.ModelPatcher):
    """A ModelPatcher that never half-unloads SAM3 and tells its slot when ComfyUI takes it off the device."""

    slot: "weakref.ReferenceType[Sam3Slot] | None" = None

    def partially_unload(self, device_to, memory_to_free=0, force_patch_weights=False) -> int:
        """Free nothing piecemeal, so ComfyUI unloads SAM3 whole (its plain torch layers cannot run half offloaded)."""
        return 0

    def detach(self, unpatch_all: bool = True) -> torch.nn.Module:
        """Move SAM3 off its device once no detection is running, then tell the slot."""
        slot = self.slot() if self.slot is not None else None
        if slot is None:
            return super().detach(unpatch_all)
        with slot.lock:
            model = super().detach(unpatch_all)
            if slot.patcher is self and unpatch_all:
                slot.evicted()
        return model


@dataclass(frozen=True)
class Sam3Key:
    """What makes two SAM3 models the same model: the checkpoint file, the device and the dtype."""

    path: str
    device: str
    dtype: str


class Sam3Slot:
    """One SAM3 model of the daemon: its weights, loaded lazily, and its ModelPatcher; all slots share one lock."""

    def __init__(self, key: Sam3Key, name: str):
        self.key = key
        self.name = name
        self.lock = _LOCK
        self.patcher: Sam3Patcher | None = None
        self.loads = 0
        self.evictions = 0
        self.last_load_seconds = 0.0

    @property
    def load_device(self) -> torch.device:
        return torch.device(self.key.device)

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.key.dtype]

    def _build(self) -> Sam3Patcher:
        start = time.perf_counter()
        detector = checkpoints.load_model(self.key.path, self.dtype)
        module = Sam3Module(detector, self.dtype)
        offload = mm.unet_offload_device() if self.load_device.type != "cpu" else torch.device("cpu")
        patcher = Sam3Patcher(module, load_device=self.load_device, offload_device=offload)
        patcher.slot = weakref.ref(self)
        self.loads += 1
        self.last_load_seconds = time.perf_counter() - start
        logging.info("[Luna] SAM3 %s loaded (%s, %s) in %.1f s", self.name, self.key.device, self.key.dtype,
                     self.last_load_seconds)
        return patcher

    def held(self) -> bool:
        """Whether the weights are in memory (on the device or offloaded)."""
        patcher = self.patcher
        return patcher is not None and patcher.model.detector is not None

    def model(self) -> torch.nn.Module:
        """The Sam3Model on its device, loading it from disk or bringing it back from the offload device as needed."""
        with self.lock:
            if not self.held():
                if self.patcher is not None:
                    self.patcher.slot = None
                self.patcher = self._build()
            mm.load_models_gpu([self.patcher], force_full_load=True)
            return self.patcher.model.detector

    def evicted(self) -> None:
        """ComfyUI unloaded this model: a CPU model drops its weights (RAM is what was asked back), a GPU one stays offloaded.

        The patcher and its container outlive the weights: ComfyUI is still iterating its loaded-model list, which a
        finalizer on the container would edit under it.
        """
        self.evictions += 1
        if self.load_device == self.patcher.offload_device:
            self.patcher.model.detector = None

    def release(self) -> None:
        """Drop the weights (unloading them through ComfyUI first); the next detection loads them again."""
        with self.lock:
            patcher = self.patcher
            if patcher is None:
                return
            for loaded in [m for m in mm.current_loaded_models if m.model is patcher]:
                loaded.model_unload()
                mm.current_loaded_models.remove(loaded)
            patcher.slot = None
            self.patcher = None

    def on_device(self) -> bool:
        """Whether ComfyUI counts this model as loaded on its device now."""
        patcher = self.patcher
        return patcher is not None and any(m.model is patcher for m in mm.current_loaded_models)

    def report(self) -> dict:
        """What this slot holds: checkpoint (its name in the sam3 models folder, no path on disk), device, dtype, bytes,
        residency and counters."""
        patcher = self.patcher
        held = self.held()
        where = str(next(patcher.model.parameters()).device) if held else None
        return {"checkpoint": self.name, "folder": models_folder.FOLDER, "device": self.key.device,
                "dtype": self.key.dtype, "loaded": held, "on_device": self.on_device(), "weights_on": where,
                "bytes": patcher.model_size() if held else 0, "loads": self.loads, "evictions": self.evictions}


@dataclass(frozen=True)
class Sam3Handle:
    """The LUNA_SAM3 value: a reference to one daemon slot; the slot lives while a handle does."""

    slot: Sam3Slot

    @property
    def name(self) -> str:
        return self.slot.name

    @property
    def key(self) -> Sam3Key:
        return self.slot.key

    def detect(self, images: torch.Tensor, concepts: list[str], **settings):
        """Run detection under the daemon's lock (see daemon.inference.detect for the settings)."""
        with self.slot.lock:
            return detect(self.slot.model(), images, concepts, **settings)


def resolve_device(device: str) -> torch.device:
    """'auto' → ComfyUI's torch device; 'cpu' → the CPU."""
    validation.one_of("SAM3 device", device, DEVICES)
    return torch.device(mm.get_torch_device()) if device == "auto" else torch.device("cpu")


def resolve_dtype(precision: str, device: torch.device) -> str:
    """The dtype name for `precision` on `device`: auto → bf16 (else fp16) on CUDA, fp32 elsewhere."""
    validation.one_of("SAM3 precision", precision, PRECISIONS)
    if precision != "auto":
        if device.type == "cpu" and precision == "fp16":
            raise ValueError("fp16 SAM3 is not supported on the CPU; choose fp32 or bf16 there.")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


class LunaSAM3Daemon:
    """The process-wide SAM3 host: one slot per (checkpoint, device, dtype), shared by every node and thread."""

    _instance: "LunaSAM3Daemon | None" = None
    _instance_lock = threading.Lock()

    def __init__(self):
        self._lock = threading.Lock()
        self._slots: "weakref.WeakValueDictionary[Sam3Key, Sam3Slot]" = weakref.WeakValueDictionary()

    @classmethod
    def instance(cls) -> "LunaSAM3Daemon":
        """The daemon of this process."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def acquire(self, checkpoint: str, device: str = "auto", precision: str = "auto") -> Sam3Handle:
        """A handle to the slot of (checkpoint, device, precision); nothing is read from disk until the first detection."""
        path = os.path.realpath(models_folder.resolve(checkpoint))
        torch_device = resolve_device(device)
        key = Sam3Key(path, str(torch_device), resolve_dtype(precision, torch_device))
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = Sam3Slot(key, checkpoint)
                self._slots[key] = slot
        return Sam3Handle(slot)

    def slots(self) -> list[Sam3Slot]:
        """The live slots."""
        with self._lock:
            return list(self._slots.values())

    def report(self) -> list[dict]:
        """What the daemon holds, one dict per model (see Sam3Slot.report)."""
        return [slot.report() for slot in self.slots()]

    def release_all(self) -> None:
        """Drop every model's weights; handles stay valid and reload on their next detection."""
        for slot in self.slots():
            slot.release()


def daemon() -> LunaSAM3Daemon:
    """The process-wide LunaSAM3Daemon."""
    return LunaSAM3Daemon.instance()
